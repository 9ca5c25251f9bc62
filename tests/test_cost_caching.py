"""API prompt caching priced by the vendor's rule (cost.cached_prefix_tokens), checked against hand computations."""

import copy
import math

import pytest
import yaml
from _results_factory import TEST_TABLE, write_price_dir

from promptintern.harness import cost
from promptintern.harness.cost import (
    PriceTableError,
    cached_prefix_tokens,
    caching_rule,
    caching_rule_text,
    load_price_table,
    parse_table,
    record_costs,
)

OPENAI = {"min_prefix_tokens": 1024, "step_tokens": 128}


@pytest.mark.parametrize("prefix, cached", [(0, 0), (600, 0), (1023, 0), (1024, 1024), (1100, 1024), (1151, 1024),
                                            (1152, 1152), (1279, 1152), (1300, 1280), (2000, 1920)])
def test_cached_prefix_tokens_follows_the_rule(prefix, cached):
    # 0 below 1024; else 1024 + floor((prefix - 1024) / 128) x 128: 1300 -> 1024 + 2 x 128 = 1280
    assert cached_prefix_tokens(prefix, OPENAI) == cached


def test_cached_prefix_tokens_edge_cases():
    assert cached_prefix_tokens(5000, {}) == 0  # no rule stated: never cached
    assert cached_prefix_tokens(float("nan"), OPENAI) == 0
    assert cached_prefix_tokens(-3, OPENAI) == 0
    # a minimum that is not a multiple of the step counts steps from the minimum, and never exceeds the prefix
    assert cached_prefix_tokens(1500, {"min_prefix_tokens": 1000, "step_tokens": 300}) == 1300
    assert cached_prefix_tokens(1030.5, {"min_prefix_tokens": 1024, "step_tokens": 1}) == 1030
    assert cached_prefix_tokens(700, {"min_prefix_tokens": 0, "step_tokens": 256}) == 512


def _sample(i: int, prompt: int, template: int, output: int) -> dict:
    return {"id": f"t/{i}", "generation": "x", "tokens": {"model": prompt, "o200k_base": prompt, "cl100k_base": prompt},
            "output_tokens_tiktoken": {"o200k_base": output, "cl100k_base": output},
            "parts_tiktoken": {e: {"template": template, "examples": 0, "query": prompt - template}
                               for e in ("o200k_base", "cl100k_base")}}


def _record(samples: list[dict]) -> dict:
    return {"config": {"train_task": None, "method": {"name": "few_shot"}}, "samples": samples,
            "efficiency": {"n": len(samples), "generation_seconds": 1.0 * len(samples)}, "hardware": {}}


# (prompt, template, output) tokens: under the old "best case" the 600-token template of the 1100-token prompt got
# floor(600 / 128) x 128 = 512 cached tokens because the whole prompt was >= 1024; under the rule it gets none
REC = _record([_sample(0, 1100, 600, 10), _sample(1, 2000, 1300, 20), _sample(2, 1500, 1152, 30)])


def test_record_costs_prices_the_cached_prefix_by_the_rule():
    table = parse_table(TEST_TABLE, "test-prices")
    a = record_costs(REC, table)["api"]["api-o200k"]
    assert a["tier"] == "base"  # input $1, cached $0.5, output $4 per 1M
    # cached tokens 0, 1280 (1024 + 2 x 128) and 1152 (1024 + 1 x 128)
    assert a["cached_tokens"] == pytest.approx((0 + 1280 + 1152) / 3)
    per_query = [1100 * 1.0 + 10 * 4.0,                      # 1140
                 (2000 - 1280) * 1.0 + 1280 * 0.5 + 20 * 4.0,  # 720 + 640 + 80 = 1440
                 (1500 - 1152) * 1.0 + 1152 * 0.5 + 30 * 4.0]  # 348 + 576 + 120 = 1044
    assert a["usd_per_1k_cached"] == pytest.approx(1000 * sum(per_query) / 3 / 1e6) == pytest.approx(1.208)
    assert a["usd_per_1k"] == pytest.approx(1000 * (1140 + 2080 + 1620) / 3 / 1e6)
    assert a["caching_rule"] == {**TEST_TABLE["api"]["caching"]}
    assert a["caching_rule"]["source"] == "https://example.invalid/prompt-caching" and a["caching_rule"]["rule"]
    # no cached-input price: nothing billed as cached, the cached figure is the uncached one
    b = record_costs(REC, table)["api"]["api-cl100k"]
    assert b["cached_tokens"] == 0 and b["usd_per_1k_cached"] == pytest.approx(b["usd_per_1k"])
    assert b["usd_per_1k"] == pytest.approx(1000 * (1100 * 3 + 10 * 6 + 2000 * 3 + 20 * 6 + 1500 * 3 + 30 * 6) / 3 / 1e6)


