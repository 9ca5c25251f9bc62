"""Aggregate result files into tables. Reads only the run JSONs; every number is recomputable from them."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .store import ResultStore

BASELINE_METHOD = "full_prompt_ft"


def eval_frame(store: ResultStore) -> pd.DataFrame:
    rows = []
    for rec in store.records(kind="eval"):
        c = rec["config"]
        primary = rec["task"]["primary_metric"]
        values = [s["score"].get(primary) for s in rec["samples"]]
        values = [float(v) for v in values if v is not None]
        n = len(values)
        mean = sum(values) / n if n else float("nan")
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
        rows.append(
            {
                "unit_id": rec["unit_id"],
                "model": c["model"],
                "method": c["method"]["name"],
                "label": c["method"]["label"],
                "schedule": c["method"].get("schedule"),
                "rate": c["method"].get("rate"),
                "train_task": c.get("train_task"),
                "eval_task": c["eval_task"],
                "seed": c["seed"],
                "metric": primary,
                "score": rec["metrics"].get(primary, mean),
                "score_se": se,
                "n": n,
                "input_tokens": rec["efficiency"]["mean_input_tokens"],
                "input_tokens_cl100k": _mean(s["tokens"].get("cl100k_base") for s in rec["samples"]),
                "output_tokens": rec["efficiency"]["mean_output_tokens"],
                "generation_s": rec["efficiency"]["generation_seconds"],
                "hardware": rec.get("hardware", {}),
            }
        )
    return pd.DataFrame(rows)


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def main_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, eval task, method grid point), averaged over seeds, with token reduction vs full-prompt FT."""
    if df.empty:
        return df
    keys = ["model", "eval_task", "train_task", "label", "method"]
    g = (
        df.fillna({"train_task": "-"})
        .groupby(keys, dropna=False, sort=False)
        .agg(metric=("metric", "first"), score=("score", "mean"), score_se=("score_se", "mean"),
             n=("n", "sum"), input_tokens=("input_tokens", "mean"), output_tokens=("output_tokens", "mean"))
        .reset_index()
    )
    base = g[g["method"] == BASELINE_METHOD].set_index(["model", "eval_task", "train_task"])["input_tokens"]

    def reduction(row):
        key = (row["model"], row["eval_task"], row["train_task"])
        if key not in base.index:
            return float("nan")
        b = base.loc[key]
        return 100.0 * (1 - row["input_tokens"] / b) if b else float("nan")

    g["token_reduction_pct"] = g.apply(reduction, axis=1)
    return g


def to_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "_no results_"
    lines = ["| model | train task | eval task | method | metric | score ± se | n | mean input tokens | reduction vs full-prompt FT |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        se = "" if math.isnan(r.score_se) else f" ± {100 * r.score_se:.1f}"
        red = "" if math.isnan(r.token_reduction_pct) else f"{r.token_reduction_pct:.1f}%"
        lines.append(
            f"| {r.model} | {r.train_task} | {r.eval_task} | {r.label} | {r.metric} | {100 * r.score:.1f}{se} | {r.n} "
            f"| {r.input_tokens:.1f} | {red} |"
        )
    return "\n".join(lines)


def write_tables(store: ResultStore) -> dict[str, Path]:
    table = main_table(eval_frame(store))
    out = store.root / "tables"
    out.mkdir(parents=True, exist_ok=True)
    md = out / "main.md"
    md.write_text(to_markdown(table) + "\n")
    csv = out / "main.csv"
    table.to_csv(csv, index=False)
    return {"markdown": md, "csv": csv}
