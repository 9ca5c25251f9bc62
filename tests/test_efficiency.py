"""Efficiency figures that mean what they say: the engine view isolates what a prompt costs, intervals mean
their level (or say they are a range), costs come from each request's own compute, and every table computes its
comparisons in one place."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from _results_factory import build_store, write_price_dir

from promptintern.harness.stats import paired_difference, ratio_interval, score_interval

ROOT = Path(__file__).resolve().parent.parent


# -- the engine view against the as-answered view, on a real model ----------------------------------------------

def test_two_conditions_that_differ_only_in_answer_length(tiny):
    """Same model, same prompts; one condition's answers are 8 tokens, the other's 48. The engine view decodes the
    same L = 8 tokens for both: its speedup is 1 within the noise of the machine (stated: 1/1.5 to 1.5, the tiny
    model's steps take milliseconds); the as-answered view is not."""
    from promptintern.harness.efficiency import condition_figures, request_times
    from promptintern.harness.engine_unit import Condition, time_interleaved
    from promptintern.harness.settings import TimingSettings

    model, tok = tiny
    # prompts of a few hundred tokens: every timed call is milliseconds of real work, not of scheduling noise
    prompts = [f"Write the shell command number {i} that lists files. " + "Use find and sort. " * 60
               for i in range(4)]
    ids = [f"q{i}" for i in range(4)]
    settings = TimingSettings(max_new_tokens=8, queries=4, repeats=6, batch_sizes=[2], sweep_requests=16,
                              exclusive=False)

    def cond(answer):
        return Condition(eval_id="e", label=f"answers {answer}", cached=False, adapter=None, prompts=[],
                         rendered=prompts, ids=ids, answer_tokens=dict.fromkeys(ids, answer),
                         compressor_s=dict.fromkeys(ids, 0.0))

    short, long = cond(8), cond(48)
    out = time_interleaved([short, long], tok, settings, "hf", lambda c: (model, None))  # as the engine unit does
    timed = {"short": out[0], "long": out[1]}
    figs = {}
    for name, c in (("short", short), ("long", long)):
        figs[name] = condition_figures({**timed[name], "answer_tokens": c.answer_tokens,
                                        "compressor_s": c.compressor_s}, settings.to_dict(), {})
    (fs, ts), (fl, tl) = figs["short"], figs["long"]
    assert all(r["tokens"] == 8 for r in timed["short"]["requests"])
    assert all(r["tokens"] == 48 for r in timed["long"]["requests"])  # decoded to the answer's end
    engine = ratio_interval(tl.engine_b1, ts.engine_b1)
    saturation = ratio_interval(tl.saturation, ts.saturation)
    answered = ratio_interval(tl.answered, ts.answered)
    assert 1 / 1.5 < engine["ratio"] < 1.5, engine  # the same prompt, the same 8 tokens
    assert 1 / 1.5 < saturation["ratio"] < 1.5, saturation
    assert answered["ratio"] > 3, answered  # 48 tokens against 8: what a user of each would wait
    assert fl["answered_output_tokens"] == 48 and fs["answered_output_tokens"] == 8
    # the as-answered end is a measured token's time, not a model of it
    req = timed["long"]["requests"][0]
    assert request_times(req, 8, 48)["answered"] == req["token_times"][47]


def test_conditions_are_timed_interleaved_round_by_round(tiny):
    """Every condition's share of each round is timed before the next round starts, the order rotated: a slow
    minute of the machine falls on every condition, and the requests a ratio pairs are timed close together."""
    from promptintern.harness.engine_unit import Condition, time_interleaved
    from promptintern.harness.settings import TimingSettings

    model, tok = tiny
    ids = [f"q{i}" for i in range(6)]
    settings = TimingSettings(max_new_tokens=2, queries=6, repeats=2, rounds=3, batch_sizes=[2], sweep_requests=6,
                              exclusive=False)
    conds = [Condition(eval_id="e", label=x, cached=False, adapter=None, prompts=[], rendered=[f"{x} {i}" for i in ids],
                       ids=ids, answer_tokens=dict.fromkeys(ids, 2), compressor_s=dict.fromkeys(ids, 0.0))
             for x in "abc"]
    order = []
    timed = time_interleaved(conds, tok, settings, "hf", lambda c: (order.append(c.label), (model, None))[1])
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b",  # repeat 0, rounds 0-2
                     "b", "c", "a", "c", "a", "b", "a", "b", "c"]  # repeat 1
    for t in timed:
        assert [(r["repeat"], r["index"]) for r in t["requests"]] == [(r, i) for r in range(2) for i in range(6)]
        assert [(b["repeat"], b["index"]) for b in t["batches"]] == [(r, j) for r in range(2) for j in range(3)]


