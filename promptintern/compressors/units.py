"""Word-level units, protected spans, rendering and budgeted selection shared by every unit-based compressor.

Units
-----
A *unit* is a maximal run of non-whitespace characters (regex ``\\S+``): a word with its attached punctuation,
``foo_bar(x)``, ``{query}``, a Markdown ``##``. Compressors keep or drop whole units, so the output stays
readable and never contains half a word. Whitespace is structure, not content: it is never scored, and when
units are dropped the separator put before a kept unit is the whitespace *gap* with the most newlines among the
gaps since the previous kept unit (the unit's own gap on ties), so line and paragraph breaks survive while the
spaces of dropped words collapse. Leading whitespace is kept when the first unit is kept; trailing whitespace
is kept when any unit is kept. Keeping every unit reproduces the text exactly.

Protected spans
---------------
``protect`` is a literal string, a compiled regex, or a list of them. A plain string is matched literally,
except that a string starting with ``re:`` is a regex (config files cannot hold compiled patterns), e.g.
``"re:\\{\\w+\\}"``. Every unit that overlaps a match is kept at any rate, and counts toward the kept budget.

Selection
---------
Each compressor gives every unit a *priority* (higher = more worth keeping). Units are ranked by priority
(ties: earlier unit first); the output keeps the protected units plus the ``m`` best-ranked others, where ``m``
is chosen by bisection on the *measured* token count of the rendered output so that
``tokens(output) / tokens(text)`` is as close as possible to the requested rate (on ties, the smaller output).
Because the ranking does not depend on the rate, a lower rate keeps a subset of what a higher rate keeps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

WORD = re.compile(r"\S+")
PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")  # str.format-style slots such as {query}
BACKTICK_CODE = re.compile(r"`[^`\n]+`")  # inline code such as `foo_bar()`
# Line-leading Markdown markers (bullets, headings, numbered items): protect them to keep a list a list.
MARKDOWN_MARKERS = re.compile(r"(?m)^[ \t]*(?:[-*+]|#{1,6}|\d{1,3}[.)])(?=[ \t])")
REGEX_PREFIX = "re:"

ProtectSpec = str | re.Pattern | Iterable[str | re.Pattern] | None


@dataclass(frozen=True)
class Segmentation:
    """``text`` cut into units (char spans) and the whitespace gaps before each unit."""

    text: str
    spans: tuple[tuple[int, int], ...]

    @property
    def n(self) -> int:
        return len(self.spans)

    def unit(self, i: int) -> str:
        s, e = self.spans[i]
        return self.text[s:e]

    def units(self) -> list[str]:
        return [self.text[s:e] for s, e in self.spans]

    def gap(self, i: int) -> str:
        """Whitespace before unit i (for i = 0: the text's leading whitespace)."""
        start = self.spans[i - 1][1] if i > 0 else 0
        return self.text[start : self.spans[i][0]]

    def trailing(self) -> str:
        return self.text[self.spans[-1][1] :] if self.spans else self.text


def segment(text: str) -> Segmentation:
    return Segmentation(text, tuple((m.start(), m.end()) for m in WORD.finditer(text)))


def compile_protect(protect: ProtectSpec) -> list[re.Pattern]:
    """Normalise a protect spec to a list of compiled patterns (literals escaped, ``re:`` strings compiled)."""
    if protect is None:
        return []
    if isinstance(protect, str | re.Pattern):
        protect = [protect]
    patterns = []
    for p in protect:
        if isinstance(p, re.Pattern):
            patterns.append(p)
        elif isinstance(p, str):
            if p.startswith(REGEX_PREFIX):
                patterns.append(re.compile(p[len(REGEX_PREFIX) :]))
            elif p:
                patterns.append(re.compile(re.escape(p)))
        else:
            raise TypeError(f"protect entries must be str or re.Pattern, got {type(p).__name__}: {p!r}")
    return patterns


def protected_spans(text: str, protect: ProtectSpec) -> list[tuple[int, int]]:
    spans = []
    for pat in compile_protect(protect):
        spans.extend((m.start(), m.end()) for m in pat.finditer(text) if m.end() > m.start())
    return sorted(spans)


def protected_units(seg: Segmentation, protect: ProtectSpec) -> list[bool]:
    """True for each unit overlapping a protected span."""
    mask = [False] * seg.n
    spans = protected_spans(seg.text, protect)
    if not spans:
        return mask
    # Mark protected characters, then test each unit's range.
    covered = bytearray(len(seg.text) + 1)
    for s, e in spans:
        covered[s:e] = b"\x01" * (e - s)
    for i, (s, e) in enumerate(seg.spans):
        mask[i] = any(covered[s:e])
    return mask


def render(seg: Segmentation, keep: Sequence[bool]) -> str:
    """The text with only the kept units (see the module docstring for whitespace handling)."""
    out: list[str] = []
    prev = -1
    for i in range(seg.n):
        if not keep[i]:
            continue
        if prev < 0:
            out.append(seg.gap(0) if i == 0 else "")
        else:
            best = seg.gap(i)
            best_nl = best.count("\n")
            for j in range(i - 1, prev, -1):  # gaps of the dropped units in between, latest first
                g = seg.gap(j)
                if g.count("\n") > best_nl:
                    best, best_nl = g, g.count("\n")
            out.append(best)
        out.append(seg.unit(i))
        prev = i
    if prev >= 0:
        out.append(seg.trailing())
    return "".join(out)


def rank(priorities: Sequence[float], eligible: Sequence[bool]) -> list[int]:
    """Indices of eligible units, best first (higher priority; ties: earlier unit)."""
    idx = [i for i in range(len(priorities)) if eligible[i]]
    return sorted(idx, key=lambda i: (-priorities[i], i))


@dataclass(frozen=True)
class Selection:
    keep: tuple[bool, ...]
    text: str
    tokens: int


def select(
    seg: Segmentation,
    priorities: Sequence[float],
    protected: Sequence[bool],
    target_tokens: float,
    count: Callable[[str], int],
) -> Selection:
    """Keep protected units + the best ``m`` others, ``m`` chosen so the rendered token count is closest to
    ``target_tokens`` (ties: fewer tokens)."""
    if len(priorities) != seg.n or len(protected) != seg.n:
        raise ValueError(f"need one priority and one protected flag per unit ({seg.n} units)")
    order = rank(priorities, [not p for p in protected])
    cache: dict[int, Selection] = {}

    def with_m(m: int) -> Selection:
        if m not in cache:
            keep = list(protected)
            for i in order[:m]:
                keep[i] = True
            text = render(seg, keep)
            cache[m] = Selection(tuple(keep), text, count(text) if text else 0)
        return cache[m]

    # Smallest m whose output reaches the target (token counts are non-decreasing in m up to tokenizer noise).
    lo, hi = 0, len(order)
    if with_m(hi).tokens <= target_tokens:
        return with_m(hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if with_m(mid).tokens >= target_tokens:
            hi = mid
        else:
            lo = mid + 1
    best = with_m(lo)
    if lo > 0:
        below = with_m(lo - 1)
        if abs(below.tokens - target_tokens) <= abs(best.tokens - target_tokens):
            best = below
    return best
