"""The leaderboard: validate every submission in a folder (:mod:`promptintern.harness.submission`) and render the ranked page.

``build_leaderboard`` ranks the valid entries by primary metric within each eval task (ties: fewer input tokens
first) and writes ``leaderboard.html`` (self-contained) and ``leaderboard.md``; each row shows the entry's score
with its interval, tokens, its request throughput at saturation against full-prompt FT's (the engine view) and
its cost per 1k queries with the named price table.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from pathlib import Path

from . import format as F
from .aggregate import display_score
from .cost import load_price_table
from .env_info import describe_hardware
from .submission import load_submission, validate_submission

# -- leaderboard -------------------------------------------------------------------------------------------------

def leaderboard_rows(subs: list[tuple[str, dict]]) -> list[dict]:
    """One row per (entry, eval task) of the valid submissions, ranked by primary metric within each task."""
    rows = []
    for fname, sub in subs:
        table = load_price_table(sub["price_table"]["id"])
        headline = table.headline_model
        for e in sub["entries"]:
            for task, res in e["results"].items():
                eff = e["efficiency"][task]
                cost = eff["cost_per_1k_queries"]
                rows.append({
                    "task": task, "metric": res["metric"], "score": res["score"], "score_se": res["score_se"],
                    "n": res["n"], "system": e["config"]["model"], "base_model": e["config"]["base_model"],
                    "method": e["method"]["label"], "train_task": e["method"].get("train_task") or "-",
                    "seed": e["meta"]["seed"], "precision": e["config"].get("precision"),
                    "input_tokens": eff.get("input_tokens"),
                    "token_reduction": eff.get("token_reduction_full_pct"),
                    "throughput": eff.get("throughput_full"), "throughput_method": eff.get("throughput_full_method"),
                    "throughput_lo": eff.get("throughput_full_lo"), "throughput_hi": eff.get("throughput_full_hi"),
                    "answered_e2el_s": eff.get("answered_e2el_s"),
                    "self_hosted_usd": eff.get("self_hosted_usd_per_1k"), "cost_basis": eff.get("cost_basis"),
                    "api_model": headline, "api_usd": (cost.get(headline) or {}).get("usd"),
                    "price_table": eff["price_table"], "hardware": _hw(e["meta"]["hardware"]), "file": fname,
                })
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    out = []
    for task in sorted(by_task):
        rs = sorted(by_task[task], key=lambda r: (-(r["score"] if r["score"] is not None else -math.inf),
                                                  r["input_tokens"] if r["input_tokens"] is not None else math.inf,
                                                  r["system"]))
        rank, prev = 0, None
        for i, r in enumerate(rs):
            if r["score"] != prev:
                rank, prev = i + 1, r["score"]
            r["rank"] = rank
        out += rs
    return out


def _hw(hw: dict) -> str:
    return describe_hardware(hw or {})


LB_COLUMNS = [
    ("rank", lambda r: str(r["rank"])),
    ("system", lambda r: r["system"]),
    ("method", lambda r: r["method"]),
    ("train task", lambda r: r["train_task"]),
    ("score ± se", lambda r: F.DASH if r["score"] is None else f"{display_score(r['metric'], r['score']):.1f}"
     + ("" if r["score_se"] is None else f" ± {display_score(r['metric'], r['score_se']):.1f}")),
    ("n", lambda r: str(r["n"])),
    ("input tokens", lambda r: F.num(r["input_tokens"])),
    ("token reduction", lambda r: F.pct(r["token_reduction"])),
    ("sat. throughput vs full-prompt FT", F.ratio("throughput")),
    ("as answered: E2EL", lambda r: F.seconds(r["answered_e2el_s"])),
    ("self-hosted $/1k", lambda r: F.usd(r["self_hosted_usd"])),
    ("API $/1k", lambda r: F.usd(r["api_usd"]) + (f" ({r['api_model']})" if r["api_usd"] is not None else "")),
    ("price table", lambda r: r["price_table"]),
    ("hardware", lambda r: r["hardware"]),
    ("submission", lambda r: r["file"]),
]

LB_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1a1a1a;background:#fff}
h1{font-size:24px;margin-bottom:4px} h2{font-size:19px;margin-top:28px;border-bottom:2px solid #2c6fbb;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px;display:block;overflow-x:auto}
th,td{border:1px solid #c8d0da;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#2c6fbb;color:#fff} tr:nth-child(even) td{background:#eef3f9} td.rank1{background:#ffe08a !important;font-weight:bold}
.note{color:#555;font-size:13px} .bad{color:#a40000}
"""


