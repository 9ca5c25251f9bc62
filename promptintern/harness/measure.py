"""Per-run measurements beyond the main generation: throughput at increasing batch sizes, batch-1 latency, hashes.

Everything here is measured, never estimated. The main generation (batched at ``generation.batch_size``) gives
per-sample prompt/output tokens and the wall time of each batch; this module adds:

- **throughput**: the same rendered prompts (cycled when there are fewer prompts than the batch size) generated
  at each batch size in ``generation.throughput_batch_sizes`` for exactly ``generation.throughput_max_new_tokens``
  new tokens (``min_new_tokens`` = ``max_new_tokens``, so every row decodes the same number of tokens); output
  tokens/s and samples/s per batch size, and the batch size with the highest tokens/s (the *saturating* one among
  those tried; ``saturated`` says whether the last doubling still gained more than 10 %).
- **latency**: the first ``generation.latency_samples`` test prompts generated one at a time (batch 1) with the
  task's own generation settings: time to first token and end-to-end time per query, p50/p90, each including the
  test-time compressor's seconds for that prompt (compression at inference is part of the query's latency). The
  same example ids are used by every method of a grid, so speedups compare the same queries.

Repetition: each throughput point is timed ``generation.throughput_repeats`` times and each latency query
generated ``generation.latency_repeats`` times; every repeat is recorded, so tables give means with intervals
(:mod:`promptintern.harness.stats`) and the speedup an interval from a paired bootstrap over the queries.

Exclusive timing (``generation.exclusive_timing``, default true): the timed measurements of a unit hold a lock
file in the machine's temp directory, so two workers (or two runs) on one machine never time each other's load.
The record says how long the unit waited for it.

Config keys (read with defaults, so they work before the experiment schema lists them):
``generation.measure`` (bool, default True), ``generation.throughput_batch_sizes`` (default [1, 8]),
``generation.throughput_max_new_tokens`` (default 16), ``generation.throughput_repeats`` (default 3),
``generation.latency_samples`` (default 3), ``generation.latency_repeats`` (default 3),
``generation.latency_max_new_tokens`` (default null: the evaluation's own limit, so end-to-end time is real; a
number caps the batch-1 decode to bound CPU time, and the cap is recorded beside the latencies),
``generation.exclusive_timing`` (default true).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from promptintern.generation import (
    generate,
    generate_fixed,
    pad_batch,
    static_cache_len,
    sync_device,
    warm_up,
)

from .stats import mean_interval

MEASURE_DEFAULTS = {
    "measure": True,
    "throughput_batch_sizes": [1, 8],
    "throughput_max_new_tokens": 16,
    "throughput_repeats": 3,
    "latency_samples": 3,
    "latency_repeats": 3,
    "latency_max_new_tokens": None,  # None: the evaluation's own max_new_tokens (real end-to-end time)
    "exclusive_timing": True,
}
TIMING_LOCK = "promptintern-timing.lock"
SATURATION_GAIN = 0.10  # a doubling of the batch that gains less than this is "saturated"


def measure_settings(gen_cfg: dict) -> dict:
    """The measurement keys of a ``generation`` config section, with defaults filled in."""
    out = {k: gen_cfg.get(k, v) for k, v in MEASURE_DEFAULTS.items()}
    sizes = out["throughput_batch_sizes"] or []
    out["throughput_batch_sizes"] = sorted({int(b) for b in sizes if int(b) > 0})
    out["throughput_max_new_tokens"] = max(1, int(out["throughput_max_new_tokens"]))
    out["latency_samples"] = max(0, int(out["latency_samples"] or 0))
    out["latency_repeats"] = max(1, int(out["latency_repeats"] or 1))
    out["throughput_repeats"] = max(1, int(out["throughput_repeats"] or 1))
    out["exclusive_timing"] = bool(out["exclusive_timing"])
    cap = out["latency_max_new_tokens"]
    out["latency_max_new_tokens"] = int(cap) if cap else None
    out["measure"] = bool(out["measure"])
    return out


# -- statistics ------------------------------------------------------------------------------------------------

def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    xs = sorted(float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary_stats(values: Sequence[float]) -> dict:
    xs = [float(v) for v in values if v is not None]
    return {
        "n": len(xs),
        "mean": sum(xs) / len(xs) if xs else float("nan"),
        "p50": percentile(xs, 50),
        "p90": percentile(xs, 90),
    }


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)); se is NaN for n < 2."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if not n:
        return float("nan"), float("nan")
    m = sum(xs) / n
    if n < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n)


def saturating(points: list[dict]) -> dict:
    """Pick the batch size with the highest output tokens/s; say whether the curve had flattened."""
    if not points:
        return {"batch_size": None, "tokens_per_s": None, "samples_per_s": None, "saturated": None}
    best = max(points, key=lambda p: p["tokens_per_s"])
    saturated = None
    if len(points) >= 2:
        a, b = points[-2], points[-1]
        saturated = b["tokens_per_s"] < a["tokens_per_s"] * (1 + SATURATION_GAIN)
    return {"batch_size": best["batch_size"], "tokens_per_s": best["tokens_per_s"],
            "samples_per_s": best["samples_per_s"], "saturated": saturated}


# -- hashes ----------------------------------------------------------------------------------------------------

def sha256_dir(path: str | Path | None) -> str | None:
    """sha256 over the files of a folder (relative path and bytes of each, sorted); None when absent."""
    if not path:
        return None
    root = Path(path)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        return None
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


# -- model facts -----------------------------------------------------------------------------------------------

def model_info(model) -> dict:
    try:
        p = next(model.parameters())
    except (StopIteration, AttributeError):
        return {"dtype": None, "device": None, "n_params": None}
    return {
        "dtype": str(p.dtype).replace("torch.", ""),
        "device": str(p.device),
        "n_params": int(sum(x.numel() for x in model.parameters())),
    }


# -- measurements ----------------------------------------------------------------------------------------------

def measure_throughput(model, tokenizer, prompts: Sequence[str], batch_sizes: Sequence[int],
                       max_new_tokens: int = 16, engine: str = "hf", repeats: int = 1, prefix=None) -> dict:
    """Output tokens/s and samples/s at each batch size, every row decoding exactly ``max_new_tokens`` tokens with
    ``engine``, timed ``repeats`` times (the point's figures are the means; ``tokens_per_s_ci`` their 95 % t
    interval). With a compiling engine each batch size is warmed up (compiled) untimed before it is timed. With a
    ``prefix`` (promptintern.prefix_cache.PrefixKV) every batch copies its KV cache and prefills the rest only."""
    import torch

    if not prompts or not batch_sizes:
        return {"max_new_tokens": max_new_tokens, "points": [], **{"saturating": saturating([])}}
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    cache_len = static_cache_len([len(e) for e in encoded], max_new_tokens)
    model.eval()
    # warm-up (allocations, kernels) so the first batch size is not penalised
    warm = pad_batch(tokenizer, [encoded[0]], device, prefix)
    generate_fixed(model, tokenizer, warm, 2, engine, cache_len, prefix)
    points = []
    for b in sorted(set(int(x) for x in batch_sizes)):
        ids = [encoded[i % len(encoded)] for i in range(b)]
        warm_up(model, tokenizer, ids, engine, cache_len)
        batch = pad_batch(tokenizer, ids, device, prefix)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timed = []
        for _ in range(max(1, int(repeats))):
            sync_device(device)
            t0 = time.perf_counter()
            new_tokens = generate_fixed(model, tokenizer, batch, max_new_tokens, engine, cache_len, prefix) * b
            sync_device(device)
            timed.append(time.perf_counter() - t0)
        seconds = sum(timed) / len(timed)
        rates = mean_interval([new_tokens / t for t in timed if t > 0])
        point = {
            "batch_size": b,
            "seconds": seconds,
            "seconds_repeats": timed,
            "prompt_tokens": int(sum(len(x) for x in ids)),
            "prefill_tokens": int(sum(len(x) for x in ids)) - (prefix.tokens * b if prefix is not None else 0),
            "output_tokens": new_tokens,
            # means over the repeats of each repeat's rate (so tokens/s over samples/s is the tokens per row)
            "tokens_per_s": rates["mean"],
            "tokens_per_s_ci": [rates["lo"], rates["hi"]],
            "samples_per_s": rates["mean"] * b / new_tokens if new_tokens else float("nan"),
        }
        if device.type == "cuda":
            point["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
        points.append(point)
    return {"max_new_tokens": max_new_tokens, "engine": engine, "points": points, "saturating": saturating(points),
            **({"prefix_tokens": prefix.tokens} if prefix is not None else {})}


def measure_latency(model, tokenizer, prompts: Sequence[str], ids: Sequence[str], *, max_new_tokens: int,
                    stop: list[str] | None, compressor_s: Sequence[float] | None = None, engine: str = "hf",
                    repeats: int = 1, prefix=None) -> list[dict]:
    """Batch-1 generation of each prompt, ``repeats`` times over: one latency sample per (query, repeat), with TTFT
    and end-to-end seconds. ``compressor_s`` (per prompt) is the test-time compressor's time, counted in the
    query's latency. ``prefix``: its KV cache is reused (copied per query) and only the rest prefilled."""
    comp = list(compressor_s) if compressor_s is not None else [0.0] * len(prompts)
    out = []
    for r in range(repeats):
        gens = generate(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, stop=stop, batch_size=1,
                        engine=engine, prefix=prefix)
        out += latency_samples(ids, gens, comp, repeat=r)
    return out


