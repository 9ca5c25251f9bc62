"""The serving benchmark's tables and report, read only from its records (``runs/*.json``).

One row per (condition, load level): the mean over repeats of each run's figures (request and output token
throughput, goodput; median and p99 TTFT, median TPOT, ITL and E2EL), with the number of repeats and of measured
requests per run. The headline ratio compares two conditions (``ratio``; by default PromptIntern's adapter with
the query alone against full-prompt FT's adapter with its prefix cached) at saturation, the highest concurrency
level: per repeat, both conditions ran back to back on the same requests, so each repeat gives one ratio; the
interval is Student's t over the repeats' log ratios, back-transformed (n = repeats; none with one repeat).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from . import format as F
from .env_info import describe_hardware
from .stats import mean_interval
from .store import atomic_write_json
from .tables import render_markdown

RATIO_FIGURES = (("output_throughput", "output token throughput", False), ("e2el_mean", "mean E2EL", True),
                 ("ttft_median", "median TTFT", True))


def load_runs(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))]


def _flat(r: dict) -> dict:
    s = r["summary"]
    return {"condition": r["condition"]["name"], "model": r["condition"]["model"], "prompt": r["condition"]["prompt"],
            "cache": r["condition"]["cache"], "merged": r["condition"]["merged"], "mode": r["mode"],
            "level": r["level"], "repeat": r["repeat"], "requests": s["completed"],
            "input_tokens": s["total_input_tokens"] / max(s["completed"], 1),
            "cached_share": s["cached_input_tokens"] / s["total_input_tokens"] if s["total_input_tokens"] else 0.0,
            "request_throughput": s["request_throughput"], "output_throughput": s["output_throughput"],
            "total_token_throughput": s["total_token_throughput"], "goodput": s["goodput"],
            "ttft_median": s["ttft"]["median"], "ttft_p99": s["ttft"]["p99"], "tpot_median": s["tpot"]["median"],
            "itl_median": s["itl"]["median"], "e2el_mean": s["e2el"]["mean"], "e2el_median": s["e2el"]["median"],
            "e2el_p99": s["e2el"]["p99"]}


def serving_table(runs: list[dict]) -> pd.DataFrame:
    """Mean over repeats per (condition, mode, level), in the conditions' declared order."""
    if not runs:
        return pd.DataFrame()
    df = pd.DataFrame([_flat(r) for r in runs])
    order = {c["name"]: i for i, c in enumerate(runs[0]["settings"]["conditions"])}
    keys = ["condition", "model", "prompt", "cache", "merged", "mode", "level"]
    numeric = [c for c in df.columns if c not in keys + ["repeat"]]
    out = df.groupby(keys, sort=False)[numeric].mean().reset_index()
    out["repeats"] = df.groupby(keys, sort=False)["repeat"].nunique().values
    out["_order"] = out["condition"].map(order)
    out["_mode"] = out["mode"].map({"concurrency": 0, "rate": 1})
    return out.sort_values(["_mode", "level", "_order"]).drop(columns=["_order", "_mode"]).reset_index(drop=True)


def saturation_ratio(runs: list[dict], num: str, den: str, level: float | None = None) -> dict:
    """``num`` against ``den`` at the highest concurrency (or ``level``): per figure, the ratio of the repeats'
    means with a Student-t interval over the repeats' log ratios. Throughput: num / den (above 1: ``num`` serves
    more); latencies: den / num (above 1: ``num`` answers sooner)."""
    conc = [r for r in runs if r["mode"] == "concurrency"]
    if not conc:
        return {}
    level = level if level is not None else max(r["level"] for r in conc)
    by = {(r["condition"]["name"], r["repeat"]): _flat(r) for r in conc if r["level"] == level}
    repeats = sorted({rep for (name, rep) in by if name == num} & {rep for (name, rep) in by if name == den})
    out = {"numerator": num, "denominator": den, "mode": "concurrency", "level": level, "n_repeats": len(repeats),
           "method": "Student t over the repeats' log ratios (each repeat: both conditions back to back on the same "
                     "requests), back-transformed", "figures": {}}
    for key, what, latency in RATIO_FIGURES:
        logs = [math.log(by[(den, r)][key] / by[(num, r)][key]) if latency else
                math.log(by[(num, r)][key] / by[(den, r)][key]) for r in repeats
                if by[(num, r)][key] and by[(den, r)][key]]
        iv = mean_interval(logs)
        out["figures"][key] = {"what": what, "direction": f"{den} / {num}" if latency else f"{num} / {den}",
                               "ratio": math.exp(iv["mean"]) if logs else None,
                               "lo": math.exp(iv["lo"]) if iv["n"] > 1 else None,
                               "hi": math.exp(iv["hi"]) if iv["n"] > 1 else None, "n": iv["n"]}
    return out


def ratio_line(ratio: dict) -> str:
    if not ratio:
        return "no concurrency run: no ratio"
    if not ratio["n_repeats"]:
        return (f"No run of both {ratio['numerator']} and {ratio['denominator']} at concurrency {ratio['level']:g}: "
                "no ratio.")
    parts = []
    for f in ratio["figures"].values():
        iv = f"95 % CI {f['lo']:.2f}–{f['hi']:.2f}" if f["lo"] is not None else "no interval (one repeat)"
        parts.append(f"{f['what']} ×{f['ratio']:.2f} ({f['direction']}; {iv})")
    return (f"**{ratio['numerator']} vs {ratio['denominator']}** at saturation (concurrency {ratio['level']:g}, "
            f"n = {ratio['n_repeats']} repeats): " + "; ".join(parts) + ".")


def _load(r) -> str:
    return f"concurrency {r['level']:g}" if r["mode"] == "concurrency" else f"Poisson {r['level']:g} req/s"