def test_the_shared_prefix_is_at_most_the_prompt():
    table = parse_table(TEST_TABLE, "test-prices")
    # a template count above the prompt's (a role's text counted apart) is cut to the prompt: 1000 < 1024, none
    a = record_costs(_record([_sample(0, 1000, 1100, 0)]), table)["api"]["api-o200k"]
    assert a["cached_tokens"] == 0 and a["usd_per_1k_cached"] == pytest.approx(a["usd_per_1k"])


def _with_override() -> dict:
    t = copy.deepcopy(TEST_TABLE)
    t["api"]["models"]["api-big"] = {
        "encoding": "o200k_base", "base": {"input": 1.0, "cached_input": 0.1, "output": 4.0},
        "caching": {"min_prefix_tokens": 2048, "step_tokens": 1, "write_multiplier": 1.25,
                    "rule": "Cached on a marked prefix of 2,048 tokens or more; writes cost 1.25x the input price.",
                    "source": "https://example.invalid/other-vendor-caching"}}
    return t


def test_per_model_override():
    table = parse_table(_with_override(), "test-prices")
    big = caching_rule(table, "api-big")
    assert big["min_prefix_tokens"] == 2048 and big["step_tokens"] == 1 and big["write_multiplier"] == 1.25
    assert big["source"] == "https://example.invalid/other-vendor-caching"
    assert big["unverified"] is False  # inherited from the table's rule
    assert caching_rule(table, "api-o200k") == TEST_TABLE["api"]["caching"]  # untouched
    costs = record_costs(REC, table)["api"]
    assert costs["api-big"]["cached_tokens"] == 0  # no prefix reaches 2048
    assert costs["api-big"]["usd_per_1k_cached"] == pytest.approx(costs["api-big"]["usd_per_1k"])
    assert costs["api-o200k"]["cached_tokens"] == pytest.approx((0 + 1280 + 1152) / 3)
    long = _record([_sample(0, 3000, 2100, 0)])
    assert record_costs(long, table)["api"]["api-big"]["cached_tokens"] == 2100  # step 1: the whole prefix
    # (900 x 1 + 2100 x 0.1) / 1e6 per query; the one write per cache lifetime is not in the steady-state mean
    assert record_costs(long, table)["api"]["api-big"]["usd_per_1k_cached"] == pytest.approx(1000 * 1110 / 1e6)
    assert caching_rule_text(table) == (
        "api-o200k: cached input billed only on a shared prefix of >= 1,024 tokens, in steps of 128 "
        "(source: https://example.invalid/prompt-caching); "
        "api-cl100k: never cached (no cached-input price); "
        "api-big: cached input billed only on a shared prefix of >= 2,048 tokens, cache writes at 1.25x the input "
        "price (source: https://example.invalid/other-vendor-caching).")


def test_older_tables_keys_still_load(tmp_path):
    old = copy.deepcopy(TEST_TABLE)
    old["id"] = "old-keys"
    del old["api"]["caching"]
    old["api"].update(min_cached_prefix_tokens=1024, cached_prefix_step_tokens=128, caching_rule_unverified=True)
    write_price_dir(tmp_path, [old])
    table = load_price_table("old-keys", tmp_path)
    rule = caching_rule(table, "api-o200k")
    assert {k: rule[k] for k in ("min_prefix_tokens", "step_tokens", "write_multiplier", "unverified")} == {
        "min_prefix_tokens": 1024, "step_tokens": 128, "write_multiplier": 1.0, "unverified": True}
    assert rule["rule"] and rule["source"].startswith("not stated")
    new = record_costs(REC, parse_table(TEST_TABLE, "test-prices"))["api"]["api-o200k"]
    assert record_costs(REC, table)["api"]["api-o200k"]["usd_per_1k_cached"] == pytest.approx(new["usd_per_1k_cached"])
    assert "; unverified)" in caching_rule_text(table)
    # no caching key at all: never cached, as before
    bare = copy.deepcopy(old)
    for k in ("min_cached_prefix_tokens", "cached_prefix_step_tokens", "caching_rule_unverified"):
        del bare["api"][k]
    t = parse_table(bare, "old-keys")
    assert caching_rule(t, "api-o200k") == {} and record_costs(REC, t)["api"]["api-o200k"]["cached_tokens"] == 0
    assert "api-o200k: never cached (the price table states no caching rule)" in caching_rule_text(t)


