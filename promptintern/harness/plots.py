"""Plots (matplotlib, Agg, PNG) under ``<results>/<experiment>/plots/``, drawn from the aggregated tables only.

- ``accuracy_vs_tokens.png``: score against mean input tokens per eval task, the Pareto frontier (fewest tokens
  for the best score) marked.
- ``accuracy_by_schedule_rate.png``: scheduled methods by compression rate and schedule, with the full-prompt and
  query-only fine-tuning scores as reference lines.
- ``speedup.png`` and ``cost.png``: request throughput at saturation (the engine measurement) and cost per 1k
  queries vs full-prompt fine-tuning.
- ``training_loss.png``: training loss per step, stage after stage, for each training chain.
- ``cross_domain.png``: score change off-task vs the base model, when there are cross-domain evaluations.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so plotting is safe in any process.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from promptintern.methods import METHODS, MethodInfo

from .aggregate import BASELINE_METHOD, display_score


def _figure(n_panels: int, width_per: float = 5.0, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, width_per * n_panels), height), dpi=110, layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _empty(path: Path, title: str, message: str) -> Path:
    fig, (ax,) = _figure(1, 6.0, 2.5)
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    fig.savefig(path)
    return path


def _score_limits(ax, ys) -> None:
    """Scores start at 0 on the y axis, with headroom above the best one."""
    finite = [y for y in ys if not math.isnan(y)]
    top = max(finite) if finite else 1.0
    ax.set_ylim(min(0.0, min(finite) if finite else 0.0), min(105.0, max(10.0, top * 1.15)))


def _color(method: str) -> str:
    return METHODS[method].color if method in METHODS else MethodInfo.color


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (x smaller or equal AND y larger or equal, one strictly),
    sorted by x: the fewest tokens for each level of score."""
    idx = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    front = []
    for i in idx:
        xi, yi = points[i]
        dominated = any((points[j][0] <= xi and points[j][1] >= yi) and (points[j][0] < xi or points[j][1] > yi)
                        for j in idx if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def accuracy_vs_tokens(main: pd.DataFrame, path: Path) -> Path:
    title = "Score vs mean input tokens"
    if main.empty:
        return _empty(path, title, "no evaluation results")
    tasks = sorted(main["eval_task"].unique())
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        sub = main[main["eval_task"] == task].reset_index(drop=True)
        xs = sub["input_tokens"].astype(float).tolist()
        ys = [display_score(m, s) for m, s in zip(sub["metric"], sub["score"], strict=True)]
        for i, r in sub.iterrows():
            hollow = bool(r["cross_domain"])
            ax.scatter([xs[i]], [ys[i]], marker=METHODS[r["method"]].marker if r["method"] in METHODS else "o", s=55, zorder=3,
                       facecolors="none" if hollow else _color(r["method"]), edgecolors=_color(r["method"]),
                       label=r["label"] + (f" ({r['train_task']}→)" if hollow else ""))
        front = pareto_front(list(zip(xs, ys, strict=True)))
        if front:
            fx, fy = [xs[i] for i in front], [ys[i] for i in front]
            ax.step(fx, fy, where="post", color="black", lw=1.2, ls="--", zorder=2, label="Pareto frontier")
            ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="black", lw=1.0, zorder=4)
        finite = [x for x in xs if x > 0 and not math.isnan(x)]
        if finite and max(finite) / min(finite) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("mean input tokens (model tokenizer)")
        _score_limits(ax, ys)
        metric = sub["metric"].iloc[0]
        ax.set_ylabel(f"{metric} (0-100)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        seen: dict = {}
        for h, lab in zip(handles, labels, strict=True):
            seen.setdefault(lab, h)
        ax.legend(seen.values(), seen.keys(), fontsize=6, loc="best")
    fig.suptitle(title + " (hollow: evaluated off its train task)")
    fig.savefig(path)
    return path


def accuracy_by_schedule_rate(main: pd.DataFrame, path: Path) -> Path:
    title = "Score by schedule and compression rate"
    sched = main[(main["schedule"] != "-") & (~main["cross_domain"])] if not main.empty else main
    if sched.empty:
        return _empty(path, title, "no scheduled (progressive) runs in this experiment")
    tasks = sorted(sched["eval_task"].unique())
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        sub = sched[sched["eval_task"] == task]
        rates = sorted(sub["rate"].unique())
        groups = sorted({(m, s, st) for m, s, st in zip(sub["method"], sub["schedule"], sub["stages"], strict=True)})
        width = 0.8 / max(1, len(groups))
        for gi, (method, schedule, stages) in enumerate(groups):
            g = sub[(sub["method"] == method) & (sub["schedule"] == schedule) & (sub["stages"] == stages)]
            vals, below, above = [], [], []
            for rate in rates:
                row = g[g["rate"] == rate]
                v = lo = hi = float("nan")
                if len(row):
                    r = row.iloc[0]
                    v, lo, hi = r["score_display"], r["score_lo"], r["score_hi"]
                vals.append(v)  # the bars' whiskers: the score's 95 % interval (Wilson or t, as in the tables)
                below.append(0.0 if math.isnan(lo) else v - lo)
                above.append(0.0 if math.isnan(hi) else hi - v)
            xs = [i + (gi - (len(groups) - 1) / 2) * width for i in range(len(rates))]
            ax.bar(xs, vals, width=width, yerr=[below, above], capsize=3, label=f"{method} {schedule} T={stages}")
        on_task = main[(main["eval_task"] == task) & (~main["cross_domain"])]
        for method, style in ((BASELINE_METHOD, "--"), ("query_only_ft", ":"), ("few_shot", "-.")):
            ref = on_task[on_task["method"] == method]
            if len(ref):
                r = ref.iloc[0]
                ax.axhline(display_score(r["metric"], r["score"]), color=_color(method), ls=style, lw=1.2,
                           label=f"{method}")
        _score_limits(ax, [display_score(m, v) for m, v in zip(on_task["metric"], on_task["score"], strict=True)])
        ax.set_xticks(range(len(rates)), [f"r={r:g}" for r in rates])
        ax.set_xlabel("compression rate (template keep rate of the first stage)")
        ax.set_ylabel(f"{sub['metric'].iloc[0]} (0-100)")
        ax.set_title(task)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=6)
    fig.suptitle(title)
    fig.savefig(path)
    return path