COLUMNS: list[F.Column] = [
    ("condition", lambda r: str(r["condition"])), ("load", _load),
    ("input tok/req", lambda r: F.integer(r["input_tokens"])), ("cached", lambda r: F.share(r["cached_share"])),
    ("req/s", lambda r: F.num(r["request_throughput"], 3)), ("output tok/s", lambda r: F.num(r["output_throughput"])),
    ("goodput req/s", lambda r: F.num(r["goodput"], 3)), ("TTFT p50", lambda r: F.seconds(r["ttft_median"])),
    ("TTFT p99", lambda r: F.seconds(r["ttft_p99"])), ("TPOT p50", lambda r: F.seconds(r["tpot_median"])),
    ("ITL p50", lambda r: F.seconds(r["itl_median"])), ("E2EL p50", lambda r: F.seconds(r["e2el_median"])),
    ("E2EL p99", lambda r: F.seconds(r["e2el_p99"])), ("repeats", lambda r: str(int(r["repeats"]))),
    ("requests/run", lambda r: F.num(r["requests"], 0)),
]


def serving_for(source: Path) -> list[Path]:
    """The serving-benchmark folders beside the results folder ``source`` that served its prompts and adapters
    (their settings' ``source`` names it) and hold records."""
    out = []
    for exp in sorted(Path(source).parent.glob("*/experiment.json")):
        try:
            data = json.loads(exp.read_text())
        except (OSError, ValueError):
            continue
        named = (data.get("serving") or {}).get("source") if isinstance(data, dict) else None
        if named and Path(named).name == Path(source).name and any((exp.parent / "runs").glob("*.json")):
            out.append(exp.parent)
    return out


def serving_section(folder: Path) -> tuple[pd.DataFrame, str]:
    """A serving folder's table and its headline ratio line, for the source's report."""
    runs = load_runs(folder)
    return serving_table(runs), ratio_line(saturation_ratio(runs, *runs[0]["settings"]["ratio"]))


def write_serving_report(folder: str | Path) -> dict:
    """``tables/serving.csv``, ``tables/serving.md``, ``tables/serving_ratio.json`` and ``report.md``."""
    folder = Path(folder)
    runs = load_runs(folder)
    if not runs:
        raise FileNotFoundError(f"{folder}/runs has no serving record")
    table = serving_table(runs)
    settings = runs[0]["settings"]
    ratio = saturation_ratio(runs, *settings["ratio"])
    (folder / "tables").mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "tables" / "serving.csv", index=False)
    md = render_markdown(table, COLUMNS)
    (folder / "tables" / "serving.md").write_text(md + "\n")
    atomic_write_json(folder / "tables" / "serving_ratio.json", ratio)
    (folder / "report.md").write_text(report_text(runs, md, ratio) + "\n")
    return {"table": folder / "tables" / "serving.md", "ratio": ratio, "report": folder / "report.md"}


def report_text(runs: list[dict], table_md: str, ratio: dict) -> str:
    first = runs[0]
    s, hw = first["settings"], first["hardware"]
    adapters = {r["condition"]["model"]: r["adapter"] for r in runs if r.get("adapter")}
    slo = ", ".join(f"{k.removesuffix('_s').upper()} ≤ {v:g} s" for k, v in s["slo"].items() if v is not None)
    lines = [
        f"# Serving benchmark: {s['name']}",
        "",
        f"vLLM {first['versions'].get('vllm', '?')} ({s['dtype']}) on "
        f"{hw.get('gpu') or hw.get('cpu')} ({hw.get('gpu_count') or hw.get('cpu_count')} "
        f"{'GPU(s)' if hw.get('gpu') else 'cores'}); model "
        f"{first['model']}; prompts and adapters from `{s['source']}` ({s['eval_task']}). "
        f"Re-run: `{first.get('command') or 'promptintern serve-bench SETTINGS'}`.",
        "",
        ratio_line(ratio),
        "",
        table_md,
        "",
        f"Definitions (vLLM's `benchmarks/serve.py`): TTFT request sent → first token; TPOT (E2EL − TTFT) / "
        f"(output tokens − 1); ITL between consecutive tokens; E2EL request sent → last token, all at the client; "
        f"throughputs over the run (first request sent → last token). Goodput: requests meeting {slo or 'no SLO'} "
        f"per second. Every request decodes exactly {s['output_tokens']} tokens (end of turn ignored); each run "
        f"measures the same {s['requests']} requests per condition after {s['warmup']} warm-up requests (not "
        "counted) on an emptied prefix cache; Poisson loads use the same seeded arrival times for every condition. "
        "Cells are means over the repeats of each run's figure; uncached conditions send each request under a fresh "
        "cache salt (no block read from the cache: the `cached` column).",
        "",
        "Adapters served: " + "; ".join(f"{m}: {a['weights']}" for m, a in adapters.items()) + "."
        if adapters else "No adapter served.",
    ]
    source = Path(first["source"])
    sweep = source / "tables" / "sweep.md"
    if sweep.is_file():
        engine = next((json.loads(p.read_text()) for p in sorted((source / "runs").glob("engine-*.json"))), {})
        where = describe_hardware(engine["hardware"]) if engine.get("hardware") else "its own machine"
        lines += ["", "## The same conditions on transformers (the source's engine measurement)", "",
                  f"Measured by the source's run on {where} (transformers, static batches, "
                  f"{((engine.get('config') or {}).get('timing') or {}).get('max_new_tokens', '?')} output tokens): "
                  "compare the conditions within each table, not figures across the two.", "",
                  sweep.read_text().strip()]
    return "\n".join(lines)
