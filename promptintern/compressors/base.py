"""The compressor seam: ``compress(text, rate, protect=None) -> CompressionResult``.

Definitions
-----------
- ``rate`` (requested) is the fraction of tokens to KEEP: 1.0 returns the text unchanged, 0.0 returns only the
  protected spans (or ``""``).
- ``achieved_rate = compressed_tokens / original_tokens``, both counted with the compressor's own tokenizer
  (``counter``; the scoring model's tokenizer by default), without special tokens. An empty original gives
  ``achieved_rate = 1.0`` (nothing to drop).
- ``seconds``: wall time of the ``compress`` call, excluding the one-off model load (see ``load()``), so a
  compress-at-inference baseline can add it to its latency.

Unit-based compressors (perplexity, llmlingua2, random, truncate) are one class, :class:`UnitCompressor`,
composed of a :class:`UnitScorer` (a priority per word-level unit) and a token counter; the budgeted
selection lives in :mod:`.units`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import PromptInternError
from ..tokens import HFTokenCounter, TokenCounter
from .units import ProtectSpec, compile_protect, protected_units, render, segment, select

DEFAULT_TOKENIZER = "smollm2-135m"


class CompressorUnavailableError(PromptInternError, RuntimeError):
    """A backend needs a package or model weights that are not installed; the message says how to get them."""


@dataclass(frozen=True)
class CompressionResult:
    text: str
    achieved_rate: float  # compressed_tokens / original_tokens (compressor's tokenizer)
    requested_rate: float
    seconds: float
    original_tokens: int = 0
    compressed_tokens: int = 0
    compressor: str = ""
    n_units: int = 0
    kept_units: tuple[int, ...] = ()  # indices (into units.segment(original).spans) of kept units
    n_protected_units: int = 0
    protected_over_budget: bool = False  # protected spans alone exceed rate * original_tokens
    extra: dict = field(default_factory=dict)

    def as_dict(self, with_units: bool = False) -> dict:
        d = asdict(self)
        if not with_units:
            d.pop("kept_units")
        return d


@runtime_checkable
class Compressor(Protocol):
    name: str

    def compress(self, text: str, rate: float, protect: ProtectSpec = None) -> CompressionResult: ...


@runtime_checkable
class UnitScorer(Protocol):
    """Priority of each word-level unit of ``text`` (higher = keep first)."""

    def load(self) -> None: ...

    def priorities(self, text: str, spans: Sequence[tuple[int, int]]) -> list[float]: ...


class LazyCounter:
    """A token counter built on first use from a tokenizer name (``models.load_tokenizer``), a tokenizer object,
    a :class:`TokenCounter`, or a zero-argument callable returning one of those."""

    def __init__(self, source=DEFAULT_TOKENIZER):
        self._source = source
        self._counter: TokenCounter | None = None

    @property
    def name(self) -> str:
        return getattr(self.counter, "name", "model")

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            src = self._source
            if callable(src) and not hasattr(src, "count") and not hasattr(src, "encode"):
                src = src()
            if isinstance(src, str):
                from ..models import load_tokenizer

                src = load_tokenizer(src)
            self._counter = (
                src if hasattr(src, "count") and not hasattr(src, "encode") else HFTokenCounter(src)
            )
        return self._counter

    def count(self, text: str) -> int:
        return self.counter.count(text) if text else 0


def check_rate(rate: float) -> float:
    try:
        r = float(rate)
    except (TypeError, ValueError) as e:
        raise ValueError(f"compression rate must be a number in [0, 1], got {rate!r}") from e
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"compression rate is the fraction of tokens to keep, in [0, 1]; got {rate!r}")
    return r


class UnitCompressor:
    """Keep whole word-level units by priority until the requested fraction of tokens is reached."""

    def __init__(
        self,
        name: str,
        scorer: UnitScorer,
        counter: TokenCounter | LazyCounter | Callable | str | object,
        protect: ProtectSpec = None,
    ):
        self.name = name
        self.scorer = scorer
        self.counter = counter if isinstance(counter, LazyCounter) else LazyCounter(counter)
        self.default_protect = compile_protect(protect)

    def load(self) -> UnitCompressor:
        self.scorer.load()
        self.counter.counter  # noqa: B018 - build the counter now
        return self

    def compress(self, text: str, rate: float, protect: ProtectSpec = None) -> CompressionResult:
        rate = check_rate(rate)
        self.load()
        t0 = time.perf_counter()
        patterns = self.default_protect + compile_protect(protect)
        seg = segment(text)
        original = self.counter.count(text)
        if rate >= 1.0 or original == 0 or seg.n == 0:
            return CompressionResult(
                text=text,
                achieved_rate=1.0,
                requested_rate=rate,
                seconds=time.perf_counter() - t0,
                original_tokens=original,
                compressed_tokens=original,
                compressor=self.name,
                n_units=seg.n,
                kept_units=tuple(range(seg.n)),
                n_protected_units=sum(protected_units(seg, patterns)),
            )
        protected = protected_units(seg, patterns)
        target = rate * original
        if rate <= 0.0:
            priorities = [0.0] * seg.n  # nothing beyond the protected units is kept: skip scoring
        else:
            priorities = self.scorer.priorities(text, seg.spans)
        sel = select(seg, priorities, protected, target, self.counter.count)
        over = any(protected) and self.counter.count(render(seg, protected)) > target
        return CompressionResult(
            text=sel.text,
            achieved_rate=sel.tokens / original,
            requested_rate=rate,
            seconds=time.perf_counter() - t0,
            original_tokens=original,
            compressed_tokens=sel.tokens,
            compressor=self.name,
            n_units=seg.n,
            kept_units=tuple(i for i, k in enumerate(sel.keep) if k),
            n_protected_units=sum(protected),
            protected_over_budget=over,
        )
