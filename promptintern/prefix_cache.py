"""Prefix caching of the recurring prompt: encode the part every query shares once, reuse its KV cache per query.

What a serving engine with automatic prefix caching (vLLM, SGLang's radix cache, TGI) does for a recurring
prompt, done explicitly for the harness's own engines, so the full-prompt rows can be timed the way a user would
deploy them:

- :func:`shared_prefix_text` finds the recurring part of a method's prompts: everything the chat-rendered prompt
  holds before the first text that varies per query (system turn + template, and any fixed markup after it). It
  renders the prompt twice with two different sentinel queries (and sentinel examples) and keeps their common
  start, so it is exact for any chat template.
- :func:`prefix_token_ids` turns it into tokens: the longest start of the prefix's token ids that every prompt's
  own tokenization begins with (a BPE merge across the boundary can move the last token into the query).
- :func:`encode_prefix` runs the model once over those tokens (batch 1, positions 0..P-1) and keeps every layer's
  keys and values: a :class:`PrefixKV`. Its ``seconds`` are the one-time encoding cost, recorded and shown.
- :meth:`PrefixKV.write` copies the prefix into a fresh cache for a batch (one copy per batch: a
  ``DynamicCache`` for ``generate``, a ``StaticCache`` for the static engines); only examples + query + answer
  are computed per query.
- :func:`middle_padded` lays a batch out as ``[prefix][padding][suffix]`` (the padding masked), so every row's
  prefix sits at the same cache positions and every token keeps the position it has in the left-padded uncached
  batch: greedy outputs are the same tokens (tests compare them with the uncached run, on the tiny model and on
  SmolLM2).

The model must be the one that answers: when an adapter is merged into it, the prefix is encoded with the adapter
active, and a new model or adapter needs a new :class:`PrefixKV` (it records the model it was built from).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from .errors import ConfigError
from .prompts import Prompt, render

_SENTINELS = ("\u2063", "\u2062")  # two invisible operators that differ: never in a task's own text


def shared_prefix_text(prompt: Prompt, tokenizer=None, chat: bool = True) -> str:
    """The rendered text every query of this prompt's method shares: the common start of the prompt rendered with
    two different queries (and examples). "" when the method sends nothing fixed before the query."""
    variants = []
    for s in _SENTINELS:
        examples = tuple(s for _ in prompt.examples)
        demos = tuple((s, s) for _ in prompt.demos)  # multi-turn: every demonstration varies per query too
        variants.append(render(replace(prompt, examples=examples, demos=demos, query=s, answer=None), tokenizer,
                               chat))
    a, b = variants
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


def prefix_token_ids(prefix_text: str, tokenizer, encoded: list[list[int]]) -> list[int]:
    """The prefix's token ids cut to the longest start that every encoded prompt begins with."""
    ids = tokenizer(prefix_text, add_special_tokens=False)["input_ids"] if prefix_text else []
    n = len(ids)
    for e in encoded:
        k = 0
        while k < min(n, len(e)) and e[k] == ids[k]:
            k += 1
        n = k
    return list(ids[:n])


@dataclass
class PrefixKV:
    """The keys and values of a shared prefix, one (keys, values) pair per layer, each (1, heads, P, head_dim)."""

    ids: list[int]
    layers: list[tuple]
    seconds: float  # the one-time encoding (forward pass over the prefix)
    model_key: tuple  # the model it was encoded with (see model_key)

    @property
    def tokens(self) -> int:
        return len(self.ids)

    def check(self, model) -> None:
        if self.model_key != model_key(model):
            raise ValueError("this prefix cache was encoded with another model or adapter; encode it again")

    def write(self, cache, batch_size: int):
        """Append the prefix to an empty cache for ``batch_size`` rows (each row gets its own copy); returns it."""
        for i, (k, v) in enumerate(self.layers):
            cache.update(k.expand(batch_size, -1, -1, -1).contiguous(), v.expand(batch_size, -1, -1, -1).contiguous(), i)
        return cache

    def dynamic_cache(self, model, batch_size: int):
        from transformers import DynamicCache

        return self.write(DynamicCache(config=model.config), batch_size)

    def static_cache(self, model, batch_size: int, cache_len: int):
        from transformers import StaticCache

        return self.write(StaticCache(config=model.config, max_cache_len=cache_len), batch_size)

    def summary(self) -> dict:
        return {"tokens": self.tokens, "encode_seconds": self.seconds}


def model_key(model) -> tuple:
    """What identifies the weights a prefix was encoded with: the model object and the adapter merged into it (the
    adapter host counts its switches on the model)."""
    return (id(model), model.__dict__.get("_promptintern_adapter_serial", 0))


def encode_prefix(model, ids: list[int]) -> PrefixKV:
    """One forward pass over the prefix (batch 1, no padding); the keys and values of every layer."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    from .generation import device_of, sync_device

    if not ids:
        raise ConfigError("generation.prefix_cache", "the prompts share no prefix to cache")
    device = device_of(model)
    cache = DynamicCache(config=model.config)
    odd = [type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer]
    if odd:
        raise ConfigError("generation.prefix_cache",
                          f"prefix caching supports full-attention layers only; this model has {sorted(set(odd))}")
    model.eval()
    with torch.inference_mode():
        sync_device(device)
        t0 = time.perf_counter()
        x = torch.tensor([ids], device=device)
        model(input_ids=x, attention_mask=torch.ones_like(x), past_key_values=cache, use_cache=True,
              logits_to_keep=1)
        sync_device(device)
        seconds = time.perf_counter() - t0
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    return PrefixKV(list(ids), layers, seconds, model_key(model))


def middle_padded(prefix_len: int, rows: list[list[int]], pad_id: int, device):
    """A batch laid out as [prefix][padding][suffix] per row (rows are whole prompts starting with the prefix):
    input_ids and attention_mask (0 on the padding)."""
    import torch

    width = max(len(r) for r in rows)
    ids, mask = [], []
    for r in rows:
        gap = width - len(r)
        ids.append(r[:prefix_len] + [pad_id] * gap + r[prefix_len:])
        mask.append([1] * prefix_len + [0] * gap + [1] * (len(r) - prefix_len))
    return {"input_ids": torch.tensor(ids, device=device), "attention_mask": torch.tensor(mask, device=device)}


def prefix_for(model, tokenizer, prompts: list[Prompt], rendered: list[str], chat: bool = True) -> PrefixKV:
    """The shared prefix of one method's prompts (the same template for all), encoded once with ``model``. Refuses
    prompts that do not all start with it (a method whose fixed part varies per query has nothing to cache)."""
    if not prompts:
        raise ConfigError("generation.prefix_cache", "no prompts")
    text = shared_prefix_text(prompts[0], tokenizer, chat)
    bad = [i for i, r in enumerate(rendered) if not r.startswith(text)]
    if not text or bad:
        raise ConfigError("generation.prefix_cache",
                          f"prompt {bad[0] if bad else 0} does not share the recurring prefix of prompt 0: this method's "
                          "prompts have no fixed part to cache")
    encoded = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in rendered]
    return encode_prefix(model, prefix_token_ids(text, tokenizer, encoded))
