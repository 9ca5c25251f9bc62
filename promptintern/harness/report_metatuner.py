"""The report's MetaTuner section: per-evaluation diagnostics of the generated prompts and D2, and each MetaTuner
row against full-prompt FT and PromptIntern on the same test items."""

from __future__ import annotations

import pandas as pd

from . import format as F
from .aggregate import display_score
from .store import ResultStore

METATUNER_NOTE = ("One row per MetaTuner evaluation. Prompts: the test queries' generated prompts p_i (the seed "
                  "prompt itself without the prompt branch): distinct ones of n, the share of queries that got the "
                  "most common one, the share that is degenerate (a repeated line, code, or under 4 words; "
                  "promptintern/metatuner/diagnostics.py states the rule) and their mean length in words. ΔW spread: "
                  "mean over queries of ||ΔW_i − mean ΔW||_F / ||mean ΔW||_F, averaged over the LoRA target layers "
                  "(0: every query gets the same LoRA; '-' without the parameter branch or in files written before "
                  "the diagnostics, which have only the prompts and the training summary). D2 sizes: the size of D2 "
                  "at each rebuild (* marks a rebuild that fell back to the best rollouts). Steps: optimizer steps "
                  "with a task loss / with a regularization loss.")


VERSUS_NOTE = ("Each MetaTuner row against full-prompt FT and against PromptIntern on the same test items: paired "
               "differences in points with 95 % bootstrap intervals ('ns': the interval includes 0, no difference "
               "shown). Cost per query counts the generator: its input (rewrite instruction + seed prompt + query) "
               "and the prompt it writes are tokens and seconds of every call.")


def versus_columns() -> list[F.Column]:
    def cost(side):
        return lambda r: (f"{F.num(r[f'{side}_input_tokens'], 0)} tok, {F.seconds(r[f'{side}_answered_e2el_s'])}, "
                          f"{F.usd(r[f'{side}_self_hosted_usd_per_1k'])} / {F.usd(r[f'{side}_api_usd_per_1k'])}")

    return [("eval task", lambda r: str(r["eval_task"])), ("MetaTuner", lambda r: str(r["label"])),
            ("score", lambda r: F.num(display_score(r["metric"], r["score"]))),
            ("Δ vs full-prompt FT [95% CI]", F.delta("delta_full")),
            ("PromptIntern", lambda r: str(r["other"])), ("its score", lambda r: F.num(display_score(r["metric"], r["other_score"]))),
            ("Δ vs PromptIntern [95% CI]", F.delta("delta")),
            ("MetaTuner per query: input tokens, as answered E2EL, self-hosted / API $/1k", cost("row")),
            ("PromptIntern per query", cost("other"))]


def metatuner_diagnostics_frame(store: ResultStore) -> pd.DataFrame:
    """One row per MetaTuner eval record: its ``diagnostics``, or for records without them what the samples'
    generated prompts and the training summary give."""
    from promptintern.metatuner.diagnostics import prompt_diagnostics, training_diagnostics

    rows = []
    for rec in store.records(kind="eval"):
        c = rec["config"]
        if not rec.get("metatuner") and c["method"]["name"] != "metatuner":
            continue
        diag = rec.get("diagnostics") or {}
        prompts = diag.get("prompts") or prompt_diagnostics(
            [s.get("generated_prompt") or "" for s in rec.get("samples") or []])
        training = diag.get("training") or training_diagnostics((rec.get("metatuner") or {}).get("train"))
        rolls = ((rec.get("metatuner") or {}).get("train") or {}).get("rollouts") or []
        fallback = [bool(r.get("d2_fallback")) for r in rolls]
        rows.append({
            "model": c["model"], "train_task": c.get("train_task") or "-", "eval_task": c["eval_task"],
            "method": c["method"]["name"], "label": c["method"]["label"], "seed": c.get("seed", 0),
            "n": prompts.get("n") or 0, "distinct": prompts.get("distinct") or 0,
            "most_common_share": prompts.get("most_common_share"),
            "degenerate_fraction": prompts.get("degenerate_fraction"),
            "degenerate_counts": prompts.get("degenerate_counts") or {},
            "mean_words": (prompts.get("words") or {}).get("mean"),
            "delta_w_spread": (diag.get("delta_w") or {}).get("spread"),
            "d2_sizes": list(training.get("d2_sizes") or []),
            "d2_fallback": fallback + [False] * (len(training.get("d2_sizes") or []) - len(fallback)),
            "task_loss_steps": (training.get("task_loss") or {}).get("steps") or 0,
            "reg_loss_steps": (training.get("reg_loss") or {}).get("steps") or 0,
            "steps": training.get("steps") or 0,
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["model", "eval_task", "train_task", "label", "seed"], kind="stable").reset_index(drop=True)


_share = F.share


def _degenerate(r) -> str:
    if F.isnan(r["degenerate_fraction"]):
        return "-"
    parts = [f"{v} {k}" for k, v in r["degenerate_counts"].items() if v]
    return _share(r["degenerate_fraction"]) + (f" ({', '.join(parts)})" if parts else "")


def _d2_sizes(r) -> str:
    sizes = r["d2_sizes"]
    if not sizes:
        return "-"
    return ", ".join(("-" if s is None else str(s)) + ("*" if fb else "")
                     for s, fb in zip(sizes, r["d2_fallback"], strict=False))


def metatuner_diagnostics_columns() -> list[F.Column]:
    return [("model", lambda r: str(r["model"])), ("train task", lambda r: str(r["train_task"])),
            ("eval task", lambda r: str(r["eval_task"])), ("method", lambda r: str(r["label"])),
            ("seed", lambda r: str(r["seed"])),
            ("distinct prompts / n", lambda r: f"{int(r['distinct'])} / {int(r['n'])}"),
            ("most common", lambda r: _share(r["most_common_share"])),
            ("degenerate", _degenerate),
            ("mean words", lambda r: F.num(r["mean_words"])),
            ("ΔW spread", lambda r: F.DASH if F.isnan(r["delta_w_spread"]) else f"{r['delta_w_spread']:.3g}"),
            ("D2 sizes", _d2_sizes),
            ("steps: task / reg loss", lambda r: f"{int(r['task_loss_steps'])} / {int(r['reg_loss_steps'])}")]
