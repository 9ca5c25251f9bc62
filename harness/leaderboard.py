"""Leaderboard submissions: build one from a results folder, validate one, render a leaderboard from many.

A submission (``submission.json``) holds one *entry* per system (model x method grid point x train task x seed):

- ``config``: model (the system's name), base model, adapter hash (sha256 of the adapter files), precision;
- ``method``: name, schedule, stages, compression rate, the per-stage template rates / example counts, the
  compressor and retriever, the train task;
- ``results`` per eval task: primary metric, score, standard error, n;
- ``efficiency`` per eval task: input tokens (model tokenizer, cl100k_base, o200k_base), output tokens, token
  reduction and batch-1 latency speedup vs full-prompt fine-tuning, latency p50/p90, TTFT p50/p90, throughput,
  seconds per query, cost per 1k queries (self-hosted and per API model) and the price table id;
- ``meta``: versions, hardware, seed, git commit, the result files' unit ids;
- ``records`` per eval task: the per-sample records every number above is recomputed from (ids, generations,
  scores, token counts, timings), the batch-1 latency samples and the throughput points, and the sha256 of the
  generations.

``validate_submission`` rejects a malformed submission (missing field, wrong type), an inconsistent one (a metric
that does not match its records), a tampered one (generations that do not match their hash) and one priced with an
unknown price table, each with the reason. ``build_leaderboard`` ranks the valid entries by primary metric within
each eval task and writes ``leaderboard.html`` (self-contained) and ``leaderboard.md``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import math
from pathlib import Path

from .aggregate import BASELINE_METHOD, display_score, fmt_pct, fmt_s, fmt_usd, fmt_x
from .cost import PriceTable, PriceTableError, available_tables, load_price_table, prices_dir, record_costs
from .measure import generations_sha256, mean_se, percentile, query_latency
from .store import ResultStore

FORMAT = "promptintern-submission"
FORMAT_VERSION = 1
REL_TOL = 1e-6
ABS_TOL = 1e-9


# -- helpers -----------------------------------------------------------------------------------------------------

def _clean(x):
    """JSON-safe: NaN/inf -> None, recursively."""
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def _nn(x):
    return None if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))) else x


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _system_name(model: str, label: str, train_task: str | None, seed: int) -> str:
    return f"{model} | {label} | train {train_task or '-'} | seed {seed}"


def _sample_record(s: dict, primary: str) -> dict:
    score = s.get("score") or {}
    scores = {k: v for k, v in score.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    scores.update({k: float(v) for k, v in score.items() if isinstance(v, bool)})
    val = score.get(primary)
    return _clean({
        "id": str(s["id"]),
        "generation": s["generation"],
        "score": None if val is None else float(val),
        "scores": scores,
        "status": score.get("status"),
        "tokens": dict(s["tokens"]),
        "output_tokens": int(s["output_tokens"]),
        "prefill_tokens": s.get("prefill_tokens"),
        "output_tokens_tiktoken": s.get("output_tokens_tiktoken"),
        "parts_tiktoken": s.get("parts_tiktoken"),
        "ttft_s": s["ttft_s"],
        "e2e_s": s["e2e_s"],
        "batch_size": s["batch_size"],
        "batch_index": s["batch_index"],
        "compressor_s": s.get("compressor_s", 0.0),
    })


def _pseudo_record(entry: dict, task: str) -> dict:
    """The slice of an eval result that cost.record_costs reads, rebuilt from a submission's records."""
    rec = entry["records"][task]
    samples = [{**s, "tokens": s["tokens"], "generation": s["generation"]} for s in rec["samples"]]
    return {
        "config": {"train_task": entry["method"].get("train_task"), "method": {"name": entry["method"]["name"]},
                   "test_compressed": bool(entry["method"].get("test_compressed"))},
        "samples": samples,
        "efficiency": {"n": len(samples), "generation_seconds": rec["generation_seconds"],
                       "compressor_seconds": rec["compressor_seconds"]},
        "hardware": entry["meta"]["hardware"],
    }


def _measured(entry: dict, task: str) -> dict:
    """Every efficiency number that is a direct function of the records (no baseline, no prices)."""
    rec = entry["records"][task]
    samples = rec["samples"]
    n = len(samples)
    lat = rec.get("latency") or []
    tp = rec.get("throughput") or []
    best = max(tp, key=lambda p: p["tokens_per_s"]) if tp else None
    encodings = sorted({k for s in samples for k in s["tokens"]})
    out = {
        "mean_input_tokens": {e: (sum(s["tokens"][e] for s in samples) / n if n else None) for e in encodings},
        "mean_output_tokens": sum(s["output_tokens"] for s in samples) / n if n else None,
        "seconds_per_query": (rec["generation_seconds"] + rec["compressor_seconds"]) / n if n else None,
        "latency_p50_s": percentile([query_latency(x)[1] for x in lat], 50) if lat else None,
        "latency_p90_s": percentile([query_latency(x)[1] for x in lat], 90) if lat else None,
        "ttft_p50_s": percentile([query_latency(x)[0] for x in lat], 50) if lat else None,
        "ttft_p90_s": percentile([query_latency(x)[0] for x in lat], 90) if lat else None,
        "throughput_tokens_per_s": best["tokens_per_s"] if best else None,
        "throughput_samples_per_s": best["samples_per_s"] if best else None,
        "throughput_batch_size": best["batch_size"] if best else None,
    }
    if rec.get("prefix_cache"):  # the cached-prefix condition: what each query prefilled, the one-time encoding
        out["prefill_tokens"] = sum(s.get("prefill_tokens", s["tokens"].get("model", 0)) for s in samples) / n \
            if n else None
        out["prefix_cache"] = rec["prefix_cache"]
    return out


