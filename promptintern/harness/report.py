"""The experiment report: ``report.html`` (self-contained: plots as data URIs, tables inline, no external assets)
and ``report.md`` in the experiment folder, plus ``summarize`` for the end of ``promptintern benchmark``.

Every number in the report comes from the aggregated tables, which come from the result files. Sentences in the
summary only restate table values next to their baseline; nothing is estimated.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import compare
from . import format as F
from . import tables as T
from .aggregate import BASELINE_METHOD, display_score
from .cost import PriceTable, caching_rule_text, load_price_table
from .decision import READING_NOTE, columns, decision_rows, decision_tables, render_decision
from .env_info import describe_hardware
from .plan import SELECTION_FILE
from .report_metatuner import (
    METATUNER_NOTE,
    VERSUS_NOTE,
    metatuner_diagnostics_columns,
    metatuner_diagnostics_frame,
    versus_columns,
)
from .serving_report import COLUMNS as SERVING_COLUMNS
from .serving_report import serving_for, serving_section
from .store import ResultStore

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1500px;color:#1a1a1a;
background:#fff;padding:0 16px;line-height:1.45}
h1{font-size:26px;margin-bottom:2px} h2{font-size:20px;margin-top:32px;border-bottom:2px solid #2c6fbb;padding-bottom:4px}
h3{font-size:16px;margin-top:20px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0 16px;display:block;overflow-x:auto}
th,td{border:1px solid #c8d0da;padding:3px 7px;text-align:left;white-space:nowrap}
th{background:#2c6fbb;color:#fff} tr:nth-child(even) td{background:#eef3f9}
img{max-width:100%;border:1px solid #dde3ea;margin:6px 0 14px}
.note{color:#555;font-size:13px} .box{background:#f4f8fc;border-left:4px solid #2c6fbb;padding:8px 14px;margin:12px 0}
code{background:#f0f0f0;padding:0 3px}
"""

