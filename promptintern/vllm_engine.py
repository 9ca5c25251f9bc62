"""Optional generation through vLLM: the throughput users see in production, with prefix caching and LoRA.

What it is for. The HF engines (``hf``, ``static``, ``fast`` in :mod:`promptintern.generation`) measure what a
prompt costs one transformers model. A deployment serves with an inference server instead: continuous batching,
paged attention, **automatic prefix caching** (a system prompt or few-shot block shared by many requests is
prefilled once and reused) and **LoRA served next to the base weights** (adapters are not merged). That is the
setting where "internalize the prompt into an adapter" has to pay off, because the prompt it removes would have
been partly cached anyway. :class:`VllmEngine` runs the benchmark's prompts through ``vllm.LLM`` with both
features on, so the two can be compared on the same token ids.

Optional, never the default. vLLM is not a dependency of this project and nothing imports it unless a run asks
for this engine. It needs ``pip install vllm`` (it pins its own torch build) and a CUDA GPU;
:func:`require_vllm` says which of the two is missing. Without them the rest of the project and its tests run
as before.

Same inputs, close but not identical outputs. Prompts go in as the token ids the caller already made (no
special tokens added, no re-tokenization), so every engine reads exactly the same tokens. Decoding is greedy
(temperature 0) and stops on the same end-of-turn ids as the HF engines (``ignore_eos`` plus explicit
``stop_token_ids``, so the model's generation_config adds none of its own). vLLM runs other kernels (paged /
flash attention, fused LoRA, a different batching of the same requests), so logits can differ in the last bits
and a near-tie can flip a greedy choice: outputs usually agree with ``model.generate`` token for token for a
while and may then diverge. Treat its scores as a deployment measurement, not as a replacement for the HF
engines' reference numbers.

Stop strings. The project's rule (:mod:`promptintern.stopping`) is fence-aware: a stop string opening or inside
a code fence does not count. vLLM's ``stop`` has no such rule, so it is used only as a cue: when vLLM halts on a
stop string that does not count, the request is resubmitted with its generated tokens appended to the prompt
(prefix caching makes that prefill nearly free) and goes on, until a stop that counts, an end-of-turn token or
the token budget. Inside an open fence only ``"```"`` and the stop strings that contain a fence are passed, so a
fenced block costs about two extra rounds, not one per line. The end of each row is then found exactly as the
HF engines find it (:func:`promptintern.generation.finish_row`), so ``text``, ``output_tokens`` and
``stop_reason`` follow the same definitions.

Timings. ``ttft_s`` and ``e2e_s`` come from the request metrics vLLM attaches to each output when stats are on
(``RequestOutput.metrics``: V1 ``RequestStateStats.first_token_latency`` and its token timestamps, or V0
``RequestMetrics`` arrival / first-token / finished times); without them ``ttft_s`` is NaN and ``e2e_s`` is the
wall time of the ``generate`` call. All prompts of a call are one continuous batch: ``batch_size`` is the
number of prompts and ``batch_index`` is 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .adapter_host import AdapterError, adapter_fingerprint, check_adapter_dir
from .errors import ConfigError
from .generation import Generation, finish_row
from .models import release_memory, resolve
from .stopping import FENCE, cut_at_stop, has_stop

ENGINE = "vllm"
INSTALL_HINT = "pip install vllm"
# vllm.config.lora.MaxLoRARanks in current vLLM (LoRAConfig rejects any other max_lora_rank); read from vLLM
# when it has the attribute.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


# -- availability ---------------------------------------------------------------------------------------------


def _import_error() -> str | None:
    """None when ``import vllm`` works, else the exception, as text."""
    try:
        import vllm  # noqa: F401
    except Exception as e:  # vLLM raises more than ImportError when its CUDA build does not match
        return f"{type(e).__name__}: {e}"
    return None


def vllm_available() -> bool:
    """Whether ``import vllm`` succeeds (says nothing about a GPU; see :func:`require_vllm`)."""
    return _import_error() is None


def cuda_available() -> bool:
    """``torch.cuda.is_available()``; False when torch itself is missing."""
    try:
        import torch
    except Exception:
        return False
    return bool(torch.cuda.is_available())


def require_vllm(*, cuda_check: Callable[[], bool] | None = None) -> None:
    """Raise ConfigError('generation.engine', ...) naming what the vllm engine lacks: vLLM (with the import's
    error) and/or a CUDA device. ``cuda_check`` replaces :func:`cuda_available` (tests)."""
    missing = []
    err = _import_error()
    if err is not None:
        missing.append(f"vLLM is not importable ({err})")
    if not (cuda_check or cuda_available)():
        missing.append("no CUDA device (torch.cuda.is_available() is False)")
    if missing:
        raise ConfigError(
            "generation.engine",
            f"engine {ENGINE!r} needs vLLM installed (`{INSTALL_HINT}`) and a CUDA GPU: " + "; ".join(missing)
            + ". Use engine 'hf', 'static' or 'fast' otherwise.",
        )


def lora_rank_slot(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds adapters of rank ``rank``."""
    ranks = LORA_RANKS
    try:
        from typing import get_args

        from vllm.config.lora import MaxLoRARanks

        ranks = tuple(sorted(get_args(MaxLoRARanks))) or LORA_RANKS
    except Exception:
        pass
    for r in ranks:
        if r >= rank:
            return r
    raise ConfigError("generation.max_lora_rank", f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {ranks[-1]}")


# -- request metrics ------------------------------------------------------------------------------------------


def _seconds(x) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) and x >= 0 else None


