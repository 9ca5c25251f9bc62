"""A lean greedy decoder: static KV cache, one compiled decode step, almost no Python per token.

Plain `generate` runs logits processors, stopping criteria and bookkeeping in Python at every step and syncs with
the GPU to test for end of sequence; for a 135M model that overhead, not the arithmetic, sets the time per token.
This loop (after gpt-fast) keeps everything on the device:

- one `StaticCache` and one full-length attention mask per (batch size, cache length), allocated once per model
  and reset between calls, so every decode step sees tensors of the same shapes and addresses;
- prefill runs eagerly (prompt lengths vary); the single-token decode step (forward + argmax) is wrapped in
  `torch.compile(mode="reduce-overhead", fullgraph=True)` on CUDA, which captures it as a CUDA graph;
- finished rows are tracked on the device and only checked every ``check_every`` steps (one sync each), so the
  loop may run up to ``check_every - 1`` steps past the last EOS; those tokens are discarded, not reported.

Output matches greedy `generate` token for token (tests compare them on the tiny model). On CPU the step is not
compiled unless ``compile=True`` is passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

CHECK_EVERY = 16
MAX_SLOTS = 8  # static caches (and compiled graphs) kept per model; the least recently used goes first


@dataclass
class _Slot:
    cache: object
    mask: object  # (B, cache_len) long: 0 on left padding, 1 elsewhere (causality masks the future)
    step: object  # callable(tok, cache_position, position_ids) -> next token ids


def _slot(model, batch_size: int, cache_len: int, compile: bool) -> _Slot:
    from transformers import StaticCache

    slots = model.__dict__.setdefault("_promptintern_fast_slots", {})
    key = (batch_size, cache_len, compile)
    if key in slots:
        slots[key] = slots.pop(key)  # most recently used last
        return slots[key]
    while len(slots) >= MAX_SLOTS:  # a long grid meets many shapes: bound the caches held on the device
        slots.pop(next(iter(slots)))
    device = next(model.parameters()).device
    cache = StaticCache(config=model.config, max_cache_len=cache_len)
    shape = model._get_static_cache_init_shape() if hasattr(model, "_get_static_cache_init_shape") else None
    if shape is not None:  # allocate now, so the compiled step sees fixed buffers from its first call
        heads, head_dim = shape
        cache.early_initialization(batch_size=batch_size, num_heads=heads, head_dim=head_dim, dtype=model.dtype,
                                   device=device)
    mask = torch.ones(batch_size, cache_len, dtype=torch.long, device=device)

    def step(tok, cache_position, position_ids):
        out = model(input_ids=tok, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                    cache_position=cache_position, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1)

    if compile:
        # Every slot's step shares one code object, and dynamo recompiles it per shape; past its recompile limit
        # (8 by default) it would silently run eagerly. A grid uses a handful of shapes per batch size.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
        step = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    slots[key] = _Slot(cache, mask, step)
    return slots[key]


@torch.inference_mode()  # whoever calls: the per-model caches are created and reset in inference mode only
def fast_greedy(model, input_ids, attention_mask, *, max_new_tokens: int, eos_ids: list[int], pad_id: int,
                cache_len: int, compile: bool | None = None, check_every: int = CHECK_EVERY, stopped=None,
                prefix=None):
    """Greedy-decode a left-padded batch. Returns (new token ids (B, n) with ``pad_id`` after each row's EOS,
    seconds to the first token). ``cache_len`` must hold the prompt plus ``max_new_tokens``. ``stopped``, if
    given, is called at each check with the tokens so far (B, i) and returns a list of bools: rows to finish
    (stop strings); their later tokens are still written, so the caller cuts them. ``prefix`` (a
    promptintern.prefix_cache.PrefixKV; the batch laid out [prefix][padding][suffix]): its keys and values are
    copied into the cache and only the rest of the prompt is prefilled (the copy counts in the first-token time)."""
    device = input_ids.device
    b, length = input_ids.shape
    if length + max_new_tokens > cache_len:
        raise ValueError(f"cache_len {cache_len} < prompt {length} + max_new_tokens {max_new_tokens}")
    if compile is None:
        compile = device.type == "cuda"
    slot = _slot(model, b, cache_len, compile)
    slot.cache.reset()
    slot.mask.fill_(1)
    slot.mask[:, :length] = attention_mask
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    eos = torch.tensor(sorted(set(eos_ids)), device=device)
    out = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    t0 = time.perf_counter()
    start = 0
    if prefix is not None:
        prefix.write(slot.cache, b)
        start = prefix.tokens
    logits = model(input_ids=input_ids[:, start:], attention_mask=slot.mask, position_ids=positions[:, start:],
                   past_key_values=slot.cache, cache_position=torch.arange(start, length, device=device),
                   use_cache=True, logits_to_keep=1).logits
    tok = logits[:, -1].argmax(-1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ttft = time.perf_counter() - t0
    next_pos = positions[:, -1:] + 1
    n = 0
    for i in range(max_new_tokens):
        out[:, i] = torch.where(done, pad_id, tok)
        done |= torch.isin(tok, eos)
        n = i + 1
        if (i + 1) % check_every == 0:
            if stopped is not None:
                done |= torch.tensor(stopped(out[:, : i + 1]), dtype=torch.bool, device=device)
            if bool(done.all()):
                break
        if i == max_new_tokens - 1:
            break
        tok = slot.step(tok[:, None].clone(), torch.tensor([length + i], device=device), next_pos.clone())
        next_pos += 1
    return out[:, :n], ttft
