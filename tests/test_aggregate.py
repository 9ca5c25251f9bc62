"""Tables recomputed from the result files match the tables written; measurement helpers; stage table."""

import json
import math

import pandas as pd
import pytest
from _results_factory import build_store, write_price_dir

from promptintern.harness import aggregate as agg
from promptintern.harness import tables as T
from promptintern.harness.cost import load_price_table
from promptintern.harness.measure import (
    mean_se,
    measure_latency,
    measure_throughput,
    percentile,
    saturating,
    sha256_dir,
)
from promptintern.harness.records import generations_sha256
from promptintern.harness.stats import wilson


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    prices = write_price_dir(tmp_path_factory.mktemp("prices"))
    store = build_store(tmp_path_factory.mktemp("results") / "exp")
    table = load_price_table("test-prices", prices)
    paths = T.write_tables(store, table)
    return store, table, paths


def _row(df, label, eval_task="mbpp"):
    r = df[(df["label"] == label) & (df["eval_task"] == eval_task)]
    assert len(r) == 1, (label, eval_task, len(r))
    return r.iloc[0]


PI = "promptintern/linear-T2/r0.5"


def test_percentile_and_stats_by_hand():
    assert percentile([0.5, 0.9, 0.7], 50) == pytest.approx(0.7)
    assert percentile([0.5, 0.7, 0.9], 90) == pytest.approx(0.7 + 0.2 * 0.8)
    assert percentile([3.0], 90) == 3.0 and math.isnan(percentile([], 50))
    m, se = mean_se([1, 0, 1, 1])
    assert m == 0.75 and se == pytest.approx(math.sqrt(0.25 / 4))
    assert saturating([{"batch_size": 1, "tokens_per_s": 10, "samples_per_s": 1},
                       {"batch_size": 8, "tokens_per_s": 10.5, "samples_per_s": 1.05}]) == \
        {"batch_size": 8, "tokens_per_s": 10.5, "samples_per_s": 1.05, "saturated": True}


