"""The frames every table is made from, read from the run records only: every number is recomputable from them.

- :func:`eval_frame`: one row per evaluation and serving condition (uncached; and, for a method that sends a fixed
  template under ``generation.prefix_cache``, its prefix cached), with its scores, tokens, efficiency in both
  views (:mod:`promptintern.harness.efficiency`: engine, equal length; as answered) and costs; plus a row per planned
  evaluation without a valid result (failed / missing).
- :func:`main_table`: the rows averaged over seeds, with every comparison (:mod:`promptintern.harness.compare`).
- :func:`sweep_frame`: each condition's request throughput, TTFT, TPOT and goodput at every batch size timed.
- :func:`stage_frame` / :func:`stage_table`, :func:`answers_frame`, :func:`cross_domain_table`.

:mod:`promptintern.harness.tables` renders and writes them.
"""

from __future__ import annotations

import json
import math
import re

import pandas as pd

from promptintern.methods import METHODS

from .claims import holder
from .cost import PriceTable, mean_or_nan, record_costs, training_usd
from .efficiency import (
    Timings,
    condition_figures,
    correct_items,
    engine_conditions,
    legacy_figures,
    price_per_second,
    priced,
)
from .env_info import describe_hardware
from .plan import CACHED_SUFFIX
from .stats import score_interval
from .store import PLAN_FILE, ResultStore

BASELINE_METHOD = "full_prompt_ft"
BASE_MODEL_METHODS = ("few_shot",)  # the untrained base model, prompted with the full prompt
# Metrics already on a 0-100 scale; every other primary metric is a fraction shown as a percentage.
SCALE_100_METRICS = {"bleu", "corpus_bleu", "chrf", "rouge", "rougeL"}
GROUP_KEYS = ["model", "eval_task", "train_task", "label", "method", "schedule", "stages", "rate", "cross_domain",
              "prefix_cache"]
OBJECT_COLUMNS = ("item_scores", "timings", "sweep")  # per-item / per-cluster objects: not in the CSV
NAN = float("nan")


def score_scale(metric: str) -> float:
    """What turns a metric's per-item value into display points: 100 for fractions, 1 for BLEU-like metrics."""
    return 1.0 if metric in SCALE_100_METRICS else 100.0