def _bars(main: pd.DataFrame, path: Path, col: str, title: str, xlabel: str, ref: float | None) -> Path:
    sub = main[~main["cross_domain"]] if not main.empty else main
    if sub.empty or col not in sub.columns or sub[col].isna().all():
        return _empty(path, title, f"no {xlabel} to plot (needs a full-prompt FT baseline and measurements)")
    tasks = sorted(t for t in sub["eval_task"].unique() if not sub[sub["eval_task"] == t][col].isna().all())
    n_rows = max(len(sub[sub["eval_task"] == t]) for t in tasks)
    fig, axes = _figure(len(tasks), 5.5, max(3.0, 0.35 * n_rows + 1.2))
    for ax, task in zip(axes, tasks, strict=True):
        t = sub[sub["eval_task"] == task]
        labels = list(t["label"])
        vals = [float(v) for v in t[col]]
        ax.barh(range(len(labels)), [0 if math.isnan(v) else v for v in vals],
                color=[_color(m) for m in t["method"]])
        for i, v in enumerate(vals):
            ax.text(0 if math.isnan(v) else v, i, " n/a" if math.isnan(v) else f" {v:.3g}", va="center", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        if ref is not None:
            ax.axvline(ref, color="black", lw=1, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_title(task)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    fig.savefig(path)
    return path


def speedup_bars(main: pd.DataFrame, path: Path) -> Path:
    return _bars(main, path, "throughput_full", "Request throughput at saturation vs full-prompt fine-tuning "
                 "(engine: same requests, same tokens decoded)", "throughput ratio (x)", 1.0)


def cost_bars(main: pd.DataFrame, path: Path) -> Path:
    title = "Cost per 1k queries"
    sub = main[~main["cross_domain"]] if not main.empty else main
    cols = [c for c in ("self_hosted_usd_per_1k", "api_usd_per_1k") if c in sub.columns and not sub[c].isna().all()]
    if sub.empty or not cols:
        return _empty(path, title, "no cost data (no price table matched)")
    from matplotlib.figure import Figure

    tasks = sorted(sub["eval_task"].unique())
    per_task = int(sub.groupby("eval_task").size().max())
    fig = Figure(figsize=(5.5 * len(cols), len(tasks) * max(2.5, 0.35 * per_task + 1.2)), dpi=110,
                 layout="constrained")
    grid = fig.subplots(len(tasks), len(cols), squeeze=False)
    for ti, task in enumerate(tasks):
        t = sub[sub["eval_task"] == task]
        for ci, col in enumerate(cols):
            ax = grid[ti][ci]
            vals = [float(v) for v in t[col]]
            ax.barh(range(len(t)), [0 if math.isnan(v) else v for v in vals], color=[_color(m) for m in t["method"]])
            for k, v in enumerate(vals):
                ax.text(0 if math.isnan(v) else v, k, " n/a" if math.isnan(v) else f" ${v:.3g}", va="center", fontsize=7)
            ax.set_yticks(range(len(t)), list(t["label"]), fontsize=7)
            ax.invert_yaxis()
            who = "self-hosted (each request's compute x price)" if col.startswith("self") else \
                f"API {t['api_model'].iloc[0] if 'api_model' in t else ''} (tiktoken counts)"
            ax.set_xlabel(f"USD per 1k queries, {who}", fontsize=8)
            ax.set_title(f"{task}: {'self-hosted' if col.startswith('self') else 'API'}")
            ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    fig.savefig(path)
    return path


def training_loss(stages_raw: pd.DataFrame, stage_losses: dict, path: Path) -> Path:
    """Loss per optimizer step along each chain (model, method, train task, seed), stage boundaries dashed."""
    title = "Training loss per stage"
    if stages_raw.empty or not stage_losses:
        return _empty(path, title, "no training stages in this experiment")
    tasks = sorted(stages_raw["train_task"].unique())
    fig, axes = _figure(len(tasks), 6.0, 4.0)
    for ax, task in zip(axes, tasks, strict=True):
        sub = stages_raw[stages_raw["train_task"] == task]
        for (model, label, seed), chain in sub.groupby(["model", "label", "seed"], sort=False):
            chain = chain.sort_values("stage")
            xs, ys, bounds = [], [], []
            step = 0
            for _, r in chain.iterrows():
                losses = stage_losses.get(r["unit_id"]) or []
                xs += list(range(step + 1, step + 1 + len(losses)))
                ys += list(losses)
                step += len(losses)
                bounds.append(step)
            method = chain["method"].iloc[0]
            line = ax.plot(xs, ys, marker=".", ms=3, lw=1, color=None if method == "promptintern" else _color(method),
                           label=f"{label} s{seed}" + (f" [{model}]" if stages_raw["model"].nunique() > 1 else ""))
            for b in bounds[:-1]:
                ax.axvline(b + 0.5, color=line[0].get_color(), ls=":", lw=0.8)
        ax.set_xlabel("optimizer step (stages concatenated; dotted: stage boundary)")
        ax.set_ylabel("training loss (completion tokens)")
        ax.set_title(f"train task: {task}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(title)
    fig.savefig(path)
    return path


def cross_domain_bars(cross: pd.DataFrame, path: Path) -> Path:
    title = "Off-task score change vs the base model"
    if cross.empty:
        return _empty(path, title, "no cross-domain evaluations (every eval task equals its train task)")
    pairs = sorted({(a, b) for a, b in zip(cross["train_task"], cross["eval_task"], strict=True)})
    fig, axes = _figure(len(pairs), 5.5, max(3.0, 0.35 * cross.groupby(["train_task", "eval_task"]).size().max() + 1.2))
    for ax, (tr, ev) in zip(axes, pairs, strict=True):
        t = cross[(cross["train_task"] == tr) & (cross["eval_task"] == ev)]
        has_base = not t["base_score"].isna().all()
        col = "delta_vs_base" if has_base else "delta_vs_full_prompt_ft"
        vals = [display_score(m, v) if not math.isnan(v) else float("nan") for m, v in zip(t["metric"], t[col], strict=True)]
        ax.barh(range(len(t)), [0 if math.isnan(v) else v for v in vals], color=[_color(m) for m in t["method"]])
        for k, v in enumerate(vals):
            ax.text(0 if math.isnan(v) else v, k, " n/a" if math.isnan(v) else f" {v:+.1f}", va="center", fontsize=7)
        ax.axvline(0, color="black", lw=1)
        ax.set_yticks(range(len(t)), list(t["label"]), fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(("Δ vs base model (few-shot)" if has_base else "Δ vs full-prompt FT") + f", {t['metric'].iloc[0]}")
        ax.set_title(f"trained on {tr} → evaluated on {ev}")
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    fig.savefig(path)
    return path


def write_plots(store, t: dict) -> dict[str, Path]:
    """Draw every plot from the tables returned by ``aggregate.tables``; returns {name: path}."""
    out = store.root / "plots"
    out.mkdir(parents=True, exist_ok=True)
    losses = {rec["unit_id"]: (rec.get("train") or {}).get("losses") or [] for rec in store.records(kind="stage")}
    main = t["main"]
    main = main[main["status"] == "ok"] if "status" in main.columns else main  # failed rows have no numbers
    return {
        "accuracy_vs_tokens": accuracy_vs_tokens(main, out / "accuracy_vs_tokens.png"),
        "accuracy_by_schedule_rate": accuracy_by_schedule_rate(main, out / "accuracy_by_schedule_rate.png"),
        "speedup": speedup_bars(main, out / "speedup.png"),
        "cost": cost_bars(main, out / "cost.png"),
        "training_loss": training_loss(t["stages_raw"], losses, out / "training_loss.png"),
        "cross_domain": cross_domain_bars(t["cross_domain"], out / "cross_domain.png"),
    }