def test_hashes(tmp_path):
    a = generations_sha256([("x/1", "print(1)"), ("x/2", "ls")])
    assert a == generations_sha256([("x/1", "print(1)"), ("x/2", "ls")])
    assert a != generations_sha256([("x/1", "print(2)"), ("x/2", "ls")])
    (tmp_path / "adapter_config.json").write_text("{}")
    h = sha256_dir(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{ }")
    assert h and sha256_dir(tmp_path) != h and sha256_dir(tmp_path / "missing") is None


def test_main_table_recomputed_from_result_files(setup):
    """Scores, tokens and the engine figures recomputed from the raw JSON files, independently of the harness."""
    store, table, paths = setup
    written = pd.read_csv(paths["csv"])
    raw = {p.stem: json.loads(p.read_text()) for p in store.runs.glob("*.json")}
    for uid, rec in raw.items():
        if rec["kind"] != "eval":
            continue
        c = rec["config"]
        metric = rec["task"]["primary_metric"]
        vals = [s["score"][metric] for s in rec["samples"]]
        for label in [c["method"]["label"]] + ([c["method"]["label"] + "+prefix-cache"] if c.get("prefix_cache") else []):
            row = _row(written, label, c["eval_task"])
            assert row["score"] == pytest.approx(sum(vals) / len(vals)), uid
            assert row["n"] == len(vals)
            assert row["input_tokens"] == pytest.approx(sum(s["tokens"]["model"] for s in rec["samples"]) / len(vals))
    engine = raw["engine-mbpp"]
    L = engine["settings"]["max_new_tokens"]
    for cond in engine["conditions"]:
        label = raw[cond["eval"]]["config"]["method"]["label"] + ("+prefix-cache" if cond["prefix_cache"] else "")
        row = _row(written, label)
        e2el = [r["token_times"][L - 1] for r in cond["requests"]]
        assert row["e2el_s"] == pytest.approx(sum(e2el) / len(e2el)), label
        assert row["ttft_s"] == pytest.approx(sum(r["ttft_s"] for r in cond["requests"]) / len(e2el))
        b = cond["batches"]
        assert row["sat_rps"] == pytest.approx(sum(x["batch_size"] for x in b) / sum(x["e2e_s"] for x in b))
        assert row["sat_tok_s"] == pytest.approx(row["sat_rps"] * L) and row["engine_queries"] == 4


def test_engine_view_by_hand(setup):
    """The factory's engine record (tests/_results_factory.py:build_store) read by hand."""
    store, table, paths = setup
    w = pd.read_csv(paths["csv"])
    full, cached, pi, query, few = (_row(w, x) for x in ("full_prompt_ft", "full_prompt_ft+prefix-cache", PI,
                                                         "query_only_ft", "few_shot"))
    assert (full["ttft_s"], full["tpot_s"], full["e2el_s"]) == pytest.approx((0.4, 0.1, 0.7))
    assert (pi["ttft_s"], pi["tpot_s"], pi["e2el_s"]) == pytest.approx((0.02, 0.06, 0.2))
    # batch 1, same 4 tokens: full 0.7 s / PI 0.2 s; cached 0.4 / 0.2; every query equal: the range is a point
    assert pi["speedup_full"] == pytest.approx(3.5) and pi["speedup_full_cached"] == pytest.approx(2.0)
    assert pi["speedup_full_method"] == "range" and pi["speedup_full_n"] == 4
    # saturation, batches of 2: full 1.0 req/s, cached 2.0, PI 5.0
    assert pi["sat_batch"] == 2 and pi["sat_rps"] == pytest.approx(5.0) and cached["sat_rps"] == pytest.approx(2.0)
    assert pi["throughput_full"] == pytest.approx(5.0) and pi["throughput_full_cached"] == pytest.approx(2.5)
    assert cached["throughput_full"] == pytest.approx(2.0) and math.isnan(full["throughput_full"])
    # as answered: 20 tokens each, token 20 at ttft + 19 x step: full 2.3 s, PI 1.16 s
    assert full["answered_e2el_s"] == pytest.approx(2.3) and pi["answered_e2el_s"] == pytest.approx(1.16)
    assert pi["answered_speedup_full"] == pytest.approx(2.3 / 1.16) and pi["answered_output_tokens"] == 20
    # goodput (TTFT <= 0.3 s, TPOT <= 0.1 s): full never within; PI's 4 batch-1 requests in 0.8 s = 5 req/s, of
    # which 3 answered correctly (scores 1, 1, 1, 0): 3.75 req/s
    assert full["goodput_rps"] == 0 and pi["goodput_rps"] == pytest.approx(5.0)
    assert pi["acc_goodput_rps"] == pytest.approx(3.75)
    # self-hosted cost at saturation: $0.00001 per core-second x 2 cores / req/s, per 1k
    assert full["self_hosted_usd_per_1k"] == pytest.approx(0.02) and pi["self_hosted_usd_per_1k"] == pytest.approx(0.004)
    assert pi["engine_b1_usd_per_1k"] == pytest.approx(0.2 * 2e-5 * 1000)
    assert pi["answered_usd_per_1k"] == pytest.approx(1.16 * 2e-5 * 1000)
    assert pi["saving_full_pct"] == pytest.approx(80.0) and pi["saving_full_cached_pct"] == pytest.approx(60.0)
    # tokens each query computes: the cached row's 1000-token prefix is not prefilled
    assert cached["prefill_tokens"] == 1000 and full["prefill_tokens"] == 2000
    assert pi["prefill_reduction_full_cached_pct"] == pytest.approx(90.0)
    # training (the stages' whole work) and incremental break-even: PI trains as long as full-prompt FT (36 s), so
    # against it nothing is to repay; against the untrained base model 36 x 2e-5 / ((0.02 - 0.004) / 1000)
    assert pi["train_usd"] == pytest.approx(36 * 2e-5) and few["train_usd"] == 0
    assert pi["break_even_full"] == 0 and pi["break_even_full_cached"] == 0
    assert pi["break_even_base"] == pytest.approx(45.0) and query["break_even_base"] == pytest.approx(24.0)
    # the uncached full prompt never repays against its own cached serving: it costs more per query
    assert full["break_even_full_cached"] == math.inf
    assert pi["api_usd_per_1k"] == pytest.approx(0.26) and full["api_usd_per_1k"] == pytest.approx(3.16)


def test_scores_have_intervals_that_mean_their_level(setup):
    store, table, paths = setup
    w = pd.read_csv(paths["csv"])
    pi, query = _row(w, PI), _row(w, "query_only_ft")
    lo, hi = wilson(3, 4)
    assert (pi["score_lo"], pi["score_hi"]) == pytest.approx((100 * lo, 100 * hi)) and pi["score_method"] == "wilson"
    # paired: PI [1,1,1,0] vs full [1,0,1,1]: no difference, Newcombe's interval is wide, not [0, 0]
    assert pi["delta_full"] == 0 and pi["delta_full_lo"] < -30 and pi["delta_full_hi"] > 30
    assert pi["delta_full_method"] == "newcombe" and pi["delta_full_ns"]
    assert query["delta_full"] == pytest.approx(-25.0)
    # the cached and uncached rows of one evaluation share its scores: no difference estimated between them
    assert math.isnan(_row(w, "full_prompt_ft+prefix-cache")["delta_full"])
    bash = _row(w, PI, "nl2bash")  # BLEU 10, 20: a t interval clipped to the metric's range
    assert bash["score_method"] == "t" and bash["score_lo"] == 0.0


def test_older_records_keep_their_as_answered_view(setup):
    store, table, paths = setup
    w = pd.read_csv(paths["csv"])
    pi = _row(w, PI, "nl2bash")
    assert pi["timing_source"] == "evaluation, batch 1" and math.isnan(pi["e2el_s"])
    assert pi["answered_e2el_s"] == pytest.approx(0.1) and pi["cost_basis"] == "as answered, batch 1"
    assert pi["self_hosted_usd_per_1k"] == pytest.approx(0.1 * 2e-5 * 1000)


def test_written_markdown_and_latex_match_the_frame(setup):
    store, table, paths = setup
    md = paths["markdown"].read_text()
    line = next(x for x in md.splitlines() if PI in x and "| mbpp | mbpp |" in x)
    for s in ("75.0 [30.1, 95.4]", "3.50× (range 3.50–3.50)", "5.00 (2)", "2.50× (range 2.50–2.50)", "$0.00400",
              "1.16 s", "200 ms", "60 ms"):
        assert s in line, (s, line)
    # the method and the n are stated under the table
    assert "Wilson score interval" in md and "n = 2, 4 test items" in md and "L = 4 tokens" in md
    assert "range of the per-query (or per-batch) ratios" in md
    bash = next(x for x in md.splitlines() if "full_prompt_ft" in x and "| nl2bash |" in x)
    assert "| 30.0 [0.0, 100.0] |" in bash  # BLEU on its own 0-100 scale
    tex = paths["latex"].read_text()
    assert r"\begin{tabular}" in tex and r"75.0 [30.1, 95.4]" in tex
    for key in ("task-mbpp.markdown", "task-nl2bash.csv", "cross_domain.latex", "cost.csv", "stages.markdown",
                "sweep.csv"):
        assert paths[key].is_file(), key
    nl = pd.read_csv(paths["task-nl2bash.csv"])
    assert set(nl["method"]) == {"few_shot"}
    sweep = pd.read_csv(paths["sweep.csv"])
    assert sorted(sweep[sweep["label"] == PI]["batch_size"]) == [1, 2]


def test_cross_domain_table(setup):
    store, table, paths = setup
    cross = pd.read_csv(paths["cross_domain.csv"])
    assert set(cross["method"]) == {"full_prompt_ft", "promptintern"}
    pi = _row(cross, PI, "nl2bash")
    assert pi["score"] == 15.0 and pi["base_score"] == 30.0 and pi["full_prompt_ft_score"] == 30.0
    assert pi["delta_vs_base"] == -15.0 and pi["delta_vs_full_prompt_ft"] == -15.0
    assert pi["train_task_metric_score"] == pytest.approx(0.75)  # the same system on its own train task


def test_stage_table(setup):
    store, table, paths = setup
    st = pd.read_csv(paths["stages.csv"])
    pi = st[st["method"] == "promptintern"].sort_values("stage")
    assert list(pi["stage"]) == [1, 2] and list(pi["final_loss"]) == [2.2, 1.2]
    assert list(pi["template_rate_requested"]) == [0.5, 0.0] and list(pi["mean_prompt_tokens"]) == [1000.0, 90.0]
    assert list(pi["tokens_per_second"]) == pytest.approx([1000 / 30, 1000 / 6])
    md = paths["stages.markdown"].read_text()
    assert "| tiny | mbpp | promptintern/linear-T2/r0.5 | 2/2 | 0.00 | 0.00 | 0 | 90.0 | 2.100 | 1.200 |" in md


def test_tables_without_prices(setup):
    store, _, _ = setup
    t = agg.main_table(agg.eval_frame(store))  # no price table: no cost columns, still a frame
    assert "token_reduction_full_pct" in t.columns and t["self_hosted_usd_per_1k"].isna().all()
    assert T.to_markdown(t).startswith("| model |")
    assert T.to_markdown(agg.main_table(pd.DataFrame())) == "_no results_"


def test_measure_on_tiny_model(tiny):
    model, tok = tiny
    prompts = ["Hello there", "Write a function that adds two numbers"]
    tp = measure_throughput(model, tok, prompts, [1, 2], max_new_tokens=3)
    assert [p["batch_size"] for p in tp["points"]] == [1, 2]
    assert [p["output_tokens"] for p in tp["points"]] == [3, 6]  # every row decodes exactly max_new_tokens
    for p in tp["points"]:
        assert p["tokens_per_s"] == pytest.approx(p["output_tokens"] / p["seconds"])  # one repeat
    rep = measure_throughput(model, tok, prompts, [2], max_new_tokens=3, repeats=3)["points"][0]
    assert len(rep["seconds_repeats"]) == 3 and rep["seconds"] == pytest.approx(sum(rep["seconds_repeats"]) / 3)
    assert rep["tokens_per_s"] == pytest.approx(sum(6 / t for t in rep["seconds_repeats"]) / 3)
    assert rep["tokens_per_s_ci"][0] <= rep["tokens_per_s"] <= rep["tokens_per_s_ci"][1]
    assert tp["saturating"]["batch_size"] in (1, 2)
    lat = measure_latency(model, tok, prompts, ["a", "b"], max_new_tokens=3, stop=None, repeats=2)
    assert [(s["id"], s["repeat"]) for s in lat] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert all(0 < s["ttft_s"] <= s["e2e_s"] for s in lat)
    for s in lat:  # decode time per token after the first
        if s["output_tokens"] > 1:
            assert s["tpot_s"] == pytest.approx((s["e2e_s"] - s["ttft_s"]) / (s["output_tokens"] - 1))
    static = measure_throughput(model, tok, prompts, [2], max_new_tokens=3, engine="static")
    assert static["engine"] == "static" and [p["output_tokens"] for p in static["points"]] == [6]


def test_run_measurements_settings(tiny):
    from promptintern.harness.measure import run_measurements

    model, tok = tiny
    prompts, ids = ["Hello there", "Add two numbers"], ["a", "b"]
    off = run_measurements(model, tok, prompts, ids, {"batch_size": 2, "measure": False}, max_new_tokens=8, stop=None)
    assert off["skipped"] == "generation.measure is false" and "throughput" not in off
    cfg = {"batch_size": 2, "throughput_batch_sizes": [2, 1, 2], "throughput_max_new_tokens": 2, "latency_samples": 1,
           "latency_max_new_tokens": 3}
    m = run_measurements(model, tok, prompts, ids, cfg, max_new_tokens=8, stop=None)
    assert m["settings"]["throughput_batch_sizes"] == [1, 2]
    assert [p["output_tokens"] for p in m["throughput"]["points"]] == [2, 4]
    assert m["latency"]["max_new_tokens"] == 3 and [s["id"] for s in m["latency"]["samples"]] == ["a"] * 3
    assert m["timing_lock"]["exclusive"] is True
    assert all(s["output_tokens"] <= 3 for s in m["latency"]["samples"])


def test_compressor_time_counts_in_latency():
    from promptintern.harness.measure import latency_summary

    s = latency_summary([{"id": "a", "ttft_s": 0.1, "e2e_s": 0.5, "compressor_s": 0.25},
                         {"id": "b", "ttft_s": 0.2, "e2e_s": 0.7}], source="batch1_run")
    assert s["e2e_s"]["p50"] == pytest.approx((0.75 + 0.7) / 2) and s["ttft_s"]["p50"] == pytest.approx(0.275)


def test_throughput_decodes_with_the_chosen_engine(tiny, monkeypatch):
    """engine="fast" times promptintern's own loop, never `generate` (and every row decodes the fixed count)."""
    from promptintern import fast_decode

    model, tok = tiny
    calls = []
    real = fast_decode.fast_greedy
    monkeypatch.setattr(fast_decode, "fast_greedy", lambda *a, **k: calls.append(k["max_new_tokens"]) or real(*a, **k))
    monkeypatch.setattr(model, "generate", lambda *a, **k: pytest.fail("generate used by the fast engine"))
    tp = measure_throughput(model, tok, ["Hello there", "Add two numbers"], [1, 2], max_new_tokens=3, engine="fast")
    assert tp["engine"] == "fast" and [p["output_tokens"] for p in tp["points"]] == [3, 6]
    assert calls == [2, 3, 3]  # the untimed warm-up, then one timed batch per batch size
