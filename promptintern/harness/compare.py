"""Every comparison the tables, the report, the decision table and the submission make, in one place: which row
is a row's reference, the paired score difference, the speedups with their intervals, the savings, break-even.

References of a row (:data:`REFERENCES`; the same model and eval task; trained references trained on the row's
train task, or, for an untrained row, on the eval task):

- ``full``: full-prompt FT served uncached; ``full_cached``: the same model served with its recurring prefix's KV
  cache reused (the free alternative to internalizing);
- ``query``: query-only FT;
- ``base``: the base model with the full prompt (``few_shot``, what a user pays without training);
  ``base_cached``: the same with its prefix cached.

For each reference ``X`` present, every row gets (NaN where it does not apply, and never against itself):

- ``delta_X`` (``_lo``, ``_hi``, ``_n``, ``_sd``, ``_ns``, ``_method``, ``_p``): the paired score difference in
  points on the same test items (:func:`promptintern.harness.stats.paired_difference`: Newcombe for proportions, bootstrap for
  continuous scores);
- ``speedup_X``: engine, batch 1 — mean E2EL of L tokens of the reference over the row's, same queries and
  repeats (:func:`promptintern.harness.stats.ratio_interval`: a CI from 10 queries on, a labelled range below);
- ``throughput_X``: engine, saturation — the row's request throughput over the reference's at the largest batch
  of the sweep, same batches (the interval over batches and repeats, or their range);
- ``answered_speedup_X``: as answered, batch 1 — mean E2EL to each answer's end, reference over row;
- ``prefill_reduction_X_pct`` (tokens each query computes: a cached prefix is not computed), ``token_reduction_X
  _pct`` (input tokens), ``saving_X_pct`` (self-hosted cost on the row's cost basis), ``api_saving_X_pct``;
- ``break_even_X`` / ``break_even_api_X``: queries after which the row's extra one-time training cost over the
  reference's (0 for an untrained reference) is repaid by its per-query saving (:func:`break_even`).
"""

from __future__ import annotations

import math

import pandas as pd

from .stats import items_for_difference, minimum_detectable_difference, paired_difference, ratio_interval

FULL, QUERY, BASE = "full_prompt_ft", "query_only_ft", "few_shot"
# name -> (method, cached)
REFERENCES = {"full": (FULL, False), "full_cached": (FULL, True), "query": (QUERY, False), "base": (BASE, False),
              "base_cached": (BASE, True)}
POWER_DELTA = 2.0  # points on the display scale
NAN = float("nan")


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def reference_key(row) -> tuple:
    """(model, eval task, train task) a row's references share: an untrained row's train task is its eval task."""
    train = row["train_task"] if row["train_task"] not in (None, "-") else row["eval_task"]
    return (row["model"], row["eval_task"], train)


def reference_index(g: pd.DataFrame, method: str, cached: bool) -> dict:
    """reference_key -> the valid row of ``method`` in the ``cached`` condition (untrained methods: per eval task)."""
    ok = g[(g["method"] == method) & (g["status"] == "ok")]
    ok = ok[ok["prefix_cache"].fillna(False).astype(bool) == cached] if "prefix_cache" in ok.columns else \
        (ok if not cached else ok.iloc[0:0])
    out = {}
    for _, r in ok.iterrows():
        out[reference_key(r)] = r
        if r["train_task"] in (None, "-"):  # the base model serves every train task's rows of its eval task
            out.setdefault(("*", r["model"], r["eval_task"]), r)
    return out


def find_reference(index: dict, row):
    k = reference_key(row)
    return index.get(k, index.get(("*", k[0], k[1])))


def is_self(row, ref) -> bool:
    return ref is not None and row.get("unit_id") == ref.get("unit_id") and \
        bool(row.get("prefix_cache")) == bool(ref.get("prefix_cache"))


def score_difference(row, ref) -> dict:
    """The paired difference of the row's item scores minus the reference's, in points."""
    return paired_difference(row["item_scores"], ref["item_scores"], scale=row.get("score_scale") or 1.0)


