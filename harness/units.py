"""The work of one unit, run inside a Ray worker (or in-process): a training stage or an evaluation.

Each function loads what it needs, does the work, writes its result JSON atomically and returns the record.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from .env_info import git_commit, hardware, versions
from .store import ResultStore


def _threads(num_cpus: float | None) -> None:
    import torch

    n = max(1, int(num_cpus or 1))
    torch.set_num_threads(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _task_data(cfg: dict, task_name: str, data_dir: str | None):
    import tasks

    task = tasks.get_task(task_name, data_dir=data_dir)
    train = task.load(task.train_split)
    test = task.load(task.test_split, limit=cfg["test_limit"])
    return task, train, test


def _builder(cfg: dict, task, pool):
    from promptintern.compressors import get_compressor
    from promptintern.prompt_builder import PromptBuilder
    from promptintern.retrievers import get_retriever

    p = cfg["prompt"]
    comp_cfg = dict(p["compressor"])
    name = comp_cfg.pop("name")
    compressor = _cached(("compressor", name, tuple(sorted(comp_cfg.items()))), lambda: get_compressor(name, **comp_cfg))
    retriever = get_retriever(p["retriever"]).fit(pool) if pool else None
    return PromptBuilder(task, pool, k=cfg["method"]["k_examples"], retriever=retriever, compressor=compressor)


_CACHE: dict = {}


def _cached(key, make):
    """Per-worker cache for heavy objects (scoring models); Ray reuses worker processes across units."""
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def _meta() -> dict:
    return {"versions": versions(), "git_commit": git_commit(), "hardware": hardware()}


def run_stage(unit: dict, store_root: str, prev_adapter: str | None, data_dir: str | None) -> dict:
    """Train one stage from the previous stage's adapter; save the adapter and the record."""
    from promptintern.methods import PromptRule
    from promptintern.models import load_model
    from promptintern.prompts import encode_for_training, render
    from promptintern.trainer import TrainConfig, attach_adapter, train_stage

    cfg, uid = unit["config"], unit["id"]
    _threads(unit["resources"].get("num_cpus"))
    store = ResultStore(store_root)
    t0 = time.perf_counter()
    task, train, _ = _task_data(cfg, cfg["train_task"], data_dir)
    items = train[: cfg["train_limit"]] if cfg["train_limit"] else train
    builder = _builder(cfg, task, train)
    rule = PromptRule(**cfg["rule"])
    built = [builder.build(ex, rule, with_answer=True) for ex in items]
    model, tok = load_model(cfg["model"])
    chat = cfg["prompt"]["chat"]
    tcfg = TrainConfig.from_dict({**cfg["train"], "seed": cfg["seed"] + cfg["stage"], "progress": False})
    records = [encode_for_training(b.prompt, tok, tcfg.max_length, chat) for b in built]
    peft_model = attach_adapter(model, tcfg, prev_adapter)
    out_dir = store.adapter_dir(uid)
    result = train_stage(peft_model, tok, records, tcfg, out_dir, desc=uid)
    prompt_tokens = [len(tok(render(b.prompt, tok, chat), add_special_tokens=False)["input_ids"]) for b in built]
    achieved = [b.template_rate_achieved for b in built if b.template_rate_achieved is not None]
    record = {
        "kind": "stage",
        "status": "ok",
        "config": cfg,
        "adapter_dir": str(out_dir.relative_to(store.root)),
        "init_adapter": prev_adapter,
        "train": {
            **result.to_dict(),
            "adapter_dir": str(out_dir.relative_to(store.root)),
            "n_examples": len(items),
            "mean_prompt_tokens": statistics.fmean(prompt_tokens) if prompt_tokens else 0.0,
            "template_rate_requested": rule.template_rate,
            "template_rate_achieved": achieved[0] if achieved else None,
            "examples_per_prompt": rule.n_examples,
        },
        "seconds_total": time.perf_counter() - t0,
        **_meta(),
    }
    store.write(uid, record)
    return record


def run_eval(unit: dict, store_root: str, adapter: str | None, data_dir: str | None) -> dict:
    """Generate, score and measure one (artefact, eval task) pair; write the record with every sample."""
    from promptintern.generation import batch_seconds, generate
    from promptintern.methods import PromptRule
    from promptintern.models import load_model
    from promptintern.prompts import part_token_counts, render
    from promptintern.tokens import counters_for

    cfg, uid = unit["config"], unit["id"]
    _threads(unit["resources"].get("num_cpus"))
    store = ResultStore(store_root)
    t0 = time.perf_counter()
    task, train, test = _task_data(cfg, cfg["eval_task"], data_dir)
    builder = _builder(cfg, task, train)
    rule = PromptRule(**cfg["rule"])
    built = [builder.build(ex, rule, with_answer=False, compress_context=cfg["test_compressed"]) for ex in test]
    model, tok = load_model(cfg["model"])
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    chat = cfg["prompt"]["chat"]
    gen_cfg = cfg["generation"]
    rendered = [render(b.prompt, tok, chat) for b in built]
    gens = generate(
        model,
        tok,
        rendered,
        max_new_tokens=gen_cfg.get("max_new_tokens") or task.max_new_tokens,
        stop=task.stop,
        batch_size=gen_cfg["batch_size"],
    )
    scores = task.score([g.text for g in gens], test)
    counters = counters_for(tok)
    samples = []
    for b, g, s, r in zip(built, gens, scores, rendered, strict=True):
        user_text = b.prompt.user_text()
        samples.append(
            {
                "id": b.example.id,
                "prompt": user_text,
                "rendered_prompt_tokens": g.prompt_tokens,
                "generation": g.text,
                "reference": b.example.reference,
                "demo_ids": b.demo_ids,
                "tokens": {
                    "model": g.prompt_tokens,
                    **{name: c.count(user_text) for name, c in counters.items() if name != "model"},
                },
                "parts": part_token_counts(b.prompt, counters["model"], tok, chat),
                "output_tokens": g.output_tokens,
                "ttft_s": g.ttft_s,
                "e2e_s": g.e2e_s,
                "batch_size": g.batch_size,
                "batch_index": g.batch_index,
                "compressor_s": b.compressor_seconds,
                "compressor_input_tokens": b.compressor_input_tokens,
                "template_rate_achieved": b.template_rate_achieved,
                "score": s,
            }
        )
    metrics = task.aggregate(scores)
    gen_seconds = batch_seconds(gens)
    record = {
        "kind": "eval",
        "status": "ok",
        "config": cfg,
        "adapter": adapter,
        "task": {"name": task.name, "primary_metric": task.primary_metric, "split": task.test_split},
        "metrics": metrics,
        "efficiency": {
            "n": len(samples),
            "mean_input_tokens": statistics.fmean(s["tokens"]["model"] for s in samples) if samples else 0.0,
            "mean_output_tokens": statistics.fmean(s["output_tokens"] for s in samples) if samples else 0.0,
            "generation_seconds": gen_seconds,
            "compressor_seconds": sum(s["compressor_s"] for s in samples),
            "samples_per_second": len(samples) / gen_seconds if gen_seconds else None,
        },
        "samples": samples,
        "seconds_total": time.perf_counter() - t0,
        **_meta(),
    }
    store.write(uid, record)
    return record
