"""Does internalizing the prompt pay? The decision table of one experiment, from its result files.

The reference is what a user does without any training: the full prompt (template + examples + query) sent to
the base model (``few_shot``). For every other method, on the same test items:

- accuracy with its 95 % interval, and the paired differences (95 % bootstrap intervals) against the reference
  and against full-prompt FT (the fine-tuned ceiling);
- input tokens per query (the model's tokenizer) and the tokens saved per query against the reference;
- batch-1 latency speedup against the reference (paired ratio over the timed queries, with its interval) and
  the saturating-batch throughput ratio;
- cost per 1k queries: self-hosted (measured seconds x the price table's hardware price) and API (the table's
  headline model; base-model prices for the reference, fine-tuned prices for trained methods; the cached-prefix
  price where the table allows it, so the reference gets the cheapest price it could pay);
- the one-time training cost: self-hosted (measured training seconds x hardware price) and API (training tokens x
  the table's fine-tuning price per token);
- the **break-even query volume**: training cost / (reference cost per query - method cost per query), the number
  of queries after which the training is paid back; "never" when the method costs as much or more per query.
"""

from __future__ import annotations

import math

import pandas as pd

from .aggregate import display_score, eval_frame, main_table, render_markdown
from .stats import paired_difference, paired_ratio

REFERENCE = "few_shot"


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _per_query(usd_per_1k) -> float:
    return float("nan") if _nan(usd_per_1k) else float(usd_per_1k) / 1000.0


def break_even(train_usd: float, ref_per_query: float, method_per_query: float) -> float:
    """Queries after which ``train_usd`` is repaid; inf when the method saves nothing per query, NaN if unknown."""
    if any(_nan(x) for x in (train_usd, ref_per_query, method_per_query)):
        return float("nan")
    saving = ref_per_query - method_per_query
    if saving <= 0:
        return float("inf")
    return train_usd / saving


def api_training_usd(train_tokens: float, table, model: str) -> float:
    price = ((table.api_models.get(model) or {}).get("fine_tuned") or {}).get("training")
    if price is None or _nan(train_tokens):
        return float("nan")
    return float(train_tokens) * float(price) / 1e6


