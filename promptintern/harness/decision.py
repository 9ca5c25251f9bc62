"""Does internalizing the prompt pay? The decision table of one experiment, from its main table.

The reference is what a user does without any training: the full prompt (template + examples + query) sent to
the base model (``few_shot``), and the same served with its recurring prefix cached when the grid has it. For
every other row, on the same test items and the same timed requests (every figure is a column of
:func:`promptintern.harness.aggregate.main_table`, computed by :mod:`promptintern.harness.compare`):

- the score with its interval, and the paired differences against the reference and against full-prompt FT;
- input tokens per query and the tokens saved against the reference;
- the engine view first — request throughput at saturation and batch-1 end-to-end time of the same L tokens,
  against the reference uncached and cached, with their intervals — and the as-answered speedup beside it;
- cost per 1k queries, self-hosted (each request's own compute: at saturation, price per second over request
  throughput) and API (the table's headline model, the cached-input price where its rule allows it);
- the one-time training cost (self-hosted: the stages' whole work x the hardware price; API: training tokens x the
  fine-tuning price) and the **break-even query volume** against the uncached and the cached reference: the extra
  training cost over the reference's (the reference trains nothing) / the saving per query; "never" when the row
  saves nothing per query.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from . import format as F
from .store import atomic_write_json
from .tables import method_notes, render_markdown

REFERENCE = "few_shot"
# the columns of a decision row, all from the main table
FIELDS = ("model", "eval_task", "method", "label", "metric", "n", "prefix_cache", "score_display", "score_lo",
          "score_hi", "score_method", "input_tokens", "prefill_tokens", "self_hosted_usd_per_1k", "cost_basis",
          "api_usd_per_1k", "api_model", "train_usd", "train_usd_api", "train_seconds", "train_steps", "hardware",
          "price_table", "engine_queries", "engine_L", "engine_repeats", "answered_output_tokens", "timing_source",
          "cross_domain")
COMPARED = ("delta_base", "delta_full", "speedup_base", "speedup_base_cached", "throughput_base",
            "throughput_base_cached", "answered_speedup_base", "answered_speedup_base_cached")
SUFFIXES = ("", "_lo", "_hi", "_method", "_ns", "_n")
SCALARS = ("break_even_base", "break_even_base_cached", "break_even_api_base", "break_even_api_base_cached",
           "saving_base_pct", "saving_base_cached_pct")


def decision_rows(main: pd.DataFrame) -> list[dict]:
    """One row per on-task main-table row of a (model, eval task) that has a reference row; [] without one."""
    if main.empty or "status" not in main.columns:
        return []
    ok = main[(main["status"] == "ok") & ~main["cross_domain"]]
    rows = []
    for _, g in ok.groupby(["model", "eval_task"], sort=False):
        ref = g[(g["method"] == REFERENCE) & ~g["prefix_cache"].fillna(False).astype(bool)]
        if ref.empty:
            continue
        for _, r in g.iterrows():
            out = {k: r.get(k) for k in FIELDS}
            out["reference"] = r["method"] == REFERENCE and not bool(r.get("prefix_cache"))
            out["tokens_saved"] = float(ref.iloc[0]["input_tokens"]) - float(r["input_tokens"])
            out.update({f"{c}{s}": r.get(f"{c}{s}") for c in COMPARED for s in SUFFIXES if f"{c}{s}" in r})
            out.update({c: r.get(c) for c in SCALARS})
            rows.append(out)
    return rows


def json_rows(rows: list[dict]) -> list[dict]:
    """JSON-safe rows: an infinite break-even becomes "never", NaN becomes null."""
    def clean(v):
        if isinstance(v, float):
            return "never" if math.isinf(v) and v > 0 else None if math.isnan(v) or math.isinf(v) else v
        return v.item() if hasattr(v, "item") else v

    return [{k: clean(v) for k, v in r.items()} for r in rows]


def columns(rows) -> list[F.Column]:
    """The decision table's columns; the comparisons with the cached reference when the rows have one."""
    recs = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    refs = ["base"] + (["base_cached"] if any(not F.isnan(r.get("throughput_base_cached")) or
                                              not F.isnan(r.get("speedup_base_cached")) for r in recs) else [])
    name = {"base": "full prompt", "base_cached": "cached full prompt"}
    return [
        ("method", lambda r: r["label"] + (" (reference)" if r["reference"] else "")),
        ("score [95% CI]", F.score),
        ("Δ vs full prompt, no FT", F.delta("delta_base")),
        ("Δ vs full-prompt FT", F.delta("delta_full")),
        ("input tok/query", lambda r: F.num(r["input_tokens"], 0)),
        ("saved tok/query", lambda r: F.DASH if r["reference"] else F.num(r["tokens_saved"], 0)),
        *[(f"sat. throughput vs {name[x]}", F.ratio(f"throughput_{x}")) for x in refs],
        *[(f"b1 speedup vs {name[x]}", F.ratio(f"speedup_{x}")) for x in refs],
        ("as answered: speedup vs full prompt", F.ratio("answered_speedup_base")),
        ("self-hosted $/1k", lambda r: F.usd(r["self_hosted_usd_per_1k"])),
        ("API $/1k", lambda r: F.usd(r["api_usd_per_1k"])),
        ("training $ (self-hosted / API)", lambda r: f"{F.usd(r['train_usd'])} / {F.usd(r['train_usd_api'])}"),
        *[(f"break-even vs {name[x]} (self-hosted / API)",
           lambda r, x=x: f"{F.queries(r.get(f'break_even_{x}'))} / {F.queries(r.get(f'break_even_api_{x}'))}")
          for x in refs],
    ]