PLOT_TITLES = {
    "accuracy_vs_tokens": "Score vs input tokens (Pareto frontier marked)",
    "accuracy_by_schedule_rate": "Score by schedule and compression rate",
    "speedup": "Request throughput at saturation vs full-prompt fine-tuning (engine: same requests, same tokens)",
    "cost": "Cost per 1k queries",
    "training_loss": "Training loss per stage",
    "cross_domain": "Cross-domain: score change vs the base model",
}


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html_table(table: pd.DataFrame, columns: Sequence[F.Column]) -> str:
    if table.empty:
        return "<p><em>no rows</em></p>"
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h, _ in columns) + "</tr>"]
    for _, r in table.iterrows():
        out.append("<tr>" + "".join(f"<td>{html.escape(f(r))}</td>" for _, f in columns) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _score(metric: str, v: float) -> str:
    return F.num(display_score(metric, v))


def _delta_text(r, prefix: str, name: str) -> str | None:
    d = r.get(prefix)
    if F.isnan(d):
        return None
    if r.get(f"{prefix}_method") == "all_equal":
        return f"{d:+.1f} points vs {name} (every one of {int(r.get(f'{prefix}_n') or 0)} pairs equal: no interval)"
    lo, hi = r.get(f"{prefix}_lo"), r.get(f"{prefix}_hi")
    if F.isnan(lo) or F.isnan(hi):
        return f"{d:+.1f} points vs {name} (no interval: fewer than 2 paired items)"
    verdict = "interval includes 0: no difference shown" if r.get(f"{prefix}_ns") else "interval excludes 0"
    return f"{d:+.1f} points vs {name} [95% CI {F.bound(lo)}, {F.bound(hi)}; {verdict}]"


def _ratio_text(r, col: str) -> str:
    """A ratio with its interval, named as what it is: a 95 % CI, or the range of fewer than 10 queries/batches."""
    x, lo, hi, method = r.get(col), r.get(f"{col}_lo"), r.get(f"{col}_hi"), r.get(f"{col}_method")
    if F.isnan(lo) or F.isnan(hi):
        return f"{x:.2f}×"
    if method == "range":
        return f"{x:.2f}× (range {lo:.2f}–{hi:.2f} over {int(r.get(f'{col}_n') or 0)}; no CI)"
    return f"{x:.2f}× [95% CI {lo:.2f}, {hi:.2f}]"


def _against(r, ref: str, what: str) -> str | None:
    """What a row's engine, as-answered and cost comparisons against one reference say, in one clause."""
    parts = []
    if not F.isnan(r.get(f"throughput_{ref}")):
        parts.append(f"{_ratio_text(r, f'throughput_{ref}')} request throughput at batch {int(r['sat_batch'])}")
    if not F.isnan(r.get(f"speedup_{ref}")):
        parts.append(f"{_ratio_text(r, f'speedup_{ref}')} faster at batch 1 (same {int(r['engine_L'])} tokens)")
    if not F.isnan(r.get(f"answered_speedup_{ref}")):
        parts.append(f"as answered {_ratio_text(r, f'answered_speedup_{ref}')}")
    for col, words in ((f"prefill_reduction_{ref}_pct", "fewer tokens prefilled"),
                       (f"saving_{ref}_pct", "self-hosted cost saving"), (f"api_saving_{ref}_pct", "API cost saving")):
        if not F.isnan(r.get(col)):
            parts.append(f"{r[col]:.0f}% {words}")
    if not F.isnan(r.get(f"break_even_{ref}")):
        parts.append(f"training repaid after {F.queries(r[f'break_even_{ref}'])} queries")
    return f"against {what}: " + ", ".join(parts) if parts else None


def key_findings(main: pd.DataFrame) -> list[str]:
    """One sentence per non-baseline row that has a full-prompt FT baseline: the paired score differences with
    their intervals (a difference whose interval includes 0 is said to show none), then the engine view against the
    uncached and the cached full prompt, the as-answered view beside it, and the cost."""
    lines = []
    if main.empty:
        return ["No evaluation results yet."]
    ok = main[main["status"] == "ok"]
    on_task = ok[~ok["cross_domain"]]
    for task in sorted(on_task["eval_task"].unique()):
        t = on_task[on_task["eval_task"] == task]
        cached = t["prefix_cache"].fillna(False).astype(bool)
        base = t[(t["method"] == BASELINE_METHOD) & ~cached]
        base_cached = t[(t["method"] == BASELINE_METHOD) & cached]
        if base.empty:
            lines.append(f"**{task}**: no on-task full-prompt fine-tuning row (nothing was fine-tuned on {task} "
                         "with the full prompt), so no comparison with it.")
            continue
        b = base.iloc[0]
        lines.append(f"**{task}** ({b['metric']}, n={int(b['n'])} per method): full-prompt FT scores "
                     f"{_score(b['metric'], b['score'])} with {b['input_tokens']:.0f} input tokens per query.")
        if not base_cached.empty:
            c = base_cached.iloc[0]
            clause = _against(c, "full", "uncached")
            lines.append(f"- served with its recurring prefix cached ({c['prefix_tokens']:.0f} tokens encoded once, "
                         f"{F.seconds(c['prefix_encode_s'])}), full-prompt FT prefills {c['prefill_tokens']:.0f} tokens "
                         f"per query" + (f"; {clause}" if clause else "") + "; the rows below are compared with both.")
        for _, r in t[(t["method"] != BASELINE_METHOD)].iterrows():
            parts = [_score(r["metric"], r["score"])]
            parts += [x for x in (_delta_text(r, "delta_full", "full-prompt FT"),
                                  _delta_text(r, "delta_query", "query-only FT") if r["method"] != "query_only_ft"
                                  else None) if x]
            if not F.isnan(r.get("token_reduction_full_pct")):
                parts.append(f"{r['token_reduction_full_pct']:.0f}% fewer input tokens")
            parts += [x for x in (_against(r, "full_cached", "the cached full prompt"),
                                  _against(r, "full", "the uncached full prompt")) if x]
            lines.append(f"- {r['label']} (train {r['train_task']}): " + "; ".join(parts) + ".")
    bad = main[main["status"] != "ok"]
    if len(bad):
        lines.append(f"**{len(bad)} grid point(s) have no result** (failed or missing): see 'Failed and missing grid "
                     "points'; they are absent from every comparison.")
    return lines


def unfinished_lines(main: pd.DataFrame, store: ResultStore | None = None) -> list[str]:
    bad = main[main["status"] != "ok"] if not main.empty else main
    out = [f"- {r['status'].upper()}: {r['label']} {r['train_task']}→{r['eval_task']}"
           + (f" — {r['error']}" if r.get("error") else "") for _, r in bad.iterrows()]
    stale = store.stale_records() if store is not None else []
    if stale:
        out.append(f"- {len(stale)} result file(s) from earlier plans of this folder (other data, scoring, items or "
                   "budget) are left out of every table.")
    return out


def selection_lines(store: ResultStore) -> list[str]:
    """Items and contamination, from ``selection.json``."""
    path = store.root / SELECTION_FILE
    if not path.is_file():
        return ["No selection.json (results written before item selection was recorded)."]
    sel = json.loads(path.read_text())
    out = []
    for name, s in sel.items():
        removed = s.get("removed") or []
        ids = ", ".join(f"{r['id']}≈{r['test_id']}" for r in removed[:12])
        out.append(f"- {name}: {len(s['train_ids'])} training items drawn from a pool of {s['pool_size']} "
                   f"(training split {s['train_split_size']}), {len(s['test_ids'])} test items drawn from "
                   f"{s['test_split_size']}; {len(removed)} near-duplicates of test items removed from training and "
                   f"the pool" + (f": {ids}" + (" ..." if len(removed) > 12 else "") if removed else "") + ".")
    return out


def budget_lines(main: pd.DataFrame) -> list[str]:
    if main.empty or "budget" not in main.columns:
        return []
    pol = sorted({str(b) for b in main["budget"].dropna() if b and b not in ("untrained", "")})
    if not pol:
        return []
    steps = main[(main["status"] == "ok") & main["train_steps"].notna() & (main["train_steps"] > 0)]
    desc = {"matched": "every fine-tuning chain of a (model, train task, seed) takes the optimizer steps of the "
                       "longest one (train.budget: matched)",
            "per_stage": "every stage runs train.epochs, so a T-stage chain takes T times the steps of a one-stage "
                         "method (train.budget: per_stage, the paper's recipe; comparisons are confounded by budget)",
            "own": "MetaTuner's phases have their own step counts (not matched)"}
    lines = [f"Training budget: {desc.get(p, p)}." for p in pol]
    if len(steps):
        lines.append("Optimizer steps per row: " + ", ".join(
            f"{r['label']} on {r['train_task']}: {int(r['train_steps'])}" for _, r in
            steps.drop_duplicates(["label", "train_task"]).iterrows()) + ".")
    return lines


def _meta(store: ResultStore) -> dict:
    recs = store.records()
    commits = sorted({str(r.get("git_commit")) for r in recs})
    hws = sorted({describe_hardware(r.get("hardware") or {}) for r in recs})
    versions: dict[str, set] = {}
    for r in recs:
        for k, v in (r.get("versions") or {}).items():
            versions.setdefault(k, set()).add(str(v))
    return {"n_records": len(recs), "commits": commits, "hardware": hws,
            "versions": {k: ", ".join(sorted(v)) for k, v in sorted(versions.items())}}


def _price_lines(table: PriceTable) -> list[str]:
    api = table.api
    lines = [f"Price table **{table.id}**: {table.title}; retrieved {table.retrieved}.",
             f"API prices ({api.get('unit', 'USD per 1M tokens')}) from {api.get('source')}; hardware prices from "
             f"{table.raw['hardware'].get('source')} ({table.raw['hardware'].get('vendor', '')})."]
    unverified = [f"{m}" for m, e in table.api_models.items() if e.get("unverified") or e.get("unverified_fields")]
    unverified += [h.key for h in table.hardware if h.unverified]
    if unverified:
        lines.append("Entries with a price not confirmed by a second source (marked `unverified` in the file): "
                     + ", ".join(unverified) + ".")
    lines.append(f"Prompt caching: {caching_rule_text(table)}")
    return lines


METHOD_NOTES = [
    "Score: the task's primary metric (fractions shown as percentages; BLEU on its own 0-100 scale), the mean over "
    "the test items with a 95 % interval: Wilson's score interval for a proportion (every item 0 or 1: pass@1, "
    "accuracy, exact match), a Student-t interval for a continuous score; seeds pool their items.",
    "Differences (Δ): per-item scores against full-prompt FT and query-only FT on the same test items, in points. "
    "Two proportions: Newcombe's paired score interval (method 10), which keeps its width when every pair agrees "
    "(0 of 6 against 0 of 6 is +0.0 [-39.0, +39.0]), and the exact McNemar test's p-value in the CSV. Continuous "
    "scores: a 95 % paired percentile bootstrap (2,000 resamples of the items, fixed seed); when every pair is equal "
    "the table says so instead of an interval. 'ns' marks an interval that includes 0 (no difference shown).",
    "Input tokens: the rendered prompt (chat template included) in the evaluated model's tokenizer. API costs use "
    "tiktoken counts of the user turn (o200k_base for the gpt-4o family, cl100k_base for gpt-3.5) and of the "
    "generation; the API's own few chat-format tokens per message are not counted. API cost is a what-if: this "
    "run's prompts and outputs priced at that model's rates (fine-tuned rates for fine-tuned methods, base rates for "
    "untrained ones). 'cached' prices the shared template prefix under the price table's prompt-caching rule (stated "
    "with the price table), in the steady state where every query finds the prefix in the cache.",
    "Cached prefix (rows marked +prefix-cache, generation.prefix_cache): the recurring prefix (system turn + template "
    "and the fixed markup after it) encoded once per adapter, with the adapter active, and its KV cache copied into "
    "every batch, so only examples + query + answer are computed per query; the answers are the uncached run's tokens "
    "(tests), so both rows share one evaluation's scores. The one-time encoding is shown in the cost table. Query-only "
    "rows are not cached: their chat markup (a few dozen tokens) is computed per query, which counts against "
    "internalization.",
    "Engine view (the lead; names and definitions as vLLM's serving benchmark): every serving condition of a (model, "
    "eval task) decodes the same L tokens, the end of sequence ignored, on the same timed queries, interleaved in one "
    "unit that holds the machine alone (timing.*). TTFT: time to the first token (prefill, and the prefix copy); "
    "TPOT: (E2EL - TTFT) / (L - 1); ITL: the gap between two tokens; E2EL: end to end. Batch 1: every timed query "
    "alone, timing.repeats times. Saturation: static batches of the largest size in timing.batch_sizes, the same "
    "batches in every condition: request throughput (req/s) and output tokens/s. Goodput: requests per second within "
    "the declared objective (timing.slo), best over the batch sizes timed; accuracy-qualified goodput counts only "
    "requests whose answer scored correct. A speedup is the reference's mean E2EL over the row's, a throughput ratio "
    "the row's request throughput over the reference's; their interval is a two-level bootstrap over the timed "
    "queries (or batches) and their repeats from 10 queries on, else the range of the per-query (per-batch) ratios, "
    "labelled as a range.",
    "As answered: each timed query's latency to the end of the answer its method actually gave (its length from the "
    "evaluation), at batch 1, measured by the same decode (extended at that request's TPOT when an answer was longer "
    "than timing.answered_max_tokens); shown beside the engine view with the answers' length, because a method that "
    "answers longer pays for it. Older records and MetaTuner rows were timed by their own evaluation (as answered only).",
    "MetaTuner rows count the generator's input and output tokens in the token and API-cost columns, and its prompt "
    "generation and hypernetwork time in its latency and self-hosted cost: both run on every query.",
    "Self-hosted cost, from each request's own compute: at saturation the price per second of the machine the "
    "measurement held over its request throughput; at batch 1 (and as answered) the request's own end-to-end seconds "
    "x that price; never a batch's wall time divided by its size. Training cost: every stage's whole work (prompts "
    "with retrieval and compression, teacher passes, optimizer steps, loading), split in the stage record, x the same "
    "price (one-time). Break-even: the row's extra training cost over the reference's (0 for an untrained reference) "
    "/ its saving per query, against each named reference.",
]


def vllm_agreement_lines(store: ResultStore) -> list[str]:
    """One line per evaluation served by vLLM: how many of its answers equal transformers' on the same items."""
    out = []
    for r in store.records(kind="eval"):
        a = (r.get("vllm") or {}).get("agreement")
        if not a or not a.get("n"):
            continue
        label = r["config"]["method"]["label"] + (" (prefix cached)" if r["config"].get("prefix_cache") else "")
        verdict = "at or above" if a["meets_threshold"] else "below"
        out.append(f"vLLM ({r['config']['generation'].get('vllm_dtype', 'bfloat16')}) against {a['reference']}: "
                   f"{a['identical']} of {a['n']} answers identical for {label} on {r['config']['eval_task']}, "
                   f"{verdict} the {a['threshold']:.0%} threshold" + (f"; the {a['n'] - a['identical']} that differ are "
                   f"listed in `{store.relative(store.runs)}/{r['unit_id']}.json` (vllm.agreement)"
                   if a["identical"] < a["n"] else "") + ".")
    return out


def measurement_caveats(ev: pd.DataFrame) -> list[str]:
    """Facts about how this experiment's timings were made that a reader must know."""
    out = []
    if "status" in ev.columns:
        ev = ev[ev["status"] == "ok"]
    if ev.empty:
        return out
    src = ev["timing_source"] if "timing_source" in ev.columns else pd.Series(dtype=object)
    if (src == "not measured").any():
        out.append(f"{int((src == 'not measured').sum())} row(s) have no timing (timing.measure off, or records that "
                   "predate it): their latency, speedup, throughput and self-hosted cost cells are empty.")
    legacy = ev[src == "evaluation, batch 1"] if len(src) else ev.iloc[0:0]
    if len(legacy):
        n = sorted({int(x) for x in legacy["answered_queries"].dropna()}) if "answered_queries" in legacy else []
        caps = sorted({int(x) for x in legacy.get("answered_cap", pd.Series(dtype=float)).dropna()})
        out.append(f"{len(legacy)} row(s) were timed by their own evaluation ({', '.join(map(str, n))} batch-1 "
                   "queries, as answered" + (f", decoding capped at {', '.join(map(str, caps))} tokens" if caps else "")
                   + "): no engine view, and a ratio between them mixes prompt cost with answer length.")
    ext = ev["answered_extended"].dropna() if "answered_extended" in ev.columns else pd.Series(dtype=float)
    if len(ext) and ext.sum() > 0:
        out.append(f"{int(ext.sum())} as-answered request(s) had answers longer than the decode the engine unit ran "
                   "(timing.answered_max_tokens): their end was extended at the request's own TPOT.")
    if "infra_excluded" in ev.columns and (ev["infra_excluded"].fillna(0) > 0).any():  # tasks/infra.py
        bad = ev[ev["infra_excluded"].fillna(0) > 0]
        out.append(f"{int(bad['infra_excluded'].sum())} sample(s) of {len(bad)} evaluation(s) failed for a reason of the "
                   "harness (e.g. the code sandbox could not start), not of the answer: they are left out of the scores "
                   "(scoring.max_infra_failures allows it) and counted in the n column; the run files list them "
                   "(infra).")
    return out


ANSWERS_NOTE = ("How each evaluation's generations ended (a stop string, the end of turn, or the token budget), how "
                "many are a bare code fence (a decoding fault if not zero), how many answers the task's extractor "
                "could not find (each sample's extraction_failure says why), and for code tasks the share of answers "
                "that define a function. Read a few generations in the run files before trusting a score.")


def build_report(store: ResultStore, t: dict, plots: dict[str, Path], table: PriceTable,
                 extra_paths: dict[str, Path] | None = None, decision: list[dict] | None = None) -> dict[str, Path]:
    """Write report.html and report.md from the tables and plots; returns their paths."""
    main, cross = t["main"], t["cross_domain"]
    notes = METHOD_NOTES + measurement_caveats(t["eval"]) + vllm_agreement_lines(store)
    meta = _meta(store)
    name = store.root.name
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    findings = key_findings(main)
    has_cross = not cross.empty
    cross_note = ("Rows below were trained on one task and evaluated on another. 'base model' is the untrained model "
                  "with the full few-shot prompt (few_shot) on the eval task; 'full-prompt FT' is full-prompt "
                  "fine-tuning on the same train task, evaluated on the same eval task.")
    no_cross = ("No cross-domain evaluations in this experiment: every trained method was evaluated on its own "
                "train task. List other tasks in `tasks.eval` (e.g. `tasks.eval=[mbpp,nl2bash]`) and add "
                "`- name: few_shot` to `methods` to measure what internalization costs off-task against the base model.")
    missing_base = has_cross and cross["base_score"].isna().all()

    # -- markdown
    md = [f"# Prompt-internalization report: {name}", "",
          f"Generated {now} from {meta['n_records']} result file(s) in `{store.relative(store.runs)}/`.", "",
          "## Summary", "", *findings, "", "## Main results", "", T.to_markdown(main), ""]
    if decision:
        md += ["## Does internalizing the prompt pay?", "", render_decision(decision), ""]
    md += ["## Plots", ""] + [f"![{PLOT_TITLES.get(k, k)}](plots/{p.name})" for k, p in plots.items()] + [""]
    md += ["## Cost per 1k queries", "", *_price_lines(table), "",
           T.render_markdown(main, T.cost_columns(table, main)), ""]
    md += ["## Cross-domain generalization", ""]
    if has_cross:
        md += [cross_note, ""]
        if missing_base:
            md += ["No base-model (few_shot) rows: add `- name: few_shot` to `methods` for that comparison.", ""]
        md += [T.render_markdown(cross, T.cross_columns()), ""]
    else:
        md += [no_cross, ""]
    unfinished = unfinished_lines(main, store)
    md += ["## Failed and missing grid points", "", *(unfinished or ["None: every planned evaluation has a result."]),
           ""]
    md += ["## Items, contamination and budget", "", *selection_lines(store), "", *budget_lines(main), ""]
    md += ["## Statistical power", "", *[f"- {compare.power_line(p)}" for p in compare.power_rows(main)], ""]
    md += ["## Answers", "", ANSWERS_NOTE, "", T.render_markdown(t["answers"], T.answers_columns()), ""]
    mt_vs = compare.versus(main, "metatuner", "promptintern")
    if not mt_vs.empty:
        md += ["## MetaTuner against full-prompt FT and PromptIntern", "", VERSUS_NOTE, "",
               T.render_markdown(mt_vs, versus_columns()), ""]
    mt_diag = metatuner_diagnostics_frame(store)
    if not mt_diag.empty:
        md += ["## MetaTuner diagnostics", "", METATUNER_NOTE, "",
               T.render_markdown(mt_diag, metatuner_diagnostics_columns()), ""]
    md += ["## Training stages", "", T.render_markdown(t["stages"], T.stage_columns()), "",
           "## Engine measurement by batch size", "", T.render_markdown(t["sweep"], T.sweep_columns()), ""]
    served = {f: serving_section(f) for f in serving_for(store.root)}
    for folder, (table_sv, ratio) in served.items():
        md += [f"## Served with vLLM ({folder.name})", "", ratio, "", T.render_markdown(table_sv, SERVING_COLUMNS), "",
               f"Method, n, machine and definitions: `../{folder.name}/report.md`.", ""]
    md += ["## How the numbers are measured", "", *[f"- {x}" for x in notes], "",
           "## Provenance", "", f"- hardware: {'; '.join(meta['hardware']) or 'n/a'}",
           f"- git commit(s): {', '.join(meta['commits']) or 'n/a'}",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), ""]
    if extra_paths:
        md += ["## Files", ""] + [f"- {k}: `{store.relative(v)}`" for k, v in extra_paths.items()] + [""]

    # -- html
    h = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
         f"<title>Prompt-internalization report: {html.escape(name)}</title><style>{CSS}</style></head><body>",
         f"<h1>Prompt-internalization report: {html.escape(name)}</h1>",
         f"<p class='note'>Generated {now} from {meta['n_records']} result file(s) in "
         f"<code>{html.escape(store.relative(store.runs))}/</code>.</p>", "<h2>Summary</h2><div class='box'>"]
    for line in findings:
        text = html.escape(line.lstrip("- ")).replace("**", "")
        h.append(f"<p>{'&bull; ' if line.startswith('- ') else ''}{text}</p>")
    h += ["</div>", "<h2>Main results</h2>", render_html_table(main, T.main_columns(cached=T.has_cached(main))),
          f"<p class='note'>{html.escape(T.method_notes(main))}</p>"]
    if decision:
        h += ["<h2>Does internalizing the prompt pay?</h2>", decision_html(decision)]
    h.append("<h2>Plots</h2>")
    for k, p in plots.items():
        if k == "cross_domain":
            continue
        h.append(f"<h3>{html.escape(PLOT_TITLES.get(k, k))}</h3><img alt='{html.escape(k)}' src='{_data_uri(p)}'>")
    h += ["<h2>Cost per 1k queries</h2>"] + [f"<p class='note'>{html.escape(x).replace('**', '')}</p>"
                                             for x in _price_lines(table)]
    h.append(render_html_table(main, T.cost_columns(table, main)))
    h.append("<h2>Cross-domain generalization</h2>")
    if has_cross:
        h.append(f"<p>{html.escape(cross_note)}</p>")
        if missing_base:
            h.append("<p class='note'>No base-model (few_shot) rows: add <code>- name: few_shot</code> to "
                     "<code>methods</code> for that comparison.</p>")
        h.append(render_html_table(cross, T.cross_columns()))
        if "cross_domain" in plots:
            h.append(f"<img alt='cross_domain' src='{_data_uri(plots['cross_domain'])}'>")
    else:
        h.append(f"<div class='box'><p>{html.escape(no_cross)}</p></div>")
    h += ["<h2>Failed and missing grid points</h2><ul>"]
    h += [f"<li>{html.escape(x.lstrip('- '))}</li>" for x in unfinished] or ["<li>None: every planned evaluation has "
                                                                           "a result.</li>"]
    h += ["</ul><h2>Items, contamination and budget</h2><ul>"]
    h += [f"<li>{html.escape(x.lstrip('- '))}</li>" for x in selection_lines(store) + budget_lines(main)]
    h += ["</ul><h2>Statistical power</h2><ul>"]
    h += [f"<li>{html.escape(compare.power_line(p))}</li>" for p in compare.power_rows(main)]
    h += ["</ul>"]
    h += ["<h2>Answers</h2>", f"<p class='note'>{html.escape(ANSWERS_NOTE)}</p>",
          render_html_table(t["answers"], T.answers_columns())]
    if not mt_vs.empty:
        h += ["<h2>MetaTuner against full-prompt FT and PromptIntern</h2>", f"<p class='note'>{html.escape(VERSUS_NOTE)}</p>",
              render_html_table(mt_vs, versus_columns())]
    if not mt_diag.empty:
        h += ["<h2>MetaTuner diagnostics</h2>", f"<p class='note'>{html.escape(METATUNER_NOTE)}</p>",
              render_html_table(mt_diag, metatuner_diagnostics_columns())]
    h += ["<h2>Training stages</h2>", render_html_table(t["stages"], T.stage_columns()),
          "<h2>Engine measurement by batch size</h2>", render_html_table(t["sweep"], T.sweep_columns())]
    for folder, (table_sv, ratio) in served.items():
        h += [f"<h2>Served with vLLM ({html.escape(folder.name)})</h2>",
              f"<p>{html.escape(ratio.replace('**', ''))}</p>", render_html_table(table_sv, SERVING_COLUMNS),
              f"<p class='note'>Method, n, machine and definitions: <code>../{html.escape(folder.name)}/report.md"
              "</code>.</p>"]
    h += ["<h2>How the numbers are measured</h2><ul>"] + [f"<li>{html.escape(x)}</li>" for x in notes]
    h += ["</ul><h2>Provenance</h2><ul>",
          f"<li>hardware: {html.escape('; '.join(meta['hardware']) or 'n/a')}</li>",
          f"<li>git commit(s): {html.escape(', '.join(meta['commits']) or 'n/a')}</li>",
          "<li>versions: " + html.escape(", ".join(f"{k} {v}" for k, v in meta["versions"].items())) + "</li></ul>"]
    if extra_paths:
        h.append("<h2>Files</h2><ul>" + "".join(f"<li>{html.escape(k)}: <code>{html.escape(store.relative(v))}</code></li>"
                                                for k, v in extra_paths.items()) + "</ul>")
    h.append("</body></html>")
    paths = {"html": store.root / "report.html", "markdown": store.root / "report.md"}
    paths["html"].write_text("\n".join(h) + "\n")
    paths["markdown"].write_text("\n".join(md) + "\n")
    return paths


