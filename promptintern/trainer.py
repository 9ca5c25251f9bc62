"""Progressive LoRA fine-tuning: one stage = one pass over prompts built at that stage's keep fraction.

Stage t starts from stage t-1's adapter; every stage saves its adapter and its loss curve. Loss on the
completion only. bf16 autocast on CUDA, fp32 on CPU. Length-grouped batches keep padding small.
Deterministic under a seed (same data order, same LoRA init, same dropout masks on CPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class LoraSpec:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"

    def to_peft(self):
        from peft import LoraConfig, TaskType

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type=TaskType.CAUSAL_LM,
        )


@dataclass
class TrainConfig:
    lr: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_length: int = 1024
    max_grad_norm: float = 1.0
    group_by_length: bool = True
    seed: int = 0
    lora: LoraSpec = field(default_factory=LoraSpec)
    progress: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainConfig:
        d = dict(d or {})
        lora = LoraSpec(**d.pop("lora", {}) or {})
        return cls(lora=lora, **d)


@dataclass
class StageResult:
    adapter_dir: str
    losses: list[float]
    steps: int
    train_tokens: int
    target_tokens: int
    seconds: float
    tokens_per_second: float
    truncated_examples: int

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batches(records: list[dict], batch_size: int, group_by_length: bool, rng: random.Random) -> list[list[dict]]:
    """Shuffle; with grouping, sort within chunks of 50 batches by length so a batch holds similar lengths."""
    order = list(records)
    rng.shuffle(order)
    if group_by_length:
        chunk = batch_size * 50
        order = [
            r
            for i in range(0, len(order), chunk)
            for r in sorted(order[i : i + chunk], key=lambda r: len(r["input_ids"]), reverse=True)
        ]
    out = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(out)
    return out


def collate(batch: list[dict], pad_id: int, device):
    import torch

    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, r in enumerate(batch):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def completion_loss(model, ids, mask, labels):
    """Next-token cross-entropy on the completion only, computing the LM head only where there are labels.

    With long prompts and short answers most positions carry no loss; skipping their vocabulary projection
    (49k x 576 for SmolLM2) saves a fifth of the forward and backward work. Models whose head does more than
    a linear projection (logit soft-capping) take the plain path.
    """
    import torch.nn.functional as F

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(lm.config, "final_logit_softcapping", None) or not hasattr(lm, "get_decoder"):
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss
    hidden = lm.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = lm.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), target[keep])


def attach_adapter(model, cfg: TrainConfig, init_adapter: str | None):
    """Wrap a base model with a fresh LoRA adapter, or with the previous stage's adapter, trainable."""
    from peft import PeftModel, get_peft_model

    if init_adapter:
        return PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    seed_everything(cfg.seed)  # the LoRA A matrices are initialised randomly
    return get_peft_model(model, cfg.lora.to_peft())


def train_stage(model, tokenizer, records: list[dict], cfg: TrainConfig, out_dir: str | Path, desc: str = "stage"):
    """Train a PEFT model in place on tokenized records (completion-only loss); save adapter and loss curve."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def step(batch, device):
        ids, labels, mask = collate(batch, pad_id, device)
        loss = completion_loss(model, ids, mask, labels)
        return loss, {"tokens": int(mask.sum()), "target_tokens": int((labels != -100).sum())}

    return train_loop(model, records, cfg, out_dir, step, desc=desc)


def train_loop(model, records: list[dict], cfg: TrainConfig, out_dir: str | Path, step, *, desc: str = "stage",
               postfix: str = "loss", curve_extra: dict | None = None) -> StageResult:
    """The one optimisation loop of every LoRA objective: seeded length-grouped batches, AdamW with linear
    warmup/decay, gradient accumulation and clipping, bf16 autocast on CUDA, a progress bar, and the adapter
    and loss curve saved to out_dir. ``step(batch, device) -> (loss, counts)`` computes one batch's loss;
    counts has ``tokens`` (processed) and ``target_tokens`` (with loss), plus any extra counters."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    out_dir = Path(out_dir)
    device = next(model.parameters()).device
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    epochs_full = max(1, math.ceil(cfg.epochs))
    plan = []
    for epoch in range(epochs_full):
        ep_batches = batches(records, cfg.batch_size, cfg.group_by_length, rng)
        if epoch == epochs_full - 1 and cfg.epochs < epochs_full:
            ep_batches = ep_batches[: max(1, round(len(ep_batches) * (cfg.epochs - epoch)))]
        plan.extend(ep_batches)
    steps = math.ceil(len(plan) / cfg.grad_accum)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), steps)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    losses: list[float] = []
    counts: dict[str, int] = {"tokens": 0, "target_tokens": 0}
    model.train()
    start = time.perf_counter()
    bar = _progress(len(plan), desc, cfg.progress)
    opt.zero_grad(set_to_none=True)
    running, accum_n = 0.0, 0
    for i, batch in enumerate(plan):
        with autocast:
            loss, batch_counts = step(batch, device)
        (loss / cfg.grad_accum).backward()
        running += loss.item()
        accum_n += 1
        for k, v in batch_counts.items():
            counts[k] = counts.get(k, 0) + v
        if accum_n == cfg.grad_accum or i == len(plan) - 1:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(running / accum_n)
            running, accum_n = 0.0, 0
            if bar is not None:
                bar.set_postfix({postfix: f"{losses[-1]:.3f}"})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokens = counts.pop("tokens")
    result = StageResult(
        adapter_dir=str(out_dir),
        losses=losses,
        steps=len(losses),
        train_tokens=tokens,
        target_tokens=counts.pop("target_tokens"),
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        truncated_examples=sum(1 for r in records if r.get("truncated_tokens", 0) > 0),
    )
    curve = {**result.to_dict(), **counts, **(curve_extra or {})}
    (out_dir / "loss_curve.json").write_text(json.dumps(curve, indent=1))
    return result


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