def _results(entry: dict, task: str) -> dict:
    rec = entry["records"][task]
    vals = [s["score"] for s in rec["samples"] if s["score"] is not None]
    mean, se = mean_se(vals)
    return {"score": _nn(mean), "score_se": _nn(se), "n": len(vals)}


def _baseline_entry(entries: list[dict], entry: dict, task: str, cached: bool = False) -> dict | None:
    """The full-prompt FT entry this entry's task is compared with: same base model and seed, trained on the
    entry's train task (the eval task itself for untrained entries); ``cached``: the one served with its prefix
    KV cache reused."""
    train = entry["method"].get("train_task") or task
    for e in entries:
        if (e["method"]["name"] == BASELINE_METHOD and e["config"]["base_model"] == entry["config"]["base_model"]
                and e["meta"]["seed"] == entry["meta"]["seed"] and e["method"].get("train_task") == train
                and bool(e["method"].get("prefix_cache")) == cached and task in e["records"]):
            return e
    return None


def _comparisons(entries: list[dict], entry: dict, task: str) -> dict:
    out = _against(entry, _baseline_entry(entries, entry, task), task, "full_prompt")
    cached = _baseline_entry(entries, entry, task, cached=True)
    if cached is not None:
        out.update(_against(entry, cached, task, "cached_full_prompt", tokens="prefill_tokens"))
    return out


def _against(entry: dict, base: dict | None, task: str, name: str, tokens: str = "input") -> dict:
    """Token reduction and batch-1 speedup of ``entry`` against ``base`` on ``task`` (keys suffixed ``name``);
    ``tokens``: "input" (all input tokens) or "prefill_tokens" (what each query computed, a cached prefix left out)."""
    out = {f"token_reduction_vs_{name}_pct": None, f"speedup_vs_{name}": None}
    if base is None:
        return out
    mine, theirs = _measured(entry, task), _measured(base, task)
    def toks(m):
        return m.get("prefill_tokens", m["mean_input_tokens"].get("model")) if tokens == "prefill_tokens" else \
            m["mean_input_tokens"].get("model")

    t_mine, t_base = toks(mine), toks(theirs)
    if t_mine is not None and t_base:
        out[f"token_reduction_vs_{name}_pct"] = 100.0 * (1.0 - t_mine / t_base)
    # as in the main table: mean batch-1 latency of full-prompt FT over this entry's, on the queries both timed
    from .measure import per_query_latency
    from .stats import paired_ratio

    ratio = paired_ratio(per_query_latency(entry["records"][task].get("latency") or []),
                         per_query_latency(base["records"][task].get("latency") or []))["ratio"]
    if ratio == ratio:  # not NaN
        out[f"speedup_vs_{name}"] = ratio
    elif mine["latency_p50_s"] and theirs["latency_p50_s"]:  # no common query ids: the ratio of p50s
        out[f"speedup_vs_{name}"] = theirs["latency_p50_s"] / mine["latency_p50_s"]
    return out


def _costs(entry: dict, task: str, table: PriceTable, hardware_key: str | None) -> dict:
    c = record_costs(_pseudo_record(entry, task), table, hardware_key)
    return _clean({
        "self_hosted_usd": c["self_hosted"]["usd_per_1k"],
        "hardware_key": c["self_hosted"]["hardware_key"],
        "api_usd": {m: a["usd_per_1k"] for m, a in c["api"].items()},
        "api_usd_cached": {m: a["usd_per_1k_cached"] for m, a in c["api"].items()},
    })


def submission_generations_sha256(entries: list[dict]) -> str:
    pairs = []
    for e in entries:
        for task in sorted(e["records"]):
            pairs += [(f"{e['name']}::{task}::{s['id']}", s["generation"]) for s in e["records"][task]["samples"]]
    return generations_sha256(pairs)


# -- building ----------------------------------------------------------------------------------------------------