def decision_html(rows: list[dict]) -> str:
    """The decision tables (:mod:`promptintern.harness.decision`) as HTML."""
    out = []
    for caption, g in decision_tables(rows):
        out += [f"<p class='note'>{html.escape(caption).replace('**', '')}</p>", render_html_table(g, columns(g))]
    out.append(f"<p class='note'>{html.escape(READING_NOTE)}</p>")
    return "\n".join(out)


def build_all(store: ResultStore, price_table: PriceTable | str | None = None, hardware_key: str | None = None,
              submission: bool = True) -> dict:
    """Tables, plots, report and submission for one experiment folder, every one from the same frames. Returns every
    path written."""
    from .plots import write_plots
    from .submission import write_submission

    table = price_table if isinstance(price_table, PriceTable) else load_price_table(price_table)
    t = T.tables(store, table, hardware_key)
    tables_paths = T.write_tables(store, table, hardware_key, t=t)
    plots = write_plots(store, t)
    out = {"tables": tables_paths, "plots": plots, "main": t["main"], "price_table": table,
           "decision": decision_rows(t["main"])}
    extra = {"tables": store.root / "tables", "plots": store.root / "plots"}
    if submission:
        if t["eval"].empty:
            out["submission_error"] = "no evaluation results to submit"
        else:
            out["submission"] = write_submission(store, None, table, hardware_key, decision=out["decision"],
                                                 frame=t["eval"])
            extra["submission"] = out["submission"]
    if out["decision"]:
        from .decision import write_decision

        write_decision(store.root, out["decision"])
        extra["decision"] = store.root / "decision.md"
    out["report"] = build_report(store, t, plots, table, extra, decision=out["decision"])
    return out


