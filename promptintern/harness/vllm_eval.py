"""Generation and timings of an evaluation unit on vLLM (``generation.engine: vllm``; optional, GPU only).

vLLM serves the base model with the unit's LoRA adapter unmerged and, in the cached-prefix condition
(``prefix_cache``), its automatic prefix caching on (off for the uncached rows, so the two conditions differ only
in the cache). The prompts are the harness's own token ids, so the rows compare with the other engines' on the
same tokens. Timings: the main run is one continuous batch; batch-1 latency generates each of the first
``latency_samples`` prompts alone (``latency_repeats`` times; TTFT and end-to-end from vLLM's request metrics);
throughput submits ``b`` cycled prompts at once for every ``throughput_batch_sizes`` entry and divides the output
tokens by the call's wall time (rows end at their end of turn: not a fixed-length decode like the HF engines').
"""

from __future__ import annotations

import time

from promptintern.generation import eos_token_ids
from promptintern.models import load_tokenizer
from promptintern.prompts import render
from promptintern.vllm_engine import get_engine

from .measure import latency_samples, latency_summary, measure_settings, saturating


def run_on_vllm(cfg: dict, built: list, adapter: str | None, *, max_new_tokens: int, stop, ids: list[str]):
    """The main generation and the timings of one evaluation on vLLM: (tokenizer, rendered prompts, generations,
    the main run's wall seconds, measurements, model info, model load)."""
    chat = cfg["prompt"]["chat"]
    tok = load_tokenizer(cfg["model"])
    rendered = [render(b.prompt, tok, chat) for b in built]
    encoded = [tok(r, add_special_tokens=False)["input_ids"] for r in rendered]
    eos = eos_token_ids(tok)
    t_load = time.perf_counter()
    engine = vllm_engine_for(cfg)
    model_load = {"engine": "vllm", "seconds": time.perf_counter() - t_load}
    gens = vllm_generate(engine, encoded, adapter, max_new_tokens=max_new_tokens, stop=stop, eos_ids=eos)
    wall = engine.stats()["last_call_wall_s"]  # one continuous batch: its wall time, not a sum per row
    measurements = vllm_measurements(engine, encoded, ids, adapter, cfg["generation"], max_new_tokens=max_new_tokens,
                                     stop=stop, eos_ids=eos)
    info = {"dtype": engine.dtype, "device": "cuda", "n_params": None, "engine": "vllm"}
    return tok, rendered, gens, wall, measurements, info, model_load


def vllm_engine_for(cfg: dict):
    lora = (cfg.get("train") or {}).get("lora") or {}
    return get_engine(cfg["model"], max_lora_rank=int(lora.get("r") or 16),
                      enable_prefix_caching=bool(cfg.get("prefix_cache")))


def vllm_generate(engine, encoded: list[list[int]], adapter: str | None, *, max_new_tokens: int, stop, eos_ids):
    return engine.generate(encoded, max_new_tokens=max_new_tokens, stop=stop, eos_token_ids=sorted(eos_ids),
                           adapter_dir=adapter)


def vllm_measurements(engine, encoded: list[list[int]], ids: list[str], adapter: str | None, gen_cfg: dict, *,
                      max_new_tokens: int, stop, eos_ids) -> dict:
    s = measure_settings(gen_cfg)
    out: dict = {"settings": s, "engine": "vllm"}
    if not s["measure"] or not encoded:
        out["skipped"] = "generation.measure is false" if not s["measure"] else "no prompts"
        return out
    points = []
    for b in s["throughput_batch_sizes"]:
        rows = [encoded[i % len(encoded)] for i in range(b)]
        gens = vllm_generate(engine, rows, adapter, max_new_tokens=s["throughput_max_new_tokens"], stop=None,
                             eos_ids=eos_ids)
        wall = engine.stats()["last_call_wall_s"]
        toks = sum(g.output_tokens for g in gens)
        points.append({"batch_size": b, "seconds": wall, "seconds_repeats": [wall], "output_tokens": toks,
                       "prompt_tokens": sum(map(len, rows)), "tokens_per_s": toks / wall if wall else float("nan"),
                       "tokens_per_s_ci": [float("nan"), float("nan")],
                       "samples_per_s": b / wall if wall else float("nan")})

    out["throughput"] = {"max_new_tokens": s["throughput_max_new_tokens"], "engine": "vllm", "points": points,
                         "saturating": saturating(points)}
    n = min(s["latency_samples"], len(encoded))
    cap = s["latency_max_new_tokens"]
    lat_max = min(cap, max_new_tokens) if cap else max_new_tokens
    samples = []
    for r in range(s["latency_repeats"]):
        gens = [vllm_generate(engine, [e], adapter, max_new_tokens=lat_max, stop=stop, eos_ids=eos_ids)[0]
                for e in encoded[:n]]
        samples += latency_samples(ids[:n], gens, [0.0] * n, repeat=r)
    if samples:
        out["latency"] = {**latency_summary(samples, source="batch1_run"), "max_new_tokens": lat_max,
                          "repeats": s["latency_repeats"]}
    out["vllm_stats"] = engine.stats()
    return out
