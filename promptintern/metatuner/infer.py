"""MetaTuner inference: per query, G writes the prompt p_i, F writes the LoRA θ_i, M answers (p_i, x_i) with θ_i.

Three timed phases, each batched and timed per batch (like :mod:`promptintern.generation`):

1. prompt generation: greedy decoding of G on (p̃, x_i), batches sorted by G-input length;
2. hypernetwork: φ_s forward over (p̃, x_i) + F, for the queries of one actor batch;
3. actor generation of that batch: greedy decoding of M with the per-sample LoRA (batches sorted by
   actor-input length), so the factors exist for one batch at a time.

A sample's latency counts the batch time of each phase it went through: ``ttft_s = prompt_generation_s +
hypernetwork_s + actor ttft`` and ``e2e_s = prompt_generation_s + hypernetwork_s + actor e2e``; the actor-only
values are kept beside them. Without the prompt branch there is no phase 1 (p_i = p̃); without the parameter
branch no phase 2 (M answers with its warm-up weights).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..generation import Generation, sync_device
from ..prompts import Prompt
from .train import MetaTuner


@dataclass
class InferenceSample:
    id: str
    generator_user_text: str
    generator_input_tokens: int  # rendered G input (chat markup included)
    generated_prompt: str
    generator_output_tokens: int  # tokens G decoded (end-of-turn included); 0 without the prompt branch
    prompt_generation_s: float
    prompt_generation_batch: int | None
    hypernetwork_s: float
    hypernetwork_batch: int | None
    actor_prompt: Prompt
    actor: Generation

    @property
    def ttft_s(self) -> float:
        return self.prompt_generation_s + self.hypernetwork_s + self.actor.ttft_s

    @property
    def e2e_s(self) -> float:
        return self.prompt_generation_s + self.hypernetwork_s + self.actor.e2e_s


@torch.inference_mode()
def run_inference(
    mt: MetaTuner,
    task,
    examples: list,
    seed_prompt: str,
    *,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
) -> tuple[list[InferenceSample], dict]:
    """Generate the prompt and the LoRA per query, then the answer; returns (samples in input order, seconds)."""
    cfg = mt.cfg
    queries = [task.format_query(ex) for ex in examples]
    g_prompts = [mt.g_prompt(seed_prompt, q) for q in queries]
    g_texts = [mt.g_text(seed_prompt, q) for q in queries]
    g_lengths = [len(mt.tok(t, add_special_tokens=False)["input_ids"]) for t in g_texts]
    seconds = {"prompt_generation": 0.0, "hypernetwork": 0.0, "actor_generation": 0.0}

    # 1. prompt generation
    if cfg.prompt_branch:
        pgens = mt.greedy_prompts(g_texts, decoder="live", batch_size=batch_size)
        seconds["prompt_generation"] = sum({g.batch_index: g.e2e_s for g in pgens}.values())
        prompts = [g.text for g in pgens]
    else:
        pgens = None
        prompts = [seed_prompt] * len(examples)

    # 2. hypernetwork and 3. actor generation, batch by batch: the factors of a batch exist only while it runs
    hn_s = [0.0] * len(examples)
    hn_batch: list[int | None] = [None] * len(examples)
    n_hn = 0

    def factor_fn(idx: list[int]):
        nonlocal n_hn
        if mt.F is None:
            return None
        sync_device(mt.device)
        t0 = time.perf_counter()
        fac = mt.factors([g_texts[i] for i in idx])
        sync_device(mt.device)
        dt = time.perf_counter() - t0
        seconds["hypernetwork"] += dt
        for i in idx:
            hn_s[i], hn_batch[i] = dt, n_hn
        n_hn += 1
        return fac

    actor_prompts = [mt.actor_prompt(p, q) for p, q in zip(prompts, queries, strict=True)]
    texts = [mt.actor_text(p, q) for p, q in zip(prompts, queries, strict=True)]
    gens = mt.actor_generate(
        texts, max_new_tokens=max_new_tokens or task.max_new_tokens, stop=task.stop, batch_size=batch_size,
        factor_fn=factor_fn,
    ) if examples else []
    seconds["actor_generation"] = sum({g.batch_index: g.e2e_s for g in gens}.values())

    out = []
    for i, ex in enumerate(examples):
        pg = pgens[i] if pgens is not None else None
        out.append(
            InferenceSample(
                id=ex.id,
                generator_user_text=g_prompts[i].user_text(),
                generator_input_tokens=g_lengths[i],
                generated_prompt=prompts[i],
                generator_output_tokens=pg.output_tokens if pg else 0,
                prompt_generation_s=pg.e2e_s if pg else 0.0,
                prompt_generation_batch=pg.batch_index if pg else None,
                hypernetwork_s=hn_s[i],
                hypernetwork_batch=hn_batch[i],
                actor_prompt=actor_prompts[i],
                actor=gens[i],
            )
        )
    seconds["total"] = sum(seconds.values())
    return out, seconds


@torch.inference_mode()
def measure_pipeline_throughput(
    mt: MetaTuner, task, examples: list, seed_prompt: str, batch_sizes, max_new_tokens: int = 16, repeats: int = 1
) -> list[dict]:
    """Throughput of the whole pipeline at each batch size: the queries (cycled to the batch size) go through
    prompt generation, the hypernetwork and the actor, which decodes exactly ``max_new_tokens`` tokens per row
    (as :func:`promptintern.harness.measure.measure_throughput` does for a plain model). Tokens/s and samples/s count the
    three phases' time; each point also gives the phases' seconds."""
    if not examples or not batch_sizes:
        return []
    tok = mt.tok

    def one(b: int, n_tokens: int) -> dict:
        exs = [examples[i % len(examples)] for i in range(b)]
        queries = [task.format_query(e) for e in exs]
        g_texts = [mt.g_text(seed_prompt, q) for q in queries]
        sync_device(mt.device)
        t0 = time.perf_counter()
        if mt.cfg.prompt_branch:
            prompts = [g.text for g in mt.greedy_prompts(g_texts, decoder="live", batch_size=b)]
        else:
            prompts = [seed_prompt] * b
        sync_device(mt.device)
        t1 = time.perf_counter()
        fac = mt.factors(g_texts)
        sync_device(mt.device)
        t2 = time.perf_counter()
        tok.padding_side = "left"
        enc = tok([mt.actor_text(p, q) for p, q in zip(prompts, queries, strict=True)], add_special_tokens=False,
                  padding=True, return_tensors="pt").to(mt.device)
        with mt.M.factors(fac):
            out = mt.M.lm.generate(**enc, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False,
                                   pad_token_id=mt.pad_id)
        sync_device(mt.device)
        t3 = time.perf_counter()
        new_tokens = int(out.shape[1] - enc["input_ids"].shape[1]) * b
        seconds = t3 - t0
        return {
            "batch_size": b,
            "seconds": seconds,
            "prompt_tokens": int(enc["attention_mask"].sum()),
            "output_tokens": new_tokens,
            "tokens_per_s": new_tokens / seconds if seconds > 0 else float("nan"),
            "samples_per_s": b / seconds if seconds > 0 else float("nan"),
            "prompt_generation_s": t1 - t0,
            "hypernetwork_s": t2 - t1,
            "actor_s": t3 - t2,
        }

    def repeated(b: int) -> dict:
        """``repeats`` timings of one batch size: means of the times and rates, each repeat's seconds kept."""
        runs = [one(b, int(max_new_tokens)) for _ in range(max(1, int(repeats)))]
        point = dict(runs[0])
        for k in ("seconds", "tokens_per_s", "samples_per_s", "prompt_generation_s", "hypernetwork_s", "actor_s"):
            point[k] = sum(r[k] for r in runs) / len(runs)
        point["seconds_repeats"] = [r["seconds"] for r in runs]
        return point

    one(1, 2)  # warm-up (allocations, kernels), not reported
    return [repeated(int(b)) for b in sorted({int(x) for x in batch_sizes if int(x) > 0})]
