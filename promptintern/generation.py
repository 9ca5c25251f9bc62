"""Batched greedy generation with per-sample token counts and timings.

Prompts are left-padded and sorted by length so a batch holds similar lengths. For each batch we time the
prefill (time to first token: one forward pass over the prompts) and the whole generate call; each sample
records the batch it ran in, so latency tables can tell batch-1 latency from batched throughput.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from .prefix_cache import middle_padded
from .progress import Bar
from .stopping import continuation_criterion, cut_at_stop, rows_stopped, stop_token_count

# "hf": plain `generate` with a dynamic KV cache. "static": a static KV cache sized once per call (so every
# batch reuses one shape) and, on CUDA, transformers' automatic torch.compile of the decode step (CUDA graphs,
# "reduce-overhead"); each batch size is warmed up untimed first, so compilation never lands in a timing.
# "fast": promptintern.fast_decode, a lean greedy loop over a static cache with a compiled decode step.
ENGINES = ("hf", "static", "fast")
CACHE_BUCKET = 128  # static cache lengths are rounded up to a multiple of this: fewer distinct shapes to compile


@dataclass
class Generation:
    text: str  # the answer region: the continuation cut at its first stop string that counts (stopping.py)
    prompt_tokens: int
    output_tokens: int  # tokens generated up to the end of turn, the token that completed the stop, or the budget
    ttft_s: float
    e2e_s: float
    batch_size: int
    batch_index: int
    raw_text: str = ""  # the decoded output tokens, before the cut (may run a few characters past the stop)
    stop_reason: str = ""  # "stop" (a stop string), "eos" (end of turn), "length" (max_new_tokens reached)
    cached_tokens: int = 0  # prompt tokens read from a reused prefix KV cache (prefill computed the rest)

    def to_dict(self) -> dict:
        return asdict(self)


class _FirstTokenClock:
    """A no-op logits processor that notes when the first decoding step's logits exist (end of prefill)."""

    def __init__(self, device):
        self.device, self.start, self.first = device, 0.0, None

    def __call__(self, input_ids, scores):
        if self.first is None:
            sync_device(self.device)
            self.first = time.perf_counter()
        return scores


def batch_seconds(gens: list[Generation]) -> float:
    """Total generation wall time: each batch's end-to-end time counted once."""
    return sum({g.batch_index: g.e2e_s for g in gens}.values())


def sync_device(device) -> None:
    """Wait for queued CUDA work, so a timer reads real time (no-op on CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_of(model):
    return next(model.parameters()).device


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        from .errors import ConfigError

        raise ConfigError("generation.engine", f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")


def static_cache_len(prompt_lengths: list[int], max_new_tokens: int) -> int:
    """One static KV-cache length for a whole call: the longest prompt plus the new tokens, rounded up."""
    need = max(prompt_lengths, default=0) + max_new_tokens
    return -(-need // CACHE_BUCKET) * CACHE_BUCKET


def engine_kwargs(engine: str, cache_len: int) -> dict:
    """The extra `generate` arguments of an engine (none for "hf")."""
    check_engine(engine)
    if engine == "static":
        return {"cache_implementation": "static", "max_cache_len": cache_len}
    return {}


def prefix_kwargs(model, engine: str, batch_size: int, cache_len: int, prefix=None) -> dict:
    """The `generate` arguments of an engine for one batch: with a prefix (promptintern.prefix_cache.PrefixKV), a
    fresh copy of its KV cache for the batch (a StaticCache for "static"), else :func:`engine_kwargs`."""
    if prefix is None:
        return engine_kwargs(engine, cache_len)
    check_engine(engine)
    if engine == "static":
        return {"past_key_values": prefix.static_cache(model, batch_size, cache_len)}
    return {"past_key_values": prefix.dynamic_cache(model, batch_size)}


def pad_batch(tokenizer, rows: list[list[int]], device, prefix=None):
    """Left-padded input_ids / attention_mask; with a prefix, [prefix][padding][suffix] (prefix_cache.middle_padded)
    so that every row's prefix sits at the cached positions."""
    if prefix is None:
        return tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(device)

    return middle_padded(prefix.tokens, rows, tokenizer.pad_token_id, device)


