"""Shared helpers for metrics: the default aggregate and grouped means (extraction is in tasks/extract.py)."""

from __future__ import annotations

import math


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
