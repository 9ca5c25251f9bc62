"""Control compressors for ablations: ``random`` (seeded random drop) and ``truncate`` (keep the beginning).

Both work on the same word-level units and budgeted selection as the model-based compressors
(:mod:`.units`), so they differ from them only in the ranking:

- ``random``: units ranked by a random permutation drawn from ``(seed, sha256(text))``: the same seed and text
  always give the same output, and a lower rate keeps a subset of what a higher rate keeps.
- ``truncate``: units ranked by position, i.e. the output is the first units of the text (plus any protected
  units further on).

Token counts (and so achieved rates) use ``tokenizer``: a registered model name (default ``smollm2-135m``), a
tokenizer object, or a :class:`promptintern.tokens.TokenCounter` (e.g. tiktoken for API pricing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .base import DEFAULT_TOKENIZER, UnitCompressor
from .units import ProtectSpec


class RandomScorer:
    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def load(self) -> None:
        pass

    def priorities(self, text: str, spans: Sequence[tuple[int, int]]) -> list[float]:
        import numpy as np

        digest = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        rng = np.random.default_rng([self.seed, digest])
        return [float(x) for x in rng.random(len(spans))]


class PositionScorer:
    """Earlier units first."""

    def load(self) -> None:
        pass

    def priorities(self, text: str, spans: Sequence[tuple[int, int]]) -> list[float]:
        return [-float(i) for i in range(len(spans))]


def random_compressor(
    seed: int = 0, tokenizer=DEFAULT_TOKENIZER, protect: ProtectSpec = None
) -> UnitCompressor:
    return UnitCompressor("random", RandomScorer(seed), tokenizer, protect)


def truncate_compressor(tokenizer=DEFAULT_TOKENIZER, protect: ProtectSpec = None) -> UnitCompressor:
    return UnitCompressor("truncate", PositionScorer(), tokenizer, protect)
