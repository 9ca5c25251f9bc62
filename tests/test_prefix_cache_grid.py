"""The cached-prefix condition through a grid (tiny model, Ray with 2 CPUs): the plan adds a cached evaluation for
the methods that send a fixed template and leaves every other id alone; the cached record decodes the uncached
one's tokens and records what it prefilled; tables, report and submission compare every row with both."""

import json

import yaml

from harness.config import load_experiment
from harness.executor import run_plan
from harness.plan import CACHED_SUFFIX, build_plan
from harness.store import ResultStore

GRID = {
    "name": "cachegrid",
    "models": ["tiny"],
    "tasks": {"train": ["nl2bash"], "eval": "same", "train_limit": 2, "test_limit": 3},
    "methods": [{"name": "full_prompt_ft"},
                {"name": "promptintern", "schedules": ["linear"], "stages": 2, "rates": [0.5]}],
    "prompt": {"compressor": {"name": "truncate", "tokenizer": "tiny"}},
    "train": {"batch_size": 2, "max_length": 384},
    "generation": {"batch_size": 2, "max_new_tokens": 8, "throughput_batch_sizes": [2], "throughput_repeats": 1,
                   "latency_samples": 2, "latency_repeats": 2},
    "retries": 1,
}


def _load(tmp_path, *overrides):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**GRID, "results_dir": str(tmp_path / "results")}))
    return load_experiment(path, list(overrides))


def test_the_plan_adds_cached_evaluations_for_fixed_template_methods_only(tmp_path):
    plain = build_plan(_load(tmp_path))
    cached = build_plan(_load(tmp_path, "generation.prefix_cache=true"))
    assert {u.id for u in plain} < {u.id for u in cached}  # every uncached unit keeps its id
    extra = [u for u in cached if u.id not in {p.id for p in plain}]
    assert [u.config["method"]["name"] for u in extra] == ["full_prompt_ft"]  # PromptIntern sends no template
    assert extra[0].config["prefix_cache"] is True and CACHED_SUFFIX in extra[0].label
    assert extra[0].deps == next(u for u in plain if u.kind == "eval" and
                                 u.config["method"]["name"] == "full_prompt_ft").deps  # the same adapter


def test_cached_rows_match_uncached_generations_and_are_compared(tmp_path, ray_local, data_dir):
    from harness.leaderboard import build_submission, validate_submission
    from harness.report import build_all

    cfg = _load(tmp_path, "generation.prefix_cache=true")
    units = build_plan(cfg)
    store = ResultStore(tmp_path / "results" / cfg["name"])
    summary = run_plan(units, store, data_dir=str(data_dir), progress=False)
    assert summary.ok, summary.failed
    evals = {(r["config"]["method"]["name"], bool(r["config"].get("prefix_cache"))): r
             for r in store.records(kind="eval")}
    plain, cached = evals[("full_prompt_ft", False)], evals[("full_prompt_ft", True)]
    assert cached["generations_sha256"] == plain["generations_sha256"]  # the same greedy answers
    assert cached["adapter_sha256"] == plain["adapter_sha256"]
    prefix = cached["efficiency"]["prefix_cache"]
    assert prefix["tokens"] > 500 and prefix["encode_seconds"] > 0  # the NL2Bash template, encoded once
    for s, p in zip(cached["samples"], plain["samples"], strict=True):
        assert s["rendered_prompt_tokens"] == p["rendered_prompt_tokens"]
        assert s["cached_tokens"] == prefix["tokens"]
        assert s["prefill_tokens"] == s["rendered_prompt_tokens"] - prefix["tokens"]
        assert "prefill_tokens" not in p
    assert cached["measurements"]["throughput"]["prefix_tokens"] == prefix["tokens"]
    assert all(x["cached_tokens"] == prefix["tokens"] for x in cached["measurements"]["latency"]["samples"])

    out = build_all(store)
    main = out["main"]
    md = (store.root / "tables" / "main.md").read_text()
    assert "full_prompt_ft" + CACHED_SUFFIX in md and "vs cached FP: speedup" in md
    report = (store.root / "report.md").read_text()
    assert "against the cached full prompt" in report and "Prompt caching:" in report
    pi = main[main["method"] == "promptintern"].iloc[0]
    assert pi["speedup_cached"] > 0 and pi["token_reduction_cached_pct"] < pi["token_reduction_pct"]
    assert pi["break_even"] >= 0 and pi["break_even_cached"] >= pi["break_even"]

    sub = build_submission(store)
    assert validate_submission(json.loads(json.dumps(sub))) == []
    names = {e["method"]["label"]: e for e in sub["entries"]}
    pi = next(e for label, e in names.items() if label.startswith("promptintern"))
    eff = pi["efficiency"]["nl2bash"]
    assert eff["speedup_vs_cached_full_prompt"] > 0
    assert eff["token_reduction_vs_cached_full_prompt_pct"] < eff["token_reduction_vs_full_prompt_pct"]
    assert names["full_prompt_ft" + CACHED_SUFFIX]["method"]["prefix_cache"] is True
