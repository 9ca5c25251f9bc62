"""Prompt compressors, registered by name.

Interface: ``compress(text, rate, protect=None) -> CompressionResult`` where

- ``rate`` is the fraction of tokens to KEEP (1.0 = unchanged, 0.0 = only the protected spans, or ``""``);
- ``achieved_rate`` = kept tokens / original tokens, counted with the compressor's tokenizer (the scoring
  model's tokenizer for ``perplexity`` and ``llmlingua2``, ``tokenizer=`` for the controls), no special tokens;
  it is reported beside ``requested_rate`` and lands within a few hundredths of it on templates of a few
  hundred tokens (word-level granularity limits precision on very short texts);
- ``protect``: literal strings, ``re:``-prefixed regex strings or compiled regexes whose matches are never
  dropped and count toward the budget (when they alone exceed it they are all kept and
  ``protected_over_budget`` is set; the achieved rate is reported as it is).

Backends (``get_compressor(name, **kwargs)``):

- ``perplexity``: self-information under a local causal LM (LLMLingua-1 / Selective-Context style), word-level
  units; kwargs ``model`` (default ``smollm2-135m``), ``tokenizer``, ``device``, ``window``, ``overlap``.
- ``llmlingua2``: LLMLingua-2 through the optional ``llmlingua`` package, when it and the weights are local;
  otherwise :class:`CompressorUnavailableError` says what is missing.
- ``random`` (kwargs ``seed``, ``tokenizer``) and ``truncate`` (``tokenizer``): controls for ablations.

Every backend also takes ``protect=`` (default protected spans added to each call's). Ready-made patterns:
``PLACEHOLDER`` (``{query}``-style slots), ``BACKTICK_CODE`` (inline code), ``MARKDOWN_MARKERS`` (bullets,
headings and numbered-list markers at line starts).
"""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .base import (
    CompressionResult,
    Compressor,
    CompressorUnavailableError,
    LazyCounter,
    UnitCompressor,
    UnitScorer,
)
from .controls import PositionScorer, RandomScorer, random_compressor, truncate_compressor
from .llmlingua2 import llmlingua2_compressor, missing_requirements
from .perplexity import CausalLMScorer, perplexity_compressor
from .units import BACKTICK_CODE, MARKDOWN_MARKERS, PLACEHOLDER, Segmentation, render, segment

ALIASES = {
    "selective_context": "perplexity",
    "llmlingua1": "perplexity",
    "llmlingua-2": "llmlingua2",
    "llmlingua_2": "llmlingua2",
    "truncation": "truncate",
}


COMPRESSORS: Registry[Callable[..., Compressor]] = Registry("compressor", aliases=ALIASES)
for _name, _factory in (("perplexity", perplexity_compressor), ("llmlingua2", llmlingua2_compressor),
                        ("random", random_compressor), ("truncate", truncate_compressor)):
    COMPRESSORS.add(_name, _factory)



def get_compressor(name: str, **kwargs) -> Compressor:
    """Build a registered compressor (models load lazily, on the first ``compress`` or ``load()``)."""
    return COMPRESSORS.lookup(name)(**kwargs)


__all__ = [
    "ALIASES",
    "BACKTICK_CODE",
    "COMPRESSORS",
    "MARKDOWN_MARKERS",
    "PLACEHOLDER",
    "CausalLMScorer",
    "CompressionResult",
    "Compressor",
    "CompressorUnavailableError",
    "LazyCounter",
    "PositionScorer",
    "RandomScorer",
    "Segmentation",
    "UnitCompressor",
    "UnitScorer",
    "get_compressor",
    "llmlingua2_compressor",
    "missing_requirements",
    "perplexity_compressor",
    "random_compressor",
    "render",
    "segment",
    "truncate_compressor",
]