def test_engine_times_are_read_from_the_token_clock():
    from promptintern.harness.efficiency import request_times

    req = {"tokens": 6, "ttft_s": 0.5, "e2e_s": 1.0, "token_times": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}
    t = request_times(req, 4, 3)
    assert (t["ttft"], t["e2el"], t["answered"]) == pytest.approx((0.5, 0.8, 0.7))
    assert t["tpot"] == pytest.approx(0.1) and t["itl"] == pytest.approx([0.1, 0.1, 0.1])
    # an answer longer than what was decoded: extended at the request's own TPOT, and flagged
    t = request_times(req, 4, 10, compressor_s=0.25)
    assert t["answered"] == pytest.approx(1.0 + 4 * 0.1 + 0.25) and t["extended"]
    assert t["ttft"] == pytest.approx(0.75)  # the compressor runs before the first token


# -- intervals that mean their level -----------------------------------------------------------------------------

def test_zero_of_six_against_zero_of_six_is_no_precise_null():
    a = {str(i): 0.0 for i in range(6)}
    d = paired_difference(a, a, scale=100)
    assert d["method"] == "newcombe" and d["mean"] == 0 and d["hi"] - d["lo"] > 70  # about ±39 points
    s = score_interval(list(a.values()), scale=100)
    assert s["method"] == "wilson" and s["lo"] == 0 and s["hi"] == pytest.approx(39.0, abs=0.1)
    from promptintern.harness.format import delta

    row = {"d": d["mean"], "d_lo": d["lo"], "d_hi": d["hi"], "d_ns": d["includes_zero"]}
    assert delta("d")(row) == "+0.0 [-39.0, +39.0] ns"


def test_newcombe_paired_interval_against_published_examples():
    """Two worked examples of the paired 2x2 table as printed with Newcombe's hybrid score interval (Fagerland,
    Lydersen & Laake, 'Statistical Analysis of Contingency Tables', ch. 8; the R package contingencytables
    implements the same): Bentur et al. (2009) and Cavo et al. (2012)."""
    from promptintern.harness.stats import paired_binary_difference

    def table(both, only_a, only_b, neither):
        a, b, i = {}, {}, 0
        for x, y, c in ((1, 1, both), (1, 0, only_a), (0, 1, only_b), (0, 0, neither)):
            for _ in range(c):
                a[str(i)], b[str(i)], i = x, y, i + 1
        return a, b

    d = paired_binary_difference(*table(1, 1, 7, 12))
    assert (d["mean"], d["lo"], d["hi"]) == pytest.approx((-0.2857, -0.5069, -0.0256), abs=1e-4)
    d = paired_binary_difference(*table(59, 6, 16, 80))
    assert (d["mean"], d["lo"], d["hi"]) == pytest.approx((-0.0621, -0.1186, -0.0046), abs=1e-4)
    assert d["p_value"] == pytest.approx(0.0525, abs=1e-4)  # exact McNemar: binomial test of 6 vs 16


def test_three_timed_queries_give_a_labelled_range_not_a_ci():
    r = ratio_interval({"a": [2.0, 2.2], "b": [3.0], "c": [2.5]}, {"a": [1.0], "b": [1.0, 1.2], "c": [1.0]})
    assert r["method"] == "range" and r["n"] == 3
    per = [2.1 / 1.0, 3.0 / 1.1, 2.5 / 1.0]
    assert (r["lo"], r["hi"]) == pytest.approx((min(per), max(per)))
    from promptintern.harness.format import ratio

    text = ratio("s")({"s": r["ratio"], "s_lo": r["lo"], "s_hi": r["hi"], "s_method": r["method"]})
    assert "range" in text and "[" not in text


