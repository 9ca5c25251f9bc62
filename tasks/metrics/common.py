"""Shared helpers for metrics: answer extraction from generations and the default aggregate."""

from __future__ import annotations

import math
import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block; an unclosed final fence runs to the end of the text."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def extract_python(text: str, must_define: str | None = None) -> str:
    """The Python code in a generation: the first fenced block that defines ``must_define`` (or any python
    block, or any block), else the text itself with leading prose lines and a trailing fence removed."""
    blocks = code_blocks(text)
    if blocks:
        if must_define:
            for _, body in blocks:
                if re.search(rf"\bdef\s+{re.escape(must_define)}\s*\(", body):
                    return body
        for lang, body in blocks:
            if lang in ("python", "py", "python3"):
                return body
        return blocks[0][1]
    return text.replace("```", "")


def mean_aggregate(per_sample: list[dict], **_) -> dict[str, float]:
    """Mean of every numeric (or boolean) field over the samples that have it, plus ``n``."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for rec in per_sample:
        for key, val in rec.items():
            if isinstance(val, bool):
                val = float(val)
            if isinstance(val, int | float) and not (isinstance(val, float) and math.isnan(val)):
                sums[key] = sums.get(key, 0.0) + float(val)
                counts[key] = counts.get(key, 0) + 1
    out = {k: sums[k] / counts[k] for k in sums}
    out["n"] = float(len(per_sample))
    return out


def grouped_mean(per_sample: list[dict], key: str, by: str) -> dict[str, float]:
    """``{key}/{by}={value}`` means, e.g. exact_match/level=2."""
    groups: dict[str, list[float]] = {}
    for rec in per_sample:
        if by in rec and key in rec:
            groups.setdefault(str(rec[by]), []).append(float(rec[key]))
    return {f"{key}/{by}={g}": sum(v) / len(v) for g, v in sorted(groups.items())}