def build_submission(store: ResultStore, price_table: PriceTable | str | None = None,
                     hardware_key: str | None = None, decision: list[dict] | None = None) -> dict:
    """A submission for every system in a results folder, every number computed from the result files.
    ``decision``: :func:`harness.decision.decision_rows` for these prices, if already computed."""
    if not isinstance(price_table, PriceTable):
        price_table = load_price_table(price_table)
    from .aggregate import chain_key, stage_records_by_chain
    from .decision import decision_rows, json_rows
    from .plan import eval_label

    if decision is None:
        decision = decision_rows(store, price_table, hardware_key)
    chains = stage_records_by_chain(store)
    groups: dict[tuple, list[dict]] = {}
    for rec in store.records(kind="eval"):
        c = rec["config"]
        groups.setdefault((c["model"], eval_label(c), c.get("train_task"), c["seed"]), []).append(rec)
    entries = []
    for (model, label, train_task, seed), recs in groups.items():
        recs.sort(key=lambda r: r["config"]["eval_task"])
        first = recs[0]
        c, m = first["config"], first["config"]["method"]
        stages = chains.get(chain_key(c), []) if train_task else []
        info = first.get("model_info") or {}
        entry = {
            "name": _system_name(model, label, train_task, seed),
            "config": {
                "model": f"{model}+{label}" + (f"@{train_task}" if train_task else ""),
                "base_model": model,
                "adapter_sha256": first.get("adapter_sha256"),
                "precision": info.get("dtype"),
                "n_params": info.get("n_params"),
            },
            "method": {
                "name": m["name"], "label": label, "schedule": m.get("schedule"), "stages": len(stages),
                "lam": m.get("lam"), "rate": m.get("rate"), "k_examples": m.get("k_examples"),
                "stage_template_rates": [s["config"]["rule"]["template_rate"] for s in stages],
                "stage_examples": [s["config"]["rule"]["n_examples"] for s in stages],
                "test_rule": c.get("rule"), "test_compressed": bool(c.get("test_compressed")),
                "prefix_cache": bool(c.get("prefix_cache")),
                "compressor": (c.get("prompt") or {}).get("compressor"),
                "retriever": (c.get("prompt") or {}).get("retriever"),
                "train_task": train_task,
                "train_items": (stages[0]["config"].get("items") or {}).get("n_train") if stages else None,
            },
            "results": {}, "efficiency": {}, "records": {},
            "meta": {"versions": first.get("versions"), "hardware": first.get("hardware"), "seed": seed,
                     "git_commit": first.get("git_commit"),
                     "unit_ids": {r["config"]["eval_task"]: r["unit_id"] for r in recs}},
        }
        for rec in recs:
            task = rec["config"]["eval_task"]
            primary = rec["task"]["primary_metric"]
            meas = rec.get("measurements") or {}
            lat = (meas.get("latency") or {}).get("samples") or []
            if not lat:  # main-run samples at batch 1 are batch-1 latencies too
                lat = [{"id": s["id"], "ttft_s": s["ttft_s"], "e2e_s": s["e2e_s"], "compressor_s": s.get("compressor_s", 0.0)}
                       for s in rec["samples"] if s.get("batch_size") == 1]
            samples = [_sample_record(s, primary) for s in rec["samples"]]
            eff = rec.get("efficiency") or {}
            entry["records"][task] = _clean({
                "metric": primary,
                "samples": samples,
                "generation_seconds": eff.get("generation_seconds") or 0.0,
                "compressor_seconds": eff.get("compressor_seconds") or 0.0,
                "generation_batch_size": eff.get("generation_batch_size") or (c.get("generation") or {}).get("batch_size"),
                "latency": [{k: x.get(k, 0.0 if k in ("compressor_s", "repeat") else None)
                             for k in ("id", "repeat", "ttft_s", "e2e_s", "compressor_s", "prompt_tokens",
                                       "output_tokens")}
                            for x in lat],
                "throughput": ((meas.get("throughput") or {}).get("points")) or [],
                "throughput_max_new_tokens": (meas.get("throughput") or {}).get("max_new_tokens"),
                "prefix_cache": eff.get("prefix_cache"),
                "generations_sha256": generations_sha256((s["id"], s["generation"]) for s in samples),
                # what `leaderboard validate --rescore` checks the local task against: its scoring identity, its
                # data files' sha256 and the planned test items (content hash and count)
                **{k: rec["config"][k] for k in ("scoring", "data", "items") if rec["config"].get(k)},
            })
            entry["results"][task] = {"metric": primary, **_results(entry, task)}
        entries.append(entry)
    for entry in entries:
        for task in entry["records"]:
            entry["efficiency"][task] = _clean({
                **_measured(entry, task),
                **_comparisons(entries, entry, task),
                "cost_per_1k_queries": _costs(entry, task, price_table, hardware_key),
                "price_table": price_table.id,
            })
    entries.sort(key=lambda e: e["name"])
    folders, selection = _experiment_record(store, {t for e in entries for t in e["records"]})
    return _clean({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "experiment": store.root.name,
        "price_table": {"id": price_table.id, "retrieved": price_table.retrieved,
                        "sha256": file_sha256(price_table.path) if price_table.path else None},
        "generations_sha256": submission_generations_sha256(entries),
        **({"task_folders": folders} if folders else {}),
        **({"selection": selection} if selection else {}),
        "entries": entries,
        # "does internalizing pay?" (harness.decision): the same rows as the report's, when a few_shot reference ran
        **({"decision": json_rows(decision)} if decision else {}),
    })


def _experiment_record(store: ResultStore, task_names: set[str]) -> tuple[dict | None, dict | None]:
    """From the results folder's ``experiment.json`` (absent: (None, None)): the experiment's task folders
    (relative to the results folder) and, per evaluated task, how its test items were drawn
    (:func:`harness.selection.draw`), so a re-score can tell which test items the grid should have."""
    from .selection import limit_for

    try:
        cfg = json.loads((store.root / "experiment.json").read_text())
        t = cfg.get("tasks") or {}
    except (OSError, ValueError):
        return None, None
    if not isinstance(t, dict):
        return None, None
    folders = None
    if cfg.get("task_paths"):
        folders = {"paths": [str(p) for p in cfg["task_paths"]],
                   "allow_shadowing": bool(cfg.get("allow_task_shadowing", False))}
    stratify = t.get("stratify") or {}
    selection = {name: {"test_limit": limit_for(t.get("test_limit"), name), "sample_seed": int(t.get("sample_seed", 0)),
                        "stratify": stratify.get(name)} for name in sorted(task_names)}
    return folders, selection