def test_the_cluster_bootstrap_covers_at_its_level():
    """Simulated timings (queries with their own cost, repeats with noise): the interval over queries and
    repeats covers the true ratio in about 95 % of runs, and the point of a second run falls inside the first
    run's interval far more often than a bootstrap over 3 queries' means would allow."""
    rng = np.random.default_rng(0)
    true, cover, trials = 1.7, 0, 150
    for _ in range(trials):
        base = rng.lognormal(0.0, 0.4, 20)  # each query's own cost
        num = {str(i): list(base[i] * true * rng.lognormal(0, 0.15, 2)) for i in range(20)}
        den = {str(i): list(base[i] * rng.lognormal(0, 0.15, 2)) for i in range(20)}
        r = ratio_interval(num, den, n_boot=400)
        assert r["method"] == "cluster_bootstrap"
        cover += r["lo"] <= true <= r["hi"]
    assert cover / trials >= 0.88, cover / trials


# -- one place for each concept ----------------------------------------------------------------------------------

def _definitions(pattern: str) -> list[str]:
    hits = []
    for p in (ROOT / "promptintern" / "harness").glob("*.py"):
        hits += [f"{p.name}: {m.group(0)}" for m in re.finditer(pattern, p.read_text(), re.M)]
    return hits


def test_one_break_even_one_reference_lookup_one_record_builder_one_formatter():
    assert len(_definitions(r"^def break_even\(")) == 1
    assert len(_definitions(r"^def (reference_index|_baseline_index|_baseline_entry)\(")) == 1
    # evaluation records are assembled in harness/records.py only
    assert [h for h in _definitions(r"\"kind\": \"eval\"") if not h.startswith("records.py")] == []
    assert [h for h in _definitions(r"^def (fmt_\w+|_usd|_f|_interval|_queries)\(")] == []
    assert len(_definitions(r"^def usd\(")) == 1


def test_tables_decision_report_and_submission_agree_figure_for_figure(tmp_path, monkeypatch):
    from promptintern.harness.decision import decision_rows
    from promptintern.harness.report import build_all

    monkeypatch.setenv("PROMPTINTERN_PRICES_DIR", str(write_price_dir(tmp_path / "prices")))
    store = build_store(tmp_path / "exp")
    import json

    out = build_all(store)
    main = out["main"]
    sub = json.loads(out["submission"].read_text())
    decision = {r["label"]: r for r in decision_rows(main) if r["eval_task"] == "mbpp"}
    entries = {e["method"]["label"]: e for e in sub["entries"]}
    report = out["report"]["markdown"].read_text()
    for _, r in main[(main["eval_task"] == "mbpp") & (main["status"] == "ok")].iterrows():
        e = entries[r["label"]]["efficiency"]["mbpp"]
        d = decision[r["label"]]
        for col in ("speedup_full", "throughput_full_cached", "self_hosted_usd_per_1k", "answered_e2el_s",
                    "api_usd_per_1k", "break_even_base"):
            v = r[col]
            claimed = e[col]
            if isinstance(v, float) and math.isnan(v):
                assert claimed is None, (r["label"], col)
            elif math.isinf(v):
                assert claimed == "never", (r["label"], col)
            else:
                assert claimed == pytest.approx(v), (r["label"], col)
        for col in ("throughput_base", "speedup_base", "break_even_base", "delta_base"):
            a, b = r[col], d[col]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b), (r["label"], col)
    pi = main[main["label"] == "promptintern/linear-T2/r0.5"].iloc[0]
    # the report's sentence restates the same figure, formatted by the same formatter
    assert f"{pi['throughput_full_cached']:.2f}× (range" in report


def test_main_csv_has_both_views_and_the_timed_queries(tmp_path):
    import pandas as pd

    from promptintern.harness.cost import load_price_table
    from promptintern.harness.tables import write_tables

    store = build_store(tmp_path / "exp")
    paths = write_tables(store, load_price_table("test-prices", write_price_dir(tmp_path / "prices")))
    cols = set(pd.read_csv(paths["csv"]).columns)
    assert {"ttft_s", "tpot_s", "e2el_s", "sat_rps", "sat_tok_s", "engine_queries", "engine_L", "goodput_rps",
            "acc_goodput_rps", "answered_e2el_s", "answered_output_tokens", "answered_usd_per_1k",
            "engine_usd_per_1k", "throughput_full_cached", "throughput_full_cached_lo",
            "throughput_full_cached_method", "break_even_full_cached"} <= cols