def display_score(metric: str, value: float) -> float:
    """A primary metric on a 0-100 scale for display (fractions x 100; BLEU-like metrics as they are)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NAN
    return float(value) * score_scale(metric)


def _nan(x) -> float:
    return NAN if x is None else float(x)


def chain_key(cfg: dict) -> tuple:
    """What ties an evaluation to its training stages: model, the grid point that trained (``train_label``: a
    method that reuses another's chain, e.g. full_prompt_ft_compressed, names it), train task, seed."""
    return (cfg["model"], cfg.get("train_label") or cfg["method"]["label"], cfg.get("train_task"), cfg["seed"])


def stage_records_by_chain(store: ResultStore) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for rec in store.records(kind="stage"):
        out.setdefault(chain_key(rec["config"]), []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: r["config"]["stage"])
    return out


def item_scores(rec: dict) -> dict[str, float]:
    """Sample id -> primary-metric score on the metric's own scale: what paired differences compare."""
    primary = rec["task"]["primary_metric"]
    out = {}
    for s in rec.get("samples") or []:
        v = (s.get("score") or {}).get(primary)
        if v is not None and not isinstance(v, str):
            out[str(s["id"])] = float(v)
    return out


def _system_key(c: dict, cached: bool) -> tuple:
    return (c["model"], c["method"]["label"], c.get("train_task"), c["eval_task"], c["seed"], cached)


def serving_conditions(rec: dict, engine: dict, evaluated: set) -> list[tuple[bool, object]]:
    """The serving conditions a record stands for, each with where its timings come from: the engine record's
    condition, "legacy" (the evaluation's own timings) or None (not timed). An evaluation that generated with its
    prefix cache stands for the uncached condition too (the same tokens), unless an older grid evaluated that
    condition separately (``evaluated``: the system keys that have a record)."""
    uid, c = rec["unit_id"], rec["config"]
    timed = [(flag, engine[(uid, flag)]) for flag in (False, True) if (uid, flag) in engine]
    if timed:
        return timed
    cached = bool(c.get("prefix_cache"))
    if cached and _system_key(c, False) not in evaluated:
        return [(False, None), (True, "legacy")]
    return [(cached, "legacy")]


def _api_input(sample: dict, encoding: str):
    """A sample's API input tokens in one encoding, the MetaTuner generator's input included."""
    v = (sample.get("tokens") or {}).get(encoding)
    g = (sample.get("generator_tokens") or {}).get(encoding)
    return None if v is None else v + (g or 0)


def _efficiency(rec: dict, cached: bool, source, price_table, hardware_key) -> tuple[dict, Timings]:
    """A condition's efficiency columns and timings: engine and as-answered figures, costs on their basis."""
    if source is None:
        return {"timing_source": "not measured", "cost_basis": None}, Timings()
    if source == "legacy":
        figures, tm = legacy_figures(rec)
        hw = rec.get("hardware") or {}
    else:
        cond, settings, erec = source
        figures, tm = condition_figures(cond, settings, correct_items(rec, settings.get("correct_at")))
        hw = erec.get("hardware") or {}
    usd_s, key = price_per_second(price_table, hw, hardware_key) if price_table is not None else (NAN, None)
    costs = priced(figures, usd_s)
    engine = figures.get("timing_source") == "engine"
    lead = costs["engine_usd_per_1k"] if engine else costs["answered_usd_per_1k"]
    basis = (f"engine, saturation (batch {figures['sat_batch']})" if engine else "as answered, batch 1") \
        if not math.isnan(lead) else None
    return {**figures, **costs, "hardware_key": key, "self_hosted_usd_per_1k": lead, "cost_basis": basis}, tm


def _row(rec: dict, cached: bool, source, chains: dict, price_table, hardware_key) -> dict:
    c = rec["config"]
    m = c["method"]
    primary = rec["task"]["primary_metric"]
    samples = rec.get("samples") or []
    eff = rec.get("efficiency") or {}
    train_task = c.get("train_task")
    scores = item_scores(rec)
    scale = score_scale(primary)
    si = score_interval(list(scores.values()), scale)
    inputs = _nan(eff.get("mean_total_input_tokens", eff.get("mean_input_tokens")))
    cached_tokens = mean_or_nan(s.get("cached_tokens", 0) for s in samples) if cached else 0.0
    row = {
        "unit_id": rec["unit_id"], "status": "ok", "error": "", "model": c["model"], "method": m["name"],
        "label": m["label"] + (CACHED_SUFFIX if cached else ""),
        "prefix_cache": cached,
        "schedule": m.get("schedule") or "-",
        "stages": int(m.get("stages") or 1) if m.get("schedule") else (0 if not train_task else 1),
        "rate": float(m.get("rate", 1.0)), "train_task": train_task or "-", "eval_task": c["eval_task"],
        "cross_domain": bool(train_task) and train_task != c["eval_task"], "seed": c["seed"],
        "metric": primary, "score": float(rec["metrics"].get(primary, si["mean"] / scale if si["n"] else NAN)),
        "score_scale": scale, "score_display": si["mean"], "score_lo": si["lo"], "score_hi": si["hi"],
        "score_method": si["method"], "n": si["n"],
        # samples left out for a reason of the harness (sandbox_error, ...), within scoring.max_infra_failures
        "infra_excluded": int((rec.get("infra") or {}).get("excluded") or 0),
        "input_tokens": inputs,
        "input_tokens_cl100k": mean_or_nan(_api_input(s, "cl100k_base") for s in samples),
        "input_tokens_o200k": mean_or_nan(_api_input(s, "o200k_base") for s in samples),
        "output_tokens": _nan(eff.get("mean_total_output_tokens", eff.get("mean_output_tokens"))),
        # tokens each query computes: its input (a MetaTuner generator's included) less what a reused prefix held
        "prefill_tokens": inputs - cached_tokens,
        "prefix_tokens": float((eff.get("prefix_cache") or {}).get("tokens") or 0) if cached else 0.0,
        "prefix_encode_s": _nan((eff.get("prefix_cache") or {}).get("encode_seconds")) if cached else 0.0,
        "includes_generator": any(s.get("generator_tokens") for s in samples),
        "template_rate_achieved": mean_or_nan(s.get("template_rate_achieved") for s in samples),
        "max_new_tokens": eff.get("max_new_tokens"),
        "hardware": describe_hardware(rec.get("hardware") or {}),
        "device": (rec.get("hardware") or {}).get("device"),
        "budget": (c.get("budget") or {}).get("policy") or ("trained" if train_task else "untrained"),
        "item_scores": scores,
    }
    figures, tm = _efficiency(rec, cached, source, price_table, hardware_key)
    row.update(figures)
    row["timings"] = tm
    stages = chains.get(chain_key(c), []) if train_task else []
    row["train_steps"] = float(sum((s.get("train") or {}).get("steps") or 0 for s in stages)) if stages else \
        (NAN if train_task else 0.0)
    row["train_tokens"] = float(sum((s.get("train") or {}).get("train_tokens") or 0 for s in stages)) if stages \
        else (NAN if train_task else 0.0)
    if rec.get("metatuner"):  # its own phases: the optimizer steps its training summary lists
        row["train_steps"] = float(len((rec["metatuner"].get("train") or {}).get("steps") or []))
    if price_table is not None:
        costs = record_costs(rec, price_table)
        head = price_table.headline_model
        for model, a in costs["api"].items():
            # a cached-prefix row pays the provider's cached price (its caching rule) on its API column too
            row[f"api_usd_per_1k[{model}]"] = a["usd_per_1k_cached"] if cached else a["usd_per_1k"]
            row[f"api_usd_per_1k_cached[{model}]"] = a["usd_per_1k_cached"]
        row["api_usd_per_1k"] = row.get(f"api_usd_per_1k[{head}]", NAN)
        row["api_usd_per_1k_cached"] = row.get(f"api_usd_per_1k_cached[{head}]", NAN)
        row["api_model"] = head or ""
        row["price_table"] = price_table.id
        row["train_seconds"] = sum(_stage_seconds(s) for s in stages)
        row["train_usd"] = training_usd(stages, price_table, hardware_key) if stages else 0.0
        row["train_usd_api"] = _api_training_usd(row["train_tokens"], price_table, head) if train_task else 0.0
    return row


def _stage_seconds(stage: dict) -> float:
    """A stage's whole work (records before the split: its training seconds)."""
    return float((stage.get("work_seconds") or {}).get("total") or (stage.get("train") or {}).get("seconds") or 0.0)


def _api_training_usd(train_tokens: float, table, model: str | None) -> float:
    """Training tokens x the headline API model's fine-tuning price per token (NaN when it has none)."""
    price = ((table.api_models.get(model) or {}).get("fine_tuned") or {}).get("training") if model else None
    if price is None or train_tokens is None or math.isnan(train_tokens):
        return NAN
    return float(train_tokens) * float(price) / 1e6


def eval_frame(store: ResultStore, price_table: PriceTable | None = None, hardware_key: str | None = None) -> pd.DataFrame:
    """One row per evaluation record and serving condition, with every per-run measure and (when a price table is
    given) costs; plus one row per evaluation of the plan (``plan.json``) that has no valid result, with ``status``
    failed or missing."""
    chains = stage_records_by_chain(store)
    engine = engine_conditions(store)
    evals = store.records(kind="eval")
    evaluated = {_system_key(r["config"], bool(r["config"].get("prefix_cache"))) for r in evals}
    rows = [_row(rec, cached, source, chains, price_table, hardware_key)
            for rec in evals for cached, source in serving_conditions(rec, engine, evaluated)]
    rows += unfinished_rows(store, {r["unit_id"] for r in rows})
    df = pd.DataFrame(rows)
    return sort_rows(df) if not df.empty else df


def unfinished_rows(store: ResultStore, done: set[str]) -> list[dict]:
    """Rows for the plan's evaluations without a valid result (``plan.json``, written by ``promptintern run``):
    status "failed" (with the error of its failure record) or "missing" (never ran, or still running)."""
    path = store.root / PLAN_FILE
    if not path.is_file():
        return []
    try:
        units = json.loads(path.read_text()).get("units") or []
    except (OSError, ValueError):
        return []
    rows = []
    for u in units:
        if u.get("kind") not in ("eval", "metatuner") or u["id"] in done:
            continue
        status, error = "missing", "no result file"
        try:
            failed = json.loads(store.path(u["id"]).read_text())
            if failed.get("status") == "failed":
                status, error = "failed", str(failed.get("error") or "")
        except (OSError, ValueError):
            pass
        if status == "missing" and holder(store.root, u["id"]) is not None:
            error = "running (a live run holds its claim)"
        train_task = u.get("train_task")
        rows.append({
            "unit_id": u["id"], "status": status, "error": error, "model": u.get("model"),
            "method": u.get("method"), "label": u.get("method_label"), "schedule": u.get("schedule") or "-",
            "prefix_cache": bool(u.get("prefix_cache")),
            "stages": int(u.get("stages") or 1) if u.get("schedule") else (0 if not train_task else 1),
            "rate": float(u.get("rate") or 1.0), "train_task": train_task or "-", "eval_task": u.get("eval_task"),
            "cross_domain": bool(train_task) and train_task != u.get("eval_task"), "seed": u.get("seed"),
            "metric": "", "score": NAN, "score_display": NAN, "n": 0, "item_scores": {}, "timings": Timings(),
            "budget": "",
        })
    return rows




def by_method_order(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows sorted (stably) by ``keys``, where ``"_o"`` stands for the methods' display order."""
    order = df["method"].map(lambda m: METHODS[m].order if m in METHODS else 99)
    return df.assign(_o=order).sort_values(keys, kind="stable").drop(columns="_o").reset_index(drop=True)


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    return by_method_order(df, ["model", "eval_task", "cross_domain", "train_task", "_o", "schedule", "rate", "label"])


def _merge_items(dicts) -> dict[str, float]:
    """Per-key mean over several id -> value dicts (the seeds of one grid point)."""
    acc: dict[str, list[float]] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            acc.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def _merge_timings(ts) -> Timings:
    out = None
    for t in ts:
        out = t if out is None else out.merged(t)
    return out or Timings()


def main_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, eval task, train task, method grid point, serving condition), averaged over seeds, with
    every comparison (:mod:`promptintern.harness.compare`). A grid point some of whose seeds failed or never ran is kept with its
    status (no partial average)."""
    from .compare import add_comparisons

    if df.empty:
        return df
    ok = df[df["status"] == "ok"]
    numeric = [c for c in ok.columns if c not in GROUP_KEYS and c not in ("n", "seed", "unit_id")
               and pd.api.types.is_numeric_dtype(ok[c]) and not pd.api.types.is_bool_dtype(ok[c])]
    text = [c for c in ("metric", "hardware", "timing_source", "price_table", "hardware_key", "budget", "cost_basis",
                        "score_method", "api_model", "slo", "unit_id") if c in ok.columns]
    agg = {c: (c, "mean") for c in numeric}
    agg.update({c: (c, "first") for c in text})
    agg["includes_generator"] = ("includes_generator", "any")
    agg["item_scores"] = ("item_scores", _merge_items)
    agg["timings"] = ("timings", _merge_timings)
    if "sweep" in ok.columns:
        agg["sweep"] = ("sweep", "first")
    agg["n"] = ("n", "max")
    if "infra_excluded" in ok.columns:
        agg["infra_excluded"] = ("infra_excluded", "sum")
    agg["seeds"] = ("seed", "nunique")
    g = ok.groupby(GROUP_KEYS, dropna=False, sort=False).agg(**agg).reset_index() if len(ok) else ok.iloc[0:0]
    if len(ok) and ok.groupby(GROUP_KEYS, dropna=False).size().max() > 1:  # seeds: the interval of the pooled items
        for i, r in g.iterrows():
            si = score_interval(list(r["item_scores"].values()), r["score_scale"])
            g.loc[i, ["score_display", "score_lo", "score_hi"]] = [si["mean"], si["lo"], si["hi"]]
    g["status"], g["error"] = "ok", ""
    bad = df[df["status"] != "ok"]
    if len(bad):
        keys = set(map(tuple, bad[GROUP_KEYS].astype(str).values))
        g = g[[tuple(map(str, k)) not in keys for k in g[GROUP_KEYS].values]]
        first = bad.groupby(GROUP_KEYS, dropna=False, sort=False).agg(
            status=("status", "first"), error=("error", "first"), seeds=("seed", "nunique")).reset_index()
        g = pd.concat([g, first], ignore_index=True)
    return sort_rows(add_comparisons(g))


def sweep_frame(main: pd.DataFrame) -> pd.DataFrame:
    """Per serving condition and batch size timed by the engine unit: request and output-token throughput, TTFT,
    TPOT, goodput and accuracy-qualified goodput."""
    rows = []
    for _, r in main[main["status"] == "ok"].iterrows() if not main.empty else []:
        for b, p in sorted((r.get("sweep") or {}).items()) if isinstance(r.get("sweep"), dict) else []:
            rows.append({"model": r["model"], "train_task": r["train_task"], "eval_task": r["eval_task"],
                         "method": r["method"], "label": r["label"], "batch_size": int(b), "L": r.get("engine_L"),
                         "rps": p["rps"], "tok_s": p["rps"] * r.get("engine_L", NAN), "ttft_s": p["ttft"],
                         "tpot_s": p["tpot"], "goodput_rps": p["good"], "acc_goodput_rps": p["good_correct"],
                         "slo": r.get("slo")})
    return pd.DataFrame(rows)


def cross_domain_table(main: pd.DataFrame) -> pd.DataFrame:
    """Cross-domain rows with the base model's and full-prompt FT's score on the same eval task."""
    if main.empty or not main["cross_domain"].any():
        return main.iloc[0:0]
    cross = main[main["cross_domain"]].copy()
    base = main[main["method"].isin(BASE_MODEL_METHODS)]
    fp = main[main["method"] == BASELINE_METHOD]

    def base_score(r):
        b = base[(base["model"] == r["model"]) & (base["eval_task"] == r["eval_task"])]
        return float(b["score"].mean()) if len(b) else float("nan")

    def on_task_score(r):
        o = main[(main["model"] == r["model"]) & (main["label"] == r["label"]) & (main["train_task"] == r["train_task"])
                 & (main["eval_task"] == r["train_task"])]
        return float(o["score"].mean()) if len(o) else float("nan")

    def fp_score(r):
        f = fp[(fp["model"] == r["model"]) & (fp["eval_task"] == r["eval_task"]) & (fp["train_task"] == r["train_task"])]
        return float(f["score"].mean()) if len(f) else float("nan")

    cross["base_score"] = cross.apply(base_score, axis=1)
    cross["full_prompt_ft_score"] = cross.apply(fp_score, axis=1)
    cross["delta_vs_base"] = cross["score"] - cross["base_score"]
    cross["delta_vs_full_prompt_ft"] = cross["score"] - cross["full_prompt_ft_score"]
    cross["train_task_metric_score"] = cross.apply(on_task_score, axis=1)
    return cross.reset_index(drop=True)


def stage_frame(store: ResultStore) -> pd.DataFrame:
    rows = []
    for rec in store.records(kind="stage"):
        c, t = rec["config"], rec.get("train") or {}
        losses = t.get("losses") or []
        rows.append({
            "unit_id": rec["unit_id"], "model": c["model"], "method": c["method"]["name"], "label": c["method"]["label"],
            "train_task": c["train_task"], "seed": c["seed"], "stage": int(c["stage"]) + 1,
            "n_stages": int(c["n_stages"]),
            "template_rate_requested": _nan(t.get("template_rate_requested")),
            "template_rate_achieved": _nan(t.get("template_rate_achieved")),
            "examples_per_prompt": t.get("examples_per_prompt"), "n_examples": t.get("n_examples"),
            "mean_prompt_tokens": _nan(t.get("mean_prompt_tokens")),
            "first_loss": float(losses[0]) if losses else float("nan"),
            "final_loss": float(losses[-1]) if losses else float("nan"),
            "steps": t.get("steps"), "train_tokens": t.get("train_tokens"),
            "seconds": _nan(t.get("seconds")), "tokens_per_second": _nan(t.get("tokens_per_second")),
            "truncated_examples": t.get("truncated_examples"),
            # Absent from records written before MFU and packing were reported: NaN, shown as "–".
            "mfu": _nan(t.get("mfu")), "padding_share": _padding_share(t),
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return by_method_order(df, ["model", "train_task", "_o", "label", "seed", "stage"])


def _padding_share(train: dict) -> float:
    """Share of the positions computed that were padding: 1 - real tokens / positions (NaN when not reported)."""
    real, padded = _nan(train.get("train_tokens")), _nan(train.get("padded_tokens"))
    return 1.0 - real / padded if padded > 0 and not math.isnan(real) else float("nan")


def stage_table(sf: pd.DataFrame) -> pd.DataFrame:
    if sf.empty:
        return sf
    keys = ["model", "train_task", "method", "label", "stage", "n_stages"]
    num = ["template_rate_requested", "template_rate_achieved", "examples_per_prompt", "n_examples",
           "mean_prompt_tokens", "first_loss", "final_loss", "steps", "train_tokens", "seconds", "tokens_per_second",
           "mfu", "padding_share"]
    return (sf.groupby(keys, dropna=False, sort=False)
            .agg(**{c: (c, "mean") for c in num}, seeds=("seed", "nunique")).reset_index())


_DEF = re.compile(r"^\s*(?:async\s+)?def\s+\w+\s*\(", re.M)
_BARE_FENCE = re.compile(r"`{3}[\w+.-]*")
CODE_TASKS = ("mbpp", "humaneval")


def answers_frame(store: ResultStore) -> pd.DataFrame:
    """One row per evaluation record: the shape of its answers (see the module docstring)."""
    rows = []
    for rec in store.records(kind="eval"):
        c, samples = rec["config"], rec.get("samples") or []
        n = len(samples)
        reasons = [s.get("stop_reason") or "" for s in samples]
        code = rec["task"]["name"] in CODE_TASKS
        rows.append({
            "model": c["model"], "train_task": c.get("train_task") or "-", "eval_task": c["eval_task"],
            "method": c["method"]["name"], "label": c["method"]["label"], "seed": c["seed"], "n": n,
            "stop": reasons.count("stop"), "eos": reasons.count("eos"), "length": reasons.count("length"),
            "bare_fence": sum(bool(_BARE_FENCE.fullmatch((s.get("generation") or "").strip())) for s in samples),
            "extraction_failed": sum(bool(s.get("extraction_failure")) for s in samples),
            "defines_function": (sum(bool(_DEF.search(s.get("answer") or "")) for s in samples) / n
                                 if code and n else float("nan")),
            "mean_output_tokens": _nan((rec.get("efficiency") or {}).get("mean_output_tokens")),
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return by_method_order(df, ["model", "eval_task", "train_task", "_o", "label", "seed"])


