"""The main table's comparisons, each on the same test items (or the same latency queries) as its baseline.

Baselines of a row: ``full_prompt_ft`` and ``query_only_ft`` for the same model and eval task, trained on the
row's train task (for untrained rows: on the eval task itself).

- ``delta_full`` / ``delta_query``: the paired score difference in points (the display scale: percentages for
  fractions, BLEU as it is) over the items both rows scored, with a 95 % paired-bootstrap interval (``_lo``,
  ``_hi``), the items paired (``_n``), the differences' standard deviation (``_sd``) and whether the interval
  includes 0 (``_ns``: "not significant").
- ``speedup`` (with ``speedup_lo`` / ``speedup_hi``): mean batch-1 end-to-end latency of full-prompt FT over the
  row's, on the latency queries both measured (each query's mean over its repeats), 95 % bootstrap over queries;
  rows measured without repeats or without common queries fall back to the ratio of p50s, without an interval.
- ``token_reduction_pct``, ``self_hosted_saving_pct``, ``api_saving_pct``: 1 - row / full-prompt FT.
- The same against the **cached** full prompt (full-prompt FT evaluated with its recurring prefix's KV cache
  reused, ``generation.prefix_cache``), the free alternative a user has without training: ``speedup_cached``
  (with its interval), ``token_reduction_cached_pct`` (on the tokens prefilled per query: the cached row computes
  only what follows its prefix), ``self_hosted_saving_cached_pct`` and ``api_saving_cached_pct`` (the cached row
  priced with the provider's caching rule). NaN where the experiment has no cached full-prompt row.
- ``break_even`` / ``break_even_cached``: queries after which the row's one-time self-hosted training cost is
  repaid by its per-query self-hosted saving against full-prompt FT served uncached / cached (the full-prompt
  model taken as already paid for); inf when it saves nothing per query.

:func:`power_rows` turns the differences into a per-task line: how many test items a paired comparison needs to
detect 2 points (pass@1, accuracy: 2 percentage points; BLEU: 2 BLEU) at the measured variance.
"""

from __future__ import annotations

import math

import pandas as pd

from .stats import items_for_difference, paired_difference, paired_ratio

FULL = "full_prompt_ft"
QUERY = "query_only_ft"
POWER_DELTA = 2.0  # points on the display scale


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _baseline_index(g: pd.DataFrame, method: str, cached: bool = False) -> dict:
    ok = g[(g["method"] == method) & (g["status"] == "ok")]
    if "prefix_cache" in ok.columns:
        ok = ok[ok["prefix_cache"].fillna(False).astype(bool) == cached]
    elif cached:
        return {}
    return {(r["model"], r["eval_task"], r["train_task"]): r for _, r in ok.iterrows()}


def break_even(train_usd, base_per_1k, row_per_1k) -> float:
    """Queries to repay ``train_usd`` from the per-query saving (USD per 1k queries in); inf: no saving."""
    if any(_nan(x) for x in (train_usd, base_per_1k, row_per_1k)):
        return float("nan")
    saving = (float(base_per_1k) - float(row_per_1k)) / 1000.0
    return float("inf") if saving <= 0 else float(train_usd) / saving


def _speedup(row, base) -> dict:
    """Mean batch-1 latency of ``base`` over the row's on the queries both timed (paired bootstrap interval)."""
    sp = paired_ratio(row["query_latency"], base["query_latency"])
    if _nan(sp.get("ratio")):  # no per-query latencies in common: ratio of the p50s, no interval
        b, v = base.get("latency_p50_s"), row.get("latency_p50_s")
        sp = {"ratio": b / v if v and not _nan(v) and not _nan(b) else float("nan")}
    return sp


def _key(row) -> tuple:
    train = row["train_task"] if row["train_task"] != "-" else row["eval_task"]
    return (row["model"], row["eval_task"], train)


def add_comparisons(g: pd.DataFrame, headline_api: str | None = None) -> pd.DataFrame:
    g = g.copy()
    full, query = _baseline_index(g, FULL), _baseline_index(g, QUERY)
    full_cached = _baseline_index(g, FULL, cached=True)
    cols: dict[str, list] = {}

    def put(name, value):
        cols.setdefault(name, []).append(value)

    for _, row in g.iterrows():
        ok = row["status"] == "ok"
        fb, qb = full.get(_key(row)), query.get(_key(row))
        for name, base, method in (("delta_full", fb, FULL), ("delta_query", qb, QUERY)):
            use = ok and base is not None and row["method"] != method  # a baseline is not compared with itself
            d = paired_difference(row["item_scores"], base["item_scores"]) if use else {}
            put(name, d.get("mean", float("nan")))
            put(f"{name}_lo", d.get("lo", float("nan")))
            put(f"{name}_hi", d.get("hi", float("nan")))
            put(f"{name}_n", d.get("n", 0))
            put(f"{name}_sd", d.get("sd", float("nan")))
            put(f"{name}_ns", d.get("includes_zero"))
        fc = full_cached.get(_key(row))
        sp = _speedup(row, fb) if ok and fb is not None else {}
        put("speedup", sp.get("ratio", float("nan")))
        put("speedup_lo", sp.get("lo", float("nan")))
        put("speedup_hi", sp.get("hi", float("nan")))
        put("speedup_n", sp.get("n", 0))
        put("speedup_half_width_pct", sp.get("half_width_pct", float("nan")))

        def reduction(col, base=fb, row=row, ok=ok):
            if not ok or base is None or col not in row or _nan(row[col]) or _nan(base.get(col)) or not base.get(col):
                return float("nan")
            return 100.0 * (1.0 - row[col] / base[col])

        put("token_reduction_pct", reduction("input_tokens"))
        put("score_delta", row["score"] - fb["score"] if ok and fb is not None else float("nan"))
        put("self_hosted_saving_pct", reduction("self_hosted_usd_per_1k"))
        put("api_saving_pct", reduction("api_usd_per_1k"))
        spc = _speedup(row, fc) if ok and fc is not None else {}
        put("speedup_cached", spc.get("ratio", float("nan")))
        put("speedup_cached_lo", spc.get("lo", float("nan")))
        put("speedup_cached_hi", spc.get("hi", float("nan")))
        put("token_reduction_cached_pct", reduction("prefill_tokens", base=fc))
        put("self_hosted_saving_cached_pct", reduction("self_hosted_usd_per_1k", base=fc))
        put("api_saving_cached_pct", reduction("api_usd_per_1k", base=fc))
        trained = ok and row.get("train_task") not in (None, "-") and not _nan(row.get("train_usd"))
        for name, base in (("break_even", fb), ("break_even_cached", fc)):
            use = trained and base is not None and row["method"] != FULL
            put(name, break_even(row.get("train_usd"), base.get("self_hosted_usd_per_1k"),
                                 row.get("self_hosted_usd_per_1k")) if use else float("nan"))
    for name, values in cols.items():
        g[name] = values
    if not headline_api:
        g["api_saving_pct"] = float("nan")
        g["api_saving_cached_pct"] = float("nan")
    return g