def request_times(metrics) -> tuple[float, float | None]:
    """(TTFT seconds or NaN, end-to-end seconds or None) from a ``RequestOutput.metrics`` object.

    V1 (``RequestStateStats``): ``first_token_latency`` is measured from arrival; ``first_token_ts`` and
    ``last_token_ts`` share the engine core's monotonic clock, so their difference is the decode time.
    V0 (``RequestMetrics``): ``arrival_time``, ``first_token_time``, ``finished_time`` are wall-clock stamps."""
    if metrics is None:
        return math.nan, None
    ttft = _seconds(getattr(metrics, "first_token_latency", None))
    if ttft is not None and ttft > 0:
        first, last = (_seconds(getattr(metrics, k, None)) for k in ("first_token_ts", "last_token_ts"))
        e2e = ttft + (last - first) if first and last and last >= first else None
        return ttft, e2e
    arrival = _seconds(getattr(metrics, "arrival_time", None))
    first = _seconds(getattr(metrics, "first_token_time", None))
    done = _seconds(getattr(metrics, "finished_time", None)) or _seconds(getattr(metrics, "last_token_time", None))
    if not arrival:
        return math.nan, None
    ttft = first - arrival if first and first >= arrival else math.nan
    e2e = done - arrival if done and done >= arrival else None
    return ttft, e2e


def round_stops(text: str, stop: Sequence[str] | None) -> list[str] | None:
    """The stop strings worth handing vLLM for the next stretch of a continuation whose text so far is
    ``text``: all of them outside a code fence; inside an open fence (odd number of fence marks) only strings
    that can close it, plus the fence itself (no fence-free stop can count before the fence closes)."""
    stop = [s for s in stop or () if s]
    if not stop:
        return None
    if text.count(FENCE) % 2 == 0:
        return stop
    return sorted({FENCE, *(s for s in stop if FENCE in s)})


# -- the engine -----------------------------------------------------------------------------------------------


@dataclass
class TokenOutput:
    """One prompt's raw result: the generated token ids (possibly a few past the end the row is cut at) and
    its timings."""

    token_ids: list[int]
    ttft_s: float
    e2e_s: float
    rounds: int = 1  # generate submissions it took (more than one when a stop string did not count)
    cached_tokens: int | None = None  # prompt tokens served from vLLM's prefix cache (first round); None: unreported
    finish_reason: str = ""  # vLLM's, from the last round
    stop_reason: int | str | None = None


