"""Batched greedy generation with per-sample token counts and timings.

Prompts are left-padded and sorted by length so a batch holds similar lengths. For each batch we time the
prefill (time to first token: one forward pass over the prompts) and the whole generate call; each sample
records the batch it ran in, so latency tables can tell batch-1 latency from batched throughput.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    output_tokens: int
    ttft_s: float
    e2e_s: float
    batch_size: int
    batch_index: int

    def to_dict(self) -> dict:
        return asdict(self)


def cut_at_stop(text: str, stop: list[str]) -> str:
    cut = len(text)
    for s in stop or []:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


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
) -> list[Generation]:
    """Greedy decoding of rendered prompts (already chat-formatted). Returns one Generation per prompt, in order."""
    import torch
    from transformers import LogitsProcessorList

    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_ids = {tokenizer.eos_token_id}
    vocab = tokenizer.get_vocab()
    eos_ids |= {vocab[s] for s in eos_strings if s in vocab}
    eos_ids.discard(None)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    results: list[Generation | None] = [None] * len(prompts)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="generate", leave=False, dynamic_ncols=True)
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(device)
        with torch.inference_mode():
            clock = _FirstTokenClock(device)
            sync_device(device)
            t0 = clock.start = time.perf_counter()
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(eos_ids),
                pad_token_id=tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([clock]),
                # Stop decoding at the task's stop strings: tokens past them would inflate every timing.
                **({"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}),
            )
            sync_device(device)
            e2e = time.perf_counter() - t0
            ttft = (clock.first or time.perf_counter()) - t0
        new = out[:, batch["input_ids"].shape[1] :]
        for row, i in zip(new.tolist(), idx, strict=True):
            n_out = next((k + 1 for k, t in enumerate(row) if t in eos_ids), len(row))
            text = tokenizer.decode(row[:n_out], skip_special_tokens=True)
            results[i] = Generation(
                text=cut_at_stop(text, stop or []),
                prompt_tokens=len(encoded[i]),
                output_tokens=n_out,
                ttft_s=ttft,
                e2e_s=e2e,
                batch_size=len(idx),
                batch_index=start // batch_size,
            )
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return results  # type: ignore[return-value]