def build_leaderboard(directory: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Validate every *.json submission in a folder and render the ranked leaderboard (HTML and markdown)."""
    d = Path(directory)
    out_dir = Path(out) if out else d
    out_dir.mkdir(parents=True, exist_ok=True)
    valid, rejected = [], []
    for p in sorted(d.glob("*.json")):
        sub, errs = load_submission(p)
        errs = errs or validate_submission(sub)
        (rejected.append((p.name, errs)) if errs else valid.append((p.name, sub)))
    rows = leaderboard_rows(valid)
    tasks = sorted({r["task"] for r in rows})
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    intro = (f"{len(valid)} valid submission(s), {len(rejected)} rejected; built {now}. Ranked by each task's primary "
             "metric (ties: fewer input tokens first). Token reduction and throughput are vs full-prompt fine-tuning "
             "of the same base model in the same submission (the engine measurement: the same requests, the same "
             "tokens decoded); cost is per 1k queries with the named price table.")
    md = ["# PromptIntern leaderboard", "", intro, ""]
    h = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>PromptIntern leaderboard</title>",
         f"<style>{LB_CSS}</style></head><body>", "<h1>PromptIntern leaderboard</h1>",
         f"<p class='note'>{html.escape(intro)}</p>"]
    if not tasks:
        md.append("_No valid submissions._")
        h.append("<p><em>No valid submissions.</em></p>")
    for task in tasks:
        rs = [r for r in rows if r["task"] == task]
        metric = rs[0]["metric"]
        md += [f"## {task} ({metric})", "", "| " + " | ".join(c for c, _ in LB_COLUMNS) + " |",
               "|" + "|".join("---" for _ in LB_COLUMNS) + "|"]
        md += ["| " + " | ".join(f(r).replace("|", "\\|") for _, f in LB_COLUMNS) + " |" for r in rs]
        md.append("")
        h.append(f"<h2>{html.escape(task)} <span class='note'>({html.escape(metric)})</span></h2><table><tr>"
                 + "".join(f"<th>{html.escape(c)}</th>" for c, _ in LB_COLUMNS) + "</tr>")
        for r in rs:
            cls = " class='rank1'" if r["rank"] == 1 else ""
            h.append("<tr>" + "".join(f"<td{cls if c == 'rank' else ''}>{html.escape(f(r))}</td>"
                                      for c, f in LB_COLUMNS) + "</tr>")
        h.append("</table>")
    if rejected:
        md += ["## Rejected submissions", ""]
        h.append("<h2>Rejected submissions</h2><ul>")
        for name, errs in rejected:
            md.append(f"- `{name}`: " + "; ".join(errs[:5]) + (f" (+{len(errs) - 5} more)" if len(errs) > 5 else ""))
            h.append(f"<li class='bad'><code>{html.escape(name)}</code>: "
                     + html.escape("; ".join(errs[:5])) + "</li>")
        h.append("</ul>")
    h.append("</body></html>")
    paths = {"html": out_dir / "leaderboard.html", "markdown": out_dir / "leaderboard.md"}
    paths["html"].write_text("\n".join(h) + "\n")
    paths["markdown"].write_text("\n".join(md) + "\n")
    return paths