def write_submission(store: ResultStore, path: str | Path | None = None, price_table: PriceTable | str | None = None,
                     hardware_key: str | None = None, decision: list[dict] | None = None) -> Path:
    import os

    sub = build_submission(store, price_table, hardware_key, decision)
    out = Path(path) if path else store.root / "submission.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if sub.get("task_folders"):  # relative to the submission file, where `validate --rescore` looks for them
        sub["task_folders"]["paths"] = [os.path.relpath((store.root / p).resolve(), out.parent.resolve())
                                        for p in sub["task_folders"]["paths"]]
    out.write_text(json.dumps(sub, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    return out


# -- validation --------------------------------------------------------------------------------------------------

NUM = "number"  # int or float, not bool
OPT_NUM = (NUM, None)
OPT_STR = (str, None)
ANY = "any"

SAMPLE = {"id": str, "generation": str, "score": OPT_NUM, "scores": {"*": NUM}, "tokens": {"*": int},
          "output_tokens": int, "ttft_s": NUM, "e2e_s": NUM, "batch_size": int, "batch_index": int}
TASK_RECORDS = {"metric": str, "samples": [SAMPLE], "generation_seconds": NUM, "compressor_seconds": NUM,
                "latency": [{"id": str, "ttft_s": NUM, "e2e_s": NUM, "compressor_s": NUM}],
                "throughput": [{"batch_size": int, "tokens_per_s": NUM, "samples_per_s": NUM, "seconds": NUM}],
                "generations_sha256": str}
RESULT = {"metric": str, "score": OPT_NUM, "score_se": OPT_NUM, "n": int}
EFFICIENCY = {"mean_input_tokens": {"*": OPT_NUM}, "mean_output_tokens": OPT_NUM, "seconds_per_query": OPT_NUM,
              "latency_p50_s": OPT_NUM, "latency_p90_s": OPT_NUM, "ttft_p50_s": OPT_NUM, "ttft_p90_s": OPT_NUM,
              "throughput_tokens_per_s": OPT_NUM, "throughput_samples_per_s": OPT_NUM,
              "throughput_batch_size": (int, None),
              "token_reduction_vs_full_prompt_pct": OPT_NUM, "speedup_vs_full_prompt": OPT_NUM,
              "cost_per_1k_queries": {"self_hosted_usd": OPT_NUM, "hardware_key": OPT_STR,
                                      "api_usd": {"*": OPT_NUM}, "api_usd_cached": {"*": OPT_NUM}},
              "price_table": str}
ENTRY = {
    "name": str,
    "config": {"model": str, "base_model": str, "adapter_sha256": OPT_STR, "precision": OPT_STR},
    "method": {"name": str, "label": str, "schedule": OPT_STR, "stages": int, "rate": OPT_NUM,
               "stage_template_rates": [NUM], "stage_examples": [int], "compressor": (dict, None),
               "train_task": OPT_STR},
    "results": {"*": RESULT},
    "efficiency": {"*": EFFICIENCY},
    "meta": {"versions": (dict, None), "hardware": dict, "seed": int, "git_commit": OPT_STR},
    "records": {"*": TASK_RECORDS},
}
SCHEMA = {"format": str, "format_version": int, "created": str, "experiment": str,
          "price_table": {"id": str, "retrieved": str, "sha256": OPT_STR},
          "generations_sha256": str, "entries": [ENTRY]}


def _type_ok(value, t) -> bool:
    if t is None:
        return value is None
    if t == NUM:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if t == ANY:
        return True
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(t, type):
        return isinstance(value, t)
    return False


def _tname(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(_tname(x) for x in t)
    if t is None:
        return "null"
    if t == NUM:
        return "number"
    if isinstance(t, dict):
        return "object"
    if isinstance(t, list):
        return "array"
    return t.__name__


def check_schema(obj, spec, path: str = "$", errors: list[str] | None = None) -> list[str]:
    """Structural check: required keys present with the right types ("*" = any key, [spec] = list of spec)."""
    errors = [] if errors is None else errors
    if isinstance(spec, tuple):
        simple = [t for t in spec if not isinstance(t, dict | list)]
        if any(_type_ok(obj, t) for t in simple):
            return errors
        for t in spec:
            if isinstance(t, dict | list):
                return check_schema(obj, t, path, errors)
        errors.append(f"malformed: {path} must be {_tname(spec)}, got {type(obj).__name__}")
        return errors
    if isinstance(spec, dict):
        if not isinstance(obj, dict):
            errors.append(f"malformed: {path} must be an object, got {type(obj).__name__}")
            return errors
        if "*" in spec:
            for k, v in obj.items():
                check_schema(v, spec["*"], f"{path}.{k}", errors)
            return errors
        for k, sub in spec.items():
            if k not in obj:
                errors.append(f"malformed: missing field {path}.{k}")
            else:
                check_schema(obj[k], sub, f"{path}.{k}", errors)
        return errors
    if isinstance(spec, list):
        if not isinstance(obj, list):
            errors.append(f"malformed: {path} must be an array, got {type(obj).__name__}")
            return errors
        for i, v in enumerate(obj):
            check_schema(v, spec[0], f"{path}[{i}]", errors)
        return errors
    if not _type_ok(obj, spec):
        errors.append(f"malformed: {path} must be {_tname(spec)}, got {type(obj).__name__} ({obj!r:.40})")
    return errors


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(float(a) - float(b)) <= max(ABS_TOL, REL_TOL * max(abs(float(a)), abs(float(b))))


def _compare(claimed: dict, recomputed: dict, where: str, errors: list[str]) -> None:
    for k, v in recomputed.items():
        if isinstance(v, dict):
            _compare(claimed.get(k) or {}, v, f"{where}.{k}", errors)
            extra = set(claimed.get(k) or {}) - set(v)
            for x in sorted(extra):
                errors.append(f"inconsistent: {where}.{k}.{x} has no counterpart in the records")
        elif not _close(claimed.get(k), v):
            errors.append(f"inconsistent: {where}.{k} is {claimed.get(k)!r} but the records give {v!r}")


def validate_submission(sub, *, directory: Path | None = None, rescore: bool = False,
                        data_dir: str | None = None, include: list | None = None,
                        allow_shadowing: bool | None = None, base_dir: str | Path | None = None) -> list[str]:
    """Every reason the submission is not acceptable; an empty list means it is valid. ``rescore``: also score
    every generation again (:func:`rescore_submission`; ``data_dir``, ``include``, ``allow_shadowing`` and
    ``base_dir`` are its arguments)."""
    errors = check_schema(sub, SCHEMA)
    if errors:
        return errors
    if sub["format"] != FORMAT or sub["format_version"] != FORMAT_VERSION:
        return [f"malformed: format must be {FORMAT!r} version {FORMAT_VERSION}, got {sub['format']!r} "
                f"version {sub['format_version']!r}"]
    d = directory or prices_dir()
    pt_id = sub["price_table"]["id"]
    try:
        table = load_price_table(pt_id, d)
    except PriceTableError as e:
        return [f"unknown price table: {e}"]
    if sub["price_table"].get("sha256") and table.path and file_sha256(table.path) != sub["price_table"]["sha256"]:
        errors.append(f"inconsistent: price table {pt_id!r} differs from the one the submission was priced with "
                      "(its sha256 changed)")
    if not sub["entries"]:
        errors.append("malformed: no entries")
    names = [e["name"] for e in sub["entries"]]
    if len(set(names)) != len(names):
        errors.append("malformed: duplicate entry names")
    entries = sub["entries"]
    for i, e in enumerate(entries):
        where = f"entries[{i}] ({e['name']})"
        tasks = set(e["records"])
        if set(e["results"]) != tasks or set(e["efficiency"]) != tasks:
            errors.append(f"inconsistent: {where}: results, efficiency and records must cover the same tasks "
                          f"(results {sorted(e['results'])}, efficiency {sorted(e['efficiency'])}, records {sorted(tasks)})")
            continue
        for task in sorted(tasks):
            rec = e["records"][task]
            w = f"{where}.{task}"
            h = generations_sha256((s["id"], s["generation"]) for s in rec["samples"])
            if h != rec["generations_sha256"]:
                errors.append(f"tampered: {w}: the generations do not match their sha256 "
                              f"(recorded {rec['generations_sha256'][:12]}…, recomputed {h[:12]}…)")
            ids = [s["id"] for s in rec["samples"]]
            if len(set(ids)) != len(ids):
                errors.append(f"inconsistent: {w}: duplicate sample ids")
            res = e["results"][task]
            if res["metric"] != rec["metric"]:
                errors.append(f"inconsistent: {w}: results metric {res['metric']!r} but records metric {rec['metric']!r}")
            _compare(res, _results(e, task), f"{w}.results", errors)
            eff = e["efficiency"][task]
            if eff["price_table"] != pt_id:
                errors.append(f"inconsistent: {w}: priced with {eff['price_table']!r} but the submission names {pt_id!r}")
            _compare(eff, {**_measured(e, task), **_comparisons(entries, e, task)}, f"{w}.efficiency", errors)
            try:
                costs = _costs(e, task, table, eff["cost_per_1k_queries"].get("hardware_key"))
            except PriceTableError as err:
                errors.append(f"unknown price table: {w}: {err}")
                continue
            claimed = dict(eff["cost_per_1k_queries"])
            if claimed.get("hardware_key") != costs["hardware_key"]:
                errors.append(f"inconsistent: {w}: hardware price entry {claimed.get('hardware_key')!r} but the "
                              f"recorded hardware matches {costs['hardware_key']!r}")
            _compare(claimed, {k: v for k, v in costs.items() if k != "hardware_key"},
                     f"{w}.efficiency.cost_per_1k_queries", errors)
    if not any(x.startswith("tampered") for x in errors):
        h = submission_generations_sha256(entries)
        if h != sub["generations_sha256"]:
            errors.append(f"tampered: the submission's generations do not match generations_sha256 "
                          f"(recorded {sub['generations_sha256'][:12]}…, recomputed {h[:12]}…)")
    if rescore:  # well-formed (checked above): re-score even when other checks failed, to give every reason
        errors += rescore_submission(sub, data_dir, include=include, allow_shadowing=allow_shadowing,
                                     base_dir=base_dir)
    return errors


MAX_LISTED = 20  # per (entry, task) and kind of problem, sample ids named one by one; then a count


def _listed(errors: list[str], ids: list[str], line) -> None:
    for sid in ids[:MAX_LISTED]:
        errors.append(line(sid))
    if len(ids) > MAX_LISTED:
        errors.append(line(f"... and {len(ids) - MAX_LISTED} more"))


def _task_folders(sub: dict, include, base_dir) -> list[str]:
    """Where the tasks come from: ``include`` (--include-path), ``$PROMPTINTERN_TASK_PATHS`` and the
    submission's own ``task_folders`` (relative to the submission file's folder) that exist here."""
    from tasks.catalog import env_paths

    base = Path(base_dir) if base_dir is not None else Path.cwd()
    own = [base / p for p in ((sub.get("task_folders") or {}).get("paths") or []) if isinstance(p, str)]
    paths = [str(Path(p).expanduser().resolve()) for p in [*(include or []), *env_paths()]]
    paths += [str(p.resolve()) for p in own if p.is_dir()]
    return list(dict.fromkeys(paths))


def _score_one(task, generations: list[str], examples: list) -> list[dict | Exception]:
    """The task's own score path on every sample; a crash is returned (as the exception) for the sample that
    raised it, not raised: the whole batch first, then sample by sample when the batch failed."""
    try:
        out = task.score(generations, examples)
        if len(out) == len(examples):
            return out
    except Exception:  # noqa: BLE001 - narrowed to the sample(s) below
        pass
    res: list = []
    for g, ex in zip(generations, examples, strict=True):
        try:
            res.append(task.score([g], [ex])[0])
        except Exception as err:  # noqa: BLE001 - reported, naming the sample
            res.append(err)
    return res


def rescore_submission(sub: dict, data_dir: str | None = None, *, include: list | None = None,
                       allow_shadowing: bool | None = None, base_dir: str | Path | None = None) -> list[str]:
    """Score every submitted generation again with its task's own metric (extraction, metric, the sandbox for code
    tasks: ``task.score``, as an evaluation unit does) on the task's test items, and re-derive each task's results
    from the re-scored samples. Needs the tasks (built-in, ``include`` folders, ``$PROMPTINTERN_TASK_PATHS`` or the
    submission's ``task_folders`` relative to ``base_dir``) and their data (``data_dir``).

    Reports, naming entry, task and sample: a task that cannot be loaded or whose scoring or data differ from the
    submission's; a sample id that is not a test item of the task, a duplicate, or (when the submission records
    how the test items were drawn, or their hash) a test item the grid should have but the submission lacks; a
    sample whose re-score crashed; a per-sample score that differs from the re-score; results (score, se, n) that
    differ from the re-scored samples'."""
    import tasks as tasks_mod
    from promptintern.hashing import content_id

    from .selection import draw

    errors: list[str] = []
    folders = _task_folders(sub, include, base_dir)
    if allow_shadowing is None and (sub.get("task_folders") or {}).get("allow_shadowing"):
        allow_shadowing = True
    cache: dict = {}
    for i, e in enumerate(sub["entries"]):
        for task_name in sorted(e["records"]):
            rec = e["records"][task_name]
            where = f"entries[{i}] ({e['name']}).{task_name}"
            if task_name not in cache:
                try:
                    task = tasks_mod.get_task(task_name, data_dir=data_dir, include=folders,
                                              allow_shadowing=allow_shadowing)
                    test_all = task.load(task.test_split)
                    cache[task_name] = (task, test_all, None)
                except Exception as err:  # noqa: BLE001 - unknown task, missing data: reported
                    cache[task_name] = (None, None, f"{type(err).__name__}: {err}")
            task, test_all, load_error = cache[task_name]
            if task is None:
                errors.append(f"unscorable: {where}: cannot load the task to re-score its "
                              f"{len(rec['samples'])} sample(s): {load_error} (a task of your own: pass its folder "
                              "with --include-path DIR; its data: --data-dir DIR)")
                continue
            # the local task must score as the submission's did, on the same data
            local_scoring = _jsonish(task.scoring_identity())
            if isinstance(rec.get("scoring"), dict) and rec["scoring"] != local_scoring:
                diff = sorted(k for k in set(rec["scoring"]) | set(local_scoring)
                              if rec["scoring"].get(k) != local_scoring.get(k))
                errors.append(f"unscorable: {where}: the local task scores differently from the submission's "
                              f"(differs in {', '.join(diff)}); cannot re-score")
                continue
            data = rec.get("data")
            if isinstance(data, dict) and isinstance(data.get("eval"), dict):
                data = data["eval"]  # a MetaTuner unit records its train and eval tasks' data: the eval task's
            if isinstance(data, dict):
                # data file -> sha256 (the task definition's id is left out: the scoring identity is what matters)
                files = {k: v for k, v in data.items() if k != "task_definition"}
                mine = task.data_fingerprint()
                changed = sorted(f for f in set(files) | set(mine) if files.get(f) != mine.get(f))
                if changed:
                    errors.append(f"unscorable: {where}: the local data differ from the submission's (files "
                                  f"{', '.join(changed)}); cannot re-score")
                    continue
            if rec["metric"] != task.primary_metric:
                errors.append(f"inconsistent: {where}: metric {rec['metric']!r} is not the task's primary metric "
                              f"{task.primary_metric!r}")
            metric = task.primary_metric
            by_id = {ex.id: ex for ex in test_all}
            ids = [s["id"] for s in rec["samples"]]
            unknown = [x for x in ids if x not in by_id]
            _listed(errors, unknown, lambda sid, w=where, t=task:
                    f"inconsistent: {w}: sample {sid} is not an item of the task's {t.test_split!r} split")
            seen: set = set()
            dups = [x for x in ids if x in seen or seen.add(x)]
            _listed(errors, sorted(set(dups)), lambda sid, w=where: f"inconsistent: {w}: sample {sid} appears "
                    "more than once")
            # which test items the grid had: redrawn from how the submission says they were drawn, else its hash
            how = (sub.get("selection") or {}).get(task_name)
            if isinstance(how, dict):
                try:
                    expected = draw(test_all, how.get("test_limit"), int(how.get("sample_seed") or 0),
                                    f"{task_name}/{task.test_split}", how.get("stratify"))
                except Exception as err:  # noqa: BLE001 - a malformed selection record
                    errors.append(f"inconsistent: {where}: cannot redraw the test items from the submission's "
                                  f"selection {how!r}: {err}")
                else:
                    exp_set, id_set = set(expected), set(ids)
                    _listed(errors, [x for x in expected if x not in id_set], lambda sid, w=where:
                            f"incomplete: {w}: test item {sid} of the grid has no sample")
                    _listed(errors, [x for x in ids if x in by_id and x not in exp_set], lambda sid, w=where:
                            f"inconsistent: {w}: sample {sid} is not one of the grid's test items")
            items = rec.get("items") or {}
            if items.get("n_test") is not None and items["n_test"] != len(ids):
                errors.append(f"incomplete: {where}: {len(ids)} sample(s) but the grid planned {items['n_test']} "
                              "test items")
            elif items.get("test") and content_id(ids) != items["test"]:
                errors.append(f"inconsistent: {where}: the sample ids are not the planned test items (their hash "
                              f"{content_id(ids)} is not the recorded {items['test']})")
            scorable = [s for s in rec["samples"] if s["id"] in by_id]
            scored = _score_one(task, [s["generation"] for s in scorable], [by_id[s["id"]] for s in scorable])
            values, crashed = [], False
            for s, sc in zip(scorable, scored, strict=True):
                if isinstance(sc, Exception):
                    crashed = True
                    errors.append(f"unscorable: {where}: sample {s['id']}: re-scoring raised "
                                  f"{type(sc).__name__}: {sc}")
                    continue
                v = sc.get(metric)
                v = None if v is None or isinstance(v, str) else float(v)
                values.append(v)
                if not _close(s["score"], v):
                    status = f" ({sc['status']})" if sc.get("status") else ""
                    errors.append(f"inconsistent: {where}: sample {s['id']}: recorded {metric} {s['score']!r}, "
                                  f"re-scored {v!r}{status}")
            if crashed or unknown:
                continue  # the aggregate over a partial re-score proves nothing
            mean, se = mean_se([v for v in values if v is not None])
            res = e["results"].get(task_name) or {}
            again = {"score": _nn(mean), "score_se": _nn(se), "n": sum(v is not None for v in values)}
            for k, v in again.items():
                if not _close(res.get(k), v):
                    errors.append(f"inconsistent: {where}: results.{k} is {res.get(k)!r} but the re-scored samples "
                                  f"give {v!r}")
    return errors


def _jsonish(x):
    """As the value reads back from JSON (tuples as lists), to compare a local identity with a recorded one."""
    return json.loads(json.dumps(x, default=str))


def load_submission(path: str | Path) -> tuple[dict | None, list[str]]:
    try:
        return json.loads(Path(path).read_text()), []
    except OSError as e:
        return None, [f"unreadable: {e}"]
    except ValueError as e:
        return None, [f"malformed: not JSON: {e}"]


def validate_file(path: str | Path, **kw) -> list[str]:
    """:func:`validate_submission` of a file (a re-score finds the submission's task folders beside it)."""
    sub, errors = load_submission(path)
    kw.setdefault("base_dir", Path(path).parent)
    return errors if sub is None else validate_submission(sub, **kw)


# -- leaderboard -------------------------------------------------------------------------------------------------

def leaderboard_rows(subs: list[tuple[str, dict]]) -> list[dict]:
    """One row per (entry, eval task) of the valid submissions, ranked by primary metric within each task."""
    rows = []
    for fname, sub in subs:
        table = load_price_table(sub["price_table"]["id"])
        headline = table.headline_model
        for e in sub["entries"]:
            for task, res in e["results"].items():
                eff = e["efficiency"][task]
                cost = eff["cost_per_1k_queries"]
                rows.append({
                    "task": task, "metric": res["metric"], "score": res["score"], "score_se": res["score_se"],
                    "n": res["n"], "system": e["config"]["model"], "base_model": e["config"]["base_model"],
                    "method": e["method"]["label"], "train_task": e["method"].get("train_task") or "-",
                    "seed": e["meta"]["seed"], "precision": e["config"].get("precision"),
                    "input_tokens": eff["mean_input_tokens"].get("model"),
                    "token_reduction": eff.get("token_reduction_vs_full_prompt_pct"),
                    "latency_p50_s": eff.get("latency_p50_s"), "latency_p90_s": eff.get("latency_p90_s"),
                    "speedup": eff.get("speedup_vs_full_prompt"), "throughput": eff.get("throughput_tokens_per_s"),
                    "self_hosted_usd": cost.get("self_hosted_usd"), "hardware_key": cost.get("hardware_key"),
                    "api_model": headline, "api_usd": (cost.get("api_usd") or {}).get(headline),
                    "price_table": eff["price_table"], "hardware": _hw(e["meta"]["hardware"]), "file": fname,
                })
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    out = []
    for task in sorted(by_task):
        rs = sorted(by_task[task], key=lambda r: (-(r["score"] if r["score"] is not None else -math.inf),
                                                  r["input_tokens"] if r["input_tokens"] is not None else math.inf,
                                                  r["system"]))
        rank, prev = 0, None
        for i, r in enumerate(rs):
            if r["score"] != prev:
                rank, prev = i + 1, r["score"]
            r["rank"] = rank
        out += rs
    return out


def _hw(hw: dict) -> str:
    from .env_info import describe_hardware

    return describe_hardware(hw or {})


LB_COLUMNS = [
    ("rank", lambda r: str(r["rank"])),
    ("system", lambda r: r["system"]),
    ("method", lambda r: r["method"]),
    ("train task", lambda r: r["train_task"]),
    ("score ± se", lambda r: "" if r["score"] is None else f"{display_score(r['metric'], r['score']):.1f}"
     + ("" if r["score_se"] is None else f" ± {display_score(r['metric'], r['score_se']):.1f}")),
    ("n", lambda r: str(r["n"])),
    ("input tokens", lambda r: "" if r["input_tokens"] is None else f"{r['input_tokens']:.1f}"),
    ("token reduction", lambda r: fmt_pct(r["token_reduction"])),
    ("latency p50", lambda r: fmt_s(r["latency_p50_s"])),
    ("speedup", lambda r: fmt_x(r["speedup"])),
    ("self-hosted $/1k", lambda r: fmt_usd(r["self_hosted_usd"])),
    ("API $/1k", lambda r: fmt_usd(r["api_usd"]) + (f" ({r['api_model']})" if r["api_usd"] is not None else "")),
    ("price table", lambda r: r["price_table"]),
    ("hardware", lambda r: r["hardware"]),
    ("submission", lambda r: r["file"]),
]

LB_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1a1a1a;background:#fff}
h1{font-size:24px;margin-bottom:4px} h2{font-size:19px;margin-top:28px;border-bottom:2px solid #2c6fbb;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px;display:block;overflow-x:auto}
th,td{border:1px solid #c8d0da;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#2c6fbb;color:#fff} tr:nth-child(even) td{background:#eef3f9} td.rank1{background:#ffe08a !important;font-weight:bold}
.note{color:#555;font-size:13px} .bad{color:#a40000}
"""


def build_leaderboard(directory: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Validate every *.json submission in a folder and render the ranked leaderboard (HTML and markdown)."""
    d = Path(directory)
    out_dir = Path(out) if out else d
    out_dir.mkdir(parents=True, exist_ok=True)
    valid, rejected = [], []
    for p in sorted(d.glob("*.json")):
        sub, errs = load_submission(p)
        errs = errs or validate_submission(sub)
        (rejected.append((p.name, errs)) if errs else valid.append((p.name, sub)))
    rows = leaderboard_rows(valid)
    tasks = sorted({r["task"] for r in rows})
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    intro = (f"{len(valid)} valid submission(s), {len(rejected)} rejected; built {now}. Ranked by each task's primary "
             "metric (ties: fewer input tokens first). Token reduction and speedup are vs full-prompt fine-tuning of "
             "the same base model in the same submission; cost is per 1k queries with the named price table.")
    md = ["# PromptIntern leaderboard", "", intro, ""]
    h = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>PromptIntern leaderboard</title>",
         f"<style>{LB_CSS}</style></head><body>", "<h1>PromptIntern leaderboard</h1>",
         f"<p class='note'>{html.escape(intro)}</p>"]
    if not tasks:
        md.append("_No valid submissions._")
        h.append("<p><em>No valid submissions.</em></p>")
    for task in tasks:
        rs = [r for r in rows if r["task"] == task]
        metric = rs[0]["metric"]
        md += [f"## {task} ({metric})", "", "| " + " | ".join(c for c, _ in LB_COLUMNS) + " |",
               "|" + "|".join("---" for _ in LB_COLUMNS) + "|"]
        md += ["| " + " | ".join(f(r).replace("|", "\\|") for _, f in LB_COLUMNS) + " |" for r in rs]
        md.append("")
        h.append(f"<h2>{html.escape(task)} <span class='note'>({html.escape(metric)})</span></h2><table><tr>"
                 + "".join(f"<th>{html.escape(c)}</th>" for c, _ in LB_COLUMNS) + "</tr>")
        for r in rs:
            cls = " class='rank1'" if r["rank"] == 1 else ""
            h.append("<tr>" + "".join(f"<td{cls if c == 'rank' else ''}>{html.escape(f(r))}</td>"
                                      for c, f in LB_COLUMNS) + "</tr>")
        h.append("</table>")
    if rejected:
        md += ["## Rejected submissions", ""]
        h.append("<h2>Rejected submissions</h2><ul>")
        for name, errs in rejected:
            md.append(f"- `{name}`: " + "; ".join(errs[:5]) + (f" (+{len(errs) - 5} more)" if len(errs) > 5 else ""))
            h.append(f"<li class='bad'><code>{html.escape(name)}</code>: "
                     + html.escape("; ".join(errs[:5])) + "</li>")
        h.append("</ul>")
    h.append("</body></html>")
    paths = {"html": out_dir / "leaderboard.html", "markdown": out_dir / "leaderboard.md"}
    paths["html"].write_text("\n".join(h) + "\n")
    paths["markdown"].write_text("\n".join(md) + "\n")
    return paths


__all__ = ["available_tables", "build_leaderboard", "build_submission", "check_schema", "load_submission",
           "rescore_submission", "validate_file", "validate_submission", "write_submission"]