@dataclass
class _Counters:
    calls: int = 0
    rounds: int = 0
    requests: int = 0
    resubmitted: int = 0
    prompt_tokens: int = 0  # submitted prompt tokens, continuation rounds included
    cached_tokens: int = 0  # RequestOutput.num_cached_tokens summed (prefix-cache hits)
    cached_reported: int = 0  # outputs that reported num_cached_tokens
    last_call_wall_s: float = 0.0
    adapters: dict[str, int] = field(default_factory=dict)


class VllmEngine:
    """A ``vllm.LLM`` for one base model with automatic prefix caching and LoRA on; greedy generation from
    token ids into :class:`promptintern.generation.Generation` records. Build one per (model, dtype,
    max_lora_rank) and keep it (:func:`get_engine` does); loading takes tens of seconds and the engine reserves
    ``gpu_memory_utilization`` of the GPU for weights and KV cache."""

    def __init__(self, model: str, *, dtype: str = "bfloat16", max_lora_rank: int = 16, max_loras: int = 1,
                 gpu_memory_utilization: float = 0.9, seed: int = 0, max_model_len: int | None = None,
                 log_stats: bool = True, tokenizer=None, **llm_kwargs):
        require_vllm()
        from vllm import LLM

        self.model_path = resolve(model)
        self.dtype = dtype
        self.max_lora_rank = lora_rank_slot(max_lora_rank)
        self.log_stats = log_stats
        kwargs = dict(model=self.model_path, dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                      enable_prefix_caching=True, enable_lora=True, max_lora_rank=self.max_lora_rank,
                      max_loras=max_loras, disable_log_stats=not log_stats)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        kwargs.update(llm_kwargs)
        self.llm = LLM(**kwargs)
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self._n = _Counters()
        self._adapter_versions: dict[str, tuple[tuple, int]] = {}  # folder -> (its files' fingerprint, lora id)

    # -- adapters -------------------------------------------------------------------------------------------

    def adapter_id(self, adapter_dir: str | Path) -> int:
        """The stable integer id (1, 2, ...) of an adapter folder for this engine (LoRARequest needs one per
        adapter). The same folder, however spelled, keeps its id while its files are unchanged; a folder whose
        weights or config were rewritten gets a new id (vLLM caches adapter weights by id, and prefix-cache
        blocks by adapter name, which includes the id: reusing either would serve the old adapter)."""
        key = str(Path(adapter_dir).expanduser().resolve())
        fingerprint = adapter_fingerprint(key)
        known = self._adapter_versions.get(key)
        if known is not None and known[0] == fingerprint:
            return known[1]

        cfg = check_adapter_dir(key)
        rank = cfg.get("r")
        if isinstance(rank, int) and rank > self.max_lora_rank:
            raise AdapterError(key, f"LoRA rank {rank} exceeds this vllm engine's max_lora_rank "
                                    f"{self.max_lora_rank}; build the engine with max_lora_rank>={rank}")
        lora_id = max((v[1] for v in self._adapter_versions.values()), default=0) + 1
        self._adapter_versions[key] = (fingerprint, lora_id)
        self._n.adapters[key] = lora_id
        return lora_id

    def lora_request(self, adapter_dir: str | Path | None):
        if adapter_dir is None:
            return None
        from vllm.lora.request import LoRARequest

        lora_id = self.adapter_id(adapter_dir)
        path = str(Path(adapter_dir).expanduser().resolve())
        return LoRARequest(f"{Path(path).name}-{lora_id}", lora_id, path)

    # -- generation -----------------------------------------------------------------------------------------

    def _sampling_params(self, max_tokens: int, stop: list[str] | None, eos: list[int]):
        from vllm import SamplingParams

        # ignore_eos + stop_token_ids: exactly the caller's end-of-turn ids end a row (the HF engines' set), not
        # the tokenizer's eos or the generation_config's extra ones.
        return SamplingParams(temperature=0, max_tokens=max_tokens, stop=stop, include_stop_str_in_output=True,
                              stop_token_ids=eos, ignore_eos=True)

    @staticmethod
    def _prompt(ids: list[int]):
        try:
            from vllm.inputs import TokensPrompt
        except Exception:
            return {"prompt_token_ids": ids}
        return TokensPrompt(prompt_token_ids=ids)

    def _goes_on(self, tokens: list[int], completion, stop, eos: set[int], max_new_tokens: int) -> bool:
        """Whether a request must be resubmitted: vLLM halted it on a stop string that does not count."""
        if len(tokens) >= max_new_tokens or any(t in eos for t in tokens):
            return False
        if getattr(completion, "finish_reason", None) != "stop" or not isinstance(completion.stop_reason, str):
            return False
        return not has_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop)

    def generate_token_ids(self, prompt_token_ids: list[list[int]], *, max_new_tokens: int,
                           stop: list[str] | None, eos_token_ids: Iterable[int],
                           adapter_dir: str | Path | None = None, progress: bool = False) -> list[TokenOutput]:
        """Greedy continuations of token-id prompts, in order, each generated at least up to its first stop
        that counts (fence-aware), its first id in ``eos_token_ids``, or ``max_new_tokens``."""
        if max_new_tokens < 1:
            raise ConfigError("generation.max_new_tokens", f"must be at least 1, got {max_new_tokens}")
        prompts = [list(map(int, p)) for p in prompt_token_ids]
        if not prompts:
            return []
        eos = sorted({int(t) for t in eos_token_ids})
        eos_set = set(eos)
        lora = self.lora_request(adapter_dir)
        n = len(prompts)
        tokens: list[list[int]] = [[] for _ in range(n)]
        ttft = [math.nan] * n
        e2e = [0.0] * n
        rounds = [0] * n
        cached_first: list[int | None] = [None] * n
        last: list = [None] * n
        pending = list(range(n))
        t0 = time.perf_counter()
        while pending:
            inputs, params = [], []
            for i in pending:
                text = self.tokenizer.decode(tokens[i], skip_special_tokens=True) if tokens[i] else ""
                inputs.append(self._prompt(prompts[i] + tokens[i]))
                params.append(self._sampling_params(max_new_tokens - len(tokens[i]), round_stops(text, stop), eos))
                self._n.prompt_tokens += len(prompts[i]) + len(tokens[i])
            self._n.resubmitted += sum(1 for i in pending if rounds[i])
            start = time.perf_counter()
            outs = self.llm.generate(inputs, params, use_tqdm=progress, lora_request=lora)
            wall = time.perf_counter() - start
            self._n.rounds += 1
            going = []
            for i, out in zip(pending, outs, strict=True):
                completion = out.outputs[0]
                new = [int(t) for t in completion.token_ids]
                tokens[i].extend(new)
                rt, re = request_times(getattr(out, "metrics", None))
                cached = getattr(out, "num_cached_tokens", None)
                cached = cached if isinstance(cached, int) else None
                if rounds[i] == 0:
                    ttft[i], cached_first[i] = rt, cached
                rounds[i] += 1
                e2e[i] = (start - t0) + (re if re is not None else wall)
                last[i] = completion
                if cached is not None:
                    self._n.cached_tokens += cached
                    self._n.cached_reported += 1
                if new and self._goes_on(tokens[i], completion, stop, eos_set, max_new_tokens):
                    going.append(i)
            pending = going
        self._n.calls += 1
        self._n.requests += n
        self._n.last_call_wall_s = time.perf_counter() - t0
        return [TokenOutput(token_ids=tokens[i], ttft_s=ttft[i], e2e_s=e2e[i], rounds=rounds[i],
                            cached_tokens=cached_first[i],
                            finish_reason=str(getattr(last[i], "finish_reason", "") or ""),
                            stop_reason=getattr(last[i], "stop_reason", None)) for i in range(n)]

    def generate(self, prompt_token_ids: list[list[int]], *, max_new_tokens: int, stop: list[str] | None,
                 eos_token_ids: Iterable[int], adapter_dir: str | Path | None = None,
                 progress: bool = False) -> list[Generation]:
        """One Generation per prompt, in order, with the HF engines' definitions: ``text`` the continuation cut
        at its first stop string that counts, ``output_tokens`` up to the end-of-turn token / the token that
        completed the stop / the budget, ``stop_reason`` "stop" / "eos" / "length"."""
        eos = {int(t) for t in eos_token_ids}
        outs = self.generate_token_ids(prompt_token_ids, max_new_tokens=max_new_tokens, stop=stop,
                                       eos_token_ids=eos, adapter_dir=adapter_dir, progress=progress)
        has_cached = "cached_tokens" in getattr(Generation, "__dataclass_fields__", {})
        gens = []
        for prompt, out in zip(prompt_token_ids, outs, strict=True):
            n_out, reason = finish_row(self.tokenizer, out.token_ids, eos, stop)
            raw = self.tokenizer.decode(out.token_ids[:n_out], skip_special_tokens=True)
            extra = {"cached_tokens": out.cached_tokens or 0} if has_cached else {}
            gens.append(Generation(text=cut_at_stop(raw, stop), prompt_tokens=len(prompt), output_tokens=n_out,
                                   ttft_s=out.ttft_s, e2e_s=out.e2e_s, batch_size=len(outs), batch_index=0,
                                   raw_text=raw, stop_reason=reason, **extra))
        return gens

    # -- reporting ------------------------------------------------------------------------------------------

    def stats(self) -> dict:
        """Counters since the engine was built. ``cached_prompt_tokens`` sums ``RequestOutput.num_cached_tokens``
        (prompt tokens served from the prefix cache); ``prefix_cache_hit_rate`` divides it by the prompt tokens
        submitted (continuation rounds included). ``vllm_prefix_cache`` holds vLLM's own cumulative counters
        (``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits``, in tokens) when ``LLM.get_metrics`` exists
        (V1, stats on)."""
        c = self._n
        out = {
            "engine": ENGINE,
            "model": self.model_path,
            "dtype": self.dtype,
            "max_lora_rank": self.max_lora_rank,
            "calls": c.calls,
            "rounds": c.rounds,
            "requests": c.requests,
            "resubmitted_requests": c.resubmitted,
            "prompt_tokens": c.prompt_tokens,
            "cached_prompt_tokens": c.cached_tokens if c.cached_reported else None,
            "prefix_cache_hit_rate": (c.cached_tokens / c.prompt_tokens) if c.cached_reported and c.prompt_tokens
            else None,
            "last_call_wall_s": c.last_call_wall_s,
            "adapters": dict(c.adapters),
        }
        vllm_counters = self._vllm_prefix_counters()
        if vllm_counters:
            out["vllm_prefix_cache"] = vllm_counters
        return out

    def _vllm_prefix_counters(self) -> dict:
        get = getattr(self.llm, "get_metrics", None)
        if not self.log_stats or get is None:
            return {}
        try:
            metrics = get()
        except Exception:
            return {}
        found = {}
        for m in metrics or ():
            name = str(getattr(m, "name", "")).removesuffix("_total")
            if name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits"):
                key = name.split("prefix_cache_")[1]
                found[key] = found.get(key, 0) + (getattr(m, "value", 0) or 0)
        return found


# -- one engine per process -----------------------------------------------------------------------------------

_ENGINE: tuple[tuple, VllmEngine] | None = None


def get_engine(model: str, *, dtype: str = "bfloat16", max_lora_rank: int = 16, **kwargs) -> VllmEngine:
    """The process's engine for (model, dtype, max_lora_rank), built on first use. Only one is kept: asking for
    another key drops the previous one first (each reserves most of the GPU)."""
    global _ENGINE

    # prefix caching on or off is part of the key: the uncached condition is vLLM with it off
    key = (resolve(model), dtype, lora_rank_slot(max_lora_rank), bool(kwargs.get("enable_prefix_caching", True)))
    if _ENGINE is not None and _ENGINE[0] == key:
        return _ENGINE[1]
    clear_engine()
    engine = VllmEngine(key[0], dtype=dtype, max_lora_rank=key[2], **{**kwargs, "enable_prefix_caching": key[3]})
    _ENGINE = (key, engine)
    return engine


def clear_engine() -> None:
    """Drop the cached engine (its GPU memory is freed once nothing else holds it)."""
    global _ENGINE
    if _ENGINE is None:
        return
    _ENGINE = None
    release_memory()