@pytest.mark.parametrize("edit, message", [
    (lambda c, m: c.update(step_tokens=0),
     "price table bad: api.caching.step_tokens: must be an integer >= 1, got 0"),
    (lambda c, m: c.update(min_prefix_tokens="1024"),
     "price table bad: api.caching.min_prefix_tokens: must be an integer >= 0, got '1024'"),
    (lambda c, m: c.update(write_multiplier=-1),
     "price table bad: api.caching.write_multiplier: must be a number >= 0, got -1"),
    (lambda c, m: c.update(unverified="yes"),
     "price table bad: api.caching.unverified: must be true or false, got 'yes'"),
    (lambda c, m: c.pop("rule"), "price table bad: api.caching.rule: missing"),
    (lambda c, m: c.update(min_prefix=1024), "price table bad: api.caching.min_prefix: unknown field"),
    (lambda c, m: m["api-o200k"].update(caching={"step_tokens": 64}),
     "price table bad: api.models.api-o200k.caching.rule: missing"),
    (lambda c, m: m["api-o200k"].update(caching={"step_tokens": 1.5, "rule": "r"}),
     "price table bad: api.models.api-o200k.caching.step_tokens: must be an integer >= 1, got 1.5"),
])
def test_malformed_caching_names_file_and_field(tmp_path, edit, message):
    bad = copy.deepcopy(TEST_TABLE)
    bad["id"] = "bad"
    edit(bad["api"]["caching"], bad["api"]["models"])
    write_price_dir(tmp_path, [bad])
    with pytest.raises(PriceTableError) as e:
        load_price_table("bad", tmp_path)
    assert message in str(e.value)


def test_new_and_older_keys_together_are_rejected():
    both = copy.deepcopy(TEST_TABLE)
    both["api"]["min_cached_prefix_tokens"] = 512
    with pytest.raises(PriceTableError, match="api.caching and the older api.min_cached_prefix_tokens"):
        parse_table(both, "test-prices")


def test_shipped_tables_state_openais_rule():
    for name in cost.available_tables(cost.PRICES_DIR):
        table = load_price_table(name, cost.PRICES_DIR)
        raw = yaml.safe_load(table.path.read_text())["api"]
        assert not {"min_cached_prefix_tokens", "cached_prefix_step_tokens", "caching_rule_unverified"} & set(raw)
        rule = raw["caching"]
        assert (rule["min_prefix_tokens"], rule["step_tokens"], rule["write_multiplier"]) == (1024, 128, 1.0)
        assert rule["source"] == "https://platform.openai.com/docs/guides/prompt-caching" and rule["unverified"]
        assert "1,024" in rule["rule"] and "128" in rule["rule"]
        assert caching_rule_text(table) == (
            "gpt-4o-mini, gpt-4o: cached input billed only on a shared prefix of >= 1,024 tokens, in steps of 128 "
            "(source: https://platform.openai.com/docs/guides/prompt-caching; unverified); "
            "gpt-3.5-turbo: never cached (no cached-input price).")
        assert not math.isnan(record_costs(REC, table)["api"]["gpt-4o-mini"]["usd_per_1k_cached"])


def test_prices_command_states_the_caching_rule(tmp_path, monkeypatch, capsys):
    from promptintern import cli

    monkeypatch.setenv("PROMPTINTERN_PRICES_DIR", str(write_price_dir(tmp_path)))
    assert cli.main(["prices"]) == 0
    assert ("  prompt caching: api-o200k: cached input billed only on a shared prefix of >= 1,024 tokens, in steps of "
            "128 (source: https://example.invalid/prompt-caching); api-cl100k: never cached (no cached-input price).\n"
            in capsys.readouterr().out)