def decision_rows(store, table, hardware_key: str | None = None, main: pd.DataFrame | None = None) -> list[dict]:
    """One row per (model, eval task, method grid point) with the figures above; [] without a reference row.
    ``main``: the experiment's main table with these prices (:func:`harness.aggregate.tables`), if already built."""
    if main is None:
        main = main_table(eval_frame(store, table, hardware_key), table.headline_model if table else None)
    if main.empty:
        return []
    ok = main[main["status"] == "ok"]
    api_model = table.headline_model if table else None
    rows = []
    for (model, task), g in ok[~ok["cross_domain"]].groupby(["model", "eval_task"], sort=False):
        cached = g["prefix_cache"].fillna(False).astype(bool) if "prefix_cache" in g.columns else g["n"] != g["n"]
        refs = g[(g["method"] == REFERENCE) & ~cached]
        if refs.empty:
            continue
        ref = refs.iloc[0]
        # the same reference served with its recurring prefix's KV cache reused (generation.prefix_cache)
        ref_c = g[(g["method"] == REFERENCE) & cached]
        ref_c = ref_c.iloc[0] if len(ref_c) else None
        ref_c_sh = _per_query(ref_c.get("self_hosted_usd_per_1k")) if ref_c is not None else float("nan")
        ref_sh = _per_query(ref.get("self_hosted_usd_per_1k"))
        ref_api = _per_query(ref.get(f"api_usd_per_1k_cached[{api_model}]")) if api_model else float("nan")
        for _, r in g.iterrows():
            is_ref = r["method"] == REFERENCE and not bool(r.get("prefix_cache"))
            is_ref_c = ref_c is not None and r["method"] == REFERENCE and bool(r.get("prefix_cache"))
            sp_c = {} if ref_c is None or is_ref_c else paired_ratio(r["query_latency"], ref_c["query_latency"])
            d_ref = {} if is_ref else paired_difference(r["item_scores"], ref["item_scores"])
            sp = {} if is_ref else paired_ratio(r["query_latency"], ref["query_latency"])
            sh = _per_query(r.get("self_hosted_usd_per_1k"))
            api = _per_query(r.get(f"api_usd_per_1k_cached[{api_model}]")) if api_model else float("nan")
            external = r["method"] == "adapter"  # trained elsewhere: its training cost is not known here
            train_sh = float("nan") if external else float(r.get("train_usd", 0.0) or 0.0)
            train_api = float("nan") if external else api_training_usd(r.get("train_tokens", 0.0), table, api_model) \
                if api_model else float("nan")
            score = display_score(r["metric"], float(r["score"]))
            half = 1.96 * display_score(r["metric"], float(r["score_se"])) if not _nan(r.get("score_se")) else \
                float("nan")
            rows.append({
                "model": model, "eval_task": task, "method": r["method"], "label": r["label"],
                "reference": is_ref, "metric": r["metric"], "n": int(r["n"]),
                # a normal interval, clipped to the 0-100 display scale
                "score": score, "score_lo": max(0.0, score - half), "score_hi": min(100.0, score + half),
                "delta_ref": d_ref.get("mean", float("nan")), "delta_ref_lo": d_ref.get("lo", float("nan")),
                "delta_ref_hi": d_ref.get("hi", float("nan")),
                "delta_full": float(r.get("delta_full", float("nan"))),
                "delta_full_lo": float(r.get("delta_full_lo", float("nan"))),
                "delta_full_hi": float(r.get("delta_full_hi", float("nan"))),
                "input_tokens": float(r["input_tokens"]),
                "tokens_saved": float(ref["input_tokens"]) - float(r["input_tokens"]),
                "speedup": sp.get("ratio", float("nan")), "speedup_lo": sp.get("lo", float("nan")),
                "speedup_hi": sp.get("hi", float("nan")),
                "throughput_speedup": (float(r["throughput_samples_s"]) / float(ref["throughput_samples_s"])
                                       if not _nan(r.get("throughput_samples_s")) and
                                       not _nan(ref.get("throughput_samples_s")) and ref["throughput_samples_s"]
                                       else float("nan")),
                "self_hosted_usd_per_1k": 1000.0 * sh, "api_usd_per_1k": 1000.0 * api, "api_model": api_model,
                "train_usd_self_hosted": train_sh,
                "train_usd_api": 0.0 if not external and not r.get("train_tokens") else train_api,
                "train_seconds": float(r.get("train_seconds", 0.0) or 0.0),
                "train_steps": float(r.get("train_steps", 0.0) or 0.0),
                "break_even_self_hosted": float("nan") if is_ref else break_even(train_sh, ref_sh, sh),
                "break_even_api": float("nan") if is_ref else break_even(
                    0.0 if not external and not r.get("train_tokens") else train_api, ref_api, api),
                "speedup_ref_cached": sp_c.get("ratio", float("nan")),
                "speedup_ref_cached_lo": sp_c.get("lo", float("nan")),
                "speedup_ref_cached_hi": sp_c.get("hi", float("nan")),
                "break_even_self_hosted_cached": float("nan") if is_ref or ref_c is None or is_ref_c else
                break_even(train_sh, ref_c_sh, sh),
                "hardware": r.get("hardware"), "price_table": table.id if table else None,
            })
    return rows


def json_rows(rows: list[dict]) -> list[dict]:
    """JSON-safe rows: an infinite break-even becomes "never", NaN becomes null."""
    def clean(v):
        if isinstance(v, float):
            return "never" if math.isinf(v) and v > 0 else None if math.isnan(v) or math.isinf(v) else v
        return v

    return [{k: clean(v) for k, v in r.items()} for r in rows]


def _f(x, nd=1, signed=False) -> str:
    if _nan(x):
        return "–"
    return f"{x:+.{nd}f}" if signed else f"{x:.{nd}f}"


def _interval(m, lo, hi, nd=1, signed=True) -> str:
    if _nan(m):
        return "–"
    return f"{_f(m, nd, signed)} [{_f(lo, nd, signed)}, {_f(hi, nd, signed)}]"


def _queries(x) -> str:
    if _nan(x):
        return "–"
    if math.isinf(x):
        return "never"
    if x == 0:
        return "0"  # nothing to repay: no training
    if x < 1:
        return "< 1"
    return f"{x:,.0f}"


def _usd(x) -> str:
    if _nan(x):
        return "–"
    if x == 0:
        return "$0"
    return f"${x:.2g}" if abs(x) < 0.01 else f"${x:.4f}" if abs(x) < 1 else f"${x:,.2f}"