NO_DECISION = ("No decision table: it needs a `few_shot` evaluation (the full prompt on the base model) on the same "
               "test items as the fine-tuned methods.")
READING_NOTE = ("Reference: the full prompt sent to the base model (no training); cached: the same with its "
                "recurring prefix's KV cache reused. Δ: paired differences on the same test items (an interval that "
                "contains 0 is no evidence of a difference). Throughput and speedup: the engine measurement, every "
                "row decoding the same tokens on the same requests; a range (fewer than 10 timed queries or "
                "batches) is no confidence interval. API $/1k: a +prefix-cache row pays the cached-input price where "
                "the table's rule allows it, every other row the input price. Training $: self-hosted = the stages' whole work x the hardware price; API = training "
                "tokens x the fine-tuning price. Break-even: the extra one-time training cost over the reference's / "
                "the per-query saving; never = no per-query saving.")


def write_decision(root, rows: list[dict], experiment: str | None = None) -> str:
    """``decision.md`` and ``decision.json`` in ``root``; returns the markdown text (what `internalize` prints)."""
    text = render_decision(rows)
    old = Path(root) / "decision.json"
    if experiment is None and old.is_file():  # regenerated by `promptintern report`: keep the file it came from
        try:
            experiment = json.loads(old.read_text()).get("experiment")
        except ValueError:
            pass
    (Path(root) / "decision.md").write_text(f"# Does internalizing the prompt pay?\n\n{text}\n")
    atomic_write_json(Path(root) / "decision.json", {"rows": json_rows(rows),
                                                      **({"experiment": experiment} if experiment else {})})
    return text


def decision_tables(rows: list[dict]) -> list[tuple[str, pd.DataFrame]]:
    """One (caption, rows with the reference first) per (model, eval task); render with :func:`columns`."""
    out = []
    for (model, task), g in pd.DataFrame(rows).groupby(["model", "eval_task"], sort=False):
        g = pd.concat([g[g["reference"]], g[~g["reference"]]])
        out.append((f"**{task}** on {model}: {g['metric'].iloc[0]} on {int(g['n'].max())} test items; "
                    f"{g['hardware'].iloc[0]}; prices {g['price_table'].iloc[0]}, API = {g['api_model'].iloc[0]}", g))
    return out


def render_decision(rows: list[dict]) -> str:
    """Markdown: one table per (model, eval task), the reference first, its notes, then how to read it."""
    if not rows:
        return NO_DECISION
    out = []
    for caption, g in decision_tables(rows):
        notes = method_notes(g.assign(status="ok", delta_full_method=g.get("delta_base_method")))
        out += [caption, "", render_markdown(g, columns(g)), "", notes, ""]
    out.append(READING_NOTE)
    return "\n".join(out)
