"""The serving benchmark: what each condition costs on vLLM's server under load, by vLLM's own definitions.

Users serve with an engine like vLLM: many LoRA adapters on one base model, automatic prefix caching for
whatever prompt is still sent, continuous batching. This module drives vLLM's OpenAI-compatible server
(:class:`promptintern.vllm_server.VllmServer`) as vLLM's ``benchmarks/serve.py`` does and reports its metrics:

- per request, at the client: **TTFT** (sent to first token), **TPOT** ((E2EL - TTFT) / (output tokens - 1)),
  **ITL** (between consecutive tokens), **E2EL** (sent to last token);
- per run: **request throughput** (completed / duration), **output** and **total token throughput**, and
  **goodput** (requests meeting the declared objective, ``slo``, per second). The duration runs from the first
  request sent to the last token received.

Every condition serves the same requests (the source experiment's real test prompts, in the same order; or
fixed-length synthetic ones), decoding exactly ``output_tokens`` each (end of turn ignored: equal output length,
so the prompt is all that differs). Load: a concurrency sweep (all requests arrive at once, at most ``c`` in
flight) and Poisson arrivals at set request rates (seeded, the same arrival times for every condition). Each run
is preceded by ``warmup`` requests that are not measured (they also bring a cached condition's recurring prefix
into the cache, as in a deployment's steady state). Runs of different conditions at one load level alternate
within a repeat, so drift of the machine touches them alike; one JSON record per (condition, load, repeat).
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from promptintern.errors import ConfigError
from promptintern.fields import boolean, check_fields, got, integer, list_of, number, setting, text

MODES = ("concurrency", "rate")
PROMPTS = ("full", "query", "synthetic_full", "synthetic_query")
PERCENTILES = (50, 90, 99)


@dataclass
class Condition:
    """One served condition: which weights answer (``base`` or a method's adapter), what is sent (the full prompt
    or the query alone; real or synthetic), with the prefix cache or without (a fresh cache salt per request), and
    the adapter served as a LoRA request or merged into the base weights (its own server)."""

    name: str = setting("", spec=text())
    model: str = setting("base", spec=text())  # base, or the source's method whose adapter is served
    prompt: str = setting("full", spec=text(list(PROMPTS)))
    cache: bool = setting(True, spec=boolean())
    merged: bool = setting(False, spec=boolean())
    repeats: int | None = setting(None, spec=integer(1, null=True))  # default: the benchmark's


@dataclass
class Slo:
    """The objective goodput counts against (vLLM's ``--goodput``): a request is good when each bound holds."""

    ttft_s: float | None = setting(None, spec=number(0, lo_open=True, null=True))
    tpot_s: float | None = setting(None, spec=number(0, lo_open=True, null=True))
    e2el_s: float | None = setting(None, spec=number(0, lo_open=True, null=True))

    def good(self, r: dict) -> bool:
        return all(bound is None or (r[key] is not None and r[key] <= bound)
                   for key, bound in (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s), ("e2el_s", self.e2el_s)))