def generate_fixed(model, tokenizer, batch, new_tokens: int, engine: str, cache_len: int, prefix=None) -> int:
    """Decode exactly ``new_tokens`` tokens for every row of a padded batch with ``engine`` (no end-of-sequence
    stop: a timing that compares prompts must decode the same amount). Returns the tokens decoded per row. With a
    ``prefix`` (the batch laid out by :func:`pad_batch`), its KV cache is copied in and only the rest prefilled."""
    import torch

    with torch.inference_mode():
        if engine == "fast":
            from .fast_decode import fast_greedy

            out, _ = fast_greedy(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=new_tokens,
                                 eos_ids=[], pad_id=tokenizer.pad_token_id, cache_len=cache_len, prefix=prefix)
            return int(out.shape[1])
        b = batch["input_ids"].shape[0]
        out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, **prefix_kwargs(model, engine, b, cache_len, prefix))
        return int(out.shape[1] - batch["input_ids"].shape[1])


class TokenClock:
    """A no-op logits processor that notes when each decoding step's logits exist: ``times[k]`` (seconds after
    ``start``) is when token k+1 of every row is chosen, so ``times[0]`` is the time to the first token and the gaps
    are the inter-token latencies."""

    def __init__(self, device):
        self.device, self.start, self.times = device, 0.0, []

    def __call__(self, input_ids, scores):
        sync_device(self.device)
        self.times.append(time.perf_counter() - self.start)
        return scores


def timed_fixed(model, tokenizer, batch, new_tokens: int, engine: str, cache_len: int, prefix=None) -> dict:
    """Decode exactly ``new_tokens`` tokens for every row of a padded batch (end of sequence ignored), timed:
    ``ttft_s``, ``e2e_s`` and, on the ``hf`` and ``static`` engines, ``token_times`` (seconds from the start at
    which each token was chosen; None on ``fast``, whose compiled loop has no per-step hook). With a ``prefix`` its
    KV cache is copied in (inside the timing) and only the rest of each prompt prefilled."""
    import torch
    from transformers import LogitsProcessorList

    device = device_of(model)
    with torch.inference_mode():
        if engine == "fast":
            from .fast_decode import fast_greedy

            sync_device(device)
            t0 = time.perf_counter()
            _, ttft = fast_greedy(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=new_tokens,
                                  eos_ids=[], pad_id=tokenizer.pad_token_id, cache_len=cache_len, prefix=prefix)
            sync_device(device)
            return {"ttft_s": ttft, "e2e_s": time.perf_counter() - t0, "token_times": None}
        clock = TokenClock(device)
        b = batch["input_ids"].shape[0]
        sync_device(device)
        t0 = clock.start = time.perf_counter()
        extra = prefix_kwargs(model, engine, b, cache_len, prefix)
        model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([clock]), **extra)
        sync_device(device)
        e2e = time.perf_counter() - t0
    times = clock.times[:new_tokens]
    return {"ttft_s": times[0] if times else e2e, "e2e_s": e2e, "token_times": times}


def warm_up(model, tokenizer, input_ids: list[list[int]], engine: str, cache_len: int) -> bool:
    """Run one short untimed generate at this batch shape so compilation (CUDA graphs) happens outside timings.
    Done once per (engine, batch size, cache length) per model; returns whether it ran."""
    if engine == "hf":
        return False
    if engine == "fast" and device_of(model).type != "cuda":
        return False  # nothing is compiled on CPU
    seen = model.__dict__.setdefault("_promptintern_warm", set())
    key = (engine, len(input_ids), cache_len)
    if key in seen:
        return False
    device = device_of(model)
    batch = tokenizer.pad({"input_ids": input_ids}, return_tensors="pt").to(device)
    # A few decode steps: the first compiles, the next ones record and replay the CUDA graph.
    generate_fixed(model, tokenizer, batch, 4, engine, cache_len)
    sync_device(device)
    seen.add(key)
    return True