COLUMNS: list = [  # aggregate.Column: (header, row -> text)
    ("method", lambda r: r["label"] + (" (reference)" if r["reference"] else "")),
    ("score [95% CI]", lambda r: _interval(r["score"], r["score_lo"], r["score_hi"], signed=False)),
    ("Δ vs full prompt, no FT", lambda r: _interval(r["delta_ref"], r["delta_ref_lo"], r["delta_ref_hi"])),
    ("Δ vs full-prompt FT", lambda r: _interval(r["delta_full"], r["delta_full_lo"], r["delta_full_hi"])),
    ("input tok/query", lambda r: _f(r["input_tokens"], 0)),
    ("saved tok/query", lambda r: "–" if r["reference"] else _f(r["tokens_saved"], 0)),
    ("latency speedup", lambda r: _interval(r["speedup"], r["speedup_lo"], r["speedup_hi"], 2, signed=False)
     + ("" if _nan(r["speedup"]) else "×")),
    ("throughput ×", lambda r: _f(r["throughput_speedup"], 2)),
    ("self-hosted $/1k", lambda r: _usd(r["self_hosted_usd_per_1k"])),
    ("API $/1k", lambda r: _usd(r["api_usd_per_1k"])),
    ("training $ (self-hosted / API)", lambda r: f"{_usd(r['train_usd_self_hosted'])} / {_usd(r['train_usd_api'])}"),
    ("break-even queries (self-hosted / API)",
     lambda r: f"{_queries(r['break_even_self_hosted'])} / {_queries(r['break_even_api'])}"),
]
CACHED_COLUMNS: list = [
    ("speedup vs cached reference", lambda r: _interval(r["speedup_ref_cached"], r["speedup_ref_cached_lo"],
                                                        r["speedup_ref_cached_hi"], 2, signed=False)
     + ("" if _nan(r["speedup_ref_cached"]) else "×")),
    ("break-even vs cached reference (self-hosted)", lambda r: _queries(r["break_even_self_hosted_cached"])),
]


def columns(rows) -> list:
    """:data:`COLUMNS`, plus the comparisons with the cached reference when the rows have one."""
    has = any(not _nan(r.get("speedup_ref_cached")) for r in (rows.to_dict("records") if hasattr(rows, "to_dict")
                                                               else rows))
    return COLUMNS + (CACHED_COLUMNS if has else [])


NO_DECISION = ("No decision table: it needs a `few_shot` evaluation (the full prompt on the base model) on the same "
               "test items as the fine-tuned methods.")
READING_NOTE = ("Reference: the full prompt sent to the base model (no training). Δ: paired differences on the same "
                "test items, 95 % bootstrap intervals (an interval that contains 0 is no evidence of a difference). "
                "Speedup: batch-1 latency, paired ratio with its interval. Costs per 1k queries; API prices are the "
                "cached-prefix prices where the table allows them (base-model prices for the reference, fine-tuned "
                "prices for trained methods). Training $: self-hosted = measured training seconds x the hardware "
                "price; API = the training tokens (counted with the model's own tokenizer, an approximation of the "
                "API's count) x the fine-tuning price. Break-even: the one-time training cost divided by the "
                "per-query saving against the reference; never = no per-query saving; – = not known (an adapter "
                "trained elsewhere).")


def decision_tables(rows: list[dict]) -> list[tuple[str, pd.DataFrame]]:
    """One (caption, rows with the reference first) per (model, eval task); render with :data:`COLUMNS`."""
    out = []
    for (model, task), g in pd.DataFrame(rows).groupby(["model", "eval_task"], sort=False):
        g = pd.concat([g[g["reference"]], g[~g["reference"]]])
        out.append((f"**{task}** on {model}: {g['metric'].iloc[0]} on {int(g['n'].max())} test items; "
                    f"{g['hardware'].iloc[0]}; prices {g['price_table'].iloc[0]}, API = {g['api_model'].iloc[0]}", g))
    return out


def render_decision(rows: list[dict]) -> str:
    """Markdown: one table per (model, eval task), the reference first, then a line on how to read it."""
    if not rows:
        return NO_DECISION
    out = []
    for caption, g in decision_tables(rows):
        out += [caption, "", render_markdown(g, columns(g)), ""]
    out.append(READING_NOTE)
    return "\n".join(out)
