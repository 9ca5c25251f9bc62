"""What stage and evaluation units share: task data, the prompt builder, per-worker caches (heavy objects, and
the base model that evaluation units serve their adapters from), run metadata."""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict

from promptintern import tasks
from promptintern.adapter_host import AdapterHost
from promptintern.compressors import get_compressor
from promptintern.methods import PromptRule
from promptintern.models import release_memory
from promptintern.prompt_builder import PromptBuilder
from promptintern.prompts import prompt_settings, resolve_template_role
from promptintern.retrievers import build_index

from .env_info import git_commit, hardware, versions
from .selection import unit_items


def set_threads(num_cpus: float | None) -> None:
    import torch

    n = max(1, int(num_cpus or 1))
    torch.set_num_threads(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def task_data(unit: dict, task_name: str, data_dir: str | None):
    """The unit's items of one task (:func:`promptintern.harness.selection.unit_items`: pool, training items, test items and
    the whole test split) from the ids the plan chose (``unit["inputs"]``)."""
    task = tasks.get_task(task_name, data_dir=data_dir, include=unit.get("task_paths") or [],
                          allow_shadowing=unit.get("allow_task_shadowing", False))
    return unit_items(task, (unit.get("inputs") or {}).get(task_name))


def max_new_tokens(gen_cfg: dict, task) -> int:
    """``generation.max_new_tokens`` for this task: a number, a mapping task -> number, or null (the task's own)."""
    v = gen_cfg.get("max_new_tokens")
    if isinstance(v, dict):
        v = v.get(task.name)
    return int(v) if v else int(task.max_new_tokens)


def prompt_builder(cfg: dict, task, pool, test):
    p = cfg["prompt"]
    comp_cfg = dict(p["compressor"])
    name = comp_cfg.pop("name")
    key = ("compressor", json.dumps({"name": name, **comp_cfg}, sort_keys=True))
    compressor = cached(key, lambda: get_compressor(name, **comp_cfg))
    # Test items never enter the pool: training items whose query equals a test query are dropped (or raise).
    retriever = build_index(p["retriever"], pool, test, on_overlap=p["pool_overlap"]) if pool else None
    role = resolve_template_role(p.get("template_role", "auto"), getattr(getattr(task, "config", None),
                                                                          "template_role", None), p.get("chat", True))
    return PromptBuilder(task, pool, k=cfg["method"]["k_examples"], retriever=retriever, compressor=compressor,
                         template_role=role, **prompt_settings(p))


def test_prompts(cfg: dict, items, n: int | None = None) -> list:
    """An evaluation's built prompts (:class:`promptintern.prompt_builder.BuiltPrompt`) for its test items (the
    first ``n``), as its config prescribes: the same code for the evaluation and for the engine unit that times it."""
    builder = prompt_builder(cfg, items.task, items.pool, items.test_split)
    rule = PromptRule(**cfg["rule"])
    return [builder.build(ex, rule, with_answer=False, compress_context=cfg["test_compressed"])
            for ex in items.test[:n]]


_CACHE: dict = {}


def cached(key, make):
    """Per-worker cache for heavy objects (scoring models); Ray reuses worker processes across units."""
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


# -- the per-worker base model --------------------------------------------------------------------------------
# Evaluation units get their model from an AdapterHost cached per (model, device, dtype): consecutive units in
# one Ray worker (Ray reuses worker processes) reuse the loaded base and only swap the merged adapter. At most
# MAX_BASE_MODELS hosts live in a worker (env PROMPTINTERN_MAX_BASE_MODELS, default 1); a unit that needs
# another model evicts the least recently used host first and frees the accelerator cache, so a worker never
# holds more than that many base models (plus each host's copies of the weights its adapters touched).

MAX_BASE_MODELS_ENV = "PROMPTINTERN_MAX_BASE_MODELS"
_HOSTS: OrderedDict = OrderedDict()


def max_base_models() -> int:
    raw = os.environ.get(MAX_BASE_MODELS_ENV, "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{MAX_BASE_MODELS_ENV}={raw!r}: must be a positive integer")
    return n


def adapter_host(model: str, *, device: str | None = None, dtype: str | None = None,
                 max_models: int | None = None):
    """The worker's AdapterHost for ``model`` (loaded now, or reused) and what loading it cost:
    ``{"reused": bool, "seconds": load seconds spent by this call, "base_load_seconds": what the load cost}``."""
    key = ("adapter_host", str(model), device, dtype)
    host = _HOSTS.get(key)
    if host is not None:
        _HOSTS.move_to_end(key)
        return host, {"reused": True, "seconds": 0.0, "base_load_seconds": host.load_seconds}
    limit = max_models if max_models is not None else max_base_models()
    release_hosts(keep=max(0, limit - 1))  # free room before loading: peak memory stays at `limit` models
    t0 = time.perf_counter()
    host = AdapterHost.load(model, device=device, dtype=dtype)
    seconds = time.perf_counter() - t0
    _HOSTS[key] = host
    return host, {"reused": False, "seconds": seconds, "base_load_seconds": host.load_seconds}


def release_hosts(keep: int = 0) -> int:
    """Drop cached base models, least recently used first, until at most ``keep`` remain; free the CUDA cache.
    Returns how many were dropped. (A stage unit that needs the whole GPU can call ``release_hosts()``.)"""
    dropped = 0
    while len(_HOSTS) > keep:
        _, host = _HOSTS.popitem(last=False)
        host.close()
        dropped += 1
    if dropped:
        release_memory()
    return dropped


def ray_node_id() -> str | None:
    """The Ray node this unit runs on (None outside Ray): which machine of a cluster produced a record."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - outside a worker there is no node
        return None


def run_meta() -> dict:
    return {"versions": versions(), "git_commit": git_commit(), "hardware": hardware(), "ray_node_id": ray_node_id()}


