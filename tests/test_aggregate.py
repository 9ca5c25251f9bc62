"""Tables recomputed from the result files match the tables written; measurement helpers; stage table."""

import json
import math

import pandas as pd
import pytest
from _results_factory import build_store, write_price_dir

from harness import aggregate as agg
from harness.cost import load_price_table
from harness.measure import (
    generations_sha256,
    mean_se,
    measure_latency,
    measure_throughput,
    percentile,
    saturating,
    sha256_dir,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    prices = write_price_dir(tmp_path_factory.mktemp("prices"))
    store = build_store(tmp_path_factory.mktemp("results") / "exp")
    table = load_price_table("test-prices", prices)
    paths = agg.write_tables(store, table)
    return store, table, paths


def _row(df, method, eval_task="mbpp"):
    r = df[(df["method"] == method) & (df["eval_task"] == eval_task)]
    assert len(r) == 1, (method, eval_task, len(r))
    return r.iloc[0]


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
    store, table, paths = setup
    written = pd.read_csv(paths["csv"])
    # recompute from the raw JSON files, independently of the harness code
    raw = {p.stem: json.loads(p.read_text()) for p in store.runs.glob("eval-*.json")}

    def mean(xs):
        return sum(xs) / len(xs)

    for uid, rec in raw.items():
        c = rec["config"]
        row = _row(written, c["method"]["name"], c["eval_task"])
        metric = rec["task"]["primary_metric"]
        vals = [s["score"][metric] for s in rec["samples"]]
        assert row["score"] == pytest.approx(mean(vals)), uid
        m = mean(vals)
        se = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1) / len(vals))
        assert row["score_se"] == pytest.approx(se), uid
        assert row["n"] == len(vals)
        assert row["input_tokens"] == pytest.approx(mean([s["tokens"]["model"] for s in rec["samples"]]))
        e2e = sorted(x["e2e_s"] for x in rec["measurements"]["latency"]["samples"])
        k = len(e2e)
        median = e2e[k // 2] if k % 2 else (e2e[k // 2 - 1] + e2e[k // 2]) / 2
        assert row["latency_p50_s"] == pytest.approx(median), uid
        best = max(rec["measurements"]["throughput"]["points"], key=lambda p: p["tokens_per_s"])
        assert row["throughput_tok_s"] == pytest.approx(best["tokens_per_s"])
        assert row["saturating_batch"] == best["batch_size"]

    full, pi, query = (_row(written, m) for m in ("full_prompt_ft", "promptintern", "query_only_ft"))
    assert full["score"] == 0.75 and query["score"] == 0.5 and pi["score"] == 0.75
    assert pi["token_reduction_pct"] == pytest.approx(100 * (1 - 100 / 2000))
    assert full["token_reduction_pct"] == pytest.approx(0.0)
    # latency p50: full [0.5, 0.7, 0.9] -> 0.7, promptintern [0.1, 0.2, 0.3] -> 0.2; p90 by interpolation
    assert full["latency_p90_s"] == pytest.approx(0.86) and pi["latency_p90_s"] == pytest.approx(0.28)
    assert pi["speedup"] == pytest.approx(0.7 / 0.2)
    # cost: self-hosted 0.5 s vs 1 s per query; API (50 x 2 + 20 x 8) vs (1500 x 2 + 20 x 8) per 1e6 tokens
    assert pi["self_hosted_usd_per_1k"] == pytest.approx(0.01) and full["self_hosted_usd_per_1k"] == pytest.approx(0.02)
    assert pi["self_hosted_saving_pct"] == pytest.approx(50.0)
    assert pi["api_usd_per_1k"] == pytest.approx(0.26) and full["api_usd_per_1k"] == pytest.approx(3.16)
    assert pi["api_saving_pct"] == pytest.approx(100 * (1 - 0.26 / 3.16))
    assert pi["score_delta"] == pytest.approx(0.0) and query["score_delta"] == pytest.approx(-0.25)
    # training cost rides along: 36 s of stages on 2 cores at $0.00001 per core-second
    assert pi["train_usd"] == pytest.approx(36 * 2 * 0.00001) and _row(written, "few_shot")["train_usd"] == 0
    # untrained rows compare with full-prompt FT trained on the eval task itself
    few = _row(written, "few_shot")
    assert few["train_task"] == "-" and few["token_reduction_pct"] == pytest.approx(0.0)
    assert few["speedup"] == pytest.approx(0.7 / 0.6)


def test_written_markdown_and_latex_match_the_frame(setup):
    store, table, paths = setup
    md = paths["markdown"].read_text()
    # promptintern mbpp row: score 75.0 ± 25.0 (pass@1 as a percentage), 95% fewer tokens, 3.50x, $0.0100, $0.260
    line = next(x for x in md.splitlines() if "promptintern/linear-T2/r0.5" in x and "| mbpp | mbpp |" in x)
    for s in ("75.0 ± 25.0", "95.0%", "3.50x", "$0.0100", "$0.260", "91.8%", "50.0%", "200 ms", "280 ms"):
        assert s in line, (s, line)
    # BLEU is shown on its own 0-100 scale, not multiplied
    bash = next(x for x in md.splitlines() if "full_prompt_ft" in x and "| nl2bash |" in x)
    assert "| 30.0 ± 10.0 |" in bash
    tex = paths["latex"].read_text()
    assert r"\begin{tabular}" in tex and r"75.0 $\pm$ 25.0" in tex and r"95.0\%" in tex
    assert tex.count(r"\\") == len(pd.read_csv(paths["csv"])) + 1  # header + one line per row
    for key in ("task-mbpp.markdown", "task-nl2bash.csv", "cross_domain.latex", "cost.csv", "stages.markdown",
                "throughput.csv"):
        assert paths[key].is_file(), key
    # per-task table: on-task rows only
    nl = pd.read_csv(paths["task-nl2bash.csv"])
    assert set(nl["method"]) == {"few_shot"}


def test_cross_domain_table(setup):
    store, table, paths = setup
    cross = pd.read_csv(paths["cross_domain.csv"])
    assert set(cross["method"]) == {"full_prompt_ft", "promptintern"}
    pi = _row(cross, "promptintern", "nl2bash")
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


def test_backward_compatible_api(setup):
    store, _, _ = setup
    df = agg.eval_frame(store)  # no price table: no cost columns, still a frame
    t = agg.main_table(df)
    assert "token_reduction_pct" in t.columns and "self_hosted_usd_per_1k" not in t.columns
    assert agg.to_markdown(t).startswith("| model |")
    assert agg.to_markdown(agg.main_table(pd.DataFrame())) == "_no results_"


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
    from harness.measure import run_measurements

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
    from harness.measure import latency_summary

    s = latency_summary([{"id": "a", "ttft_s": 0.1, "e2e_s": 0.5, "compressor_s": 0.25},
                         {"id": "b", "ttft_s": 0.2, "e2e_s": 0.7}], source="batch1_run")
    assert s["e2e_s"]["p50"] == pytest.approx((0.75 + 0.7) / 2) and s["ttft_s"]["p50"] == pytest.approx(0.275)


def test_time_per_output_token_in_the_tables_also_for_older_records():
    from harness.aggregate import latency_fields, main_columns

    samples = [{"id": "a", "ttft_s": 0.1, "e2e_s": 0.5, "output_tokens": 5},   # (0.5 - 0.1) / 4 = 0.1
               {"id": "b", "ttft_s": 0.2, "e2e_s": 0.8, "output_tokens": 4},   # (0.8 - 0.2) / 3 = 0.2
               {"id": "c", "ttft_s": 0.3, "e2e_s": 0.3, "output_tokens": 1}]   # one token: no decode step
    stats = {"n": 3, "p50": 0.0, "p90": 0.0, "mean": 0.0}
    rec = {"measurements": {"latency": {"samples": samples, "e2e_s": stats, "ttft_s": stats}}}  # no tpot_s: older
    assert latency_fields(rec)["tpot_p50_s"] == pytest.approx(0.15)
    b1 = {"samples": [{**s, "batch_size": 1} for s in samples]}  # main run at batch 1, no measurement section
    assert latency_fields(b1)["tpot_p50_s"] == pytest.approx(0.15)
    fmt = dict(main_columns())["per token p50"]
    assert fmt({"tpot_p50_s": 0.15}) == "150 ms" and fmt({"tpot_p50_s": 0.00123}) == "1.23 ms"


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
