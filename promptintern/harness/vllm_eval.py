"""Generation and timings of an evaluation unit on vLLM (``generation.engine: vllm``; its server, CPU or GPU).

vLLM serves the base model with the unit's LoRA adapter unmerged, and with automatic prefix caching: the
cached-prefix condition (``prefix_cache``) lets requests share cached blocks (the prefix warmed by one request
first, as a deployment's steady state); every other evaluation sends each
request under a fresh ``cache_salt`` (nothing cached is read, the answers' ``cached_tokens`` are 0). The prompts
are the harness's own token ids, so the rows compare with the other engines' on the same tokens, and the same
items are generated with transformers' ``generate`` (fp32) to store how often the answers agree
(``vllm.agreement``; every disagreement listed). Timings (client side, as vLLM's serving benchmark measures):
the main run sends every prompt at once; throughput sends ``b`` cycled prompts at once for every
``throughput_batch_sizes`` entry, each decoding exactly ``throughput_max_new_tokens`` (end of turn ignored: equal
output length); batch-1 latency sends each of the first ``latency_samples`` prompts alone (``latency_repeats``
times; TTFT and end-to-end per request).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from promptintern.generation import eos_token_ids
from promptintern.models import load_tokenizer
from promptintern.prompts import render
from promptintern.vllm_engine import agreement, get_engine

from .measure import latency_samples, latency_summary, measure_settings, saturating

AGREEMENT_REFERENCE = "transformers generate (fp32, greedy), same token ids"


def run_on_vllm(cfg: dict, built: list, adapter: str | None, *, max_new_tokens: int, stop, ids: list[str],
                reference: Callable[[], list]):  # fmt: skip
    """The main generation and the timings of one evaluation on vLLM: (tokenizer, rendered prompts, generations,
    the main run's wall seconds, measurements, model info, model load, the record's ``vllm`` block).
    ``reference()`` gives the transformers generations of the same items."""
    chat, gen_cfg = cfg["prompt"]["chat"], cfg["generation"]
    cached = bool(cfg.get("prefix_cache"))
    tok = load_tokenizer(cfg["model"])
    rendered = [render(b.prompt, tok, chat) for b in built]
    encoded = [tok(r, add_special_tokens=False)["input_ids"] for r in rendered]
    eos = eos_token_ids(tok)
    t_load = time.perf_counter()
    engine = vllm_engine_for(cfg)
    model_load = {"engine": "vllm", "seconds": time.perf_counter() - t_load}
    if cached and encoded:  # a deployment's steady state, as the transformers path's prefix encoded once first:
        # the recurring prefix is in the cache before the run (requests sent together cannot share it otherwise)
        engine.generate(encoded[:1], max_new_tokens=1, stop=None, eos_token_ids=[], adapter_dir=adapter)
    gens = engine.generate(encoded, max_new_tokens=max_new_tokens, stop=stop, eos_token_ids=eos,
                           adapter_dir=adapter, cached=cached)
    wall = engine.stats()["last_call_wall_s"]  # one continuous batch: its wall time, not a sum per row
    measurements = vllm_measurements(engine, encoded, ids, adapter, gen_cfg, max_new_tokens=max_new_tokens,
                                     stop=stop, eos_ids=eos, cached=cached)
    block = {"agreement": agreement(ids, [g.text for g in gens], [g.text for g in reference()],
                                    threshold=gen_cfg["vllm_agreement_threshold"],
                                    reference_name=AGREEMENT_REFERENCE),
             "cached": cached, "uncached_by": None if cached else "a fresh cache_salt per request",
             "stats": engine.stats()}
    info = {"dtype": engine.dtype, "device": "vllm server", "n_params": None, "engine": "vllm"}
    return tok, rendered, gens, wall, measurements, info, model_load, {"vllm": block}


def vllm_engine_for(cfg: dict):
    lora = (cfg.get("train") or {}).get("lora") or {}
    return get_engine(cfg["model"], dtype=cfg["generation"]["vllm_dtype"], max_lora_rank=int(lora.get("r") or 8))


def vllm_measurements(engine, encoded: list[list[int]], ids: list[str], adapter: str | None, gen_cfg: dict, *,
                      max_new_tokens: int, stop, eos_ids, cached: bool) -> dict:
    s = measure_settings(gen_cfg)
    out: dict = {"settings": s, "engine": "vllm"}
    if not s["measure"] or not encoded:
        out["skipped"] = "generation.measure is false" if not s["measure"] else "no prompts"
        return out
    points = []
    for b in s["throughput_batch_sizes"]:
        rows = [encoded[i % len(encoded)] for i in range(b)]
        gens = engine.generate(rows, max_new_tokens=s["throughput_max_new_tokens"], stop=None, eos_token_ids=[],
                               adapter_dir=adapter, cached=cached)
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
        gens = [engine.generate([e], max_new_tokens=lat_max, stop=stop, eos_token_ids=eos_ids, adapter_dir=adapter,
                                cached=cached)[0] for e in encoded[:n]]
        samples += latency_samples(ids[:n], gens, [0.0] * n, repeat=r)
    if samples:
        out["latency"] = {**latency_summary(samples, source="batch1_run"), "max_new_tokens": lat_max,
                          "repeats": s["latency_repeats"]}
    return out
