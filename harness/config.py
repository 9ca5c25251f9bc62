"""Experiment files: YAML with defaults, `key=value` overrides, and validation that names the bad field."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from promptintern.errors import ConfigError

DEFAULTS: dict = {
    "name": "experiment",
    "results_dir": "results",
    "data_dir": None,
    # folders of the user's own task YAMLs (relative to the experiment file), as lm-eval's --include_path
    "task_paths": [],
    "allow_task_shadowing": False,
    "models": ["smollm2-135m"],
    "tasks": {"train": ["mbpp"], "eval": "same", "train_limit": 16, "test_limit": 10, "sample_seed": 0,
              "near_duplicate_threshold": 0.9, "stratify": {}},
    "methods": [{"name": "full_prompt_ft"}, {"name": "query_only_ft"}],
    "seeds": [0],
    "prompt": {
        "k_examples": 1,
        "retriever": "bm25",
        "pool_overlap": "drop",
        "compressor": {"name": "perplexity", "model": "smollm2-135m"},
        "chat": True,
        "first_stage": "full",
        # the recurring prompt as a system message or user text; auto: the task's template_role, else system for
        # chat models
        "template_role": "auto",
    },
    "train": {
        "lr": 3e-4,
        "epochs": 1,
        "batch_size": 4,
        "grad_accum": 1,
        "warmup_ratio": 0.1,
        "weight_decay": 0.0,
        "max_length": 1024,
        "max_grad_norm": 1.0,
        "group_by_length": True,
        "packing": False,
        "gradient_checkpointing": False,
        # matched: every fine-tuning chain of a (model, train task, seed) gets the optimizer steps of the longest
        # (per_stage x its stages); per_stage: every stage runs `epochs` (the paper's recipe: T stages = T x steps)
        "budget": "matched",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
    },
    "generation": {
        "engine": "hf",
        "batch_size": 8,
        "max_new_tokens": None,
        "measure": True,
        "throughput_batch_sizes": [1, 8],
        "throughput_max_new_tokens": 16,
        "throughput_repeats": 3,
        "latency_samples": 3,
        "latency_repeats": 3,
        "latency_max_new_tokens": None,
        "exclusive_timing": True,
    },
    "resources": {"num_cpus": 1, "num_gpus": 0},
    "ray": {"address": None, "num_cpus": None, "num_gpus": None},
    "retries": 2,
}

METHOD_KEYS = {"name", "schedules", "rates", "stages", "lam", "k_examples", "options"}
BUDGETS = ("matched", "per_stage")
# Methods that evaluate without fine-tuning (the rest need a train task)
UNTRAINED_METHODS = {"few_shot", "compress_at_inference", "adapter"}
WARNINGS_KEY = "_warnings"  # validation warnings, kept in the resolved config (and so in experiment.json)


# Sections that a file replaces whole instead of merging key by key (their keys depend on a chosen backend).
REPLACED = {("methods",), ("prompt", "compressor")}


def deep_merge(base: dict, over: dict, _path: tuple = ()) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and (*_path, k) not in REPLACED:
            out[k] = deep_merge(out[k], v, (*_path, k))
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_override(cfg: dict, item: str) -> None:
    """`a.b.c=value`; the value is parsed as YAML (numbers, lists, null...)."""
    if "=" not in item:
        raise ConfigError(item, "an override must look like key=value (e.g. tasks.test_limit=20)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(key, f"cannot parse value {raw!r}: {e}") from None
    node = cfg
    parts = key.strip().split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            if p in node and node[p] is not None:
                raise ConfigError(key, f"{p!r} is not a section")
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def load_experiment(path: str | Path | None, overrides: list[str] | None = None,
                    include_paths: list[str] | None = None, allow_shadowing: bool = False) -> dict:  # fmt: skip
    """The resolved experiment: defaults < file < ``key=value`` overrides. ``task_paths`` are made absolute
    (relative to the experiment file, else the working dir), then ``include_paths`` (``--include-path``) and
    ``$PROMPTINTERN_TASK_PATHS`` are added; ``allow_shadowing`` (``--allow-shadowing``, or
    ``$PROMPTINTERN_ALLOW_TASK_SHADOWING``) sets ``allow_task_shadowing``."""
    from tasks.catalog import env_allows_shadowing, env_paths

    raw: dict = {}
    source = str(path) if path else "<defaults>"
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("experiment", f"file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError("experiment", f"invalid YAML: {e}", source) from None
        if not isinstance(raw, dict):
            raise ConfigError("experiment", "top level must be a mapping", source)
    cfg = deep_merge(DEFAULTS, raw)
    for item in overrides or []:
        apply_override(cfg, item)
    base = Path(path).resolve().parent if path else Path.cwd()  # relative paths in the file are relative to it
    tp = cfg.get("task_paths")
    if isinstance(tp, str):
        tp = [tp]
    if isinstance(tp, list) and all(isinstance(x, str) for x in tp):
        cfg["task_paths"] = list(dict.fromkeys(str((base / Path(x).expanduser()).resolve()) for x in tp))
        extra = [str(Path(x).expanduser().resolve()) for x in [*(include_paths or []), *env_paths()]]
        cfg["task_paths"] = list(dict.fromkeys(cfg["task_paths"] + extra))
    for m in cfg.get("methods") if isinstance(cfg.get("methods"), list) else []:
        opts = m.get("options") if isinstance(m, dict) and m.get("name") == "adapter" else None
        if isinstance(opts, dict) and isinstance(opts.get("path"), str):
            opts["path"] = str((base / Path(opts["path"]).expanduser()).resolve())
    if allow_shadowing or env_allows_shadowing():
        cfg["allow_task_shadowing"] = True
    validate(cfg, source)
    return cfg


def _check_keys(section: dict, allowed: set, where: str, source: str) -> None:
    for k in section:
        if k not in allowed:
            raise ConfigError(f"{where}{k}", f"unknown key; allowed: {', '.join(sorted(allowed))}", source)


def _require(cond: bool, field: str, msg: str, source: str) -> None:
    if not cond:
        raise ConfigError(field, msg, source)


def validate(cfg: dict, source: str = "<config>") -> None:
    import tasks
    from promptintern import schedules
    from promptintern.compressors import COMPRESSORS
    from promptintern.methods import (
        FIRST_STAGES,
        METHODS,
        MIN_STAGES,
        RATE_METHODS,
        SCHEDULED_METHODS,
        STAGED_METHODS,
        coinciding_schedules,
        ineffective_rates,
        method_keys,
    )
    from promptintern.prompts import TEMPLATE_ROLES
    from promptintern.retrievers import RETRIEVERS

    TRAINED_METHODS = set(METHODS) - UNTRAINED_METHODS
    cfg.pop(WARNINGS_KEY, None)
    warnings: list[str] = []
    _check_keys(cfg, set(DEFAULTS), "", source)
    for sec in ("tasks", "prompt", "train", "generation", "resources", "ray"):
        _require(isinstance(cfg[sec], dict), sec, "must be a mapping", source)
        _check_keys(cfg[sec], set(DEFAULTS[sec]), f"{sec}.", source)
    _check_keys(cfg["train"]["lora"], set(DEFAULTS["train"]["lora"]), "train.lora.", source)
    _require(isinstance(cfg["name"], str) and cfg["name"].replace("-", "").replace("_", "").isalnum(),
             "name", "must be a simple identifier (letters, digits, - and _)", source)
    for key in ("models", "seeds"):
        _require(isinstance(cfg[key], list) and cfg[key], key, "must be a non-empty list", source)
    for s in cfg["seeds"]:
        _require(isinstance(s, int), "seeds", f"seeds must be integers, got {s!r}", source)
    _require(isinstance(cfg["task_paths"], list) and all(isinstance(x, str) for x in cfg["task_paths"]),
             "task_paths", "must be a list of folders holding task YAMLs", source)
    _require(isinstance(cfg["allow_task_shadowing"], bool), "allow_task_shadowing", "must be true or false", source)
    known = set(tasks.list_tasks(include=cfg["task_paths"], allow_shadowing=cfg["allow_task_shadowing"]))
    train_tasks = cfg["tasks"]["train"]
    ev = cfg["tasks"]["eval"]
    _require(isinstance(train_tasks, list), "tasks.train", "must be a list of task names ([] for an evaluation-only "
             "experiment)", source)
    _require(ev == "same" or isinstance(ev, list), "tasks.eval", "must be 'same' or a list of task names", source)
    if not train_tasks:
        _require(isinstance(ev, list) and bool(ev), "tasks.eval", "an evaluation-only experiment (tasks.train: []) "
                 "needs a list of eval tasks", source)
        for i, m in enumerate(cfg["methods"] if isinstance(cfg["methods"], list) else []):
            name = m.get("name") if isinstance(m, dict) else None
            _require(name not in TRAINED_METHODS, f"methods[{i}].name", f"{name} fine-tunes on a train task, but "
                     "tasks.train is empty (evaluation only: few_shot, compress_at_inference, adapter, or a model "
                     "path in models)", source)
    for t in train_tasks + (ev if isinstance(ev, list) else []):
        _require(t in known, "tasks", f"unknown task {t!r}; allowed: {', '.join(sorted(known))}", source)
    def _count(v) -> bool:
        return v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0)

    for key in ("train_limit", "test_limit"):
        v = cfg["tasks"][key]
        if isinstance(v, dict):
            for k, x in v.items():
                _require(k in known, f"tasks.{key}.{k}", f"unknown task {k!r}", source)
                _require(_count(x), f"tasks.{key}.{k}", "must be a positive integer or null", source)
            grid_tasks = list(train_tasks) + ([] if ev == "same" else [t for t in ev if t not in train_tasks])
            missing = [t for t in grid_tasks if t not in v]
            _require(not missing, f"tasks.{key}", f"a mapping must name every task of the grid (missing: "
                     f"{', '.join(missing)}; null means all items)", source)
        else:
            _require(_count(v), f"tasks.{key}", "must be a positive integer, null, or a mapping task -> either",
                     source)
    _require(isinstance(cfg["tasks"]["sample_seed"], int) and not isinstance(cfg["tasks"]["sample_seed"], bool),
             "tasks.sample_seed", "must be an integer (the seed of the train/test item draws)", source)
    th = cfg["tasks"]["near_duplicate_threshold"]
    _require(th is None or (isinstance(th, int | float) and not isinstance(th, bool) and 0 < th <= 1),
             "tasks.near_duplicate_threshold", "must be a Jaccard similarity in (0, 1], or null (no guard)", source)
    strat = cfg["tasks"]["stratify"]
    _require(isinstance(strat, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in strat.items()),
             "tasks.stratify", "must map task names to a meta field, e.g. {nl2bash: utilities}", source)
    for k in strat:
        _require(k in known, f"tasks.stratify.{k}", f"unknown task {k!r}", source)
    _require(isinstance(cfg["methods"], list) and cfg["methods"], "methods", "must be a non-empty list", source)
    for i, m in enumerate(cfg["methods"]):
        where = f"methods[{i}]"
        _require(isinstance(m, dict) and "name" in m, where, "each method needs a name", source)
        _check_keys(m, METHOD_KEYS, f"{where}.", source)
        _require(m["name"] in METHODS, f"{where}.name",
                 f"unknown method {m['name']!r}; allowed: {', '.join(sorted(METHODS))}", source)
        for k in sorted(set(m) - method_keys(m["name"])):
            raise ConfigError(f"{where}.{k}", f"{m['name']} does not use {k!r} (it would be ignored); its keys: "
                              f"{', '.join(sorted(method_keys(m['name'])))}", source)
        for s in m.get("schedules") or []:
            try:
                schedules.get_schedule(s)
            except Exception as e:
                raise ConfigError(f"{where}.schedules", str(e), source) from None
        if m["name"] in SCHEDULED_METHODS:
            _require(bool(m.get("schedules")), f"{where}.schedules", "this method needs a list of schedules", source)
        for r in m.get("rates") or []:
            _require(isinstance(r, int | float) and 0 < r <= 1, f"{where}.rates", f"rates must be in (0, 1], got {r!r}", source)
        if m["name"] in SCHEDULED_METHODS | STAGED_METHODS:
            st = m.get("stages")
            _require(isinstance(st, int) and not isinstance(st, bool) and st >= MIN_STAGES, f"{where}.stages",
                     f"{m['name']} needs an integer stages >= {MIN_STAGES} (with one stage it is query_only_ft), "
                     f"got {st!r}", source)
        if m["name"] in SCHEDULED_METHODS and len(m.get("schedules") or []) > 1:
            same = coinciding_schedules(m["name"], list(m["schedules"]), m["stages"],
                                        int(m.get("k_examples", cfg["prompt"]["k_examples"])),
                                        float(m.get("lam", 3.0)), list(m.get("rates") or [1.0]),
                                        cfg["prompt"].get("first_stage", "full"))
            for a, b in same:
                warnings.append(f"{where}.schedules: {a} and {b} give identical stage plans at stages="
                                f"{m['stages']}: comparing them compares identical runs (use more stages)")
        if m["name"] in RATE_METHODS and m.get("rates"):
            for sched in (m.get("schedules") or [None]):
                idle = ineffective_rates(m["name"], list(m["rates"]), schedule=sched, stages=m.get("stages", 1),
                                         k=int(m.get("k_examples", cfg["prompt"]["k_examples"])),
                                         lam=float(m.get("lam", 3.0)),
                                         first_stage=cfg["prompt"].get("first_stage", "full"))
                if idle:
                    warnings.append(f"{where}.rates: {', '.join(f'{r:g}' for r in idle)} change nothing for "
                                    f"{m['name']}{'/' + sched if sched else ''} at stages={m.get('stages', 1)} with "
                                    f"prompt.first_stage={cfg['prompt'].get('first_stage', 'full')}: the run equals "
                                    "rate 1 (no template is ever compressed)")
    p = cfg["prompt"]
    _require(isinstance(p["k_examples"], int) and p["k_examples"] >= 0, "prompt.k_examples", "must be an integer >= 0", source)
    _require(p["retriever"] in RETRIEVERS, "prompt.retriever",
             f"unknown retriever {p['retriever']!r}; allowed: {', '.join(sorted(RETRIEVERS))}", source)
    _require(p["pool_overlap"] in ("drop", "raise"), "prompt.pool_overlap", "must be 'drop' or 'raise'", source)
    _require(p["template_role"] in ("auto", *TEMPLATE_ROLES), "prompt.template_role",
             f"must be auto, {' or '.join(TEMPLATE_ROLES)} (the recurring prompt as a system message or user text)",
             source)
    _require(p["first_stage"] in FIRST_STAGES, "prompt.first_stage",
             f"must be one of {', '.join(FIRST_STAGES)} (does PromptIntern's stage 0 see the full template?)", source)
    comp = p["compressor"]
    _require(isinstance(comp, dict) and comp.get("name") in COMPRESSORS, "prompt.compressor.name",
             f"unknown compressor {comp.get('name') if isinstance(comp, dict) else comp!r}; allowed: {', '.join(sorted(COMPRESSORS))}", source)
    for key in ("lr", "epochs", "warmup_ratio", "max_grad_norm"):
        _require(isinstance(cfg["train"][key], int | float) and cfg["train"][key] >= 0, f"train.{key}", "must be a number >= 0", source)
    for key in ("batch_size", "grad_accum", "max_length"):
        _require(isinstance(cfg["train"][key], int) and cfg["train"][key] > 0, f"train.{key}", "must be a positive integer", source)
    for key in ("group_by_length", "packing", "gradient_checkpointing"):
        _require(isinstance(cfg["train"][key], bool), f"train.{key}", "must be true or false", source)
    _require(cfg["train"]["budget"] in BUDGETS, "train.budget", f"must be one of {', '.join(BUDGETS)}", source)
    g = cfg["generation"]
    from promptintern.generation import ENGINES

    _require(g["engine"] in ENGINES, "generation.engine",
             f"unknown engine {g['engine']!r}; allowed: {', '.join(sorted(ENGINES))}", source)
    _require(isinstance(g["batch_size"], int) and g["batch_size"] > 0, "generation.batch_size", "must be a positive integer", source)
    mnt = g["max_new_tokens"]
    for k, v in (mnt.items() if isinstance(mnt, dict) else [(None, mnt)]):
        where = "generation.max_new_tokens" + (f".{k}" if k is not None else "")
        _require(k is None or k in known, where, f"unknown task {k!r}", source)
        _require(v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0), where,
                 "must be null (the task's own), a positive integer, or a mapping task -> either", source)
    _require(isinstance(g["measure"], bool), "generation.measure", "must be true or false", source)
    sizes = g["throughput_batch_sizes"]
    _require(isinstance(sizes, list) and sizes and all(isinstance(b, int) and b > 0 for b in sizes),
             "generation.throughput_batch_sizes", "must be a non-empty list of positive integers", source)
    _require(isinstance(g["throughput_max_new_tokens"], int) and g["throughput_max_new_tokens"] > 0,
             "generation.throughput_max_new_tokens", "must be a positive integer", source)
    _require(isinstance(g["latency_samples"], int) and g["latency_samples"] >= 0,
             "generation.latency_samples", "must be an integer >= 0", source)
    for key in ("latency_repeats", "throughput_repeats"):
        _require(isinstance(g[key], int) and not isinstance(g[key], bool) and g[key] >= 1, f"generation.{key}",
                 "must be an integer >= 1 (timed repetitions)", source)
    _require(isinstance(g["exclusive_timing"], bool), "generation.exclusive_timing", "must be true or false", source)
    lm = g["latency_max_new_tokens"]
    _require(lm is None or (isinstance(lm, int) and lm > 0), "generation.latency_max_new_tokens",
             "must be null or a positive integer", source)
    for key in ("num_cpus", "num_gpus"):
        v = cfg["resources"][key]
        _require(isinstance(v, int | float) and v >= 0, f"resources.{key}", "must be a number >= 0 (fractions allowed)", source)
    _require(isinstance(cfg["retries"], int) and cfg["retries"] >= 0, "retries", "must be an integer >= 0", source)
    if warnings:
        cfg[WARNINGS_KEY] = warnings