@dataclass
class ServingSettings:
    name: str = setting("serving", spec=text())
    results_dir: str = setting("results", spec=text())
    source: str = setting("results/benchmark", spec=text())  # the experiment whose prompts and adapters are served
    eval_task: str = setting("nl2bash", spec=text())
    requests: int = setting(12, spec=integer(1))  # measured per run, the same ones for every condition
    warmup: int = setting(2, spec=integer(0))
    output_tokens: int = setting(16, spec=integer(2))
    concurrency: list = setting(factory=lambda: [1, 4, 12], spec=list_of(integer(1), what="concurrency levels"))
    request_rates: list = setting(factory=lambda: [0.5, 2.0], spec=list_of(number(0, lo_open=True),
                                                                            what="request rates"))
    repeats: int = setting(3, spec=integer(1))
    seed: int = setting(0, spec=integer(0))
    dtype: str = setting("bfloat16", spec=text(["bfloat16", "float16", "float32"]))
    kv_cache_gib: float = setting(2.0, spec=number(0, lo_open=True))
    synthetic_prefix_tokens: int = setting(2048, spec=integer(1))
    synthetic_query_tokens: int = setting(32, spec=integer(1))
    ratio: list = setting(factory=lambda: ["promptintern", "full_prompt_ft_cached"],
                          spec=list_of(text(), what="two condition names"))
    slo: Slo = field(default_factory=Slo)
    conditions: list[Condition] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<serving>") -> ServingSettings:
        """Checked against every field's rule (a ConfigError naming the field and the file) before any server
        starts."""
        raw = dict(raw or {})
        conds, slo = raw.pop("conditions", None), raw.pop("slo", None) or {}
        _known(cls, raw, "", source)
        _known(Slo, slo, "slo.", source)
        if not isinstance(conds, list) or not conds:
            raise ConfigError("conditions", "give a list of conditions ({name, model, prompt, cache, ...})", source)
        parsed = []
        for i, c in enumerate(conds):
            if not isinstance(c, dict) or not c.get("name"):
                raise ConfigError(f"conditions[{i}]", f"a mapping with a name, {got(c)}", source)
            _known(Condition, c, f"conditions[{i}].", source)
            parsed.append(Condition(**c))
            check_fields(parsed[-1], f"conditions[{i}].", source)
            if parsed[-1].merged and parsed[-1].model == "base":
                raise ConfigError(f"conditions[{i}].merged", "only an adapter can be merged (model is base)", source)
        names = [c.name for c in parsed]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError("conditions", f"names must be unique: {', '.join(dup)}", source)
        out = cls(**raw, slo=Slo(**slo), conditions=parsed)
        check_fields(out, "", source)
        check_fields(out.slo, "slo.", source)
        if len(out.ratio) != 2 or not set(out.ratio) <= set(names):
            raise ConfigError("ratio", f"must name two of the conditions ({', '.join(names)}), {got(out.ratio)}",
                              source)
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    def loads(self) -> list[tuple[str, float]]:
        """The load levels, in order: (``concurrency``, c) then (``rate``, requests/s)."""
        return [("concurrency", float(c)) for c in self.concurrency] + [("rate", float(r))
                                                                        for r in self.request_rates]


def _known(cls, raw: dict, prefix: str, source: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip(".") or "serving", f"must be a mapping, {got(raw)}", source)
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(prefix + unknown[0], f"unknown key; allowed: {', '.join(sorted(allowed))}", source)


# -- requests ---------------------------------------------------------------------------------------------------


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    """Arrival offsets (seconds from the run's start) of ``n`` requests at ``rate`` per second: exponential gaps
    (vLLM's ``--request-rate`` with burstiness 1), the first at 0; the same for every condition."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(n):
        out.append(t)
        t += rng.expovariate(rate) if i + 1 < n else 0.0
    return out


def synthetic_prompts(n: int, *, prefix_tokens: int, query_tokens: int, with_prefix: bool, seed: int,
                      vocab: tuple[int, int]) -> list[list[int]]:  # fmt: skip
    """``n`` fixed-length prompts of random token ids: one shared prefix (when ``with_prefix``) followed by a
    query of its own per request."""
    rng = random.Random(seed)
    lo, hi = vocab
    prefix = [rng.randrange(lo, hi) for _ in range(prefix_tokens)]
    queries = [[rng.randrange(lo, hi) for _ in range(query_tokens)] for _ in range(n)]
    return [(prefix if with_prefix else []) + q for q in queries]


# -- one run ------------------------------------------------------------------------------------------------------


def request_metrics(c) -> dict:
    """vLLM's per-request figures from a :class:`promptintern.vllm_server.Completion`."""
    return {"ttft_s": c.ttft_s, "tpot_s": c.tpot_s, "e2el_s": c.e2el_s, "itl_s": c.itl_s,
            "prompt_tokens": c.prompt_tokens, "output_tokens": c.completion_tokens, "cached_tokens": c.cached_tokens}


