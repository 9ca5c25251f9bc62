"""Progressive LoRA fine-tuning: one stage = one pass over prompts built at that stage's keep fraction.

Stage t starts from stage t-1's adapter; every stage saves its adapter and its loss curve. Loss on the
completion only. Precision (``TrainConfig.precision``): bf16 autocast with fp32 master weights where the
device computes bf16 natively (CUDA; a CPU with AVX512-BF16 or AMX), fp32 elsewhere or when asked
(:func:`resolve_precision`); the stage records which ran. Length-grouped batches keep padding small; packing
(``TrainConfig.packing``) removes most of what is left: a batch's records are packed into as few rows as fit,
each record attending only to itself. Deterministic under a seed (same data order, same LoRA init, same
dropout masks on CPU). Each stage reports real tokens/s, padded positions and model FLOPs utilization
(:mod:`promptintern.flops`).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import flops
from .fields import boolean, integer, list_of, number, one_of, setting, text
from .progress import Bar

PRECISIONS = ("auto", "bf16", "fp32")
BUDGETS = ("matched", "per_stage")


@dataclass
class LoraSpec:
    r: int = setting(8, spec=integer(1))
    alpha: int = setting(16, spec=number(0, lo_open=True))
    dropout: float = setting(0.05, spec=number(0, 1, hi_open=True))
    target_modules: str | list[str] = setting(
        "all-linear", spec=one_of(text(), list_of(text(), what="a non-empty list of module names")))

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
    """How a LoRA stage trains: the library API's and the harness's defaults (an experiment's ``train`` section is
    these fields, :mod:`promptintern.harness.settings`)."""

    lr: float = setting(3e-4, spec=number(0, lo_open=True))
    epochs: float = setting(1, spec=number(0, lo_open=True))
    batch_size: int = setting(4, spec=integer(1))
    grad_accum: int = setting(1, spec=integer(1))
    warmup_ratio: float = setting(0.1, spec=number(0, 1))
    weight_decay: float = setting(0.0, spec=number(0))
    max_length: int = setting(1024, spec=integer(1))
    max_grad_norm: float = setting(1.0, spec=number(0))
    group_by_length: bool = setting(True, spec=boolean())
    # Pack each batch's records into as few rows as fit (same records per step, same loss; less padding).
    packing: bool = setting(False, spec=boolean())
    # Recompute each decoder layer's activations in the backward pass instead of keeping them: less memory for
    # long prompts (benchmarks/checkpointing_memory.py measures both), at the cost of a second forward pass.
    gradient_checkpointing: bool = setting(False, spec=boolean())
    # Optimizer steps of this stage, exactly (epochs are repeated, reshuffled, until reached); None = ``epochs``.
    # The harness sets it to give every method of a grid the same training budget (train.budget: matched).
    max_steps: int | None = None
    # The harness's budget policy (train.budget), recorded with the stage, unused here. matched: every fine-tuning
    # chain of a (model, train task, seed) gets the optimizer steps of the longest (per_stage x its stages);
    # per_stage: every stage runs `epochs` (the paper's recipe: T stages = T x steps)
    budget: str = setting("matched", spec=text(BUDGETS))
    # "auto": bf16 autocast (fp32 master weights) where the device computes bf16 natively (CUDA, AVX512-BF16/AMX
    # CPUs), else fp32; "fp32" turns it off, "bf16" forces it. Part of a stage's id: it changes the adapter
    # (within tolerance)
    precision: str = setting("auto", spec=text(PRECISIONS))
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
    # Added later; defaults keep older readers and writers working.
    padded_tokens: int | None = None  # positions computed, padding included (None: the step did not report it)
    model_flops: float | None = None  # promptintern.flops.training_flops (None: not a llama-like config)
    mfu: float | None = None  # model FLOPs/s over the accelerator's peak dense bf16 (None on CPU / unknown GPU)
    precision: str | None = None  # what the optimizer steps computed in: "bf16" (autocast) or "fp32"

    def to_dict(self) -> dict:
        return asdict(self)



def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX: oneDNN's bf16 kernels), so autocast is faster."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device) -> str:
    """"bf16" or "fp32" for ``device``: "auto" is bf16 on CUDA and on a CPU with native bf16, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()) else "fp32"


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def planned_steps(n_records: int, cfg: TrainConfig) -> int:
    """Optimizer steps :func:`train_loop` takes on ``n_records`` records with ``cfg`` (``max_steps`` if set)."""
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    per_epoch = math.ceil(n_records / cfg.batch_size)
    full = max(1, math.ceil(cfg.epochs))
    micro = per_epoch * (full - 1)
    micro += max(1, round(per_epoch * (cfg.epochs - full + 1))) if cfg.epochs < full else per_epoch
    return math.ceil(micro / cfg.grad_accum)


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


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices into ``lengths`` grouped into as few rows of at most ``capacity`` tokens as
    the heuristic finds (a longer item gets a row of its own). Deterministic: ties keep input order."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        for j, room in enumerate(free):
            if n <= room:
                rows[j].append(i)
                free[j] -= n
                break
        else:
            rows.append([i])
            free.append(capacity - n)
    return rows


