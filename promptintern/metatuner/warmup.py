"""MetaTuner's warm-ups: the actor's SFT (a standard LoRA, merged before MetaTuner training) and the generator's
SFT towards its warm-up target; both cached by :func:`warmup_keys` and shared by every variant of a grid."""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..hashing import content_id
from ..progress import Bar
from ..prompts import Prompt, encode_for_training
from ..trainer import batches, collate, completion_loss, seed_everything
from .config import MetaTunerConfig, first_paragraph
from .selection import relevant_sentences

if TYPE_CHECKING:
    from .train import History, MetaTuner, TrainItem


def _lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def actor_warmup(m_lm, tok, cfg: MetaTunerConfig, items: list[TrainItem], seed_prompt: str, *, seed: int, chat: bool,
                 out_dir: Path, cache: Path | None):
    """SFT warm-up of M on (p̃, x_i) -> y_i with a standard LoRA; returns (merged model, loss curve dict|None)."""
    from peft import PeftModel

    from ..trainer import TrainConfig, attach_adapter, train_stage

    if cfg.m_warmup_epochs <= 0:
        return m_lm, None
    tcfg = TrainConfig.from_dict({
        "lr": cfg.m_warmup_lr, "epochs": cfg.m_warmup_epochs, "batch_size": cfg.batch_size,
        "max_length": cfg.max_length, "seed": seed, "lora": dict(cfg.m_warmup_lora), "progress": cfg.progress,
    })
    target = out_dir / "actor_warmup"
    lock = _lock(cache) if cache is not None else contextlib.nullcontext()
    with lock:
        if cache is None or not (cache / "adapter_model.safetensors").is_file():
            seed_everything(seed)
            recs = [encode_for_training(Prompt(template=seed_prompt, query=it.query, answer=it.target), tok,
                                        cfg.max_length, chat) for it in items]
            peft_model = attach_adapter(m_lm, tcfg, None)
            train_stage(peft_model, tok, recs, tcfg, cache or target, desc="metatuner actor warm-up")
            m_lm = peft_model.merge_and_unload()
        else:
            m_lm = PeftModel.from_pretrained(m_lm, str(cache)).merge_and_unload()
    if cache is not None:
        shutil.copytree(cache, target, dirs_exist_ok=True)
    curve_path = target / "loss_curve.json"
    if not curve_path.is_file():
        return m_lm, None
    curve = json.loads(curve_path.read_text())
    # where the warm-up adapter lies, relative to the unit's artefact folder (the cache's path is this machine's)
    curve["adapter_dir"] = target.name
    return m_lm, curve


def generator_warmup(mt: MetaTuner, items: list[TrainItem], seed_prompt: str, *, seed: int, cache: Path | None,
                     history: History) -> None:
    """SFT warm-up of G (all "live" slots) on (p̃, x_i) -> warm-up target; cached as the slot tensors."""
    from safetensors.torch import load_file, save_file

    cfg = mt.cfg
    if cfg.g_warmup_epochs <= 0 or not cfg.prompt_branch:
        return
    file = cache / "generator_train_slots.safetensors" if cache is not None else None
    lock = _lock(cache) if cache is not None else contextlib.nullcontext()
    with lock:
        if file is not None and file.is_file():
            state = load_file(str(file))
            own = dict(mt.G.named_parameters())
            with torch.no_grad():
                for n, t in state.items():
                    own[n].copy_(t.to(own[n].device))
            curve = cache / "generator_warmup_curve.json"
            history.generator_warmup = json.loads(curve.read_text())["losses"] if curve.is_file() else []
            return
        if cfg.g_warmup_target == "relevant":  # a target per query
            targets = [relevant_sentences(seed_prompt, it.query, mt.tok, cfg.max_prompt_tokens) for it in items]
        else:
            target = first_paragraph(seed_prompt) if cfg.g_warmup_target == "first_paragraph" else seed_prompt
            ids = mt.tok(target, add_special_tokens=False)["input_ids"][: cfg.max_prompt_tokens]
            targets = [mt.tok.decode(ids)] * len(items)
        recs = [encode_for_training(mt.g_prompt(seed_prompt, it.query, t), mt.tok, cfg.max_length, mt.chat)
                for it, t in zip(items, targets, strict=True)]
        params = mt.G.phi_s_params() + mt.G.phi_p_params()
        losses = _sft(mt, recs, params, cfg.g_warmup_epochs, cfg.lr_g, seed, "metatuner generator warm-up")
        history.generator_warmup = losses
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            state = {n: p.detach().cpu().contiguous() for n, p in mt.G.named_parameters() if n.endswith(".live")}
            save_file(state, str(file))
            (cache / "generator_warmup_curve.json").write_text(json.dumps({"losses": losses}))


