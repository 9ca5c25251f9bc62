"""Aggregate result files into tables. Reads only the run JSONs; every number is recomputable from them.

Tables (markdown, CSV and LaTeX) under ``<results>/<experiment>/tables/``:

- ``main``: every (model, train task, eval task, method grid point), averaged over seeds: accuracy ± standard
  error, mean input tokens and reduction vs full-prompt fine-tuning, batch-1 latency p50/p90 and speedup vs
  full-prompt fine-tuning, throughput at the saturating batch size, cost per 1k queries (self-hosted and the price
  table's headline API model) and saving vs the full prompt.
- ``<task>``: the same for one eval task, on-task rows only (train task = eval task, or untrained methods).
- ``cross_domain``: rows whose eval task differs from their train task, against the base model and full-prompt FT.
- ``cost``: cost per 1k queries for every API model of the price table (uncached, and cached under the price table's prompt-caching rule) and
  self-hosted, plus the one-time self-hosted training cost.
- ``throughput``: tokens/s and samples/s at every measured batch size.
- ``stages``: per training stage: mean prompt tokens, template rate requested/achieved, final loss, tokens/s.
- ``answers``: per evaluation, what the answers look like: how generation ended (stop string, end of turn, token
  budget), bare-fence generations, answers whose extraction failed, and (code tasks) answers that define a function.

The baseline of a row is ``full_prompt_ft`` for the same model and eval task, trained on the row's train task (or,
for untrained rows, on the eval task itself).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from .cost import PriceTable, load_price_table, mean_or_nan, record_costs, training_usd
from .measure import mean_se
from .plan import CACHED_SUFFIX, eval_label
from .store import ResultStore

BASELINE_METHOD = "full_prompt_ft"
BASE_MODEL_METHODS = ("few_shot",)  # the untrained base model, prompted with the full prompt
METHOD_ORDER = {"few_shot": 0, "compress_at_inference": 1, "full_prompt_ft": 2, "query_only_ft": 3,
                "promptintern": 4, "metatuner": 5}
# Metrics already on a 0-100 scale; every other primary metric is a fraction shown as a percentage.
SCALE_100_METRICS = {"bleu", "corpus_bleu", "chrf", "rouge", "rougeL"}
GROUP_KEYS = ["model", "eval_task", "train_task", "label", "method", "schedule", "stages", "rate", "cross_domain",
              "prefix_cache"]


def display_score(metric: str, value: float) -> float:
    """A primary metric on a 0-100 scale for display (fractions x 100; BLEU-like metrics as they are)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return float("nan")
    return float(value) if metric in SCALE_100_METRICS else 100.0 * float(value)


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def primary_values(rec: dict) -> list[float]:
    primary = rec["task"]["primary_metric"]
    vals = [s["score"].get(primary) for s in rec.get("samples") or []]
    return [float(v) for v in vals if v is not None and not isinstance(v, str)]


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


def latency_fields(rec: dict) -> dict:
    """Batch-1 latency p50/p90 from the recorded measurement, or from main-run samples that ran at batch 1."""
    from .measure import percentile, query_latency, sample_tpot

    lat = (rec.get("measurements") or {}).get("latency")
    if lat:
        return {"latency_p50_s": lat["e2e_s"]["p50"], "latency_p90_s": lat["e2e_s"]["p90"],
                "ttft_p50_s": lat["ttft_s"]["p50"], "ttft_p90_s": lat["ttft_s"]["p90"],
                "tpot_p50_s": percentile(map(sample_tpot, lat.get("samples") or []), 50),
                "latency_n": lat["e2e_s"]["n"], "latency_source": lat.get("source", "batch1_run"),
                "latency_max_new_tokens": lat.get("max_new_tokens")}
    b1 = [s for s in rec.get("samples") or [] if s.get("batch_size") == 1]
    if b1:
        ttft, e2e = zip(*(query_latency(s) for s in b1), strict=True)
        return {"latency_p50_s": percentile(e2e, 50), "latency_p90_s": percentile(e2e, 90),
                "ttft_p50_s": percentile(ttft, 50), "ttft_p90_s": percentile(ttft, 90),
                "tpot_p50_s": percentile(map(sample_tpot, b1), 50),
                "latency_n": len(b1), "latency_source": "main_run_batch1",
                "latency_max_new_tokens": (rec.get("efficiency") or {}).get("max_new_tokens")}
    nan = float("nan")
    return {"latency_p50_s": nan, "latency_p90_s": nan, "ttft_p50_s": nan, "ttft_p90_s": nan, "tpot_p50_s": nan,
            "latency_n": 0, "latency_source": "not measured", "latency_max_new_tokens": None}