CONSOLE_COLUMNS: list[F.Column] = [
    ("task", lambda r: str(r["eval_task"])),
    ("method", lambda r: str(r["label"])),
    ("score [95% CI]", F.score),
    ("in tok", lambda r: F.num(r.get("input_tokens"), 0)),
    ("sat. × cached FP", F.ratio("throughput_full_cached")),
    ("sat. × FP", F.ratio("throughput_full")),
    ("$/1k", lambda r: F.usd(r.get("self_hosted_usd_per_1k"))),
    ("break-even", lambda r: F.queries(r.get("break_even_full_cached") if not F.isnan(r.get("break_even_full_cached"))
                                       else r.get("break_even_full"))),
]


def console_table(main: pd.DataFrame, width: int = 160) -> str:
    """The compact table ``promptintern benchmark`` prints (on-task rows; the full tables are in files)."""
    from rich.console import Console
    from rich.table import Table

    ok = main[~main["cross_domain"]] if not main.empty else main
    tab = Table(show_lines=False, pad_edge=False)
    for h, _ in CONSOLE_COLUMNS:
        tab.add_column(h, overflow="fold")
    for _, r in ok.iterrows():
        tab.add_row(*(f(r) for _, f in CONSOLE_COLUMNS))
    console = Console(width=width, record=True, file=__import__("io").StringIO())
    console.print(tab)
    return console.export_text()


def summarize(store: ResultStore | str | Path, price_table: PriceTable | str | None = None,
              hardware_key: str | None = None) -> str:
    """Write tables, plots, report and submission; return the compact table, the headline findings and the paths."""
    store = store if isinstance(store, ResultStore) else ResultStore(store)
    out = build_all(store, price_table, hardware_key)
    main = out["main"]

    lines = [console_table(main), textwrap.fill(T.method_notes(main), 160), ""]
    tp = out["tables"]
    lines += [f"prices:     {out['price_table'].describe()}",
              f"tables:     {tp['markdown'].parent}/ (main.md, main.csv, main.tex, cost.*, sweep.*, stages.*, ...)",
              f"plots:      {store.root / 'plots'}/ ({', '.join(p.name for p in out['plots'].values())})",
              f"report:     {out['report']['html']}  and  {out['report']['markdown']}"]
    if "submission" in out:
        lines.append(f"submission: {out['submission']}")
    else:
        lines.append(f"submission: not written ({out.get('submission_error')})")
    return "\n".join(lines)