def power_rows(main: pd.DataFrame, delta: float = POWER_DELTA) -> list[dict]:
    """Per eval task: the pooled SD of the paired differences against full-prompt FT (on-task rows), and the test
    items a paired comparison needs to detect ``delta`` points at 80 % power (α = 0.05)."""
    out = []
    if main.empty:
        return out
    for task, sub in main[(main["status"] == "ok") & (~main["cross_domain"])].groupby("eval_task", sort=True):
        rows = sub[(sub["method"] != FULL) & (sub["delta_full_n"] > 1)]
        sds = [(r["delta_full_sd"], r["delta_full_n"]) for _, r in rows.iterrows() if not _nan(r["delta_full_sd"])]
        if sds:
            dof = sum(n - 1 for _, n in sds)
            pooled = math.sqrt(sum((n - 1) * sd * sd for sd, n in sds) / dof) if dof else float("nan")
        else:
            pooled = float("nan")
        out.append({"eval_task": task, "metric": sub["metric"].iloc[0], "delta": delta, "pooled_sd": pooled,
                    "n_measured": int(max(len(r["item_scores"] or {}) for _, r in sub.iterrows())),
                    "comparisons": len(sds),
                    "items_needed": items_for_difference(pooled, delta)})
    return out


def power_line(p: dict) -> str:
    unit = "BLEU" if p["metric"] in ("bleu", "corpus_bleu", "chrf") else "points"
    if _nan(p["items_needed"]):
        return (f"{p['eval_task']}: not estimable from this run (no paired difference varied across items; "
                f"{p['n_measured']} items measured).")
    return (f"{p['eval_task']} ({p['metric']}): to detect a difference of {p['delta']:g} {unit} against full-prompt FT "
            f"with 80 % power (α = 0.05, paired), about {int(p['items_needed']):,} test items are needed at the "
            f"measured SD of the per-item differences ({p['pooled_sd']:.1f}, pooled over {p['comparisons']} "
            f"comparison(s)); this run has {p['n_measured']}.")


def versus(main: pd.DataFrame, method: str, other: str) -> pd.DataFrame:
    """Every on-task ``method`` row against every ``other`` row of the same model, eval and train task (uncached
    rows): the paired score difference with its 95 % interval, and each side's input tokens, batch-1 latency and
    costs per 1k queries (a MetaTuner row's include its generator's call)."""
    if main.empty or "status" not in main.columns:
        return pd.DataFrame()
    ok = main[(main["status"] == "ok") & ~main["cross_domain"]]
    if "prefix_cache" in ok.columns:
        ok = ok[~ok["prefix_cache"].fillna(False).astype(bool)]
    rows = []
    for _, r in ok[ok["method"] == method].iterrows():
        for _, o in ok[(ok["method"] == other) & (ok["model"] == r["model"]) & (ok["eval_task"] == r["eval_task"])
                       & (ok["train_task"] == r["train_task"])].iterrows():
            d = paired_difference(r["item_scores"], o["item_scores"])
            rows.append({"model": r["model"], "eval_task": r["eval_task"], "metric": r["metric"],
                         "label": r["label"], "other": o["label"], "score": r["score"], "other_score": o["score"],
                         "delta": d.get("mean"), "delta_lo": d.get("lo"), "delta_hi": d.get("hi"),
                         "delta_ns": d.get("includes_zero"), "n": d.get("n", 0),
                         "delta_full": r.get("delta_full"), "delta_full_lo": r.get("delta_full_lo"),
                         "delta_full_hi": r.get("delta_full_hi"), "delta_full_ns": r.get("delta_full_ns"),
                         **{f"{side}_{k}": x.get(k) for side, x in (("row", r), ("other", o))
                            for k in ("input_tokens", "latency_p50_s", "self_hosted_usd_per_1k", "api_usd_per_1k")}})
    return pd.DataFrame(rows)
