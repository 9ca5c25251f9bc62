"""Intervals for the comparisons the tables make: paired differences of scores, ratios of latencies, means of
repeated timings, and the number of test items a difference needs.

- :func:`paired_difference`: mean of ``a_i - b_i`` over the items both have, with a seeded percentile bootstrap
  over items (the pairing is kept: an item is drawn with both of its scores).
- :func:`paired_ratio`: ``mean(b) / mean(a)`` over the common items (a speedup when ``a`` is the method's
  latency and ``b`` the baseline's), bootstrap over items.
- :func:`mean_interval`: mean of repeated measurements with a Student-t 95 % interval.
- :func:`items_for_difference`: test items a paired comparison needs to detect ``delta`` with 80 % power at
  α = 0.05 (two-sided normal approximation: n = ((z₀.₉₇₅ + z₀.₈)·sd / delta)²).

Every bootstrap uses ``numpy.random.default_rng(seed)`` with a fixed default seed, so a table is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 20241
LEVEL = 0.95
Z_ALPHA = 1.959963984540054  # z_{0.975}
Z_POWER = 0.8416212335729143  # z_{0.8}

NAN = float("nan")


def _common(a: Mapping, b: Mapping) -> list:
    return [k for k in a if k in b and a[k] is not None and b[k] is not None
            and not (isinstance(a[k], float) and math.isnan(a[k])) and not (isinstance(b[k], float) and math.isnan(b[k]))]


def _percentiles(values, level: float = LEVEL) -> tuple[float, float]:
    import numpy as np

    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return float(np.quantile(values, lo)), float(np.quantile(values, hi))


def paired_difference(a: Mapping, b: Mapping, *, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """``a`` and ``b``: item id -> score. Returns mean, lo, hi (95 % bootstrap), n (common items), sd (of the
    differences), includes_zero."""
    import numpy as np

    ids = _common(a, b)
    if not ids:
        return {"mean": NAN, "lo": NAN, "hi": NAN, "n": 0, "sd": NAN, "includes_zero": None}
    d = np.array([float(a[k]) - float(b[k]) for k in ids])
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if len(d) > 1 else NAN
    if len(d) < 2:
        return {"mean": mean, "lo": NAN, "hi": NAN, "n": len(d), "sd": sd, "includes_zero": None}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = _percentiles(boots)
    return {"mean": mean, "lo": lo, "hi": hi, "n": len(d), "sd": sd, "includes_zero": bool(lo <= 0.0 <= hi)}


def paired_ratio(a: Mapping, b: Mapping, *, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """``mean(b) / mean(a)`` over the common ids (``a``, ``b``: id -> positive value), with a 95 % bootstrap
    interval over ids; ``half_width_pct``: half the interval's width as a percentage of the ratio."""
    import numpy as np

    ids = _common(a, b)
    if not ids:
        return {"ratio": NAN, "lo": NAN, "hi": NAN, "n": 0, "half_width_pct": NAN}
    x = np.array([float(a[k]) for k in ids])
    y = np.array([float(b[k]) for k in ids])
    ratio = float(y.mean() / x.mean()) if x.mean() > 0 else NAN
    if len(ids) < 2 or math.isnan(ratio):
        return {"ratio": ratio, "lo": NAN, "hi": NAN, "n": len(ids), "half_width_pct": NAN}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    boots = y[idx].mean(axis=1) / x[idx].mean(axis=1)
    lo, hi = _percentiles(boots)
    return {"ratio": ratio, "lo": lo, "hi": hi, "n": len(ids), "half_width_pct": 100.0 * (hi - lo) / 2 / ratio}


def mean_interval(values: Sequence[float], level: float = LEVEL) -> dict:
    """Mean and Student-t interval of repeated measurements (NaN bounds with fewer than two)."""
    from scipy import stats

    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return {"mean": NAN, "lo": NAN, "hi": NAN, "n": 0}
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return {"mean": m, "lo": NAN, "hi": NAN, "n": 1}
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    h = float(stats.t.ppf(1 - (1 - level) / 2, len(xs) - 1)) * sd / math.sqrt(len(xs))
    return {"mean": m, "lo": m - h, "hi": m + h, "n": len(xs)}


def items_for_difference(sd: float, delta: float) -> float:
    """Test items a paired comparison needs to detect a true difference ``delta`` (80 % power, α = 0.05)."""
    if sd is None or math.isnan(sd) or not delta or sd == 0:
        return NAN  # not estimable: no difference varied between items
    return float(math.ceil(((Z_ALPHA + Z_POWER) * sd / delta) ** 2))