def pack_rows(lengths: list[int], max_length: int, attn_break_even: float | None = None) -> list[list[int]]:
    """Rows for a batch: first-fit decreasing (:func:`pack`) at the row capacity, at most
    ``max(max_length, longest)``, that minimises the work of the padded batch, rows x width x (1 + width /
    attn_break_even). Rows are padded to the widest, so the fewest rows is not always the least work (four
    records of 130, 129, 128, 127 tokens in rows of 256 need three rows of width 256, more than four of 130).
    ``attn_break_even`` (:func:`promptintern.flops.attention_break_even`) adds the attention an explicit
    mask computes over the whole row, padding and other records included; None counts positions only.
    Capacities tried: ceil(total / k) for k = 1..n rows, clipped to [longest, bound]; the longest record alone
    is one of them, so packing never computes more than the padded layout."""
    longest, bound, total = max(lengths), max(max_length, *lengths), sum(lengths)
    caps = sorted({min(bound, max(longest, -(-total // k))) for k in range(1, len(lengths) + 1)})
    best, best_cost = None, math.inf
    for cap in caps:
        rows = pack(lengths, cap)
        width = max(sum(lengths[i] for i in row) for row in rows)
        cost = len(rows) * width * (1 + width / attn_break_even if attn_break_even else 1)
        if cost < best_cost:
            best, best_cost = rows, cost
    return best


def collate_packed(batch: list[dict], pad_id: int, device, max_length: int, attn_break_even: float | None = None):
    """Pack a batch's records into rows of at most ``max(max_length, longest record)`` tokens (first-fit
    decreasing, :func:`pack_rows`) and return ``(ids, labels, position_ids)``, with no attention mask.

    Position ids restart at 0 with each record, which is how transformers recognises packed sequences
    (``masking_utils.find_packed_sequence_indices``: a new segment wherever the position does not step by 1)
    and builds a block-diagonal causal mask, so no token attends across records. Each record keeps its own
    labels, and its first token's label is -100, so nothing is predicted across a boundary. Rows shorter than
    the widest are right-padded: pad tokens have label -100 and position ids 0, 1, ... of their own, so they
    form a segment of their own after the real tokens; being later in the row and in another segment, no real
    token attends to them."""
    import torch

    lengths = [len(r["input_ids"]) for r in batch]
    rows = pack_rows(lengths, max_length, attn_break_even)
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for k, row in enumerate(rows):
        at = 0
        for i in row:
            n = lengths[i]
            ids[k, at : at + n] = torch.tensor(batch[i]["input_ids"])
            labels[k, at : at + n] = torch.tensor(batch[i]["labels"])
            labels[k, at] = -100
            pos[k, at : at + n] = torch.arange(n)
            at += n
        pos[k, at:] = torch.arange(width - at)
    return ids.to(device), labels.to(device), pos.to(device)


def completion_loss(model, ids, mask, labels, position_ids=None):
    """Next-token cross-entropy on the completion only, computing the LM head only where there are labels.

    With long prompts and short answers most positions carry no loss; skipping their vocabulary projection
    (49k x 576 for SmolLM2) saves a fifth of the forward and backward work. Models whose head does more than
    a linear projection (logit soft-capping) take the plain path. Packed rows (:func:`collate_packed`) pass
    ``mask=None`` and their ``position_ids``. ``use_cache=False``: a training pass needs no KV cache, and with
    one transformers does not look for packed sequences (plain causal mask across records).
    """
    import torch.nn.functional as F

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(lm.config, "final_logit_softcapping", None) or not hasattr(lm, "get_decoder"):
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids, labels=labels, use_cache=False).loss
    hidden = lm.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                              use_cache=False).last_hidden_state
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
    break_even = _attn_break_even(model) if cfg.packing else None

    def step(batch, device):
        if cfg.packing:
            ids, labels, pos = collate_packed(batch, pad_id, device, cfg.max_length, break_even)
            loss = completion_loss(model, ids, None, labels, position_ids=pos)
        else:
            ids, labels, mask = collate(batch, pad_id, device)
            loss = completion_loss(model, ids, mask, labels)
        # Counted from the records, not the tensors: no device synchronisation per step.
        return loss, {"tokens": sum(len(r["input_ids"]) for r in batch), "padded_tokens": ids.numel(),
                      "target_tokens": sum(sum(1 for t in r["labels"][1:] if t != -100) for r in batch)}

    return train_loop(model, records, cfg, out_dir, step, desc=desc, curve_extra={"packing": cfg.packing})


def _attn_break_even(model) -> float | None:
    """Row width at which masked attention costs as much as the linear layers, for attention implementations
    that compute the whole row (eager, sdpa with an explicit mask); None for varlen kernels (flash attention),
    which skip other records, or for a config the FLOPs formula does not know."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(lm.config, "_attn_implementation", None) not in ("eager", "sdpa"):
        return None
    try:
        return flops.attention_break_even(lm.config)
    except (AttributeError, TypeError, ValueError):
        return None


def train_loop(model, records: list[dict], cfg: TrainConfig, out_dir: str | Path, step, *, desc: str = "stage",
               postfix: str = "loss", curve_extra: dict | None = None) -> StageResult:
    """The one optimisation loop of every LoRA objective: seeded length-grouped batches, AdamW with linear
    warmup/decay, gradient accumulation and clipping, bf16 autocast on CUDA, a progress bar, and the adapter
    and loss curve saved to out_dir. ``step(batch, device) -> (loss, counts)`` computes one batch's loss;
    counts has ``tokens`` (real tokens processed, padding excluded) and ``target_tokens`` (with loss), optionally
    ``padded_tokens`` (positions computed, padding included) and ``forward_only_tokens`` (part of ``tokens``
    that runs forward only; prompt baking's ``teacher_tokens`` are taken as such), plus any extra counters.

    The result carries model FLOPs (:func:`promptintern.flops.training_flops`, from the records' lengths and the
    counts) and MFU against the accelerator's published peak (None on CPU or an unknown GPU); the loss curve
    also records the inputs of that arithmetic."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    out_dir = Path(out_dir)
    device = next(model.parameters()).device
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    plan = []
    if cfg.max_steps is not None:  # exactly max_steps optimizer steps: whole reshuffled epochs, then a part of one
        need = int(cfg.max_steps) * cfg.grad_accum
        while len(plan) < need:
            plan.extend(batches(records, cfg.batch_size, cfg.group_by_length, rng))
        plan = plan[:need]
    else:
        epochs_full = max(1, math.ceil(cfg.epochs))
        for epoch in range(epochs_full):
            ep_batches = batches(records, cfg.batch_size, cfg.group_by_length, rng)
            if epoch == epochs_full - 1 and cfg.epochs < epochs_full:
                ep_batches = ep_batches[: max(1, round(len(ep_batches) * (cfg.epochs - epoch)))]
            plan.extend(ep_batches)
    steps = math.ceil(len(plan) / cfg.grad_accum)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), steps)
    precision = resolve_precision(cfg.precision, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    losses: list[float] = []
    counts: dict[str, int] = {"tokens": 0, "target_tokens": 0}
    if cfg.gradient_checkpointing:
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    start = time.perf_counter()
    bar = Bar("training batches", len(plan), desc if cfg.progress else None)
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
            bar.set_postfix({postfix: f"{losses[-1]:.3f}"})
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokens = counts.pop("tokens")
    target_tokens = counts.pop("target_tokens")
    padded_tokens = counts.pop("padded_tokens", None)
    forward_only = counts.get("forward_only_tokens", counts.get("teacher_tokens", 0))
    lora_params = sum(p.numel() for p in params)
    seq_len = flops.attended_length(len(r[k]) for batch in plan for r in batch
                                    for k in ("input_ids", "teacher_input_ids") if k in r)
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        model_flops = flops.training_flops(lm.config, lora_params, tokens, target_tokens, seq_len, forward_only)
    except (AttributeError, TypeError, ValueError):  # not a decoder config the formula knows
        model_flops = None
    peaks = flops.accelerator_peaks(device)
    result = StageResult(
        adapter_dir=str(out_dir),
        losses=losses,
        steps=len(losses),
        train_tokens=tokens,
        target_tokens=target_tokens,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        truncated_examples=sum(1 for r in records if r.get("truncated_tokens", 0) > 0),
        padded_tokens=padded_tokens,
        model_flops=model_flops,
        mfu=flops.mfu(model_flops, seconds, peaks),
        precision=precision,
    )
    flops_inputs = {"lora_params": lora_params, "attended_length": seq_len, "forward_only_tokens": forward_only,
                    "accelerator": {k: peaks[k] for k in ("name", "device_name", "bf16_tflops", "vendor_spec",
                                                          "source", "retrieved") if k in peaks} if peaks else None}
    curve = {**result.to_dict(), **counts, "flops_inputs": flops_inputs, **(curve_extra or {})}
    (out_dir / "loss_curve.json").write_text(json.dumps(curve, indent=1))
    return result
