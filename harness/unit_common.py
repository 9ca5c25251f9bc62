"""What stage and evaluation units share: task data, the prompt builder, a per-worker cache, run metadata."""

from __future__ import annotations

import json
import os

from .env_info import git_commit, hardware, versions


def set_threads(num_cpus: float | None) -> None:
    import torch

    n = max(1, int(num_cpus or 1))
    torch.set_num_threads(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def task_data(cfg: dict, task_name: str, data_dir: str | None):
    import tasks

    task = tasks.get_task(task_name, data_dir=data_dir)
    train = task.load(task.train_split)
    test = task.load(task.test_split)  # the whole split: none of it may enter the example pool
    return task, train, test


def prompt_builder(cfg: dict, task, pool, test):
    from promptintern.compressors import get_compressor
    from promptintern.prompt_builder import PromptBuilder
    from promptintern.retrievers import build_index

    p = cfg["prompt"]
    comp_cfg = dict(p["compressor"])
    name = comp_cfg.pop("name")
    key = ("compressor", json.dumps({"name": name, **comp_cfg}, sort_keys=True))
    compressor = cached(key, lambda: get_compressor(name, **comp_cfg))
    # Test items never enter the pool: training items whose query equals a test query are dropped (or raise).
    retriever = build_index(p["retriever"], pool, test, on_overlap=p["pool_overlap"]) if pool else None
    return PromptBuilder(task, pool, k=cfg["method"]["k_examples"], retriever=retriever, compressor=compressor)


_CACHE: dict = {}


def cached(key, make):
    """Per-worker cache for heavy objects (scoring models); Ray reuses worker processes across units."""
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def run_meta() -> dict:
    return {"versions": versions(), "git_commit": git_commit(), "hardware": hardware()}


