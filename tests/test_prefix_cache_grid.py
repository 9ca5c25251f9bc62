"""The cached-prefix condition through a grid (tiny model, Ray with 2 CPUs): a method that sends a fixed template
generates with its prefix cached (the uncached run's tokens) and the engine unit times it in both serving
conditions beside every other evaluation, on the same requests; tables, report and submission compare every row
with both."""

import json

import yaml

from promptintern.harness.config import load_experiment
from promptintern.harness.executor import run_plan
from promptintern.harness.plan import CACHED_SUFFIX, build_plan
from promptintern.harness.store import ResultStore

GRID = {
    "name": "cachegrid",
    "models": ["tiny"],
    "tasks": {"train": ["nl2bash"], "eval": "same", "train_limit": 2, "test_limit": 3},
    "methods": [{"name": "full_prompt_ft"},
                {"name": "promptintern", "schedules": ["linear"], "stages": 2, "rates": [0.5]}],
    "prompt": {"compressor": {"name": "truncate", "tokenizer": "tiny"}},
    "train": {"batch_size": 2, "max_length": 384},
    "generation": {"batch_size": 2, "max_new_tokens": 8, "measure": False},
    "timing": {"max_new_tokens": 4, "queries": 3, "repeats": 2, "batch_sizes": [2], "sweep_requests": 2},
    "retries": 1,
}


def _load(tmp_path, *overrides):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**GRID, "results_dir": str(tmp_path / "results")}))
    return load_experiment(path, list(overrides))


def test_the_plan_serves_fixed_template_methods_cached_and_times_every_condition(tmp_path):
    plain = build_plan(_load(tmp_path))
    cached = build_plan(_load(tmp_path, "generation.prefix_cache=true"))
    evals = {u.config["method"]["name"]: u for u in cached if u.kind == "eval"}
    plain_evals = {u.config["method"]["name"]: u for u in plain if u.kind == "eval"}
    assert evals["full_prompt_ft"].config["prefix_cache"] is True and CACHED_SUFFIX in evals["full_prompt_ft"].label
    assert evals["promptintern"].id == plain_evals["promptintern"].id  # PromptIntern sends no template
    assert evals["full_prompt_ft"].deps == plain_evals["full_prompt_ft"].deps  # the same adapter
    assert {u.id for u in plain if u.kind == "stage"} == {u.id for u in cached if u.kind == "stage"}
    (engine,) = [u for u in cached if u.kind == "engine"]
    assert engine.config["conditions"] == [{"eval": evals["full_prompt_ft"].id, "prefix_cache": False},
                                           {"eval": evals["full_prompt_ft"].id, "prefix_cache": True},
                                           {"eval": evals["promptintern"].id, "prefix_cache": False}]
    # it serves the stages' adapters: they are dependencies too (a lost adapter is trained again first)
    assert set(engine.deps) == {u.id for u in evals.values()} | {d for u in evals.values() for d in u.deps}
    assert not [u for u in build_plan(_load(tmp_path, "timing.measure=false")) if u.kind == "engine"]


def test_cached_rows_match_uncached_generations_and_are_compared(tmp_path, ray_local, data_dir):
    from promptintern.harness.report import build_all
    from promptintern.harness.submission import build_submission, validate_submission

    cfg_plain = _load(tmp_path, "timing.measure=false")
    cfg = _load(tmp_path, "generation.prefix_cache=true")
    store = ResultStore(tmp_path / "results" / cfg["name"])
    assert run_plan(build_plan(cfg_plain), store, data_dir=str(data_dir), progress=False).ok
    plain = next(r for r in store.records(kind="eval", current=False)
                 if r["config"]["method"]["name"] == "full_prompt_ft")
    store.path(plain["unit_id"]).unlink()  # the tables below read the cached grid's records
    summary = run_plan(build_plan(cfg), store, data_dir=str(data_dir), progress=False)
    assert summary.ok, summary.failed
    cached = next(r for r in store.records(kind="eval") if r["config"]["method"]["name"] == "full_prompt_ft")
    assert cached["config"]["prefix_cache"] and cached["generations_sha256"] == plain["generations_sha256"]
    assert cached["adapter_sha256"] == plain["adapter_sha256"]
    prefix = cached["efficiency"]["prefix_cache"]
    assert prefix["tokens"] > 500 and prefix["encode_seconds"] > 0  # the NL2Bash template, encoded once
    for s, p in zip(cached["samples"], plain["samples"], strict=True):
        assert s["rendered_prompt_tokens"] == p["rendered_prompt_tokens"]
        assert s["cached_tokens"] == prefix["tokens"]
        assert s["prefill_tokens"] == s["rendered_prompt_tokens"] - prefix["tokens"]
    (engine,) = store.records(kind="engine")
    conds = {(c["label"], c["prefix_cache"]): c for c in engine["conditions"]}
    unc, cac = conds[("full_prompt_ft", False)], conds[("full_prompt_ft" + CACHED_SUFFIX, True)]
    assert [r["id"] for r in unc["requests"]] == [r["id"] for r in cac["requests"]]  # the same requests
    assert len(unc["requests"]) == 3 * 2 and len(unc["batches"]) == 1 * 2  # 3 queries, 1 batch of 2; 2 repeats
    for u, c in zip(unc["requests"], cac["requests"], strict=True):
        assert u["prefill_tokens"] == u["prompt_tokens"] and c["prefill_tokens"] == c["prompt_tokens"] - prefix["tokens"]
        assert len(u["token_times"]) == u["tokens"] >= 4  # every token timed, at least L decoded
    assert cac["prefix"] and cac["prefix"][0]["tokens"] == prefix["tokens"]

    out = build_all(store)
    main = out["main"]
    md = (store.root / "tables" / "main.md").read_text()
    assert "full_prompt_ft" + CACHED_SUFFIX in md and "sat. throughput vs cached FP" in md
    report = (store.root / "report.md").read_text()
    assert "against the cached full prompt" in report and "Prompt caching:" in report
    pi = main[main["method"] == "promptintern"].iloc[0]
    assert pi["throughput_full_cached"] > 0 and pi["speedup_full_cached"] > 0
    assert pi["prefill_reduction_full_cached_pct"] < pi["prefill_reduction_full_pct"]
    assert pi["speedup_full_method"] == "range" and pi["speedup_full_n"] == 3

    sub = build_submission(store)
    assert validate_submission(json.loads(json.dumps(sub))) == []
    names = {e["method"]["label"]: e for e in sub["entries"]}
    pi = next(e for label, e in names.items() if label.startswith("promptintern"))
    eff = pi["efficiency"]["nl2bash"]
    assert eff["throughput_full_cached"] > 0
    assert eff["prefill_reduction_full_cached_pct"] < eff["prefill_reduction_full_pct"]
    assert names["full_prompt_ft" + CACHED_SUFFIX]["method"]["prefix_cache"] is True
