"""Price tables (data files, dated, sourced) and cost per 1k queries, checked against hand computations."""

import copy
import math

import pytest
from _results_factory import GPU_HW, TEST_TABLE, build_store, write_price_dir

from promptintern.harness import cost
from promptintern.harness.cost import PriceTableError, load_price_table, record_costs


@pytest.fixture(scope="module")
def prices(tmp_path_factory):
    return write_price_dir(tmp_path_factory.mktemp("prices"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("results") / "exp")


def test_shipped_tables_parse_and_carry_date_and_sources():
    names = cost.available_tables(cost.PRICES_DIR)
    assert len(names) >= 2
    defaults = []
    for n in names:
        t = load_price_table(n, cost.PRICES_DIR)
        assert t.retrieved and len(t.retrieved) == 10  # YYYY-MM-DD
        assert t.api["source"].startswith("https://") and t.raw["hardware"]["source"].startswith("https://")
        # every API model names its encoding; gpt-4o family is o200k, gpt-3.5 is cl100k
        for model, m in t.api_models.items():
            assert m["encoding"] == ("cl100k_base" if "3.5" in model else "o200k_base")
            assert m.get("verified_by") or m.get("unverified")
        for h in t.hardware:
            assert h.usd_per_hour > 0
            assert h.unverified or h.raw.get("verified_by"), h.key
        defaults += [n] if t.default else []
    assert len(defaults) == 1
    # no price lives in code: the module has no dollar figures of the tables
    src = (cost.PRICES_DIR.parent / "cost.py").read_text()
    assert "0.15" not in src and "3.9492" not in src


def test_unknown_table_lists_available(prices):
    with pytest.raises(PriceTableError) as e:
        load_price_table("no-such-table", prices)
    assert "unknown price table 'no-such-table'" in str(e.value) and "test-prices" in str(e.value)


def test_malformed_table_is_rejected(tmp_path):
    bad = copy.deepcopy(TEST_TABLE)
    bad["id"] = "bad"
    bad["api"]["models"]["api-o200k"]["fine_tuned"]["input"] = "cheap"
    write_price_dir(tmp_path, [bad])
    with pytest.raises(PriceTableError, match="fine_tuned.input"):
        load_price_table("bad", tmp_path)


def test_api_cost_arithmetic():
    prices = {"input": 2.0, "cached_input": 1.0, "output": 8.0}
    # (1000 x 2 + 10 x 8) / 1e6
    assert cost.api_cost_per_query(1000, 10, prices) == pytest.approx(2080e-6)
    # 1024 of 2000 input tokens cached: (976 x 2 + 1024 x 1 + 30 x 8) / 1e6
    assert cost.api_cost_per_query(2000, 30, prices, 1024) == pytest.approx(3216e-6)
    rule = {"min_prefix_tokens": 1024, "step_tokens": 128}
    assert cost.cached_prefix_tokens(1100, rule) == 1024  # 1024 + floor(76 / 128) x 128
    assert cost.cached_prefix_tokens(1000, rule) == 0  # prefix shorter than the minimum cached prefix


def test_cost_of_known_runs_equals_hand_computation(store, prices):
    table = load_price_table("test-prices", prices)
    recs = {r["unit_id"]: r for r in store.records(kind="eval")}

    full = record_costs(recs["eval-full-mbpp"], table)
    # fine-tuned o200k model: mean input 1500, mean output 20 -> (1500 x 2 + 20 x 8) / 1e6 per query, x 1000
    assert full["api"]["api-o200k"]["tier"] == "fine_tuned"
    assert full["api"]["api-o200k"]["usd_per_1k"] == pytest.approx(3.16)
    # caching rule: the 1100-token template is cut to the 1000-token prompt of half the samples (below the
    # 1024 minimum: none cached); the 2000-token ones get 1024 + floor(76 / 128) x 128 = 1024 cached tokens
    assert full["api"]["api-o200k"]["usd_per_1k_cached"] == pytest.approx((2080 + 3216) / 2 / 1000)
    # the cl100k model has no fine-tuned price: not priced rather than priced wrongly
    assert math.isnan(full["api"]["api-cl100k"]["usd_per_1k"])
    assert "self_hosted" not in full  # each request's own compute: promptintern.harness.efficiency, not the batch wall time

    few = record_costs(recs["eval-few-mbpp"], table)  # untrained: base prices
    assert few["api"]["api-o200k"]["tier"] == "base"
    assert few["api"]["api-o200k"]["usd_per_1k"] == pytest.approx((1500 * 1.0 + 20 * 4.0) / 1000)
    assert few["api"]["api-o200k"]["usd_per_1k_cached"] == pytest.approx((476 * 1.0 + 1024 * 0.5 + 80) / 1000)
    # cl100k counts (input 1501, output 21) at $3 / $6, no cached price
    assert few["api"]["api-cl100k"]["usd_per_1k"] == pytest.approx((1501 * 3 + 21 * 6) / 1000)
    assert few["api"]["api-cl100k"]["usd_per_1k_cached"] == pytest.approx((1501 * 3 + 21 * 6) / 1000)

    pi = record_costs(recs["eval-pi-mbpp"], table)
    assert pi["api"]["api-o200k"]["usd_per_1k"] == pytest.approx((50 * 2 + 20 * 8) / 1000)


def test_hardware_matching_and_override(prices):
    from promptintern.harness.efficiency import price_per_second

    table = load_price_table("test-prices", prices)
    # one H100 at $3.60/h: $0.001 per second, whatever the threads
    assert price_per_second(table, GPU_HW) == pytest.approx((0.001, "h100"))
    # forced to the per-core CPU price: the GPU box's 1 torch thread
    assert price_per_second(table, GPU_HW, "cpu-core") == pytest.approx((0.00001, "cpu-core"))
    with pytest.raises(PriceTableError, match="no hardware entry 'tpu'"):
        price_per_second(table, GPU_HW, "tpu")
    usd, key = price_per_second(table, {**GPU_HW, "gpu": "NVIDIA A10G"})  # no entry matches: unpriced, not guessed
    assert key is None and math.isnan(usd)


def test_training_cost(store, prices):
    table = load_price_table("test-prices", prices)
    stages = [r for r in store.records(kind="stage") if r["config"]["method"]["name"] == "promptintern"]
    # (30 + 6) s of the stages' whole work on 2 cores at $0.00001 per core-second
    assert cost.training_usd(stages, table) == pytest.approx(36 * 2 * 0.00001)
    # the whole work, not only the optimizer's seconds: compression, retrieval, teacher passes are priced too
    longer = [{**s, "work_seconds": {**s["work_seconds"], "total": s["work_seconds"]["total"] + 10}} for s in stages]
    assert cost.training_usd(longer, table) == pytest.approx(56 * 2 * 0.00001)
