"""Intervals for the comparisons the tables make, each with the method that produced it and its n.

Scores (:func:`score_interval`, :func:`paired_difference`):

- a **proportion** (every item scored 0 or 1: pass@1, accuracy, exact match) gets the Wilson score interval, and a
  paired difference of two proportions Newcombe's hybrid score interval for paired data (Newcombe 1998, method
  10), with the exact McNemar test's p-value. Neither collapses when every item agrees: 0/6 against 0/6 is
  +0.0 [−39.0, +39.0] points, not [0, 0].
- a **continuous** score (BLEU, chrF, ROUGE) gets a Student-t interval on the mean, and a paired difference the
  seeded percentile bootstrap over items (the pairing kept: an item is drawn with both of its scores). When every
  pair is equal the bootstrap has nothing to resample; the result says so (``all_equal``) instead of passing
  [0, 0] off as a precise null.

Timings (:func:`ratio_interval`): a ratio of mean times over *clusters* (timed queries, or timed batches) that
each
hold one or more *repeats*. With at least :data:`MIN_CLUSTERS_FOR_CI` clusters the interval is a two-level
percentile bootstrap (clusters drawn with replacement, then each drawn cluster's repeats), so the spread between
repeats of one query is part of it; with fewer the result is the **range** of the per-cluster ratios, labelled
``range``, never called a 95 % CI.

:func:`items_for_difference` / :func:`minimum_detectable_difference`: the power line's arithmetic (80 % power,
α = 0.05, two-sided normal approximation: n = ((z₀.₉₇₅ + z₀.₈)·sd / delta)²).

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
MIN_CLUSTERS_FOR_CI = 10  # below this, a timing interval is the range of the per-cluster ratios

NAN = float("nan")

# the words every table states under it
METHOD_TEXT = {
    "wilson": "Wilson score interval",
    "t": "Student-t interval on the mean",
    "newcombe": "Newcombe's paired score interval (method 10); exact McNemar test",
    "bootstrap": "paired percentile bootstrap over items",
    "all_equal": "every pair equal: no interval",
    "constant": "every item scored the same: no interval",
    "cluster_bootstrap": ("two-level bootstrap over timed queries (or batches) and their repeats, timed interleaved "
                          "with the other conditions (between runs: docs/methodology.md)"),
    "range": "range of the per-query (or per-batch) ratios (fewer than 10: no CI)",
    "single": "one timed query: no interval",
}


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _common(a: Mapping, b: Mapping) -> list:
    return [k for k in a if k in b and not _nan(a[k]) and not _nan(b[k])]


def _percentiles(values, level: float = LEVEL) -> tuple[float, float]:
    import numpy as np

    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return float(np.quantile(values, lo)), float(np.quantile(values, hi))


def is_binary(values) -> bool:
    """Whether every value is 0 or 1 (a proportion's items); False for no values."""
    xs = [float(v) for v in values if not _nan(v)]
    return bool(xs) and all(x in (0.0, 1.0) for x in xs)


# -- proportions -------------------------------------------------------------------------------------------------

def wilson(k: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials (fractions); (NaN, NaN) for n = 0."""
    if not n:
        return NAN, NAN
    from scipy import stats

    z = float(stats.norm.ppf(1 - (1 - level) / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def score_interval(values: Sequence[float], scale: float = 1.0, level: float = LEVEL,
                   bounds: tuple[float, float] = (0.0, 100.0)) -> dict:
    """Mean of per-item scores with its interval on the display scale (values x ``scale``, e.g. 100 for percent):
    Wilson when every item is 0 or 1, else Student-t clipped to ``bounds`` (the metric's range); no interval when
    every item has the same continuous score (``constant``). Keys: mean, lo, hi, n, method."""
    xs = [float(v) for v in values if not _nan(v)]
    n = len(xs)
    if not n:
        return {"mean": NAN, "lo": NAN, "hi": NAN, "n": 0, "method": None}
    mean = sum(xs) / n
    if is_binary(xs):
        lo, hi = wilson(sum(xs), n, level)
        return {"mean": mean * scale, "lo": lo * scale, "hi": hi * scale, "n": n, "method": "wilson"}
    if len(set(xs)) == 1:
        return {"mean": mean * scale, "lo": NAN, "hi": NAN, "n": n, "method": "constant" if n > 1 else None}
    m = mean_interval(xs, level)
    return {"mean": mean * scale, "lo": max(bounds[0], m["lo"] * scale), "hi": min(bounds[1], m["hi"] * scale),
            "n": n, "method": "t"}


def paired_binary_difference(a: Mapping, b: Mapping, level: float = LEVEL) -> dict:
    """Difference of two paired proportions (``a``, ``b``: item id -> 0/1 score), as fractions: Newcombe's method
    10 interval and the exact McNemar p-value. Keys as :func:`paired_difference`, plus the discordant counts."""
    from scipy import stats

    ids = _common(a, b)
    n = len(ids)
    if not n:
        return {"mean": NAN, "lo": NAN, "hi": NAN, "n": 0, "sd": NAN, "includes_zero": None, "method": None}
    both = sum(1 for k in ids if a[k] and b[k])
    only_a = sum(1 for k in ids if a[k] and not b[k])
    only_b = sum(1 for k in ids if b[k] and not a[k])
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson(both + only_a, n, level)
    l2, u2 = wilson(both + only_b, n, level)
    # φ, the correlation of the pair, as Newcombe defines it for method 10: ad − bc shrunk by n/2 when positive
    # (0 when that crosses 0), as it is when negative; 0 when a margin is empty
    den = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    cross = both * neither - only_a * only_b
    cross = max(0.0, cross - n / 2) if cross > 0 else cross
    phi = cross / math.sqrt(den) if den > 0 else 0.0
    diff = p1 - p2
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    discordant = only_a + only_b
    p_value = float(stats.binomtest(only_a, discordant, 0.5).pvalue) if discordant else 1.0
    d = [float(a[k]) - float(b[k]) for k in ids]
    sd = float(stats.tstd(d)) if n > 1 and len(set(d)) > 1 else 0.0 if n > 1 else NAN
    lo, hi = max(-1.0, diff - delta), min(1.0, diff + eps)
    return {"mean": diff, "lo": lo, "hi": hi, "n": n, "sd": sd, "includes_zero": bool(lo <= 0.0 <= hi),
            "method": "newcombe", "p_value": p_value, "discordant": [only_a, only_b]}


def paired_difference(a: Mapping, b: Mapping, *, binary: bool | None = None, scale: float = 1.0,
                      n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """Mean of ``a_i - b_i`` over the items both have (``a``, ``b``: item id -> score on the items' own scale) with
    its 95 % interval, multiplied by ``scale`` for display. ``binary`` (None: decided from the values): Newcombe for
    two proportions, else the paired bootstrap. Keys: mean, lo, hi, n, sd, includes_zero, method (and p_value for
    proportions; ``all_equal`` when every pair is equal, with no interval)."""
    import numpy as np

    ids = _common(a, b)
    empty = {"mean": NAN, "lo": NAN, "hi": NAN, "n": len(ids), "sd": NAN, "includes_zero": None, "method": None}
    if not ids:
        return empty
    if binary is None:
        binary = is_binary([a[k] for k in ids]) and is_binary([b[k] for k in ids])
    if binary:
        out = paired_binary_difference({k: a[k] for k in ids}, {k: b[k] for k in ids})
        return {**out, **{k: out[k] * scale for k in ("mean", "lo", "hi", "sd") if not _nan(out[k])}}
    d = np.array([float(a[k]) - float(b[k]) for k in ids])
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if len(d) > 1 else NAN
    if len(d) < 2:
        return {**empty, "mean": mean * scale}
    if np.all(d == d[0]):  # nothing varies: a bootstrap would return [mean, mean], which is no interval
        return {"mean": mean * scale, "lo": NAN, "hi": NAN, "n": len(d), "sd": 0.0, "includes_zero": None,
                "method": "all_equal"}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = _percentiles(boots)
    return {"mean": mean * scale, "lo": lo * scale, "hi": hi * scale, "n": len(d), "sd": sd * scale,
            "includes_zero": bool(lo <= 0.0 <= hi), "method": "bootstrap"}


# -- timings ------------------------------------------------------------------------------------------------------

def _cluster_means(values: Mapping) -> dict:
    return {k: sum(v) / len(v) for k, v in values.items() if v}


def ratio_interval(num: Mapping[str, Sequence[float]], den: Mapping[str, Sequence[float]], *,
                   n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """``mean(num) / mean(den)`` over the clusters both have (cluster id -> its repeated measurements; a speedup
    when ``num`` holds the baseline's seconds and ``den`` the row's; a throughput ratio the other way round), with
    an interval over clusters and repeats together (:data:`MIN_CLUSTERS_FOR_CI` or more clusters: two-level
    bootstrap; fewer: the range of the per-cluster ratios, ``method`` "range"). Keys: ratio, lo, hi, n (clusters),
    repeats (measurements), method, half_width_pct."""
    import numpy as np

    ids = [k for k in num if k in den and num[k] and den[k]]
    out = {"ratio": NAN, "lo": NAN, "hi": NAN, "n": len(ids), "repeats": 0, "method": None, "half_width_pct": NAN}
    if not ids:
        return out
    x = [np.asarray(num[k], dtype=float) for k in ids]
    y = [np.asarray(den[k], dtype=float) for k in ids]
    mx, my = np.array([v.mean() for v in x]), np.array([v.mean() for v in y])
    ratio = float(mx.mean() / my.mean()) if my.mean() > 0 else NAN
    out.update(ratio=ratio, repeats=int(sum(map(len, x)) + sum(map(len, y))))
    if math.isnan(ratio):
        return out
    if len(ids) == 1:
        return {**out, "method": "single"}
    if len(ids) < MIN_CLUSTERS_FOR_CI:
        per = mx / my
        lo, hi = float(per.min()), float(per.max())
        return {**out, "lo": lo, "hi": hi, "method": "range", "half_width_pct": 100.0 * (hi - lo) / 2 / ratio}
    rng = np.random.default_rng(seed)
    k = len(ids)
    pick = rng.integers(0, k, size=(n_boot, k))

    def resampled(groups):  # each drawn cluster's mean over a resample of its own repeats
        means = np.empty((n_boot, k))
        for j, g in enumerate(groups):
            draws = g[rng.integers(0, len(g), size=(n_boot, len(g)))].mean(axis=1) if len(g) > 1 else \
                np.full(n_boot, g[0])
            means[:, j] = draws
        return np.take_along_axis(means, pick, axis=1).mean(axis=1)

    boots = resampled(x) / resampled(y)
    lo, hi = _percentiles(boots)
    return {**out, "lo": lo, "hi": hi, "method": "cluster_bootstrap", "half_width_pct": 100.0 * (hi - lo) / 2 / ratio}


def mean_interval(values: Sequence[float], level: float = LEVEL) -> dict:
    """Mean and Student-t interval of repeated measurements (NaN bounds with fewer than two)."""
    from scipy import stats

    xs = [float(v) for v in values if not _nan(v)]
    if not xs:
        return {"mean": NAN, "lo": NAN, "hi": NAN, "n": 0}
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return {"mean": m, "lo": NAN, "hi": NAN, "n": 1}
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    h = float(stats.t.ppf(1 - (1 - level) / 2, len(xs) - 1)) * sd / math.sqrt(len(xs))
    return {"mean": m, "lo": m - h, "hi": m + h, "n": len(xs)}


# -- power --------------------------------------------------------------------------------------------------------

def items_for_difference(sd: float, delta: float) -> float:
    """Test items a paired comparison needs to detect a true difference ``delta`` (80 % power, α = 0.05)."""
    if sd is None or math.isnan(sd) or not delta or sd == 0:
        return NAN  # not estimable: no difference varied between items
    return float(math.ceil(((Z_ALPHA + Z_POWER) * sd / delta) ** 2))


def minimum_detectable_difference(sd: float, n: int) -> float:
    """The smallest true paired difference ``n`` items detect with 80 % power at α = 0.05 (same approximation)."""
    if sd is None or math.isnan(sd) or not n or sd == 0:
        return NAN
    return (Z_ALPHA + Z_POWER) * sd / math.sqrt(n)
