"""The one set of formatters every table, report, decision table and leaderboard uses.

Conventions: a missing or not-applicable figure is "–"; a ratio ends in "×"; dollars keep three significant digits
without scientific notation; an interval is written ``x [lo, hi]`` and, where it is a range rather than a
confidence interval, ``x (range lo–hi)``; a paired difference whose interval includes 0 ends in "ns".
"""

from __future__ import annotations

import math
from collections.abc import Callable

DASH = "–"
Column = tuple[str, Callable]  # (header, row -> text)


def isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x, nd: int = 1) -> str:
    return DASH if isnan(x) else f"{x:.{nd}f}"


def integer(x) -> str:
    return DASH if isnan(x) else f"{x:,.0f}"


def pct(x, nd: int = 1) -> str:
    """A percentage already on the 0-100 scale."""
    return DASH if isnan(x) else f"{x:.{nd}f}%"


def share(x) -> str:
    """A fraction shown as a percentage."""
    return DASH if isnan(x) else pct(100.0 * x)


def times(x, nd: int = 2) -> str:
    return DASH if isnan(x) else f"{x:.{nd}f}×"


def usd(x) -> str:
    """Three significant digits without scientific notation ($0.0000204, $0.487, $12.3, $1,234)."""
    if isnan(x):
        return DASH
    if x == 0:
        return "$0"
    if abs(x) >= 100:
        return f"${x:,.0f}"
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"${x:.{decimals}f}"


def seconds(x) -> str:
    if isnan(x):
        return DASH
    if x < 0.01:  # GPU decode steps: keep two decimals of a millisecond
        return f"{x * 1000:.2f} ms"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def queries(x) -> str:
    """A break-even query count: "never" (no per-query saving), "0" (nothing to repay), "< 1", or a count."""
    if isnan(x):
        return DASH
    if math.isinf(x):
        return "never"
    if x == 0:
        return "0"
    return "< 1" if x < 1 else f"{x:,.0f}"


def bound(x: float, nd: int = 1, signed: bool = True) -> str:
    """An interval bound; two decimals where one would round a non-zero bound to 0 (so "+0.0" never hides which
    side of 0 it is on)."""
    sign = "+" if signed else ""
    return f"{x:{sign}.{nd + 1}f}" if x != 0 and abs(x) < 0.5 * 10 ** -nd else f"{x:{sign}.{nd}f}"


def interval(value, lo, hi, *, nd: int = 1, signed: bool = False, method: str | None = None,
             suffix: str = "") -> str:
    """``value [lo, hi]`` (a confidence interval) or ``value (range lo–hi)`` when ``method`` is "range"; only the
    value when there are no bounds."""
    if isnan(value):
        return DASH
    v = bound(value, nd, signed) if signed else f"{value:.{nd}f}"
    if isnan(lo) or isnan(hi):
        return v + suffix
    if method == "range":
        return f"{v}{suffix} (range {bound(lo, nd, signed)}–{bound(hi, nd, signed)})"
    return f"{v}{suffix} [{bound(lo, nd, signed)}, {bound(hi, nd, signed)}]"


def delta(prefix: str) -> Callable:
    """A paired difference in points from ``<prefix>``, ``_lo``, ``_hi``, ``_ns``, ``_method`` of a row, with "ns"
    where the interval includes 0 and "all pairs equal" where there is nothing to build an interval from."""

    def f(r) -> str:
        d = r.get(prefix)
        if isnan(d):
            return DASH
        if r.get(f"{prefix}_method") == "all_equal":
            return f"{d:+.1f} (all {int(r.get(f'{prefix}_n') or 0)} pairs equal)"
        text = interval(d, r.get(f"{prefix}_lo"), r.get(f"{prefix}_hi"), signed=True)
        return text + (" ns" if r.get(f"{prefix}_ns") else "")

    return f


def ratio(col: str, nd: int = 2) -> Callable:
    """A ratio (a speedup) from ``<col>``, ``_lo``, ``_hi`` and ``_method`` of a row: a CI, or a labelled range."""

    def f(r) -> str:
        return interval(r.get(col), r.get(f"{col}_lo"), r.get(f"{col}_hi"), nd=nd, method=r.get(f"{col}_method"),
                        suffix="×")

    return f


def score(r) -> str:
    """A row's score on the display scale with its interval (Wilson for proportions, t for continuous scores), or
    its status (FAILED: error) when it has no result."""
    status = r.get("status", "ok")
    if status not in ("ok", None) and not isnan(status):
        err = str(r.get("error") or "").strip()
        return status.upper() + (f": {err[:80]}" if err else "")
    return interval(r.get("score_display"), r.get("score_lo"), r.get("score_hi"))