def latency_samples(ids: Sequence[str], gens: Sequence, compressor_s: Sequence[float], repeat: int = 0) -> list[dict]:
    """One latency record per batch-1 generation; ``tpot_s`` is the decode time per output token after the first."""
    return [{"id": i, "repeat": repeat, "ttft_s": g.ttft_s, "e2e_s": g.e2e_s,
             "tpot_s": time_per_output_token(g.ttft_s, g.e2e_s, g.output_tokens),
             "compressor_s": c, "prompt_tokens": g.prompt_tokens, "output_tokens": g.output_tokens,
             **({"cached_tokens": g.cached_tokens} if getattr(g, "cached_tokens", 0) else {})}
            for i, g, c in zip(ids, gens, compressor_s, strict=True)]


def per_query_latency(samples: Sequence[dict]) -> dict[str, float]:
    """Query id -> mean end-to-end seconds over its repeats (compressor time included): what speedups pair on."""
    acc: dict[str, list[float]] = {}
    for s in samples:
        acc.setdefault(str(s["id"]), []).append(query_latency(s)[1])
    return {k: sum(v) / len(v) for k, v in acc.items()}


@contextlib.contextmanager
def exclusive_timing(enabled: bool = True):
    """Hold the machine-wide timing lock (see the module docstring); yields ``{"exclusive", "waited_s"}``."""
    if not enabled:
        yield {"exclusive": False, "waited_s": 0.0}
        return
    from filelock import FileLock

    t0 = time.perf_counter()
    with FileLock(str(Path(tempfile.gettempdir()) / TIMING_LOCK)):
        yield {"exclusive": True, "waited_s": time.perf_counter() - t0}