def throughput_fields(rec: dict) -> dict:
    tp = (rec.get("measurements") or {}).get("throughput") or {}
    sat = tp.get("saturating") or {}
    return {"throughput_tok_s": _nan(sat.get("tokens_per_s")), "throughput_samples_s": _nan(sat.get("samples_per_s")),
            "saturating_batch": sat.get("batch_size"), "throughput_saturated": sat.get("saturated"),
            "throughput_batch_sizes": ",".join(str(p["batch_size"]) for p in tp.get("points") or [])}


def item_scores(rec: dict) -> dict[str, float]:
    """Sample id -> primary-metric score on the display scale (points): what paired differences compare."""
    primary = rec["task"]["primary_metric"]
    out = {}
    for s in rec.get("samples") or []:
        v = (s.get("score") or {}).get(primary)
        if v is not None and not isinstance(v, str):
            out[str(s["id"])] = display_score(primary, float(v))
    return out


def eval_frame(store: ResultStore, price_table: PriceTable | None = None, hardware_key: str | None = None) -> pd.DataFrame:
    """One row per eval result file, with every per-run measure and (when a price table is given) costs; plus one
    row per evaluation of the plan (``plan.json``) that has no valid result, with ``status`` failed or missing."""
    from .env_info import describe_hardware
    from .measure import per_query_latency

    chains = stage_records_by_chain(store)
    rows = []
    for rec in store.records(kind="eval"):
        c = rec["config"]
        m = c["method"]
        primary = rec["task"]["primary_metric"]
        values = primary_values(rec)
        mean, se = mean_se(values)
        samples = rec.get("samples") or []
        eff = rec.get("efficiency") or {}
        train_task = c.get("train_task")
        lat = (rec.get("measurements") or {}).get("latency") or {}
        # MetaTuner: the generator reads the query and writes the prompt on every call: its tokens count too
        gen_in = [s["generator_tokens"] for s in samples if s.get("generator_tokens")]
        cached = bool(c.get("prefix_cache"))
        prefix = eff.get("prefix_cache") or {}
        row = {
            "unit_id": rec["unit_id"],
            "status": "ok",
            "error": "",
            "model": c["model"],
            "method": m["name"],
            "label": eval_label(c),
            # the cached-prefix condition: the recurring prefix's KV cache encoded once and reused per query
            "prefix_cache": cached,
            "prefix_tokens": float(prefix.get("tokens") or 0),
            "prefix_encode_s": _nan(prefix.get("encode_seconds")) if cached else 0.0,
            "schedule": m.get("schedule") or "-",
            "stages": int(m.get("stages") or 1) if m.get("schedule") else (0 if not train_task else 1),
            "rate": float(m.get("rate", 1.0)),
            "train_task": train_task or "-",
            "eval_task": c["eval_task"],
            "cross_domain": bool(train_task) and train_task != c["eval_task"],
            "seed": c["seed"],
            "metric": primary,
            "score": float(rec["metrics"].get(primary, mean)),
            "score_se": se,
            "n": len(values),
            # samples left out for a reason of the harness (sandbox_error, ...), within scoring.max_infra_failures
            "infra_excluded": int((rec.get("infra") or {}).get("excluded") or 0),
            "input_tokens": _nan(eff.get("mean_total_input_tokens", eff.get("mean_input_tokens"))),
            "input_tokens_cl100k": mean_or_nan(_api_input(s, "cl100k_base") for s in samples),
            "input_tokens_o200k": mean_or_nan(_api_input(s, "o200k_base") for s in samples),
            "output_tokens": _nan(eff.get("mean_total_output_tokens", eff.get("mean_output_tokens"))),
            # tokens prefilled per query: the input (a MetaTuner generator's included) minus what a reused prefix
            # cache already held
            "prefill_tokens": _nan(eff.get("mean_total_input_tokens", eff.get("mean_input_tokens")))
            - mean_or_nan(s.get("cached_tokens", 0) for s in samples) if samples else float("nan"),
            "includes_generator": bool(gen_in),
            "template_rate_achieved": mean_or_nan(s.get("template_rate_achieved") for s in samples),
            "seconds_per_query": _nan(eff.get("generation_seconds")) / len(samples) if samples else float("nan"),
            "compressor_s_per_query": _nan(eff.get("compressor_seconds")) / len(samples) if samples else float("nan"),
            "generation_batch_size": eff.get("generation_batch_size") or c.get("generation", {}).get("batch_size"),
            "max_new_tokens": eff.get("max_new_tokens"),
            **latency_fields(rec),
            **throughput_fields(rec),
            "hardware": describe_hardware(rec.get("hardware") or {}),
            "device": (rec.get("hardware") or {}).get("device"),
            "budget": (c.get("budget") or {}).get("policy") or ("trained" if train_task else "untrained"),
            "item_scores": item_scores(rec),
            "query_latency": per_query_latency(lat.get("samples") or []),
        }
        stages = chains.get(chain_key(c), []) if train_task else []
        row["train_steps"] = float(sum((s.get("train") or {}).get("steps") or 0 for s in stages)) if stages else \
            (float("nan") if train_task else 0.0)
        row["train_tokens"] = float(sum((s.get("train") or {}).get("train_tokens") or 0 for s in stages)) if stages \
            else (float("nan") if train_task else 0.0)
        if rec.get("metatuner"):  # its own phases: the optimizer steps its training summary lists
            row["train_steps"] = float(len((rec["metatuner"].get("train") or {}).get("steps") or []))
        if price_table is not None:
            costs = record_costs(rec, price_table, hardware_key)
            sh = costs["self_hosted"]
            row.update(price_table=price_table.id, hardware_key=sh["hardware_key"],
                       self_hosted_usd_per_1k=sh["usd_per_1k"])
            for model, a in costs["api"].items():
                # a cached-prefix row pays the provider's cached price (its caching rule) on its API column too
                row[f"api_usd_per_1k[{model}]"] = a["usd_per_1k_cached"] if cached else a["usd_per_1k"]
                row[f"api_usd_per_1k_cached[{model}]"] = a["usd_per_1k_cached"]
            row["train_seconds"] = sum((s.get("train") or {}).get("seconds") or 0.0 for s in stages) if stages else 0.0
            row["train_usd"] = training_usd(stages, price_table, hardware_key) if stages else 0.0
        rows.append(row)
    rows += unfinished_rows(store, {r["unit_id"] for r in rows})
    df = pd.DataFrame(rows)
    return sort_rows(df) if not df.empty else df


