"""Reference-based text metrics: NL2Bash (BLEU, exact match, utility accuracy) and generic exact match.

BLEU is sacrebleu's, on a 0-100 scale, with its default ``13a`` tokenizer (splits punctuation such as ``|``,
``-``, quotes and ``;`` from words, which suits shell commands) and no lower-casing. Per sample:
``sacrebleu.sentence_bleu`` (exponential smoothing, effective n-gram order, so identical strings score 100
even when shorter than four tokens); the aggregate also reports ``corpus_bleu`` over all samples.
"""

from __future__ import annotations

from ...task_types import Example
from ..loaders.nl2bash import UnparsableCommand, command_utilities
from ..registry import register_metric
from .common import mean_aggregate


def normalize_ws(s: str) -> str:
    return " ".join(s.split())


def _utilities(cmd: str) -> list[str] | None:
    try:
        return command_utilities(cmd)
    except UnparsableCommand:
        return None


def bleu_aggregate(per_sample: list[dict], **_) -> dict[str, float]:
    import sacrebleu

    out = mean_aggregate([{k: v for k, v in r.items() if k not in ("prediction", "reference")} for r in per_sample])
    if per_sample:
        hyps = [r["prediction"] for r in per_sample]
        refs = [r["reference"] for r in per_sample]
        out["corpus_bleu"] = sacrebleu.corpus_bleu(hyps, [refs]).score
    return out


@register_metric("nl2bash", aggregate=bleu_aggregate, version=2)
def nl2bash_metrics(answers: list[str], examples: list[Example], **_) -> list[dict]:
    """bleu (sentence BLEU 0-100), exact_match (whitespace-normalised), utility_first / utility_all
    (the first utility / the whole sequence of utilities equal to the reference's)."""
    import sacrebleu

    out = []
    for cmd, ex in zip(answers, examples, strict=True):
        ref = ex.reference
        pu, ru = _utilities(cmd), _utilities(ref) or []
        out.append(
            {
                "id": ex.id,
                "bleu": sacrebleu.sentence_bleu(cmd, [ref]).score,
                "exact_match": float(normalize_ws(cmd) == normalize_ws(ref)),
                "utility_first": float(bool(pu) and bool(ru) and pu[0] == ru[0]),
                "utility_all": float(pu is not None and pu == ru),
                "prediction": cmd,
                "reference": ref,
            }
        )
    return out


@register_metric("exact_match")
def exact_match(predictions: list[str], examples: list[Example], strip: bool = True, **_) -> list[dict]:
    """Whitespace-normalised exact match of the raw generation against the reference."""
    return [
        {"id": ex.id, "exact_match": float(normalize_ws(p) == normalize_ws(ex.reference))}
        for p, ex in zip(predictions, examples, strict=True)
    ]
