"""MetaTuner diagnostics: are the generated prompts varied and readable, do the per-query LoRAs differ, what did
D2 and the two losses do during training. Pure functions over plain values (strings, dicts, tensors), used by
``harness/metatuner_unit.py`` (the record's ``diagnostics``) and ``harness/report.py`` (recomputed from the
samples and the training summary of records written before ``diagnostics`` existed).

Degenerate prompts (:func:`degenerate_reason`), checked in this order, the first that applies is the reason:

- ``"repeated line"``: a non-empty line (after stripping) occurs twice or more;
- ``"code"``: the prompt looks like code rather than an instruction. Strong signs, any one is enough: a code
  fence (three backticks) opening a line (a mention inside a sentence is prose); a line (stripped) that is a Python statement: ``def name(``, ``class Name:`` /
  ``class Name(``, ``import a.b[, c] [as d]`` (the whole line), ``from a.b import ``, ``return`` alone, with one
  name, or with an operator or bracket (so the prose "return the sum of the list" is not code); ``#include``; a
  ``for X in Y:`` line; a line ending with ``;``. Case matters ("Return the sum." is prose). Weak signs,
  counted per non-empty line: an assignment at the start of the line (``name = ...``, ``a.b[i] += ...``, not
  ``==``), a line ending with ``{`` or being ``}``, a line ending with ``):``, ``]:``, ``else:`` or ``try:``,
  a bare call line (``name(...)``). The prompt is code when at least 2 lines and more than 30 % of its
  non-empty lines show a weak sign. Lines ending with a plain ``:`` ("Answer:", "Steps:") are prose, not code;
- ``"under 4 words"``: fewer than 4 whitespace-separated words (the empty prompt included).
"""

from __future__ import annotations

import math
import re
from collections import Counter

REASONS = ("repeated line", "code", "under 4 words")

_STRONG_START = re.compile(
    r"^(?:def\s+\w+\s*\(|class\s+\w+\s*[:(]|#include\b"
    r"|import\s+[\w.]+(?:\s*,\s*[\w.]+)*(?:\s+as\s+\w+)?$|from\s+[\w.]+\s+import\s"
    r"|return$|return\s+[\w.]+$|return\s.*[-+*/%=<>()\[\]{}])"
)
_FOR_IN = re.compile(r"^for\s+\S.*\s+in\s+.+:$")
_ASSIGN = re.compile(r"^[A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*[-+*/%]?=(?!=)")
_CALL = re.compile(r"^[A-Za-z_][\w.]*\(.*\)$")
_BLOCK_END = re.compile(r"(?:\)|\]|\belse|\btry):$")


def _weak_code_line(line: str) -> bool:
    return bool(_ASSIGN.match(line) or _CALL.match(line) or _BLOCK_END.search(line)
                or line.endswith("{") or line == "}")


def looks_like_code(prompt: str) -> bool:
    """The ``"code"`` rule of :func:`degenerate_reason` (see the module docstring)."""
    lines = [ln.strip() for ln in prompt.splitlines() if ln.strip()]
    if any(ln.startswith("```") for ln in lines):  # a fence that opens a line (a mention in a sentence is prose)
        return True
    if any(_STRONG_START.match(ln) or _FOR_IN.match(ln) or ln.endswith(";") for ln in lines):
        return True
    weak = sum(_weak_code_line(ln) for ln in lines)
    return weak >= 2 and weak > 0.3 * len(lines)


def degenerate_reason(prompt: str) -> str | None:
    """Why a generated prompt is degenerate ("repeated line", "code", "under 4 words"), or None if it is not."""
    prompt = prompt or ""
    lines = [ln.strip() for ln in prompt.splitlines() if ln.strip()]
    if any(c >= 2 for c in Counter(lines).values()):
        return "repeated line"
    if looks_like_code(prompt):
        return "code"
    if len(prompt.split()) < 4:
        return "under 4 words"
    return None


def _count_tokens(tokenizer, text: str) -> int:
    if hasattr(tokenizer, "count"):  # promptintern.tokens counters
        return int(tokenizer.count(text))
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _stats(xs: list[float]) -> dict:
    if not xs:
        return {"mean": None, "min": None, "max": None}
    return {"mean": sum(xs) / len(xs), "min": min(xs), "max": max(xs)}


def prompt_diagnostics(prompts: list[str], tokenizer=None) -> dict:
    """How varied and how well-formed a set of generated prompts is (one prompt per query).

    ``distinct``: distinct prompts (compared after stripping); ``most_common_share``: the share of queries that got
    the most common prompt; ``degenerate``: prompts with a :func:`degenerate_reason`, per reason in
    ``degenerate_counts``; ``words`` (and ``tokens`` when a tokenizer, HF-style or a counter with ``count``, is
    given): mean / min / max length. Fractions are None for an empty list."""
    prompts = [p or "" for p in prompts]
    n = len(prompts)
    counts = Counter(p.strip() for p in prompts)
    top = counts.most_common(1)
    reasons = [degenerate_reason(p) for p in prompts]
    per_reason = {r: reasons.count(r) for r in REASONS}
    degenerate = sum(per_reason.values())
    out = {
        "n": n,
        "distinct": len(counts),
        "distinct_fraction": len(counts) / n if n else None,
        "most_common_share": top[0][1] / n if n else None,
        "most_common": top[0][0][:200] if top else None,
        "degenerate": degenerate,
        "degenerate_fraction": degenerate / n if n else None,
        "degenerate_counts": per_reason,
        "words": _stats([float(len(p.split())) for p in prompts]),
    }
    if tokenizer is not None:
        out["tokens"] = _stats([float(_count_tokens(tokenizer, p)) for p in prompts])
    return out