def _sft(mt: MetaTuner, recs: list[dict], params, epochs: float, lr: float, seed: int, desc: str) -> list[float]:
    from transformers import get_linear_schedule_with_warmup

    cfg = mt.cfg
    rng = random.Random(seed)
    plan = _epoch_plan(recs, cfg.batch_size, epochs, rng)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * len(plan)), max(1, len(plan)))
    losses = []
    bar = Bar("generator warm-up batches", len(plan), desc if cfg.progress else None)
    with _autocast(mt.device), mt.G.mode("live", "live"):
        for batch in plan:
            ids, labels, mask = collate(batch, mt.pad_id, mt.device)
            loss = completion_loss(mt.G.lm, ids, mask, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(1)
    bar.close()
    return losses


def warmup_keys(model: str, cfg: MetaTunerConfig, items: list[TrainItem], seed_prompt: str, seed: int, chat: bool,
                task_name: str, generator_model: str | None = None) -> dict[str, str]:
    common = {"model": model, "seed": seed, "task": task_name, "ids": [it.id for it in items], "seed_prompt": seed_prompt,
              "chat": chat, "batch_size": cfg.batch_size, "max_length": cfg.max_length}
    actor = {**common, "epochs": cfg.m_warmup_epochs, "lr": cfg.m_warmup_lr, "lora": cfg.m_warmup_lora}
    # G's warm-up trains the generator: its model is the generator's (the same key as before when G = M)
    g_model = {"model": generator_model} if generator_model and generator_model != model else {}
    # the live slots' initial values depend on G's layout (k shared layers, a separate encoder): rows that differ
    # there get their own warm-up (the default layout keeps its old key)
    if cfg.share_layers != 0.25 or cfg.ablation == "no_share":
        g_model["layout"] = {"share_layers": cfg.share_layers, "ablation": cfg.ablation,
                             "no_share_encoder": cfg.no_share_encoder}
    gen = {**common, **g_model, "epochs": cfg.g_warmup_epochs, "target": cfg.g_warmup_target, "lr": cfg.lr_g,
           "r": cfg.g_lora_r, "alpha": cfg.g_lora_alpha, "targets": cfg.g_lora_targets,
           "max_prompt_tokens": cfg.max_prompt_tokens, "rewrite": cfg.rewrite_instruction,
           "weight_decay": cfg.weight_decay, "warmup_ratio": cfg.warmup_ratio, "clip": cfg.max_grad_norm}
    return {"actor": "actor-" + content_id(actor), "generator": "generator-" + content_id(gen)}


def _epoch_plan(records: list, batch_size: int, epochs: float, rng: random.Random) -> list[list]:
    """Batches for ``epochs`` passes (a fractional last pass keeps that share of its batches)."""
    plan = []
    full = max(1, math.ceil(epochs))
    for e in range(full):
        eb = batches(records, batch_size, False, rng) if records and "input_ids" in records[0] else _plain_batches(
            records, batch_size, rng)
        if e == full - 1 and epochs < full:
            eb = eb[: max(1, round(len(eb) * (epochs - e)))]
        plan.append(eb)
    return [b for eb in plan for b in eb]


def _plain_batches(records: list, batch_size: int, rng: random.Random) -> list[list]:
    order = list(records)
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
