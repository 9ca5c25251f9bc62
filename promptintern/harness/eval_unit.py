"""An evaluation unit: generate, score and measure one (artefact, eval task) pair; one record with every sample."""

from __future__ import annotations

import statistics
import time

from promptintern.generation import batch_seconds, generate
from promptintern.prefix_cache import prefix_for
from promptintern.prompts import render
from promptintern.tasks import infra
from promptintern.tokens import counters_for

from .artifacts import weights_sha256
from .measure import model_info, run_measurements
from .records import efficiency_summary, eval_record
from .samples import sample_record
from .store import ResultStore
from .unit_common import adapter_host, max_new_tokens, run_meta, set_threads, task_data, test_prompts


def run_eval(unit: dict, store_root: str, adapter: str | None, data_dir: str | None) -> dict:
    """Generate, score and measure one (artefact, eval task) pair; write the record with every sample."""
    cfg, uid = unit["config"], unit["id"]
    set_threads(unit["resources"].get("num_cpus"))
    store = ResultStore(store_root)
    t0 = time.perf_counter()
    items = task_data(unit, cfg["eval_task"], data_dir)
    task, test = items.task, items.test
    built = test_prompts(cfg, items)
    chat = cfg["prompt"]["chat"]
    gen_cfg = cfg["generation"]
    max_new = max_new_tokens(gen_cfg, task)
    ids = [b.example.id for b in built]
    extra = {}
    if gen_cfg.get("engine") == "vllm":  # vLLM's server: the adapter served unmerged, its own prefix cache
        from .vllm_eval import run_on_vllm

        tok, rendered, gens, wall, measurements, info, model_load, extra = run_on_vllm(
            cfg, built, adapter, max_new_tokens=max_new, stop=task.stop, ids=ids,
            reference=lambda: transformers_generation(cfg, built, adapter, max_new_tokens=max_new, stop=task.stop,
                                                      ids=ids, measure=False)[2])
        prefix = None
    else:
        tok, rendered, gens, measurements, info, model_load, prefix = transformers_generation(
            cfg, built, adapter, max_new_tokens=max_new, stop=task.stop, ids=ids, measure=gen_cfg.get("measure"))
    # infrastructure failures (sandbox_error, a metric raising) fail the unit or are left out and counted: tasks/infra.py
    scores = infra.score(task, [g.text for g in gens], test)
    counters = counters_for(tok)
    samples = [
        sample_record(example_id=b.example.id, prompt=b.prompt, gen=g, score=s, reference=b.example.reference,
                      counters=counters, tok=tok, chat=chat, demo_ids=b.demo_ids, compressor_s=b.compressor_seconds,
                      compressor_input_tokens=b.compressor_input_tokens,
                      template_rate_achieved=b.template_rate_achieved)
        for b, g, s in zip(built, gens, scores, strict=True)
    ]
    metrics, infra_block = infra.screen(task, scores, cfg["scoring"].get("max_infra_failures", 0))
    gen_seconds = wall if gen_cfg.get("engine") == "vllm" else batch_seconds(gens)
    prefix_info = {}
    if prefix is not None:  # the one-time encoding of the shared prefix: shown on its own, never per query
        prefix_info = {**prefix.summary(), "prefill_tokens_per_query": statistics.fmean(
            s["prefill_tokens"] for s in samples)}
    elif cfg.get("prefix_cache") and samples:  # vLLM's own prefix cache
        prefix_info = {"engine": "vllm", "encode_seconds": None,
                       "tokens": statistics.fmean(s.get("cached_tokens", 0) for s in samples)}
    record = eval_record(
        config=cfg, task={"name": task.name, "primary_metric": task.primary_metric, "split": task.test_split},
        metrics=metrics, samples=samples, adapter=store.relative(adapter), adapter_sha256=weights_sha256(adapter),
        model_info=info, measurements=measurements, meta=run_meta(),
        efficiency=efficiency_summary(
            samples, generation_seconds=gen_seconds, batch_size=gen_cfg["batch_size"], max_new_tokens=max_new,
            # reused: the worker already held this base model (seconds: the load this unit paid; base_load_seconds:
            # what loading it cost; adapter_seconds: undoing the last adapter and merging this one).
            model_load=model_load, **({"prefix_cache": prefix_info} if prefix_info else {})),
        extra={**extra, **({"infra": infra_block} if infra_block else {})}, seconds_total=time.perf_counter() - t0)
    store.write(uid, record)
    return record


def transformers_generation(cfg: dict, built: list, adapter: str | None, *, max_new_tokens: int, stop, ids: list[str],
                            measure: bool):  # fmt: skip
    """Generate (and, with ``measure``, time) one evaluation on transformers: (tokenizer, rendered prompts,
    generations, measurements, model info, model load, the cached prefix or None)."""
    gen_cfg, chat = cfg["generation"], cfg["prompt"]["chat"]
    # The worker's base model is reused across units; the adapter is merged into it (previous one undone).
    host, model_load = adapter_host(cfg["model"])
    t_adapter = time.perf_counter()
    model, tok = host.activate(adapter), host.tokenizer
    model_load["adapter_seconds"] = time.perf_counter() - t_adapter
    model_load["adapters_served"] = host.switches
    rendered = [render(b.prompt, tok, chat) for b in built]
    # The cached-prefix condition: the recurring part (system turn + template) encoded once with this adapter
    # active, its KV cache reused by every generation below (the main run and the timed measurements).
    prefix = prefix_for(model, tok, [b.prompt for b in built], rendered, chat) if cfg.get("prefix_cache") else None
    engine = "hf" if gen_cfg.get("engine") == "vllm" else gen_cfg.get("engine", "hf")  # vLLM's reference: generate
    gens = generate(model, tok, rendered, max_new_tokens=max_new_tokens, stop=stop, batch_size=gen_cfg["batch_size"],
                    engine=engine, prefix=prefix)
    # per-evaluation timings only when asked (generation.measure); the engine unit times every condition
    measurements = run_measurements(model, tok, rendered, ids, gen_cfg, max_new_tokens=max_new_tokens, stop=stop,
                                    compressor_s=[b.compressor_seconds for b in built], prefix=prefix) \
        if measure else None
    return tok, rendered, gens, measurements, model_info(model), model_load, prefix
