"""Leaderboard submissions: build one from a results folder, validate one (``promptintern leaderboard validate``).

A submission (``submission.json``) holds one *entry* per system and serving condition (model x method grid point x
train task x seed, uncached or with its prefix cached):

- ``config``: model (the system's name), base model, adapter hash (sha256 of the adapter's weights), precision;
- ``method``: name, schedule, stages, compression rate, per-stage template rates and example counts, compressor,
  retriever, train task, the serving condition;
- ``results`` per eval task: primary metric, score, standard error, n;
- ``efficiency`` per eval task: the main table's figures of the row (:data:`EFFICIENCY_KEYS`: tokens, the engine
  view, the as-answered view, costs, and every comparison against full-prompt FT and the base model with the full
  prompt, uncached and cached), the cost per 1k queries for every API model, and the price table id;
- ``training``: the stages of its chain (work seconds, steps, training tokens, hardware), what its training cost
  is priced from;
- ``meta``: versions, hardware, seed, git commit, the result files' unit ids;
- ``records`` per eval task: what every number above is recomputed from — the per-sample records (ids,
  generations, scores, token counts), the engine measurement's timed requests and batches for this condition (or,
  for older records, the evaluation's own batch-1 latencies), and the sha256 of the generations.

:func:`validate_submission` rebuilds result records from the submission (:func:`promptintern.harness.records.eval_record`,
``engine_record``, ``stage_record``), runs them through the same code as the tables (:func:`promptintern.harness.aggregate.
eval_frame` and :mod:`promptintern.harness.compare`) and compares every figure, so a submission is checked by the code that
made it. It rejects a malformed submission, an inconsistent one (a figure its records do not give), a tampered
one (generations that do not match their hash) and one priced with an unknown or changed price table, each with
the reason.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from pathlib import Path

import pandas as pd

from .cost import PriceTable, PriceTableError, load_price_table, prices_dir, record_costs
from .efficiency import engine_conditions
from .measure import mean_se
from .records import engine_record, eval_record, generations_sha256, stage_record
from .selection import limit_for
from .store import MemoryStore, ResultStore

FORMAT = "promptintern-submission"
FORMAT_VERSION = 2
REL_TOL = 1e-6
ABS_TOL = 1e-9
REFS = ("full", "full_cached", "base", "base_cached")
EFFICIENCY_KEYS = (
    "input_tokens", "input_tokens_cl100k", "input_tokens_o200k", "output_tokens", "prefill_tokens",
    "engine_L", "engine_queries", "engine_requests", "ttft_s", "tpot_s", "itl_p50_s", "e2el_s", "e2el_p90_s",
    "sat_batch", "sat_rps", "sat_tok_s", "sat_ttft_s", "sat_tpot_s", "goodput_rps", "acc_goodput_rps",
    "answered_e2el_s", "answered_output_tokens", "answered_extended",
    "self_hosted_usd_per_1k", "engine_usd_per_1k", "engine_b1_usd_per_1k", "answered_usd_per_1k",
    "api_usd_per_1k", "api_usd_per_1k_cached", "train_usd", "train_usd_api", "cost_basis", "timing_source",
    *(f"{c}_{ref}{s}" for ref in REFS for c in ("speedup", "throughput", "answered_speedup")
      for s in ("", "_lo", "_hi", "_method")),
    *(f"{c}_{ref}_pct" for ref in REFS for c in ("token_reduction", "prefill_reduction", "saving", "api_saving")),
    *(f"break_even{a}_{ref}" for ref in REFS for a in ("", "_api")))


# -- helpers -----------------------------------------------------------------------------------------------------

def jsonable(x):
    """JSON-safe, recursively: NaN -> None, +inf (a break-even never reached) -> "never", numpy scalars -> Python."""
    if hasattr(x, "item") and not isinstance(x, list | dict | str):
        x = x.item()
    if isinstance(x, float):
        return "never" if math.isinf(x) and x > 0 else None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    return x


def json_number(x):
    return None if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))) else x


def close(a, b) -> bool:
    """Equal as recorded figures: numbers within a relative 1e-6 (or absolute 1e-9), anything else exactly."""
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(float(a) - float(b)) <= max(ABS_TOL, REL_TOL * max(abs(float(a)), abs(float(b))))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def submission_generations_sha256(entries: list[dict]) -> str:
    pairs = []
    for e in entries:
        for task in sorted(e["records"]):
            pairs += [(f"{e['name']}::{task}::{s['id']}", s["generation"]) for s in e["records"][task]["samples"]]
    return generations_sha256(pairs)


_SAMPLE_KEYS = ("tokens", "output_tokens", "prefill_tokens", "cached_tokens", "output_tokens_tiktoken",
                "parts_tiktoken", "generator_tokens", "ttft_s", "e2e_s", "batch_size", "batch_index", "compressor_s")


def _sample(s: dict, primary: str) -> dict:
    score = s.get("score") or {}
    val = score.get(primary)
    return jsonable({"id": str(s["id"]), "generation": s["generation"],
                     "score": None if val is None or isinstance(val, str) else float(val),
                     "scores": {k: float(v) for k, v in score.items() if isinstance(v, int | float)},
                     "status": score.get("status"), **{k: s.get(k) for k in _SAMPLE_KEYS if k in s}})


def _results(rec: dict) -> dict:
    vals = [s["score"] for s in rec["samples"] if s["score"] is not None]
    mean, se = mean_se(vals)
    return {"score": json_number(mean), "score_se": json_number(se), "n": len(vals)}


# -- building ----------------------------------------------------------------------------------------------------

def _entry_key(row) -> tuple:
    return (row["model"], row["label"], row["train_task"], int(row["seed"]))


def per_seed_comparisons(frame: pd.DataFrame) -> pd.DataFrame:
    """The eval frame with every comparison made within each seed (an entry is one seed's system)."""
    from .compare import add_comparisons

    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return ok
    return pd.concat([add_comparisons(g) for _, g in ok.groupby("seed", sort=True)], ignore_index=True)


def _task_record(rec: dict, row, engine: dict) -> dict:
    """What an entry keeps of one evaluation and serving condition: samples, timings, identity."""
    primary = rec["task"]["primary_metric"]
    eff = rec.get("efficiency") or {}
    cached = bool(row["prefix_cache"])
    timed = engine.get((rec["unit_id"], cached))
    lat = []
    if timed is None and bool(rec["config"].get("prefix_cache")) == cached:  # the evaluation's own timings
        lat = ((rec.get("measurements") or {}).get("latency") or {}).get("samples") or []
    samples = [_sample(s, primary) for s in rec.get("samples") or []]
    out = {"metric": primary, "samples": samples, "cached": cached,
           "generation_seconds": eff.get("generation_seconds") or 0.0,
           "compressor_seconds": eff.get("compressor_seconds") or 0.0,
           "generation_batch_size": eff.get("generation_batch_size"), "prefix_cache": eff.get("prefix_cache"),
           "test_compressed": bool(rec["config"].get("test_compressed")),
           "latency": [{k: x.get(k) for k in ("id", "repeat", "ttft_s", "e2e_s", "compressor_s", "prompt_tokens",
                                              "output_tokens")} for x in lat],
           "engine": None if timed is None else {
               "settings": timed[1], "hardware": timed[2].get("hardware"), "unit_id": timed[2]["unit_id"],
               **{k: timed[0][k] for k in ("ids", "answer_tokens", "compressor_s", "requests", "batches")}},
           "generations_sha256": generations_sha256((s["id"], s["generation"]) for s in samples),
           # what `leaderboard validate --rescore` checks the local task against: its scoring identity, its data
           # files' sha256 and the planned test items (content hash and count)
           **{k: rec["config"][k] for k in ("scoring", "data", "items") if rec["config"].get(k)}}
    return jsonable(out)


def _efficiency(row, table: PriceTable, rec: dict) -> dict:
    costs = record_costs(rec, table)
    return jsonable({**{k: row.get(k) for k in EFFICIENCY_KEYS},
                     "cost_per_1k_queries": {m: {"usd": a["usd_per_1k"], "usd_cached": a["usd_per_1k_cached"]}
                                             for m, a in costs["api"].items()},
                     "price_table": table.id})


def build_submission(store: ResultStore, price_table: PriceTable | str | None = None,
                     hardware_key: str | None = None, decision: list[dict] | None = None,
                     frame: pd.DataFrame | None = None) -> dict:
    """A submission for every system and serving condition in a results folder, every number from the result files.
    ``decision``: the decision rows (:func:`promptintern.harness.decision.decision_rows`), ``frame``: the eval frame with these
    prices (:func:`promptintern.harness.aggregate.eval_frame`), if already computed."""
    from .aggregate import chain_key, eval_frame, main_table, stage_records_by_chain
    from .decision import decision_rows, json_rows

    if not isinstance(price_table, PriceTable):
        price_table = load_price_table(price_table)
    frame = frame if frame is not None else eval_frame(store, price_table, hardware_key)
    if decision is None:
        decision = decision_rows(main_table(frame))
    rows = per_seed_comparisons(frame)
    recs = {r["unit_id"]: r for r in store.records(kind="eval")}
    engine = engine_conditions(store)
    chains = stage_records_by_chain(store)
    entries: dict[tuple, dict] = {}
    for _, row in rows.iterrows():
        rec = recs[row["unit_id"]]
        c, m = rec["config"], rec["config"]["method"]
        key = _entry_key(row)
        if key not in entries:
            stages = chains.get(chain_key(c), []) if c.get("train_task") else []
            info = rec.get("model_info") or {}
            model, label, train, seed = key
            entries[key] = {
                "name": f"{model} | {label} | train {train} | seed {seed}",
                "config": {"model": f"{model}+{label}" + (f"@{train}" if train != "-" else ""), "base_model": model,
                           "adapter_sha256": rec.get("adapter_sha256"), "precision": info.get("dtype"),
                           "n_params": info.get("n_params")},
                "method": {"name": m["name"], "label": label, "base_label": m["label"],
                           "train_label": c.get("train_label"), "schedule": m.get("schedule"),
                           "stages": len(stages), "lam": m.get("lam"), "rate": m.get("rate"),
                           "k_examples": m.get("k_examples"), "prefix_cache": bool(row["prefix_cache"]),
                           "stage_template_rates": [s["config"]["rule"]["template_rate"] for s in stages],
                           "stage_examples": [s["config"]["rule"]["n_examples"] for s in stages],
                           "test_rule": c.get("rule"), "test_compressed": bool(c.get("test_compressed")),
                           "compressor": (c.get("prompt") or {}).get("compressor"),
                           "retriever": (c.get("prompt") or {}).get("retriever"),
                           "train_task": c.get("train_task"),
                           "train_items": (stages[0]["config"].get("items") or {}).get("n_train") if stages else None},
                "training": {"stages": [jsonable({
                    "stage": s["config"]["stage"], "n_stages": s["config"]["n_stages"],
                    "work_seconds": (s.get("work_seconds") or {}).get("total") or (s.get("train") or {}).get("seconds"),
                    "steps": (s.get("train") or {}).get("steps"), "train_tokens": (s.get("train") or {}).get("train_tokens"),
                    "hardware": s.get("hardware")}) for s in stages]},
                "results": {}, "efficiency": {}, "records": {},
                "meta": {"versions": rec.get("versions"), "hardware": rec.get("hardware"), "seed": seed,
                         "git_commit": rec.get("git_commit"), "unit_ids": {}},
            }
        e, task = entries[key], row["eval_task"]
        e["records"][task] = _task_record(rec, row, engine)
        e["results"][task] = {"metric": rec["task"]["primary_metric"], **_results(e["records"][task])}
        e["efficiency"][task] = _efficiency(row, price_table, rec)
        e["meta"]["unit_ids"][task] = rec["unit_id"]
    out = sorted(entries.values(), key=lambda e: e["name"])
    folders, selection = _experiment_record(store, {t for e in out for t in e["records"]})
    return jsonable({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "experiment": store.root.name,
        "price_table": {"id": price_table.id, "retrieved": price_table.retrieved,
                        "sha256": file_sha256(price_table.path) if price_table.path else None},
        "hardware_key": hardware_key,
        "generations_sha256": submission_generations_sha256(out),
        **({"task_folders": folders} if folders else {}),
        **({"selection": selection} if selection else {}),
        "entries": out,
        # "does internalizing pay?" (promptintern.harness.decision): the same rows as the report's, when a few_shot reference ran
        **({"decision": json_rows(decision)} if decision else {}),
    })


def _experiment_record(store: ResultStore, task_names: set[str]) -> tuple[dict | None, dict | None]:
    """From the results folder's ``experiment.json`` (absent: (None, None)): the experiment's task folders
    (relative to the results folder) and, per evaluated task, how its test items were drawn
    (:func:`promptintern.harness.selection.draw`), so a re-score can tell which test items the grid should have."""
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
                     hardware_key: str | None = None, decision: list[dict] | None = None,
                     frame: pd.DataFrame | None = None) -> Path:

    sub = build_submission(store, price_table, hardware_key, decision, frame)
    out = Path(path) if path else store.root / "submission.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if sub.get("task_folders"):  # relative to the submission file, where `validate --rescore` looks for them
        sub["task_folders"]["paths"] = [os.path.relpath((store.root / p).resolve(), out.parent.resolve())
                                        for p in sub["task_folders"]["paths"]]
    out.write_text(json.dumps(sub, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    return out


# -- re-deriving -------------------------------------------------------------------------------------------------

def rebuilt_records(sub: dict) -> list[dict]:
    """Result records rebuilt from a submission with the records' own builders: per entry and task an evaluation
    record (and an engine record where it was timed so), per chain its stage records."""
    out, seen_stages = [], set()
    for e in sub["entries"]:
        m, seed, model = e["method"], e["meta"]["seed"], e["config"]["base_model"]
        base_label = m.get("base_label") or m["label"]
        chain_label = m.get("train_label") or base_label
        for st in (e.get("training") or {}).get("stages") or []:
            key = (model, chain_label, m.get("train_task"), seed, st["stage"])
            if key in seen_stages:
                continue
            seen_stages.add(key)
            out.append({"unit_id": "stage::" + "::".join(map(str, key)), **stage_record(
                config={"model": model, "seed": seed, "method": {"label": chain_label}, "train_task": m["train_task"],
                        "stage": st["stage"], "n_stages": st["n_stages"]},
                adapter_dir="", adapter_sha256=None, init_adapter=None,
                train={"steps": st.get("steps"), "train_tokens": st.get("train_tokens"), "seconds": st.get("work_seconds")},
                work_seconds={"total": st.get("work_seconds")}, meta={"hardware": st.get("hardware")})})
        for task, r in e["records"].items():
            uid = f"{e['name']}::{task}"
            samples = [{**s, "score": {r["metric"]: s["score"], **(s.get("scores") or {})}} for s in r["samples"]]
            gen_in = [s["generator_tokens"]["model"] for s in samples if s.get("generator_tokens")]
            eff = {"n": len(samples), "generation_seconds": r["generation_seconds"],
                   "compressor_seconds": r["compressor_seconds"], "prefix_cache": r.get("prefix_cache")}
            if samples:
                eff["mean_input_tokens"] = sum(s["tokens"]["model"] for s in samples) / len(samples)
                eff["mean_output_tokens"] = sum(s["output_tokens"] for s in samples) / len(samples)
            if gen_in:  # a MetaTuner entry: its generator's tokens count on every query
                eff["mean_total_input_tokens"] = eff["mean_input_tokens"] + sum(gen_in) / len(samples)
                eff["mean_total_output_tokens"] = eff["mean_output_tokens"] + sum(
                    s["generator_tokens"].get("output") or 0 for s in samples) / len(samples)
            config = {"model": model, "seed": seed, "eval_task": task, "train_task": m.get("train_task"),
                      "train_label": m.get("train_label"), "prefix_cache": bool(r.get("cached")),
                      "test_compressed": bool(r.get("test_compressed")),
                      "method": {"name": m["name"], "label": base_label, "schedule": m.get("schedule"),
                                 "stages": m.get("stages"), "rate": m.get("rate")}}
            out.append({"unit_id": uid, **eval_record(
                config=config, task={"name": task, "primary_metric": r["metric"]}, metrics={}, samples=samples,
                efficiency=eff, meta={"hardware": e["meta"]["hardware"]},
                measurements={"latency": {"samples": r["latency"]}} if r.get("latency") else None)})
            eng = r.get("engine")
            if eng:
                out.append({"unit_id": f"engine::{uid}::{r.get('cached')}", **engine_record(
                    config={"model": model, "eval_task": task, "seed": seed}, settings=eng["settings"],
                    conditions=[{"eval": uid, "prefix_cache": bool(r.get("cached")),
                                 **{k: eng[k] for k in ("ids", "answer_tokens", "compressor_s", "requests",
                                                        "batches")}}],
                    meta={"hardware": eng.get("hardware")})})
    return out


def recomputed_rows(sub: dict, table: PriceTable) -> dict[tuple, object]:
    """(entry name, task) -> the row the table code gives the submission's rebuilt records."""
    from .aggregate import eval_frame

    recs = rebuilt_records(sub)
    frame = eval_frame(MemoryStore(recs), table, sub.get("hardware_key"))
    if frame.empty:
        return {}
    rows = per_seed_comparisons(frame)
    by_key = {(e["config"]["base_model"], e["method"]["label"], e["method"].get("train_task") or "-",
               int(e["meta"]["seed"])): e["name"] for e in sub["entries"]}
    out = {}
    for _, row in rows.iterrows():
        name = by_key.get(_entry_key(row))
        if name is not None and row["unit_id"].startswith(name + "::"):
            out[(name, row["eval_task"])] = row
    return out


# -- validation --------------------------------------------------------------------------------------------------

NUM = "number"  # int or float, not bool
OPT_NUM = (NUM, None)
OPT_STR = (str, None)
ANY = "any"

SAMPLE = {"id": str, "generation": str, "score": OPT_NUM, "scores": {"*": NUM}, "tokens": {"*": int},
          "output_tokens": int}
TASK_RECORDS = {"metric": str, "samples": [SAMPLE], "cached": bool, "generation_seconds": NUM,
                "compressor_seconds": NUM, "latency": [{"id": str, "ttft_s": NUM, "e2e_s": NUM}],
                "engine": (dict, None), "generations_sha256": str}
RESULT = {"metric": str, "score": OPT_NUM, "score_se": OPT_NUM, "n": int}
EFFICIENCY = {"input_tokens": OPT_NUM, "self_hosted_usd_per_1k": OPT_NUM, "cost_basis": OPT_STR,
              "cost_per_1k_queries": {"*": {"usd": OPT_NUM, "usd_cached": OPT_NUM}}, "price_table": str}
ENTRY = {
    "name": str,
    "config": {"model": str, "base_model": str, "adapter_sha256": OPT_STR, "precision": OPT_STR},
    "method": {"name": str, "label": str, "schedule": OPT_STR, "stages": int, "rate": OPT_NUM,
               "prefix_cache": bool, "stage_template_rates": [NUM], "stage_examples": [int],
               "compressor": (dict, None), "train_task": OPT_STR},
    "training": {"stages": [dict]},
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


def _compare(claimed: dict, recomputed: dict, where: str, errors: list[str]) -> None:
    for k, v in recomputed.items():
        if isinstance(v, dict):
            _compare(claimed.get(k) or {}, v, f"{where}.{k}", errors)
            for x in sorted(set(claimed.get(k) or {}) - set(v)):
                errors.append(f"inconsistent: {where}.{k}.{x} has no counterpart in the records")
        elif not close(claimed.get(k), v):
            errors.append(f"inconsistent: {where}.{k} is {claimed.get(k)!r} but the records give {v!r}")


def validate_submission(sub, *, directory: Path | None = None, rescore: bool = False,
                        data_dir: str | None = None, include: list | None = None,
                        allow_shadowing: bool | None = None, base_dir: str | Path | None = None) -> list[str]:
    """Every reason the submission is not acceptable; an empty list means it is valid. ``rescore``: also score
    every generation again (:func:`promptintern.harness.rescore.rescore_submission`; ``data_dir``, ``include``,
    ``allow_shadowing`` and ``base_dir`` are its arguments)."""
    errors = check_schema(sub, SCHEMA)
    if errors:
        return errors
    if sub["format"] != FORMAT or sub["format_version"] != FORMAT_VERSION:
        return [f"malformed: format must be {FORMAT!r} version {FORMAT_VERSION}, got {sub['format']!r} "
                f"version {sub['format_version']!r}"]
    pt_id = sub["price_table"]["id"]
    try:
        table = load_price_table(pt_id, directory or prices_dir())
    except PriceTableError as e:
        return [f"unknown price table: {e}"]
    if sub["price_table"].get("sha256") and table.path and file_sha256(table.path) != sub["price_table"]["sha256"]:
        errors.append(f"inconsistent: price table {pt_id!r} differs from the one the submission was priced with "
                      "(its sha256 changed)")
    entries = sub["entries"]
    if not entries:
        errors.append("malformed: no entries")
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        errors.append("malformed: duplicate entry names")
    try:
        rows = recomputed_rows(sub, table)
    except PriceTableError as err:
        return errors + [f"unknown price table: {err}"]
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
            _compare(res, _results(rec), f"{w}.results", errors)
            eff = e["efficiency"][task]
            if eff["price_table"] != pt_id:
                errors.append(f"inconsistent: {w}: priced with {eff['price_table']!r} but the submission names {pt_id!r}")
            row = rows.get((e["name"], task))
            if row is None:
                errors.append(f"inconsistent: {w}: its records give no table row")
                continue
            again = _efficiency(row, table, _pseudo_eval(rec, e, task))
            _compare({k: v for k, v in eff.items() if k != "price_table"},
                     {k: v for k, v in again.items() if k != "price_table"}, f"{w}.efficiency", errors)
    if not any(x.startswith("tampered") for x in errors):
        h = submission_generations_sha256(entries)
        if h != sub["generations_sha256"]:
            errors.append(f"tampered: the submission's generations do not match generations_sha256 "
                          f"(recorded {sub['generations_sha256'][:12]}…, recomputed {h[:12]}…)")
    if rescore:  # well-formed (checked above): re-score even when other checks failed, to give every reason
        from .rescore import rescore_submission

        errors += rescore_submission(sub, data_dir, include=include, allow_shadowing=allow_shadowing,
                                     base_dir=base_dir)
    return errors


def _pseudo_eval(rec: dict, e: dict, task: str) -> dict:
    """What :func:`promptintern.harness.cost.record_costs` reads of an evaluation, from an entry's task record."""
    return {"config": {"train_task": e["method"].get("train_task"), "method": {"name": e["method"]["name"]},
                       "test_compressed": bool(rec.get("test_compressed"))},
            "samples": rec["samples"], "hardware": e["meta"]["hardware"]}


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
