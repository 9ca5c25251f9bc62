"""MetaTuner training: SFT warm-ups, rollouts and D2, frozen-copy sync, variants I and J, save / load.

Order of one run (see ``README.md`` in this package for the reading of the paper behind each step):

1. Actor warm-up: a standard LoRA SFT of M on (p̃, x_i) -> y_i (the PromptIntern trainer), merged into M.
2. Generator warm-up: LoRA SFT of G on (p̃, x_i) -> warm-up target (the seed's first paragraph by default).
3. For each epoch: every ``refresh_every`` epochs sync φ_p' <- φ_p (when ``sync_every`` = 0), sample
   ``n_rollouts`` prompts per query from (φ_s, φ_p'), let M (with F's LoRA) answer, keep the prompts whose
   answer reaches the task's threshold: D2. Then one pass over the training queries in batches:
   - task loss  L_task = CE(M_{θ_i}(p_i, x_i), y_i), p_i greedy from (φ_s, φ_p') (discrete, no gradient),
     θ_i = F(h_i), h_i = pool(φ_s(p̃, x_i)): gradients reach F and φ_s (through h_i), never φ_p or φ_p'.
   - regularization L_reg = CE(G(p̃, x_i) -> p_i*) on a batch of D2, through φ_s and φ_p.
   - variant J: one optimizer step on L_task + α L_reg; variant I: `alternate_every` steps on L_task (one per batch), then as many on α L_reg.
4. Final sync; save G's LoRA slots, F, the actor warm-up adapter and the curves.

Warm-ups depend only on (model, seed, task items, seed prompt, warm-up settings); with ``warmup_root`` they
are cached there (under a file lock) and shared by every variant and ablation of a grid.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..progress import Bar
from ..prompts import Prompt, encode_for_training, render
from ..trainer import collate, completion_loss, seed_everything
from .config import MetaTunerConfig
from .modules import Actor, Generator, HyperLoRA, select_factors
from .selection import best_rollouts, relevant_sentences, select_d2
from .warmup import _autocast, _plain_batches, actor_warmup, generator_warmup, warmup_keys

ARTEFACT_FILES = ("meta.json", "generator_lora.safetensors")


@dataclass
class TrainItem:
    id: str
    query: str  # task.format_query(ex)
    target: str  # task.format_target(ex)
    example: object = None  # promptintern.task_types.Example, for scoring rollouts


@dataclass
class History:
    steps: list[dict] = field(default_factory=list)
    rollouts: list[dict] = field(default_factory=list)
    syncs: list[int] = field(default_factory=list)
    generator_warmup: list[float] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "rollouts": self.rollouts,
            "syncs": self.syncs,
            "generator_warmup_losses": self.generator_warmup,
            "seconds": self.seconds,
        }

class MetaTuner:
    """G (with φ_s / φ_p / φ_p'), F and M together, with the operations training and inference need."""

    def __init__(self, cfg: MetaTunerConfig, G: Generator, M: Actor, F: HyperLoRA | None, tokenizer, chat: bool = True):
        self.cfg, self.G, self.M, self.F, self.tok, self.chat = cfg, G, M, F, tokenizer, chat
        self.device = next(G.lm.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        vocab = tokenizer.get_vocab()
        self.eos_ids = sorted({i for i in (tokenizer.eos_token_id, vocab.get("<|im_end|>")) if i is not None})

    @classmethod
    def build(cls, cfg: MetaTunerConfig, g_lm, m_lm, tokenizer, chat: bool = True) -> MetaTuner:
        n_layers = len(g_lm.model.layers)
        k = cfg.shared_layers(n_layers)
        G = Generator(g_lm, k, cfg.g_lora_r, cfg.g_lora_alpha, cfg.g_lora_targets, separate_encoder=cfg.separate_encoder)
        M = Actor(m_lm, cfg.lora_targets, cfg.lora_scale)
        F = None
        if cfg.param_branch:
            F = HyperLoRA(g_lm.config.hidden_size, M.shapes(), cfg.lora_r, cfg.hyper_hidden)
            F.to(next(g_lm.parameters()).device)
        return cls(cfg, G, M, F, tokenizer, chat)

    # ------------------------------------------------------------------------------------------ text
    def g_prompt(self, seed: str, query: str, answer: str | None = None) -> Prompt:
        """G's input (p̃, x_i) as one user turn: the rewrite instruction, the seed prompt, the query."""
        user = f"{self.cfg.rewrite_instruction}\n\n### Instruction\n{seed.strip()}\n\n### Query\n{query.strip()}"
        return Prompt(query=user, answer=answer)

    def g_text(self, seed: str, query: str) -> str:
        return render(self.g_prompt(seed, query), self.tok, self.chat)

    def actor_prompt(self, prompt: str, query: str, answer: str | None = None) -> Prompt:
        """M's input: the generated prompt p_i in the template slot, then the query (PromptIntern's layout)."""
        return Prompt(template=prompt, query=query, answer=answer)

    def actor_text(self, prompt: str, query: str) -> str:
        return render(self.actor_prompt(prompt, query), self.tok, self.chat)

    def _ids(self, texts: list[str]):
        """Right-padded ids of rendered texts, cut from the left to max_length."""
        rows = [self.tok(t, add_special_tokens=False)["input_ids"][-self.cfg.max_length :] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    # ------------------------------------------------------------------------------------------ branches
    QUERY_MARK = "### Query\n"

    def query_mask(self, g_texts: list[str], mask: torch.Tensor) -> torch.Tensor:
        """1 on each row's query tokens (from the query's first token to the end of G's input), 0 elsewhere."""
        out = torch.zeros_like(mask)
        lengths = mask.long().sum(1).tolist()
        for i, t in enumerate(g_texts):
            at = t.rfind(self.QUERY_MARK)
            tail = t[at + len(self.QUERY_MARK):] if at >= 0 else t
            n = len(self.tok(tail, add_special_tokens=False)["input_ids"])
            out[i, max(0, lengths[i] - n): lengths[i]] = 1
        return out

    def hidden(self, g_texts: list[str]) -> torch.Tensor:
        ids, mask = self._ids(g_texts)
        pool_mask = self.query_mask(g_texts, mask) if self.cfg.pool == "query_mean" else None
        return self.G.encode(ids, mask, self.cfg.pool, pool_mask)

    def factors(self, g_texts: list[str]) -> dict | None:
        """Per-sample LoRA factors θ_i = F(h_i), or None without the parameter branch."""
        if self.F is None:
            return None
        return self.F(self.hidden(g_texts))

    def greedy_prompts(self, g_texts: list[str], *, decoder: str = "frozen", batch_size: int = 8):
        """p_i = G(p̃, x_i), greedy, with the upper layers on φ_p' ("frozen") or φ_p ("live"). Generations."""
        from ..generation import generate

        with self.G.mode(lower="live", upper=decoder):
            gens = generate(self.G.lm, self.tok, g_texts, max_new_tokens=self.cfg.max_prompt_tokens, batch_size=batch_size)
        for g in gens:
            g.text = g.text.strip()
        return gens

    @torch.no_grad()
    def sample_prompts(self, g_texts: list[str], n: int, batch_size: int = 8) -> list[list[str]]:
        """n sampled prompts per input from (φ_s, φ_p') — the rollouts' behaviour policy."""
        out: list[list[str]] = []
        self.tok.padding_side = "left"
        with self.G.mode(lower="live", upper="frozen"):
            for s in range(0, len(g_texts), batch_size):
                chunk = g_texts[s : s + batch_size]
                enc = self.tok(chunk, add_special_tokens=False, padding=True, return_tensors="pt").to(self.device)
                gen = self.G.lm.generate(
                    **enc,
                    do_sample=True,
                    temperature=self.cfg.rollout_temperature,
                    top_p=self.cfg.rollout_top_p,
                    top_k=0,
                    num_return_sequences=n,
                    max_new_tokens=self.cfg.max_prompt_tokens,
                    eos_token_id=self.eos_ids,
                    pad_token_id=self.pad_id,
                )
                texts = self.tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for i in range(len(chunk)):
                    out.append([t.strip() for t in texts[i * n : (i + 1) * n]])
        return out

    def actor_generate(self, texts: list[str], factors: dict | None = None, *, max_new_tokens: int, stop, batch_size: int,
                       factor_fn=None):
        """Greedy generation of M, each sample with its own LoRA factors: row i of ``factors`` for text i, or
        ``factor_fn(indices)`` called once per batch (so factors exist for one batch at a time).

        Batches are formed here (longest first, stable) and handed whole to :func:`generation.generate`, whose
        own length sort then keeps their order, so row j of a batch's factors belongs to prompt j.
        """
        from ..generation import generate

        lengths = [len(self.tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: lengths[i], reverse=True)
        results = [None] * len(texts)
        for b, s in enumerate(range(0, len(order), batch_size)):
            idx = order[s : s + batch_size]
            fac = factor_fn(idx) if factor_fn is not None else select_factors(factors, idx)
            with self.M.factors(fac):
                gens = generate(self.M.lm, self.tok, [texts[i] for i in idx], max_new_tokens=max_new_tokens,
                                stop=stop, batch_size=len(idx))
            if [g.prompt_tokens for g in gens] != [lengths[i] for i in idx]:
                raise RuntimeError("per-sample LoRA: generation batch order differs from the factor order")
            for i, g in zip(idx, gens, strict=True):
                g.batch_index = b
                results[i] = g
        return results

    # ------------------------------------------------------------------------------------------ losses
    def task_loss(self, items: list[TrainItem], prompts: list[str], seed: str) -> torch.Tensor:
        """CE of M_{θ_i}(p_i, x_i) on y_i; gradient reaches F and the encoder (φ_s) through h_i only."""
        g_texts = [self.g_text(seed, it.query) for it in items]
        fac = self.factors(g_texts)
        recs = [
            encode_for_training(self.actor_prompt(p, it.query, it.target), self.tok, self.cfg.max_length, self.chat)
            for p, it in zip(prompts, items, strict=True)
        ]
        ids, labels, mask = collate(recs, self.pad_id, self.device)
        with self.M.factors(fac):
            return completion_loss(self.M.lm, ids, mask, labels)

    def reg_loss(self, pairs: list[tuple[str, str]], seed: str) -> torch.Tensor:
        """Supervised regularization: next-token CE of G (φ_s + φ_p) on D2 pairs (query, p_i*)."""
        recs = [encode_for_training(self.g_prompt(seed, q, p), self.tok, self.cfg.max_length, self.chat) for q, p in pairs]
        ids, labels, mask = collate(recs, self.pad_id, self.device)
        with self.G.mode(lower="live", upper="live"):
            return completion_loss(self.G.lm, ids, mask, labels)

    # ------------------------------------------------------------------------------------------ save / load
    def save(self, out_dir: str | Path, meta: dict) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(self.G.lora_state(), str(out / "generator_lora.safetensors"))
        if self.F is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.F.state_dict().items()},
                      str(out / "hypernet.safetensors"))
        (out / "meta.json").write_text(json.dumps({**meta, "k": self.G.k, "config": self.cfg.to_dict()}, indent=1))
        return out


# ---------------------------------------------------------------------------------------------- warm-ups


# ---------------------------------------------------------------------------------------------- rollouts
@torch.no_grad()
def candidate_prompts(mt: MetaTuner, chunk: list[TrainItem], g_texts: list[str], seed_prompt: str,
                      batch_size: int) -> list[list[str]]:  # fmt: skip
    """D2's candidate prompts per query, by ``d2_source``: G's samples, rule-written ones (the query's relevant
    sentences of p̃), or both (the same number per query for every query)."""
    cfg = mt.cfg
    if cfg.d2_source == "rollouts":
        return mt.sample_prompts(g_texts, cfg.n_rollouts, batch_size=batch_size)
    # two rule-written candidates per query, both from its relevant sentences (at the full and at half the token
    # budget): a query-independent candidate (p̃'s first paragraph) would win D2 for every query and make G a
    # constant emitter again
    rule = [[relevant_sentences(seed_prompt, it.query, mt.tok, cfg.max_prompt_tokens),
             relevant_sentences(seed_prompt, it.query, mt.tok, max(8, cfg.max_prompt_tokens // 2))] for it in chunk]
    if cfg.d2_source == "rule":
        return rule
    sampled = mt.sample_prompts(g_texts, cfg.n_rollouts, batch_size=batch_size)
    return [s + r for s, r in zip(sampled, rule, strict=True)]


@torch.no_grad()
def rollouts(mt: MetaTuner, items: list[TrainItem], task, seed_prompt: str) -> tuple[list[dict], dict]:
    """Sample n prompts per query from (φ_s, φ_p'), answer with M_{F(h_i)}, score; returns (D2, stats)."""
    cfg = mt.cfg
    t0 = time.perf_counter()
    n = cfg.n_rollouts
    prompts: list[list[str]] = []
    gens = []
    chunk_size = cfg.rollout_batch_size or cfg.batch_size
    for s in range(0, len(items), chunk_size):
        chunk = items[s : s + chunk_size]
        g_texts = [mt.g_text(seed_prompt, it.query) for it in chunk]
        sampled = candidate_prompts(mt, chunk, g_texts, seed_prompt, chunk_size)
        n = len(sampled[0])
        fac = mt.factors(g_texts)
        texts = [mt.actor_text(sampled[i][j], it.query) for i, it in enumerate(chunk) for j in range(n)]
        gens += mt.actor_generate(
            texts,
            select_factors(fac, [i for i in range(len(chunk)) for _ in range(n)]),
            max_new_tokens=cfg.rollout_max_new_tokens or task.max_new_tokens,
            stop=task.stop,
            batch_size=len(texts),
        )
        prompts += sampled
    rep = [i for i in range(len(items)) for _ in range(n)]
    per = task.score([g.text for g in gens], [items[i].example for i in rep])
    primary = task.primary_metric
    flat = [s.get(primary) for s in per]
    scores = [flat[i * n : (i + 1) * n] for i in range(len(items))]
    threshold = cfg.threshold(task.name, primary)
    if cfg.d2_skip_degenerate:  # a candidate that is no prompt never enters D2
        from .diagnostics import degenerate_reason

        scores = [[None if degenerate_reason(p) else sc for p, sc in zip(ps, ss, strict=True)]
                  for ps, ss in zip(prompts, scores, strict=True)]
    d2 = select_d2([it.id for it in items], prompts, scores, threshold, cfg.d2_max_per_query)
    fallback = not d2 and cfg.d2_fallback == "best"
    if fallback:  # ranked above the lowest reward of all rollouts (the left-out candidates' included)
        d2 = best_rollouts([it.id for it in items], prompts, scores,
                           floor=min((float(x) for x in flat if x is not None), default=None))
    valid = [float(s) for s in flat if s is not None]
    stats = {
        "rollouts": len(flat),
        "threshold": threshold,
        "mean_score": sum(valid) / len(valid) if valid else None,
        "passed": sum(1 for s in valid if s >= threshold),
        "queries_covered": len({d["id"] for d in d2}),
        "d2_size": len(d2),
        "d2_mean_reward": sum(d["score"] for d in d2) / len(d2) if d2 else None,
        "d2_fallback": fallback,
        "mean_prompt_tokens": sum(len(mt.tok(p, add_special_tokens=False)["input_ids"]) for ps in prompts for p in ps)
        / max(1, len(flat)),
        "seconds": time.perf_counter() - t0,
    }
    return d2, stats


# ---------------------------------------------------------------------------------------------- main loop
def fit(mt: MetaTuner, items: list[TrainItem], task, seed_prompt: str, *, seed: int, history: History) -> None:
    """The MetaTuner phase (after the warm-ups): rollouts/D2, frozen-copy sync, variant I or J updates."""
    from transformers import get_linear_schedule_with_warmup

    cfg = mt.cfg
    rng = random.Random(seed + 1)
    seed_everything(seed + 1)
    full = max(1, math.ceil(cfg.epochs))
    epoch_batches = []
    for e in range(full):
        eb = _plain_batches(list(range(len(items))), cfg.batch_size, rng)
        if e == full - 1 and cfg.epochs < full:
            eb = eb[: max(1, round(len(eb) * (cfg.epochs - e)))]
        epoch_batches.append(eb)
    n_batches = sum(len(eb) for eb in epoch_batches)
    if cfg.epochs <= 0:
        n_batches, epoch_batches = 0, []
    do_task = cfg.param_branch
    gumbel = cfg.prompt_objective == "gumbel"  # φ_p learns from the task loss through the prompt tokens: no D2
    do_reg = cfg.prompt_branch and not gumbel
    # What each loss trains: L_reg -> φ_s + φ_p ("live" slots of every layer of G); L_task -> the encoder
    # (φ_s, or the separate "encoder" slot of no_share) + F. φ_p' ("frozen" slots) is never optimized.
    g_train: list = []
    if do_reg or gumbel:
        g_train = mt.G.phi_s_params() + mt.G.phi_p_params()
    elif do_task and not mt.G.separate_encoder:
        g_train = mt.G.phi_s_params()
    groups = [{"params": g_train, "lr": cfg.lr_g}]
    if do_task and mt.G.separate_encoder:
        groups.append({"params": mt.G.encoder_params(), "lr": cfg.lr_g})
    if do_task and mt.F is not None:
        groups.append({"params": list(mt.F.parameters()), "lr": cfg.lr_f})
    groups = [g for g in groups if g["params"]]
    all_params = [p for g in groups for p in g["params"]]
    if not groups or n_batches == 0:
        return
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    # the schedule advances once per batch (variant I's two steps of a batch share a learning rate)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * n_batches), n_batches)

    d2: list[dict] = []
    d2_order: list[int] = []
    by_id = {it.id: it for it in items}
    prompt_cache: dict[str, str] = {}
    step = 0
    rollout_s = 0.0
    t_start = time.perf_counter()
    bar = Bar("training batches", n_batches, "metatuner" if cfg.progress else None)

    def sync():
        mt.G.sync()
        prompt_cache.clear()
        history.syncs.append(step)

    def task_prompts(batch: list[TrainItem]) -> list[str]:
        if not cfg.prompt_branch:
            return [seed_prompt] * len(batch)
        missing = [it for it in batch if cfg.regenerate == "step" or it.id not in prompt_cache]
        if missing:
            with torch.no_grad():
                gens = mt.greedy_prompts([mt.g_text(seed_prompt, it.query) for it in missing], decoder="frozen",
                                         batch_size=cfg.batch_size)
            for it, g in zip(missing, gens, strict=True):
                prompt_cache[it.id] = g.text
        return [prompt_cache[it.id] for it in batch]

    def d2_batch() -> list[tuple[str, str]]:
        nonlocal d2_order
        out = []
        for _ in range(min(cfg.batch_size, len(d2))):
            if not d2_order:
                d2_order = list(range(len(d2)))
                rng.shuffle(d2_order)
            d = d2[d2_order.pop()]
            out.append((by_id[d["id"]].query, d["prompt"]))
        return out

    def optimizer_step(loss: torch.Tensor) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(all_params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def refresh(epoch: int) -> None:
        """φ_p' <- φ_p (when syncs follow refreshes), D2 rebuilt from fresh rollouts, task prompts regenerated."""
        nonlocal d2, d2_order, rollout_s
        if cfg.sync_every == 0:
            sync()
        d2, stats = rollouts(mt, items, task, seed_prompt)
        d2_order = []
        rollout_s += stats["seconds"]
        history.rollouts.append({"epoch": epoch, "step": step, **stats})

    def reg_step(rec: dict) -> None:
        lr_ = mt.reg_loss(d2_batch(), seed_prompt)
        rec.setdefault("reg_losses", []).append(lr_.item())
        rec["reg_loss"] = sum(rec["reg_losses"]) / len(rec["reg_losses"])
        rec["updates"].append("reg")
        optimizer_step(cfg.alpha * lr_)

    for epoch, eb in enumerate(epoch_batches):
        if do_reg and cfg.refresh_steps == 0 and epoch % cfg.refresh_every == 0:
            refresh(epoch)
        for idx in eb:
            if do_reg and cfg.refresh_steps > 0 and step % cfg.refresh_steps == 0:
                refresh(epoch)
            batch = [items[i] for i in idx]
            rec: dict = {"step": step, "epoch": epoch, "task_loss": None, "reg_loss": None, "updates": []}
            with _autocast(mt.device):
                if gumbel:
                    from .gumbel import task_loss as gumbel_task_loss

                    lt = gumbel_task_loss(mt, batch, seed_prompt, cfg.gumbel_tau)
                    rec["task_loss"] = lt.item()
                    rec["updates"].append("task+prompt")
                    optimizer_step(lt)
                elif cfg.variant == "J":
                    loss = None
                    if do_task:
                        lt = mt.task_loss(batch, task_prompts(batch), seed_prompt)
                        rec["task_loss"] = lt.item()
                        loss = lt
                    if do_reg and d2:
                        lr_ = mt.reg_loss(d2_batch(), seed_prompt)
                        rec["reg_loss"] = lr_.item()
                        loss = cfg.alpha * lr_ if loss is None else loss + cfg.alpha * lr_
                    if loss is not None:
                        optimizer_step(loss)
                        rec["loss"] = loss.item()
                        rec["updates"].append("joint")
                else:  # variant I: alternate_every task-loss steps (one per batch), then as many regularization steps
                    if do_task:
                        lt = mt.task_loss(batch, task_prompts(batch), seed_prompt)
                        rec["task_loss"] = lt.item()
                        rec["updates"].append("task")
                        optimizer_step(lt)
                    if do_reg and d2 and (not do_task or (step + 1) % cfg.alternate_every == 0):
                        for _ in range(cfg.alternate_every if do_task else 1):
                            reg_step(rec)
            sched.step()
            history.steps.append(rec)
            step += 1
            if cfg.sync_every > 0 and step % cfg.sync_every == 0:
                sync()
            bar.set_postfix({k: f"{v:.3f}" for k, v in rec.items() if k.endswith("_loss") and v is not None})
            bar.update(1)
    left = step % cfg.alternate_every
    if cfg.variant == "I" and not gumbel and do_task and do_reg and d2 and left and history.steps:
        with _autocast(mt.device):  # the last group's regularisation steps, not dropped with an incomplete group
            for _ in range(left):
                reg_step(history.steps[-1])
    bar.close()
    sync()
    history.seconds["rollouts"] = rollout_s
    history.seconds["updates"] = time.perf_counter() - t_start - rollout_s


# ---------------------------------------------------------------------------------------------- entry points


def train_metatuner(
    cfg: MetaTunerConfig,
    model: str,
    task,
    examples: list,
    seed_prompt: str,
    out_dir: str | Path,
    *,
    generator_model: str | None = None,
    seed: int = 0,
    chat: bool = True,
    device: str | None = None,
    warmup_root: str | Path | None = None,
    meta: dict | None = None,
) -> tuple[MetaTuner, dict]:
    """Warm up, train and save a MetaTuner for ``task`` on ``examples``; returns (model, training summary).

    ``model`` is the actor M, ``generator_model`` the generator G (default: the same model, G = M)."""
    from ..models import load_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generator_model = generator_model or model
    items = [TrainItem(ex.id, task.format_query(ex), task.format_target(ex), ex) for ex in examples]
    history = History()
    keys = warmup_keys(model, cfg, items, seed_prompt, seed, chat, task.name, generator_model)
    root = Path(warmup_root) if warmup_root is not None else None
    t0 = time.perf_counter()

    m_lm, tok = load_model(model, device=device)
    m_lm, actor_curve = actor_warmup(m_lm, tok, cfg, items, seed_prompt, seed=seed, chat=chat, out_dir=out_dir,
                                     cache=root / keys["actor"] if root else None)
    history.seconds["actor_warmup"] = time.perf_counter() - t0
    m_lm.eval()

    t1 = time.perf_counter()
    g_lm, g_tok = load_model(generator_model, device=device)
    if g_tok.get_vocab() != tok.get_vocab():
        raise ValueError("MetaTuner here needs G and M to share a tokenizer")
    seed_everything(seed)
    mt = MetaTuner.build(cfg, g_lm, m_lm, tok, chat)
    generator_warmup(mt, items, seed_prompt, seed=seed, cache=root / keys["generator"] if root else None, history=history)
    mt.G.sync()
    mt.G.init_encoder_from_phi_s()
    history.seconds["generator_warmup"] = time.perf_counter() - t1

    fit(mt, items, task, seed_prompt, seed=seed, history=history)
    history.seconds["total"] = time.perf_counter() - t0
    summary = {
        **history.to_dict(),
        "actor_warmup": actor_curve,
        "warmup_keys": keys,
        "n_examples": len(items),
        "seed_prompt": seed_prompt,
        "k": mt.G.k,
        "n_layers": mt.G.n_layers,
        "trainable_params": {
            "phi_s": sum(p.numel() for p in mt.G.phi_s_params()),
            "phi_p": sum(p.numel() for p in mt.G.phi_p_params()),
            "encoder_separate": sum(p.numel() for p in mt.G.encoder_params()) if mt.G.separate_encoder else 0,
            "hypernet": sum(p.numel() for p in mt.F.parameters()) if mt.F is not None else 0,
        },
    }
    (out_dir / "metatuner_curve.json").write_text(json.dumps(summary, indent=1, default=str))
    mt.save(out_dir, {"model": model, "generator_model": generator_model, "chat": chat, "seed": seed, **(meta or {})})
    return mt, summary


def artefacts_complete(path: str | Path) -> bool:
    p = Path(path)
    return all((p / f).is_file() for f in ARTEFACT_FILES)


def load_metatuner(path: str | Path, *, device: str | None = None) -> MetaTuner:
    """Rebuild a trained MetaTuner from its artefact folder (G's LoRA slots, F, the actor warm-up adapter)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from ..models import load_model

    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    cfg = MetaTunerConfig.from_dict(meta["config"])
    m_lm, tok = load_model(meta["model"], device=device)
    if (path / "actor_warmup" / "adapter_model.safetensors").is_file():
        m_lm = PeftModel.from_pretrained(m_lm, str(path / "actor_warmup")).merge_and_unload()
    m_lm.eval()
    g_lm, _ = load_model(meta["generator_model"], device=device)
    mt = MetaTuner.build(cfg, g_lm, m_lm, tok, meta.get("chat", True))
    if mt.G.k != meta["k"]:
        raise ValueError(f"{path}: saved with k={meta['k']}, rebuilt with k={mt.G.k}")
    mt.G.load_lora_state(load_file(str(path / "generator_lora.safetensors")))
    if mt.F is not None:
        mt.F.load_state_dict(load_file(str(path / "hypernet.safetensors")))
    return mt
