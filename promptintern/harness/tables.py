"""Render and write the tables of an experiment (markdown, CSV, LaTeX) under ``<results>/<experiment>/tables/``:

- ``main``: every (model, train task, eval task, method grid point, serving condition): score with its interval,
  paired differences against full-prompt and query-only FT, tokens, the engine view (equal-length TTFT, TPOT,
  E2EL at batch 1; request throughput at saturation; speedups against the uncached and the cached full prompt with
  their intervals; goodput), the as-answered view beside it, costs and break-even. The CSV has every column of
  :func:`promptintern.harness.aggregate.main_table` (all comparisons against every reference).
- ``task-<task>``: the same for one eval task, on-task rows only.
- ``cross_domain``, ``cost`` (every API model, cached and uncached; self-hosted on both views; training),
  ``sweep`` (every batch size the engine unit timed), ``stages``, ``answers``.

Under every table: how its intervals were made and on how many items or timed queries (:func:`method_notes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import format as F
from .aggregate import (
    OBJECT_COLUMNS,
    answers_frame,
    cross_domain_table,
    display_score,
    eval_frame,
    main_table,
    stage_frame,
    stage_table,
    sweep_frame,
)
from .cost import PriceTable, load_price_table
from .plan import CACHED_SUFFIX
from .stats import METHOD_TEXT
from .store import ResultStore

Column = F.Column


def text(col: str) -> F.Column:
    return (col.replace("_", " "), lambda r: str(r[col]))


def has_cached(table: pd.DataFrame) -> bool:
    """Whether a table holds cached-prefix rows (its comparisons against the cached full prompt are shown)."""
    return "prefix_cache" in table.columns and bool(table["prefix_cache"].fillna(False).astype(bool).any())


def n_cell(r) -> str:
    """Scored samples, and those left out for a reason of the harness (tasks/infra.py) when there are any."""
    x = r.get("infra_excluded")
    return F.integer(r.get("n")) + (f" (+{int(x)} excluded: infra)" if not F.isnan(x) and x and x > 0 else "")


def main_columns(include_task: bool = True, cached: bool = False) -> list[Column]:
    cols: list[Column] = [text("model"), ("train task", lambda r: str(r["train_task"])),
                          ("eval task", lambda r: str(r["eval_task"]))] if include_task else []
    vs = ["full"] + (["full_cached"] if cached else [])
    name = {"full": "FP", "full_cached": "cached FP"}
    cols += [
        ("method", lambda r: str(r["label"])),
        # (a grid whose evaluations all failed has no metric column: its rows show their status)
        ("metric", lambda r: F.DASH if F.isnan(r.get("metric")) else str(r.get("metric"))),
        ("score [95% CI]", F.score),
        ("n", n_cell),
        ("steps", lambda r: F.num(r.get("train_steps"), 0)),
        ("Δ vs full-prompt FT", F.delta("delta_full")),
        ("Δ vs query-only FT", F.delta("delta_query")),
        ("input tok", lambda r: F.num(r.get("input_tokens"), 0)),
        ("prefill tok", lambda r: F.num(r.get("prefill_tokens"), 0)),
        ("timed queries", lambda r: F.integer(r.get("engine_queries"))),
        ("TTFT", lambda r: F.seconds(r.get("ttft_s"))),
        ("TPOT", lambda r: F.seconds(r.get("tpot_s"))),
        ("E2EL (L tok)", lambda r: F.seconds(r.get("e2el_s"))),
        *[(f"b1 speedup vs {name[x]}", F.ratio(f"speedup_{x}")) for x in vs],
        ("sat. req/s (batch)", lambda r: F.DASH if F.isnan(r.get("sat_rps")) else
         f"{r['sat_rps']:.2f} ({int(r['sat_batch'])})"),
        *[(f"sat. throughput vs {name[x]}", F.ratio(f"throughput_{x}")) for x in vs],
        ("goodput req/s", lambda r: F.num(r.get("goodput_rps"), 2)),
        ("as answered: out tok", lambda r: F.num(r.get("answered_output_tokens"), 0)),
        ("as answered: E2EL", lambda r: F.seconds(r.get("answered_e2el_s"))),
        *[(f"as answered: speedup vs {name[x]}", F.ratio(f"answered_speedup_{x}")) for x in vs],
        ("self-hosted $/1k", lambda r: F.usd(r.get("self_hosted_usd_per_1k"))),
        *[(f"saving vs {name[x]}", lambda r, x=x: F.pct(r.get(f"saving_{x}_pct"))) for x in vs],
        ("API $/1k", lambda r: F.usd(r.get("api_usd_per_1k"))),
        ("training $", lambda r: F.usd(r.get("train_usd"))),
        ("break-even vs " + " / ".join(name[x] for x in vs),
         lambda r: " / ".join(F.queries(r.get(f"break_even_{x}")) for x in vs)),
    ]
    return cols


def method_notes(table: pd.DataFrame) -> str:
    """The line under a table: which interval method each figure uses and on how many items / timed queries."""
    if table.empty or "status" not in table.columns:
        return ""
    ok = table[table["status"] == "ok"]
    parts = []
    methods = sorted({m for m in ok.get("score_method", pd.Series(dtype=object)).dropna()})
    if methods:
        n = sorted({int(x) for x in ok["n"].dropna()})
        parts.append(f"Scores: {', '.join(METHOD_TEXT[m] for m in methods)}, 95 %; n = {', '.join(map(str, n))} "
                     "test items per row.")
    dm = sorted({m for c in ("delta_full_method", "delta_query_method") if c in ok.columns
                 for m in ok[c].dropna()})
    if dm:
        parts.append(f"Δ: paired on the same items, {'; '.join(METHOD_TEXT[m] for m in dm)}; ns = the interval "
                     "includes 0.")
    if "engine_queries" in ok.columns and ok["engine_queries"].notna().any():
        q = sorted({int(x) for x in ok["engine_queries"].dropna()})
        L = sorted({int(x) for x in ok["engine_L"].dropna()})
        rep = sorted({int(x) for x in ok["engine_repeats"].dropna()})
        sm = sorted({m for c in ok.columns if c.startswith(("speedup_", "throughput_", "answered_speedup_"))
                     and c.endswith("_method") for m in ok[c].dropna()})
        parts.append(f"Engine view: every condition decodes L = {', '.join(map(str, L))} tokens (end of sequence "
                     f"ignored) on the same {', '.join(map(str, q))} timed queries, {', '.join(map(str, rep))} "
                     "repeat(s), interleaved; saturation = the largest static batch timed, on the same batches. "
                     f"Speedup and throughput intervals: {'; '.join(METHOD_TEXT[m] for m in sm)}." if sm else
                     f"Engine view: L = {', '.join(map(str, L))} tokens, {', '.join(map(str, q))} timed queries.")
    if "timing_source" in ok.columns and (ok["timing_source"] == "evaluation, batch 1").any():
        parts.append("Rows timed by their own evaluation (older records, MetaTuner) have the as-answered view only.")
    if "cost_basis" in ok.columns and ok["cost_basis"].notna().any():
        parts.append(f"Self-hosted cost: {'; '.join(sorted(set(ok['cost_basis'].dropna())))} (price per second of "
                     "the machine held / requests per second; at batch 1, the request's own seconds); break-even: the "
                     "extra one-time training cost over the reference's / the saving per query.")
    return " ".join(parts)


def cross_columns() -> list[Column]:
    def score(col):
        return lambda r: F.num(display_score(r["metric"], r[col]))

    def delta(col):
        return lambda r: F.DASH if F.isnan(r[col]) else f"{display_score(r['metric'], r[col]):+.1f}"

    return [text("model"), ("train task", lambda r: str(r["train_task"])),
            ("eval task", lambda r: str(r["eval_task"])), ("method", lambda r: str(r["label"])),
            text("metric"), ("score [95% CI]", F.score), ("n", lambda r: F.integer(r["n"])),
            ("base model (few-shot)", score("base_score")), ("Δ vs base", delta("delta_vs_base")),
            ("full-prompt FT", score("full_prompt_ft_score")), ("Δ vs full-prompt FT", delta("delta_vs_full_prompt_ft")),
            ("input tokens", lambda r: F.num(r["input_tokens"]))]


def cost_columns(table: PriceTable | None, main: pd.DataFrame) -> list[Column]:
    cols: list[Column] = [text("model"), ("train task", lambda r: str(r["train_task"])),
                          ("eval task", lambda r: str(r["eval_task"])), ("method", lambda r: str(r["label"])),
                          ("hardware price", lambda r: str(r.get("hardware_key") or "unpriced")),
                          ("engine $/1k (saturation)", lambda r: F.usd(r.get("engine_usd_per_1k"))),
                          ("engine $/1k (batch 1)", lambda r: F.usd(r.get("engine_b1_usd_per_1k"))),
                          ("as answered $/1k (batch 1)", lambda r: F.usd(r.get("answered_usd_per_1k"))),
                          ("training $ (once, whole work)", lambda r: F.usd(r.get("train_usd"))),
                          ("training s", lambda r: F.num(r.get("train_seconds"), 1))]
    if has_cached(main):  # the one-time encoding of the cached prefix, per adapter
        cols.insert(5, ("prefix encode (once)", lambda r: F.seconds(r.get("prefix_encode_s")) if r.get("prefix_cache")
                        else F.DASH))
    for model in (table.api_models if table else {}):
        cols.append((f"{model} $/1k", lambda r, m=model: F.usd(r.get(f"api_usd_per_1k[{m}]"))))
        cols.append((f"{model} cached $/1k", lambda r, m=model: F.usd(r.get(f"api_usd_per_1k_cached[{m}]"))))
    return cols


def sweep_columns() -> list[Column]:
    return [text("model"), ("train task", lambda r: str(r["train_task"])), ("eval task", lambda r: str(r["eval_task"])),
            ("method", lambda r: str(r["label"])), ("batch", lambda r: str(int(r["batch_size"]))),
            ("L", lambda r: F.integer(r["L"])), ("req/s", lambda r: F.num(r["rps"], 3)),
            ("output tok/s", lambda r: F.num(r["tok_s"])), ("TTFT", lambda r: F.seconds(r["ttft_s"])),
            ("TPOT", lambda r: F.seconds(r["tpot_s"])), ("goodput req/s", lambda r: F.num(r["goodput_rps"], 3)),
            ("acc.-qualified goodput req/s", lambda r: F.num(r["acc_goodput_rps"], 3)), ("objective", text("slo")[1])]


def stage_columns() -> list[Column]:
    return [text("model"), ("train task", lambda r: str(r["train_task"])),
            ("method", lambda r: str(r["label"])), ("stage", lambda r: f"{int(r['stage'])}/{int(r['n_stages'])}"),
            ("template rate requested", lambda r: F.num(r["template_rate_requested"], 2)),
            ("template rate achieved", lambda r: F.num(r["template_rate_achieved"], 2)),
            ("examples/prompt", lambda r: F.num(r["examples_per_prompt"], 0)),
            ("mean prompt tokens", lambda r: F.num(r["mean_prompt_tokens"])),
            ("first loss", lambda r: F.num(r["first_loss"], 3)), ("final loss", lambda r: F.num(r["final_loss"], 3)),
            ("steps", lambda r: F.num(r["steps"], 0)), ("train s", lambda r: F.num(r["seconds"], 1)),
            ("work s", lambda r: F.num(r.get("work_seconds"), 1)),
            ("tokens/s", lambda r: F.num(r["tokens_per_second"], 0)),
            ("MFU", lambda r: F.share(r.get("mfu"))), ("padding", lambda r: F.share(r.get("padding_share")))]


def answers_columns() -> list[Column]:
    return [text("model"), ("train task", lambda r: str(r["train_task"])),
            ("eval task", lambda r: str(r["eval_task"])), ("method", lambda r: str(r["label"])),
            ("seed", lambda r: str(r["seed"])), ("n", lambda r: str(int(r["n"]))),
            ("ended: stop / eos / budget", lambda r: f"{int(r['stop'])} / {int(r['eos'])} / {int(r['length'])}"),
            ("bare fence", lambda r: str(int(r["bare_fence"]))),
            ("extraction failed", lambda r: str(int(r["extraction_failed"]))),
            ("defines a function", lambda r: F.share(r["defines_function"])),
            ("output tokens", lambda r: F.num(r["mean_output_tokens"]))]


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
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in s).replace("±", r"$\pm$").replace("×", r"$\times$") \
        .replace("Δ", r"$\Delta$").replace("–", "--").replace("≤", r"$\le$")


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
    """The main table as markdown (with the cached-prefix comparisons when it has cached rows), its notes below."""
    notes = method_notes(table)
    return render_markdown(table, main_columns(cached=has_cached(table))) + (f"\n\n{notes}" if notes else "")


def tables(store: ResultStore, price_table: PriceTable | None = None, hardware_key: str | None = None) -> dict:
    """Every table as a DataFrame (plus the frames they came from)."""
    df = eval_frame(store, price_table, hardware_key)
    main = main_table(df)
    sf = stage_frame(store)
    return {"eval": df, "main": main, "cross_domain": cross_domain_table(main), "stages_raw": sf,
            "stages": stage_table(sf), "sweep": sweep_frame(main), "answers": answers_frame(store)}


def _write(out: Path, stem: str, table: pd.DataFrame, columns: Sequence[Column], caption: str,
           notes: str = "") -> dict[str, Path]:
    paths = {"markdown": out / f"{stem}.md", "csv": out / f"{stem}.csv", "latex": out / f"{stem}.tex"}
    paths["markdown"].write_text(render_markdown(table, columns) + (f"\n\n{notes}" if notes else "") + "\n")
    table.drop(columns=[c for c in OBJECT_COLUMNS if c in table.columns]).to_csv(paths["csv"], index=False)
    paths["latex"].write_text(render_latex(table, columns, caption + (f" {notes}" if notes else "")))
    return paths


def task_file_stem(task: str) -> str:
    return "task-" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task)


def write_tables(store: ResultStore, price_table: PriceTable | str | None = None, hardware_key: str | None = None,
                 t: dict | None = None) -> dict[str, Path]:
    """Write every table; returns paths: "markdown", "csv", "latex" (main table) and "<table>.<format>" for the rest.
    ``t``: :func:`tables` for these prices, if already built."""
    if not isinstance(price_table, PriceTable):
        price_table = load_price_table(price_table)
    t = t or tables(store, price_table, hardware_key)
    out = store.root / "tables"
    out.mkdir(parents=True, exist_ok=True)
    main = t["main"]
    paths: dict[str, Path] = {}
    caption = (f"Main results. Costs priced with {price_table.describe()}; API cost for "
               f"{price_table.headline_model}.")
    if has_cached(main):
        caption += (f" Rows marked {CACHED_SUFFIX} reuse the recurring prefix's KV cache (encoded once per adapter) and "
                    "pay the API's cached-input price under the price table's caching rule.")
    for fmt_name, p in _write(out, "main", main, main_columns(cached=has_cached(main)), caption,
                              method_notes(main)).items():
        paths[fmt_name] = p
        paths[f"main.{fmt_name}"] = p
    if not main.empty:
        for task in sorted(main["eval_task"].unique()):
            sub = main[(main["eval_task"] == task) & (~main["cross_domain"])]
            stem = task_file_stem(task)
            for fmt_name, p in _write(out, stem, sub, main_columns(cached=has_cached(sub)),
                                      f"{task}: on-task results.", method_notes(sub)).items():
                paths[f"{stem}.{fmt_name}"] = p
    for stem, table, cols, cap in (
            ("cross_domain", t["cross_domain"], cross_columns(),
             "Cross-domain evaluation: eval task differs from the train task."),
            ("cost", main, cost_columns(price_table, main), f"Cost per 1k queries, {price_table.describe()}."),
            ("sweep", t["sweep"], sweep_columns(), "Engine measurement at every batch size timed (static batches)."),
            ("stages", t["stages"], stage_columns(), "Training stages."),
            ("answers", t["answers"], answers_columns(), "How the answers ended and what extraction found.")):
        for fmt_name, p in _write(out, stem, table, cols, cap).items():
            paths[f"{stem}.{fmt_name}"] = p
    return paths