def break_even(train_row: float, train_ref: float, ref_per_1k: float, row_per_1k: float) -> float:
    """Queries after which the row's extra training cost over the reference's is repaid by its saving per query
    (costs per 1k queries in): 0 when it costs no more to train, inf when it saves nothing per query, NaN when a
    figure is unknown."""
    if any(_nan(x) for x in (train_row, train_ref, ref_per_1k, row_per_1k)):
        return NAN
    saving = (float(ref_per_1k) - float(row_per_1k)) / 1000.0
    if saving <= 0:
        return math.inf
    return max(0.0, float(train_row) - float(train_ref)) / saving


def _reduction(row, ref, col) -> float:
    a, b = row.get(col), ref.get(col)
    if _nan(a) or _nan(b) or not b:
        return NAN
    return 100.0 * (1.0 - float(a) / float(b))


def _ratio(num: dict | None, den: dict | None) -> dict:
    return ratio_interval(num or {}, den or {}) if num and den else {}


def compare(row, ref, name: str) -> dict:
    """Every comparison of ``row`` against the reference row ``ref`` named ``name`` (see the module docstring)."""
    out: dict = {}
    valid = ref is not None and row.get("status") == "ok" and not is_self(row, ref)
    # two serving conditions of one evaluation answer with the same tokens: no score difference to estimate
    d = score_difference(row, ref) if valid and row.get("unit_id") != ref.get("unit_id") else {}
    for k in ("mean", "lo", "hi", "n", "sd", "includes_zero", "method", "p_value"):
        col = {"mean": f"delta_{name}", "includes_zero": f"delta_{name}_ns", "p_value": f"delta_{name}_p"}.get(
            k, f"delta_{name}_{k}")
        out[col] = d.get(k, NAN if k not in ("n", "method", "includes_zero") else (0 if k == "n" else None))
    rt, ft = (row.get("timings"), ref.get("timings")) if valid else (None, None)
    same_sat = rt is not None and ft is not None and rt.saturation_batch == ft.saturation_batch
    for col, r in ((f"speedup_{name}", _ratio(ft and ft.engine_b1, rt and rt.engine_b1)),
                   (f"throughput_{name}", _ratio(ft and ft.saturation, rt and rt.saturation) if same_sat else {}),
                   (f"answered_speedup_{name}", _ratio(ft and ft.answered, rt and rt.answered))):
        out[col] = r.get("ratio", NAN)
        for k in ("lo", "hi", "n", "method"):
            out[f"{col}_{k}"] = r.get(k, NAN if k in ("lo", "hi") else (0 if k == "n" else None))
    same_basis = valid and row.get("cost_basis") == ref.get("cost_basis")
    out[f"prefill_reduction_{name}_pct"] = _reduction(row, ref, "prefill_tokens") if valid else NAN
    out[f"token_reduction_{name}_pct"] = _reduction(row, ref, "input_tokens") if valid else NAN
    out[f"saving_{name}_pct"] = _reduction(row, ref, "self_hosted_usd_per_1k") if same_basis else NAN
    out[f"api_saving_{name}_pct"] = _reduction(row, ref, "api_usd_per_1k") if valid else NAN
    out[f"break_even_{name}"] = break_even(row.get("train_usd"), ref.get("train_usd"),
                                           ref.get("self_hosted_usd_per_1k"), row.get("self_hosted_usd_per_1k")) \
        if same_basis else NAN
    out[f"break_even_api_{name}"] = break_even(row.get("train_usd_api"), ref.get("train_usd_api"),
                                               ref.get("api_usd_per_1k"), row.get("api_usd_per_1k")) \
        if valid else NAN
    return out


def add_comparisons(g: pd.DataFrame) -> pd.DataFrame:
    """``g`` with every comparison column against every reference it holds (module docstring)."""
    g = g.copy()
    if g.empty:
        return g
    indexes = {name: reference_index(g, m, c) for name, (m, c) in REFERENCES.items()}
    cols: dict[str, list] = {}
    for _, row in g.iterrows():
        for name, index in indexes.items():
            for k, v in compare(row, find_reference(index, row), name).items():
                cols.setdefault(k, []).append(v)
    return pd.concat([g.drop(columns=[k for k in cols if k in g.columns]), pd.DataFrame(cols, index=g.index)],
                     axis=1)