def eos_token_ids(tokenizer, eos_strings: tuple[str, ...] = ("<|im_end|>",)) -> set[int]:
    """The token ids that end a row: the tokenizer's end of sequence and the end-of-turn tokens it knows."""
    vocab = tokenizer.get_vocab()
    ids = {tokenizer.eos_token_id} | {vocab[s] for s in eos_strings if s in vocab}
    ids.discard(None)
    return ids


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int = 128,
    stop: list[str] | None = None,
    batch_size: int = 8,
    eos_strings: tuple[str, ...] = ("<|im_end|>",),
    progress: bool = False,
    engine: str = "hf",
    prefix=None,
) -> list[Generation]:
    """Greedy decoding of rendered prompts (already chat-formatted). Returns one Generation per prompt, in order.
    ``engine`` is one of ENGINES (see there). ``prefix``: a promptintern.prefix_cache.PrefixKV that every prompt
    starts with (encoded with this model): its KV cache is reused for every batch and only the rest of each
    prompt is prefilled."""

    check_engine(engine)
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_ids = eos_token_ids(tokenizer, eos_strings)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if prefix is not None:
        check_prefix(model, prefix, encoded)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    cache_len = static_cache_len([len(e) for e in encoded], max_new_tokens)
    results: list[Generation | None] = [None] * len(prompts)
    bar = Bar("samples generated", len(prompts), "generate" if progress else None)
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        warm_up(model, tokenizer, [encoded[i] for i in idx], engine, cache_len)
        batch = pad_batch(tokenizer, [encoded[i] for i in idx], device, prefix)
        if engine == "fast":
            new, ttft, e2e = _fast_batch(model, tokenizer, batch, max_new_tokens, sorted(eos_ids), stop, cache_len,
                                         prefix)
        else:
            new, ttft, e2e = _hf_batch(model, tokenizer, batch, max_new_tokens, sorted(eos_ids), stop, engine,
                                       cache_len, prefix)
        for row, i in zip(new.tolist(), idx, strict=True):
            n_out, reason = finish_row(tokenizer, row, eos_ids, stop)
            raw = tokenizer.decode(row[:n_out], skip_special_tokens=True)
            results[i] = Generation(
                text=cut_at_stop(raw, stop),
                prompt_tokens=len(encoded[i]),
                output_tokens=n_out,
                ttft_s=ttft,
                e2e_s=e2e,
                batch_size=len(idx),
                batch_index=start // batch_size,
                raw_text=raw,
                stop_reason=reason,
                cached_tokens=prefix.tokens if prefix is not None else 0,
            )
        bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


def check_prefix(model, prefix, encoded: list[list[int]]) -> None:
    """A prefix cache is used only with the model it was encoded with, on prompts that start with it."""
    prefix.check(model)
    n = prefix.tokens
    bad = [i for i, e in enumerate(encoded) if e[:n] != prefix.ids or len(e) <= n]
    if bad:
        raise ValueError(f"prompt {bad[0]} (of {len(encoded)}) does not start with the cached prefix "
                         f"({n} tokens) followed by its own text")


def _hf_batch(model, tokenizer, batch, max_new_tokens, eos_ids, stop, engine, cache_len, prefix=None):
    """One batch through `generate`: (new token ids, TTFT seconds, end-to-end seconds). With a prefix, the copy
    of its KV cache for this batch is inside the timings."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    device = device_of(model)
    width = batch["input_ids"].shape[1]
    with torch.inference_mode():
        clock = _FirstTokenClock(device)
        sync_device(device)
        t0 = clock.start = time.perf_counter()
        extra = prefix_kwargs(model, engine, batch["input_ids"].shape[0], cache_len, prefix)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(eos_ids),
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([clock]),
            # Stop each row at the task's stop strings, found in its continuation only (never in the prompt).
            **({"stopping_criteria": StoppingCriteriaList([continuation_criterion(tokenizer, stop, width)])}
               if stop else {}),
            **extra,
        )
        sync_device(device)
        e2e = time.perf_counter() - t0
        ttft = (clock.first or time.perf_counter()) - t0
    return out[:, width:], ttft, e2e


def _fast_batch(model, tokenizer, batch, max_new_tokens, eos_ids, stop, cache_len, prefix=None):
    """One batch through the lean static-cache loop: (new token ids, TTFT seconds, end-to-end seconds)."""
    from .fast_decode import fast_greedy

    def stopped(tokens) -> list[bool]:
        return rows_stopped(tokenizer, tokens, stop)

    device = device_of(model)
    sync_device(device)
    t0 = time.perf_counter()
    new, ttft = fast_greedy(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                            eos_ids=eos_ids, pad_id=tokenizer.pad_token_id, cache_len=cache_len,
                            stopped=stopped if stop else None, prefix=prefix)
    sync_device(device)
    return new, ttft, time.perf_counter() - t0


def finish_row(tokenizer, row: list[int], eos_ids, stop: list[str] | None) -> tuple[int, str]:
    """(tokens generated, why generation ended) for one row of new token ids (padding after its end): the end of
    turn counts as a token; a stop string ends the row at the token that completes it."""
    n_eos = next((k + 1 for k, t in enumerate(row) if t in eos_ids), None)
    n = n_eos or len(row)
    n_stop = stop_token_count(tokenizer, row[:n], stop)
    if n_stop is not None:
        return n_stop, "stop"
    return n, "eos" if n_eos else "length"