def delta_w_spread(factors: dict, scale: float = 1.0, eps: float = 1e-12, chunk: int = 16) -> dict:
    """How much the per-query LoRAs differ, from the factors :meth:`MetaTuner.factors` returns:
    ``{layer name: (A (n, r, in), B (n, out, r))}``, ΔW_i = scale · B_i A_i.

    Per layer: ``spread`` = mean_i ||ΔW_i − mean_j ΔW_j||_F / (||mean_j ΔW_j||_F + eps) (0: every query gets the
    same LoRA), ``abs_spread`` (the numerator), ``mean_norm`` = mean_i ||ΔW_i||_F and ``norm_of_mean``.
    ``spread``, ``abs_spread`` and ``mean_norm`` at the top level are the means over layers.

    Exact, without forming any ΔW (so a 7B model's 4096 x 4096 layers cost what its rank-r factors cost): every
    norm comes from the Gram matrix of Frobenius inner products <ΔW_i, ΔW_j> = scale² · Σ (B_iᵀB_j) ⊙ (A_i A_jᵀ),
    with ||ΔW_i − mean||² = g_ii − 2/n Σ_j g_ij + 1/n² Σ_jk g_jk. Computed in float32, ``chunk`` rows of the Gram
    matrix at a time (memory chunk · n · r²)."""
    import torch

    layers: dict[str, dict] = {}
    n = 0
    with torch.no_grad():
        for name, (A, B) in factors.items():
            A, B = A.detach().float(), B.detach().float()
            if A.dim() == 2:
                A, B = A.unsqueeze(0), B.unsqueeze(0)
            n = A.shape[0]
            if n == 0:
                continue
            rows = []
            for s in range(0, n, chunk):
                bb = torch.einsum("iok,jol->ijkl", B[s : s + chunk], B)  # B_iᵀ B_j  (c, n, r, r)
                aa = torch.einsum("ikx,jlx->ijkl", A[s : s + chunk], A)  # A_i A_jᵀ  (c, n, r, r)
                rows.append((bb * aa).sum((-1, -2)))
            gram = float(scale) ** 2 * torch.cat(rows).double()  # (n, n)
            diag, total = gram.diagonal(), gram.sum()
            dist2 = (diag - 2.0 * gram.sum(1) / n + total / n**2).clamp(min=0.0)
            nm = float(total.clamp(min=0.0).sqrt()) / n
            abs_spread = float(dist2.sqrt().mean())
            layers[name] = {"spread": abs_spread / (nm + eps), "abs_spread": abs_spread,
                            "mean_norm": float(diag.clamp(min=0.0).sqrt().mean()), "norm_of_mean": nm}

    def avg(key: str) -> float | None:
        vals = [v[key] for v in layers.values() if v[key] is not None and math.isfinite(v[key])]
        return sum(vals) / len(vals) if vals else None

    return {"n": n, "scale": float(scale), "layers": len(layers), "spread": avg("spread"),
            "abs_spread": avg("abs_spread"), "mean_norm": avg("mean_norm"), "per_layer": layers}


def _loss_summary(steps: list[dict], key: str) -> dict:
    vals = [float(s[key]) for s in steps if s.get(key) is not None]
    return {"steps": len(vals), "first": vals[0] if vals else None, "last": vals[-1] if vals else None,
            "mean": sum(vals) / len(vals) if vals else None}


def training_diagnostics(train: dict | None) -> dict:
    """D2 and the loss terms from a MetaTuner training summary (``History.to_dict()`` plus extras, as the record's
    ``metatuner.train``). Keys that older records lack (``d2_mean_reward``, ``d2_fallback``) read as None / False."""
    train = train or {}
    rolls = list(train.get("rollouts") or [])
    steps = list(train.get("steps") or [])
    return {
        "rebuilds": len(rolls),
        "d2_sizes": [r.get("d2_size") for r in rolls],
        "d2_mean_rewards": [r.get("d2_mean_reward") for r in rolls],
        "d2_empty": sum(1 for r in rolls if not r.get("d2_size")),
        "d2_fallbacks": sum(1 for r in rolls if r.get("d2_fallback")),
        "rollout_mean_scores": [r.get("mean_score") for r in rolls],
        "rollout_steps": [r.get("step") for r in rolls],
        "steps": len(steps),
        "task_loss": _loss_summary(steps, "task_loss"),
        "reg_loss": _loss_summary(steps, "reg_loss"),
        "syncs": len(train.get("syncs") or []),
    }