def run_load(server, model: str, prompts: list[list[int]], *, mode: str, level: float, output_tokens: int,
             cache: bool, arrivals: list[float] | None = None) -> tuple[list[dict], float]:  # fmt: skip
    """Send ``prompts`` to ``model`` under one load: ``concurrency`` (all at once, at most ``level`` in flight)
    or ``rate`` (at the given ``arrivals``, no cap). Returns the per-request figures in prompt order and the
    duration (first request sent to last token received)."""
    n = len(prompts)
    results: list[dict | None] = [None] * n
    gate = threading.Semaphore(int(level)) if mode == "concurrency" else None
    t0 = time.perf_counter()

    def one(i: int) -> None:
        if arrivals is not None:
            time.sleep(max(0.0, t0 + arrivals[i] - time.perf_counter()))
        if gate is not None:
            gate.acquire()
        try:
            start = time.perf_counter() - t0
            c = server.complete(model, prompts[i], output_tokens, ignore_eos=True,
                                cache_salt=None if cache else uuid.uuid4().hex)
            results[i] = {**request_metrics(c), "sent_s": start, "done_s": start + c.e2el_s}
        finally:
            if gate is not None:
                gate.release()

    with ThreadPoolExecutor(max_workers=max(n, 1)) as pool:
        list(pool.map(one, range(n)))
    duration = max(r["done_s"] for r in results) - min(r["sent_s"] for r in results) if n else 0.0
    return list(results), duration


def _stats(values: list[float]) -> dict:
    v = sorted(x for x in values if x is not None and math.isfinite(x))
    if not v:
        return {"mean": None, "median": None, "std": None, **{f"p{p}": None for p in PERCENTILES}}
    return {"mean": statistics.fmean(v), "median": statistics.median(v),
            "std": statistics.pstdev(v) if len(v) > 1 else 0.0,
            **{f"p{p}": _percentile(v, p) for p in PERCENTILES}}


def _percentile(sorted_values: list[float], p: float) -> float:
    """numpy's default (linear) percentile, as vLLM's benchmark computes it."""
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(requests: list[dict], duration_s: float, slo: Slo) -> dict:
    """vLLM's run metrics from its requests: throughputs over the run's duration, the distribution of TTFT,
    TPOT, ITL and E2EL (mean, median, std, p50/p90/p99), goodput under ``slo``."""
    done = [r for r in requests if r and r.get("output_tokens")]
    out_tokens = sum(r["output_tokens"] for r in done)
    in_tokens = sum(r["prompt_tokens"] or 0 for r in done)
    good = sum(1 for r in done if slo.good(r))
    return {
        "completed": len(done), "duration_s": duration_s,
        "total_input_tokens": in_tokens, "total_output_tokens": out_tokens,
        "cached_input_tokens": sum(r.get("cached_tokens") or 0 for r in done),
        "request_throughput": len(done) / duration_s if duration_s else None,
        "output_throughput": out_tokens / duration_s if duration_s else None,
        "total_token_throughput": (in_tokens + out_tokens) / duration_s if duration_s else None,
        "goodput": good / duration_s if duration_s else None, "good_requests": good,
        **{f"{k}": _stats([r[f"{k}_s"] for r in done]) for k in ("ttft", "tpot", "e2el")},
        "itl": _stats([x for r in done for x in r["itl_s"]]),
    }


def run_id(condition: str, mode: str, level: float, repeat: int) -> str:
    """The record's name: ``<condition>-c4-r0`` (concurrency 4) or ``<condition>-rate0.5-r0``."""
    lvl = f"c{int(level)}" if mode == "concurrency" else f"rate{level:g}"
    return f"{condition}-{lvl}-r{repeat}"


def resolve_path(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p