def _api_input(sample: dict, encoding: str):
    """A sample's API input tokens in one encoding, the MetaTuner generator's input included."""
    v = (sample.get("tokens") or {}).get(encoding)
    g = (sample.get("generator_tokens") or {}).get(encoding)
    return None if v is None else v + (g or 0)


def unfinished_rows(store: ResultStore, done: set[str]) -> list[dict]:
    """Rows for the plan's evaluations without a valid result (``plan.json``, written by ``promptintern run``):
    status "failed" (with the error of its failure record) or "missing" (never ran, or still running)."""
    import json

    from .claims import holder
    from .store import PLAN_FILE

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
            "metric": "", "score": float("nan"), "score_se": float("nan"), "n": 0, "item_scores": {},
            "query_latency": {}, "budget": "",
        })
    return rows


def by_method_order(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows sorted (stably) by ``keys``, where ``"_o"`` stands for the methods' display order."""
    order = df["method"].map(lambda m: METHOD_ORDER.get(m, 99))
    return df.assign(_o=order).sort_values(keys, kind="stable").drop(columns="_o").reset_index(drop=True)


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    return by_method_order(df, ["model", "eval_task", "cross_domain", "train_task", "_o", "schedule", "rate", "label"])


def _se_of_mean_of_means(ses: pd.Series) -> float:
    vals = [float(s) for s in ses if not (isinstance(s, float) and math.isnan(s))]
    if len(vals) != len(ses) or not vals:
        return float("nan")
    return math.sqrt(sum(v * v for v in vals)) / len(vals)


def _merge_items(dicts) -> dict[str, float]:
    """Per-key mean over several id -> value dicts (the seeds of one grid point)."""
    acc: dict[str, list[float]] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            acc.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def main_table(df: pd.DataFrame, headline_api: str | None = None) -> pd.DataFrame:
    """One row per (model, eval task, train task, method grid point), averaged over seeds, with comparisons to the
    baselines on the same test items (:mod:`harness.compare`): paired score differences against full-prompt and
    query-only FT with 95 % intervals, token reduction, latency speedup with its interval, cost saving. Grid
    points without a valid result are kept, with their status (failed / missing)."""
    if df.empty:
        return df
    ok = df[df["status"] == "ok"]
    numeric = [c for c in ok.columns if c not in GROUP_KEYS and c not in ("score_se", "n", "seed", "unit_id")
               and pd.api.types.is_numeric_dtype(ok[c]) and not pd.api.types.is_bool_dtype(ok[c])]
    text = [c for c in ("metric", "hardware", "latency_source", "price_table", "hardware_key", "throughput_batch_sizes",
                        "budget") if c in ok.columns]
    agg = {c: (c, "mean") for c in numeric}
    agg.update({c: (c, "first") for c in text})
    agg["includes_generator"] = ("includes_generator", "any")
    agg["item_scores"] = ("item_scores", _merge_items)
    agg["query_latency"] = ("query_latency", _merge_items)
    agg["score_se"] = ("score_se", _se_of_mean_of_means)
    agg["n"] = ("n", "sum")
    if "infra_excluded" in ok.columns:
        agg["infra_excluded"] = ("infra_excluded", "sum")
    agg["seeds"] = ("seed", "nunique")
    g = ok.groupby(GROUP_KEYS, dropna=False, sort=False).agg(**agg).reset_index() if len(ok) else ok.iloc[0:0]
    g["status"], g["error"] = "ok", ""
    # A grid point some of whose seeds failed or never ran: shown with its status (no partial average).
    bad = df[df["status"] != "ok"]
    if len(bad):
        keys = set(map(tuple, bad[GROUP_KEYS].astype(str).values))
        g = g[[tuple(map(str, k)) not in keys for k in g[GROUP_KEYS].values]]
        first = bad.groupby(GROUP_KEYS, dropna=False, sort=False).agg(
            status=("status", "first"), error=("error", "first"), seeds=("seed", "nunique")).reset_index()
        g = pd.concat([g, first], ignore_index=True)
    g["api_usd_per_1k"] = g[f"api_usd_per_1k[{headline_api}]"] if headline_api and \
        f"api_usd_per_1k[{headline_api}]" in g.columns else float("nan")
    g["api_usd_per_1k_cached"] = g[f"api_usd_per_1k_cached[{headline_api}]"] if headline_api and \
        f"api_usd_per_1k_cached[{headline_api}]" in g.columns else float("nan")
    g["api_model"] = headline_api or ""
    from .compare import add_comparisons

    g = add_comparisons(g, headline_api)
    return sort_rows(g)


# -- formatting --------------------------------------------------------------------------------------------------

def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(x, nd: int = 1) -> str:
    return "" if _isnan(x) else f"{x:.{nd}f}"


def fmt_pct(x) -> str:
    return "" if _isnan(x) else f"{x:.1f}%"


def fmt_x(x) -> str:
    return "" if _isnan(x) else f"{x:.2f}x"


def fmt_usd(x) -> str:
    """Three significant digits without scientific notation ($0.0000204, $0.487, $12.3, $1,234)."""
    if _isnan(x):
        return ""
    if x == 0:
        return "$0"
    if abs(x) >= 100:
        return f"${x:,.0f}"
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"${x:.{decimals}f}"


def fmt_s(x) -> str:
    if _isnan(x):
        return ""
    if x < 0.01:  # GPU decode steps: keep two decimals of a millisecond
        return f"{x * 1000:.2f} ms"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def fmt_score(row) -> str:
    status = row.get("status", "ok")
    if status not in ("ok", None) and not _isnan(status):
        err = str(row.get("error") or "").strip()
        return status.upper() + (f": {err[:80]}" if err else "")
    s = display_score(row["metric"], row["score"])
    if _isnan(s):
        return ""
    se = display_score(row["metric"], row["score_se"])
    return f"{s:.1f}" + ("" if _isnan(se) else f" ± {se:.1f}")


def fmt_bound(x: float) -> str:
    """An interval bound: one decimal, two where one would round a non-zero bound to 0 (so "+0.0" never hides
    which side of 0 it is on)."""
    return f"{x:+.2f}" if x != 0 and abs(x) < 0.05 else f"{x:+.1f}"


def fmt_delta(prefix: str) -> Callable[[pd.Series], str]:
    """A paired difference in points with its 95 % interval; "ns" where the interval includes 0."""

    def f(r) -> str:
        d = r.get(prefix)
        if _isnan(d):
            return ""
        lo, hi = r.get(f"{prefix}_lo"), r.get(f"{prefix}_hi")
        if _isnan(lo) or _isnan(hi):
            return f"{d:+.1f}"
        return f"{d:+.1f} [{fmt_bound(lo)}, {fmt_bound(hi)}]" + (" ns" if r.get(f"{prefix}_ns") else "")

    return f


Column = tuple[str, Callable[[pd.Series], str]]


def has_cached(table: pd.DataFrame) -> bool:
    """Whether a table holds cached-prefix rows (its comparisons against the cached full prompt are shown)."""
    return "prefix_cache" in table.columns and bool(table["prefix_cache"].fillna(False).astype(bool).any())


def fmt_ratio(col: str) -> Callable[[pd.Series], str]:
    """A ratio (a speedup) with its 95 % interval from ``<col>_lo`` / ``<col>_hi`` where there is one."""

    def f(r) -> str:
        x = r.get(col)
        if _isnan(x):
            return ""
        lo, hi = r.get(f"{col}_lo"), r.get(f"{col}_hi")
        return fmt_x(x) + ("" if _isnan(lo) or _isnan(hi) else f" [{lo:.2f}, {hi:.2f}]")

    return f


fmt_speedup = fmt_ratio("speedup")


def fmt_queries(x) -> str:
    if _isnan(x):
        return ""
    if math.isinf(x):
        return "never"
    return "< 1" if x < 1 else f"{x:,.0f}"


def cached_columns() -> list[Column]:
    """Every row against the cached full prompt (full-prompt FT with its prefix KV cache reused): what the free
    alternative to internalization already saves."""
    return [
        ("prefill tokens", lambda r: fmt(r.get("prefill_tokens"))),
        ("vs cached FP: prefill reduction", lambda r: fmt_pct(r.get("token_reduction_cached_pct"))),
        ("vs cached FP: speedup [95% CI]", fmt_ratio("speedup_cached")),
        ("vs cached FP: self-hosted saving", lambda r: fmt_pct(r.get("self_hosted_saving_cached_pct"))),
        ("vs cached FP: API saving", lambda r: fmt_pct(r.get("api_saving_cached_pct"))),
        ("break-even queries vs FP (uncached / cached)",
         lambda r: "" if _isnan(r.get("break_even")) and _isnan(r.get("break_even_cached")) else
         f"{fmt_queries(r.get('break_even')) or '–'} / {fmt_queries(r.get('break_even_cached')) or '–'}"),
    ]


def fmt_n(r) -> str:
    """Scored samples, and those left out for a reason of the harness (tasks/infra.py) when there are any."""
    if _isnan(r.get("n")):
        return ""
    out = str(int(r["n"]))
    x = r.get("infra_excluded")
    return out + (f" (+{int(x)} excluded: infra)" if x and not _isnan(x) and x > 0 else "")


def main_columns(include_task: bool = True, cached: bool = False) -> list[Column]:
    cols: list[Column] = []
    if include_task:
        cols += [("model", lambda r: str(r["model"])), ("train task", lambda r: str(r["train_task"])),
                 ("eval task", lambda r: str(r["eval_task"]))]
    cols += [
        ("method", lambda r: str(r["label"])),
        # (a grid whose evaluations all failed has no metric column: its rows show their status)
        ("metric", lambda r: "" if _isnan(r.get("metric")) else str(r.get("metric"))),
        ("score ± se", fmt_score),
        ("n", fmt_n),
        ("steps", lambda r: fmt(r.get("train_steps"), 0)),
        ("Δ vs full-prompt FT [95% CI]", fmt_delta("delta_full")),
        ("Δ vs query-only FT [95% CI]", fmt_delta("delta_query")),
        ("input tokens", lambda r: fmt(r.get("input_tokens"))),
        ("token reduction", lambda r: fmt_pct(r.get("token_reduction_pct"))),
        ("TTFT p50", lambda r: fmt_s(r.get("ttft_p50_s"))),
        ("per token p50", lambda r: fmt_s(r.get("tpot_p50_s"))),
        ("latency p50", lambda r: fmt_s(r.get("latency_p50_s"))),
        ("latency p90", lambda r: fmt_s(r.get("latency_p90_s"))),
        ("speedup [95% CI]", fmt_speedup),
        ("throughput tok/s", lambda r: fmt(r.get("throughput_tok_s"))),
    ]
    cols += [
        ("self-hosted $/1k", lambda r: fmt_usd(r.get("self_hosted_usd_per_1k"))),
        ("self-hosted saving", lambda r: fmt_pct(r.get("self_hosted_saving_pct"))),
        ("API $/1k", lambda r: fmt_usd(r.get("api_usd_per_1k"))),
        ("API saving", lambda r: fmt_pct(r.get("api_saving_pct"))),
        # the price table's caching rule applied (a template under its minimum pays the full input price)
        ("API $/1k, prompt cached", lambda r: fmt_usd(r.get("api_usd_per_1k_cached"))),
    ]
    return cols + (cached_columns() if cached else [])


def render_markdown(table: pd.DataFrame, columns: Sequence[Column]) -> str:
    if table.empty:
        return "_no results_"
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(f(r).replace("|", "\\|") for _, f in columns) + " |")
    return "\n".join(lines)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in s).replace("±", r"$\pm$")