def time_per_output_token(ttft_s: float, e2e_s: float, output_tokens: int) -> float:
    """(end-to-end − time to first token) / (output tokens − 1): the steady decode step time of a batch-1 query
    (NaN with fewer than two output tokens)."""
    return (e2e_s - ttft_s) / (output_tokens - 1) if output_tokens and output_tokens > 1 else float("nan")


def sample_tpot(sample: dict) -> float:
    """A latency sample's time per output token (recomputed for records written before ``tpot_s`` existed)."""
    if sample.get("tpot_s") is not None:
        return float(sample["tpot_s"])
    return time_per_output_token(sample["ttft_s"], sample["e2e_s"], sample.get("output_tokens") or 0)


def query_latency(sample: dict) -> tuple[float, float]:
    """(TTFT, end-to-end) seconds of one batch-1 query as its user sees them: generation time plus the time of the
    compressor that ran on its prompt at test time (``compressor_s``, 0 for methods that compress nothing)."""
    c = float(sample.get("compressor_s") or 0.0)
    return float(sample["ttft_s"]) + c, float(sample["e2e_s"]) + c


def latency_summary(samples: list[dict], source: str) -> dict:
    lat = [query_latency(s) for s in samples]
    return {
        "batch_size": 1,
        "source": source,
        "samples": samples,
        "ttft_s": summary_stats([t for t, _ in lat]),
        "e2e_s": summary_stats([e for _, e in lat]),
        "tpot_s": summary_stats([t for t in map(sample_tpot, samples) if not math.isnan(t)]),
    }


def run_measurements(model, tokenizer, rendered: Sequence[str], ids: Sequence[str], gen_cfg: dict, *,
                     max_new_tokens: int, stop: list[str] | None,
                     compressor_s: Sequence[float] | None = None, prefix=None) -> dict:
    """Throughput and batch-1 latency for one evaluation, as configured in its ``generation`` section.
    ``compressor_s``: per prompt, seconds the test-time compressor took (added to that query's latency).
    ``prefix``: the shared prefix's KV cache (promptintern.prefix_cache), reused by every timed generation."""
    s = measure_settings(gen_cfg)
    out: dict = {"settings": s}
    if not s["measure"] or not rendered:
        out["skipped"] = "generation.measure is false" if not s["measure"] else "no prompts"
        return out
    engine = gen_cfg.get("engine", "hf")
    n = min(s["latency_samples"], len(rendered))
    cap = s["latency_max_new_tokens"]
    lat_max = min(cap, max_new_tokens) if cap else max_new_tokens
    comp = list(compressor_s)[:n] if compressor_s else [0.0] * n
    with exclusive_timing(s["exclusive_timing"]) as lock:
        t0 = time.perf_counter()
        out["timing_lock"] = lock
        out["throughput"] = measure_throughput(model, tokenizer, rendered, s["throughput_batch_sizes"],
                                               s["throughput_max_new_tokens"], engine=engine,
                                               repeats=s["throughput_repeats"], prefix=prefix)
        if n:  # every repeat inside the lock (the main run's batch-1 timings, if any, were not exclusive)
            samples = measure_latency(model, tokenizer, rendered[:n], ids[:n], max_new_tokens=lat_max, stop=stop,
                                      compressor_s=comp, engine=engine, repeats=s["latency_repeats"],
                                      prefix=prefix)
            out["latency"] = latency_summary(samples, source="batch1_run")
            out["latency"]["max_new_tokens"] = lat_max
            out["latency"]["repeats"] = s["latency_repeats"]
        out["seconds"] = time.perf_counter() - t0
    return out