def power_rows(main: pd.DataFrame, delta: float = POWER_DELTA) -> list[dict]:
    """Per eval task: the pooled SD of the paired differences against full-prompt FT (on-task rows), the test items
    a paired comparison needs to detect ``delta`` points at 80 % power (α = 0.05), and the smallest difference
    this run's items detect so (the minimum detectable effect)."""
    out = []
    if main.empty or "delta_full_n" not in main.columns:
        return out
    ok = main[(main["status"] == "ok") & (~main["cross_domain"])]
    for task, sub in ok.groupby("eval_task", sort=True):
        rows = sub[(sub["method"] != FULL) & (sub["delta_full_n"] > 1) & ~sub["prefix_cache"].fillna(False)]
        sds = [(r["delta_full_sd"], r["delta_full_n"]) for _, r in rows.iterrows() if not _nan(r["delta_full_sd"])]
        dof = sum(n - 1 for _, n in sds)
        pooled = math.sqrt(sum((n - 1) * sd * sd for sd, n in sds) / dof) if dof else NAN
        n = int(max(len(r["item_scores"] or {}) for _, r in sub.iterrows()))
        out.append({"eval_task": task, "metric": sub["metric"].iloc[0], "delta": delta, "pooled_sd": pooled,
                    "n_measured": n, "comparisons": len(sds), "items_needed": items_for_difference(pooled, delta),
                    "mde": minimum_detectable_difference(pooled, n)})
    return out


def power_line(p: dict) -> str:
    unit = "BLEU" if p["metric"] in ("bleu", "corpus_bleu", "chrf") else "points"
    if _nan(p["items_needed"]):
        return (f"{p['eval_task']}: not estimable from this run (no paired difference varied across items; "
                f"{p['n_measured']} items measured).")
    return (f"{p['eval_task']} ({p['metric']}): with its {p['n_measured']} test items this run detects a difference of "
            f"{p['mde']:.1f} {unit} against full-prompt FT with 80 % power (α = 0.05, paired, at the measured SD of "
            f"the per-item differences, {p['pooled_sd']:.1f}, pooled over {p['comparisons']} comparison(s)); "
            f"detecting {p['delta']:g} {unit} needs about {int(p['items_needed']):,} test items.")


def versus(main: pd.DataFrame, method: str, other: str) -> pd.DataFrame:
    """Every on-task ``method`` row against every ``other`` row of the same model, eval and train task (uncached
    rows): the paired score difference with its interval, and each side's input tokens, batch-1 latency (as
    answered) and costs per 1k queries (a MetaTuner row's include its generator's call)."""
    if main.empty or "status" not in main.columns:
        return pd.DataFrame()
    ok = main[(main["status"] == "ok") & ~main["cross_domain"] & ~main["prefix_cache"].fillna(False).astype(bool)]
    rows = []
    for _, r in ok[ok["method"] == method].iterrows():
        for _, o in ok[(ok["method"] == other) & (ok["model"] == r["model"]) & (ok["eval_task"] == r["eval_task"])
                       & (ok["train_task"] == r["train_task"])].iterrows():
            d = score_difference(r, o)
            rows.append({"model": r["model"], "eval_task": r["eval_task"], "metric": r["metric"],
                         "label": r["label"], "other": o["label"], "score": r["score"], "other_score": o["score"],
                         "delta": d.get("mean"), "delta_lo": d.get("lo"), "delta_hi": d.get("hi"),
                         "delta_ns": d.get("includes_zero"), "delta_method": d.get("method"), "n": d.get("n", 0),
                         "delta_full": r.get("delta_full"), "delta_full_lo": r.get("delta_full_lo"),
                         "delta_full_hi": r.get("delta_full_hi"), "delta_full_ns": r.get("delta_full_ns"),
                         "delta_full_method": r.get("delta_full_method"),
                         **{f"{side}_{k}": x.get(k) for side, x in (("row", r), ("other", o))
                            for k in ("input_tokens", "answered_e2el_s", "self_hosted_usd_per_1k", "api_usd_per_1k")}})
    return pd.DataFrame(rows)