def render_latex(table: pd.DataFrame, columns: Sequence[Column], caption: str = "") -> str:
    spec = "l" * len(columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h, _ in columns) + r" \\", r"\midrule"]
    for _, r in table.iterrows():
        lines.append(" & ".join(latex_escape(f(r)) for _, f in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_markdown(table: pd.DataFrame) -> str:
    """The main table as markdown (with the cached-prefix comparisons when it has cached rows)."""
    return render_markdown(table, main_columns(cached=has_cached(table)))


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


def cross_columns() -> list[Column]:
    def score(col):
        return lambda r: fmt(display_score(r["metric"], r[col]))

    def delta(col):
        def f(r):
            v = display_score(r["metric"], r[col]) if not _isnan(r[col]) else float("nan")
            return "" if _isnan(v) else f"{v:+.1f}"
        return f

    return [("model", lambda r: str(r["model"])), ("train task", lambda r: str(r["train_task"])),
            ("eval task", lambda r: str(r["eval_task"])), ("method", lambda r: str(r["label"])),
            ("metric", lambda r: str(r["metric"])), ("score ± se", fmt_score), ("n", lambda r: str(int(r["n"]))),
            ("base model (few-shot)", score("base_score")), ("Δ vs base", delta("delta_vs_base")),
            ("full-prompt FT", score("full_prompt_ft_score")), ("Δ vs full-prompt FT", delta("delta_vs_full_prompt_ft")),
            ("input tokens", lambda r: fmt(r["input_tokens"]))]


def cost_columns(table: PriceTable | None, main: pd.DataFrame) -> list[Column]:
    cols: list[Column] = [("model", lambda r: str(r["model"])), ("train task", lambda r: str(r["train_task"])),
                          ("eval task", lambda r: str(r["eval_task"])), ("method", lambda r: str(r["label"])),
                          ("s/query", lambda r: fmt(r.get("seconds_per_query"), 3)),
                          ("hardware price", lambda r: str(r.get("hardware_key") or "unpriced")),
                          ("self-hosted $/1k", lambda r: fmt_usd(r.get("self_hosted_usd_per_1k"))),
                          ("training $ (self-hosted, once)", lambda r: fmt_usd(r.get("train_usd")))]
    if has_cached(main):  # the one-time encoding of the cached prefix, per adapter (included in s/query)
        cols.insert(5, ("prefix encode (once)", lambda r: fmt_s(r.get("prefix_encode_s")) if r.get("prefix_cache")
                        else ""))
    for model in (table.api_models if table else {}):
        cols.append((f"{model} $/1k", lambda r, m=model: fmt_usd(r.get(f"api_usd_per_1k[{m}]"))))
        cols.append((f"{model} cached $/1k", lambda r, m=model: fmt_usd(r.get(f"api_usd_per_1k_cached[{m}]"))))
    return cols


# -- stages ------------------------------------------------------------------------------------------------------

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


def _pct_or_dash(x) -> str:
    """A fraction as a percentage, "–" when absent (MFU needs a GPU the peak file names)."""
    return "–" if _isnan(x) else fmt_pct(100.0 * x)


def stage_table(sf: pd.DataFrame) -> pd.DataFrame:
    if sf.empty:
        return sf
    keys = ["model", "train_task", "method", "label", "stage", "n_stages"]
    num = ["template_rate_requested", "template_rate_achieved", "examples_per_prompt", "n_examples",
           "mean_prompt_tokens", "first_loss", "final_loss", "steps", "train_tokens", "seconds", "tokens_per_second",
           "mfu", "padding_share"]
    return (sf.groupby(keys, dropna=False, sort=False)
            .agg(**{c: (c, "mean") for c in num}, seeds=("seed", "nunique")).reset_index())


def stage_columns() -> list[Column]:
    return [("model", lambda r: str(r["model"])), ("train task", lambda r: str(r["train_task"])),
            ("method", lambda r: str(r["label"])), ("stage", lambda r: f"{int(r['stage'])}/{int(r['n_stages'])}"),
            ("template rate requested", lambda r: fmt(r["template_rate_requested"], 2)),
            ("template rate achieved", lambda r: fmt(r["template_rate_achieved"], 2)),
            ("examples/prompt", lambda r: fmt(r["examples_per_prompt"], 0)),
            ("mean prompt tokens", lambda r: fmt(r["mean_prompt_tokens"])),
            ("first loss", lambda r: fmt(r["first_loss"], 3)), ("final loss", lambda r: fmt(r["final_loss"], 3)),
            ("steps", lambda r: fmt(r["steps"], 0)), ("train s", lambda r: fmt(r["seconds"], 1)),
            ("tokens/s", lambda r: fmt(r["tokens_per_second"], 0)),
            ("MFU", lambda r: _pct_or_dash(r.get("mfu"))), ("padding", lambda r: _pct_or_dash(r.get("padding_share")))]


def throughput_frame(store: ResultStore) -> pd.DataFrame:
    rows = []
    for rec in store.records(kind="eval"):
        c = rec["config"]
        tp = (rec.get("measurements") or {}).get("throughput") or {}
        for p in tp.get("points") or []:
            rows.append({"model": c["model"], "train_task": c.get("train_task") or "-", "eval_task": c["eval_task"],
                         "method": c["method"]["name"], "label": eval_label(c), "seed": c["seed"],
                         "batch_size": p["batch_size"], "max_new_tokens": tp.get("max_new_tokens"),
                         "prompt_tokens": p["prompt_tokens"], "prefill_tokens": p.get("prefill_tokens",
                                                                                        p["prompt_tokens"]),
                         "tokens_per_s": p["tokens_per_s"],
                         "tokens_per_s_lo": _nan((p.get("tokens_per_s_ci") or [None, None])[0]),
                         "tokens_per_s_hi": _nan((p.get("tokens_per_s_ci") or [None, None])[1]),
                         "repeats": len(p.get("seconds_repeats") or [p["seconds"]]),
                         "samples_per_s": p["samples_per_s"], "seconds": p["seconds"]})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return by_method_order(df, ["model", "eval_task", "train_task", "_o", "label", "seed", "batch_size"])


def throughput_columns() -> list[Column]:
    return [("model", lambda r: str(r["model"])), ("train task", lambda r: str(r["train_task"])),
            ("eval task", lambda r: str(r["eval_task"])), ("method", lambda r: str(r["label"])),
            ("seed", lambda r: str(r["seed"])), ("batch", lambda r: str(int(r["batch_size"]))),
            ("new tokens/row", lambda r: str(r["max_new_tokens"])),
            ("prompt tokens", lambda r: str(int(r["prompt_tokens"]))),
            ("prefilled", lambda r: str(int(r["prefill_tokens"]))),
            ("tokens/s", lambda r: fmt(r["tokens_per_s"])),
            ("95% CI", lambda r: "" if _isnan(r.get("tokens_per_s_lo")) else
             f"[{r['tokens_per_s_lo']:.1f}, {r['tokens_per_s_hi']:.1f}]"),
            ("repeats", lambda r: str(int(r.get("repeats") or 1))), ("samples/s", lambda r: fmt(r["samples_per_s"], 2))]


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
            "method": c["method"]["name"], "label": eval_label(c), "seed": c["seed"], "n": n,
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


def answers_columns() -> list[Column]:
    return [("model", lambda r: str(r["model"])), ("train task", lambda r: str(r["train_task"])),
            ("eval task", lambda r: str(r["eval_task"])), ("method", lambda r: str(r["label"])),
            ("seed", lambda r: str(r["seed"])), ("n", lambda r: str(int(r["n"]))),
            ("ended: stop / eos / budget", lambda r: f"{int(r['stop'])} / {int(r['eos'])} / {int(r['length'])}"),
            ("bare fence", lambda r: str(int(r["bare_fence"]))),
            ("extraction failed", lambda r: str(int(r["extraction_failed"]))),
            ("defines a function", lambda r: "–" if _isnan(r["defines_function"])
             else fmt_pct(100.0 * r["defines_function"])),
            ("output tokens", lambda r: fmt(r["mean_output_tokens"]))]


# -- writing -----------------------------------------------------------------------------------------------------

def tables(store: ResultStore, price_table: PriceTable | None = None, hardware_key: str | None = None) -> dict:
    """Every table as a DataFrame (plus the frames they came from)."""
    df = eval_frame(store, price_table, hardware_key)
    main = main_table(df, price_table.headline_model if price_table else None)
    sf = stage_frame(store)
    return {"eval": df, "main": main, "cross_domain": cross_domain_table(main), "stages_raw": sf,
            "stages": stage_table(sf), "throughput": throughput_frame(store), "answers": answers_frame(store)}


OBJECT_COLUMNS = ("item_scores", "query_latency")  # per-item dicts: in the result files, not in the CSV


def _write(out: Path, stem: str, table: pd.DataFrame, columns: Sequence[Column], caption: str,
           csv_frame: pd.DataFrame | None = None) -> dict[str, Path]:
    paths = {"markdown": out / f"{stem}.md", "csv": out / f"{stem}.csv", "latex": out / f"{stem}.tex"}
    paths["markdown"].write_text(render_markdown(table, columns) + "\n")
    frame = csv_frame if csv_frame is not None else table
    frame.drop(columns=[c for c in OBJECT_COLUMNS if c in frame.columns]).to_csv(paths["csv"], index=False)
    paths["latex"].write_text(render_latex(table, columns, caption))
    return paths


def task_file_stem(task: str) -> str:
    return "task-" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task)


def write_tables(store: ResultStore, price_table: PriceTable | str | None = None,
                 hardware_key: str | None = None) -> dict[str, Path]:
    """Write every table; returns paths: "markdown", "csv", "latex" (main table) and "<table>.<format>" for the rest."""
    if not isinstance(price_table, PriceTable):
        price_table = load_price_table(price_table)
    t = tables(store, price_table, hardware_key)
    out = store.root / "tables"
    out.mkdir(parents=True, exist_ok=True)
    main = t["main"]
    paths: dict[str, Path] = {}
    caption = (f"Main results. Costs priced with {price_table.describe()}; latency at batch 1; "
               f"API cost for {price_table.headline_model}.")
    if has_cached(main):
        caption += (f" Rows marked {CACHED_SUFFIX} reuse the recurring prefix's KV cache (encoded once per adapter) and "
                    "pay the API's cached-input price under the price table's caching rule.")
    for fmt_name, p in _write(out, "main", main, main_columns(cached=has_cached(main)), caption).items():
        paths[fmt_name] = p
        paths[f"main.{fmt_name}"] = p
    if not main.empty:
        for task in sorted(main["eval_task"].unique()):
            sub = main[(main["eval_task"] == task) & (~main["cross_domain"])]
            stem = task_file_stem(task)
            for fmt_name, p in _write(out, stem, sub, main_columns(include_task=True, cached=has_cached(sub)),
                                      f"{task}: on-task results.").items():
                paths[f"{stem}.{fmt_name}"] = p
    for fmt_name, p in _write(out, "cross_domain", t["cross_domain"], cross_columns(),
                              "Cross-domain evaluation: eval task differs from the train task.").items():
        paths[f"cross_domain.{fmt_name}"] = p
    for fmt_name, p in _write(out, "cost", main, cost_columns(price_table, main),
                              f"Cost per 1k queries, {price_table.describe()}.").items():
        paths[f"cost.{fmt_name}"] = p
    for fmt_name, p in _write(out, "throughput", t["throughput"], throughput_columns(),
                              "Throughput at each measured batch size.").items():
        paths[f"throughput.{fmt_name}"] = p
    for fmt_name, p in _write(out, "stages", t["stages"], stage_columns(), "Training stages.").items():
        paths[f"stages.{fmt_name}"] = p
    for fmt_name, p in _write(out, "answers", t["answers"], answers_columns(),
                              "How the answers ended and what extraction found.").items():
        paths[f"answers.{fmt_name}"] = p
    return paths
