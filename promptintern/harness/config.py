"""Experiment files: YAML with defaults, `key=value` overrides, and validation that names the bad field."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import yaml

from promptintern import schedules, tasks
from promptintern.compressors import ALIASES, COMPRESSORS
from promptintern.errors import ConfigError
from promptintern.fields import Spec, boolean, got, integer, is_int, list_of, number, rules, text
from promptintern.methods import (
    METHODS,
    MIN_STAGES,
    coinciding_schedules,
    ineffective_rates,
    plan_method,
)

from .plan import method_specs
from .settings import ExperimentSettings, experiment_defaults

# Every key's default, from the section dataclasses (promptintern/harness/settings.py): the one place they are set.
DEFAULTS: dict = experiment_defaults()

METHOD_KEYS = {"name", "schedules", "rates", "stages", "lam", "k_examples", "options"}
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


def _list_index(items: list, part: str, key: str, where: str) -> int:
    """The index ``part`` names in ``items``: a number (negative counts from the end), or the ``name`` of exactly
    one of its entries (``methods.promptintern.stages=3``)."""
    n = len(items)
    if part.lstrip("-").isdigit():
        i = int(part)
        if not -n <= i < n:
            raise ConfigError(key, f"index {i} is out of range: {where} has {n} entr{'y' if n == 1 else 'ies'}"
                              + (f" (0..{n - 1})" if n else ""))
        return i % n
    names = [e.get("name") if isinstance(e, dict) else None for e in items]
    hits = [i for i, name in enumerate(names) if name == part]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ConfigError(key, f"{part!r} is ambiguous: {where} entries {', '.join(map(str, hits))} are all named "
                          f"{part!r}; name one by its index, e.g. {where}.{hits[0]}")
    named = [f"{i}: {name}" for i, name in enumerate(names) if isinstance(name, str)]
    raise ConfigError(key, f"{where} has no entry named {part!r}" + (f" ({', '.join(named)})" if named else "")
                      + f"; give an index 0..{n - 1} or an entry's name" if n else f"{where} is an empty list")


def apply_override(cfg: dict, item: str) -> None:
    """``a.b.c=value``; the value is parsed as YAML (numbers, lists, null...). A part of the key may index a list:
    by position (``methods.0.stages=3``) or by an entry's ``name`` (``methods.promptintern.stages=3``; an error if
    no entry or several have that name). Errors name the override's key; the value is validated afterwards with
    the rest of the experiment, so a bad value names its field."""
    if "=" not in item:
        raise ConfigError(item, "an override must look like key=value (e.g. tasks.test_limit=20)")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(key, f"cannot parse value {raw!r}: {e}") from None
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(key or item, "an override key is dotted names, e.g. train.lora.r=4 or methods.0.stages=3")
    node = cfg
    for depth, p in enumerate(parts):
        where = ".".join(parts[:depth])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            i = _list_index(node, p, key, where)
            if last:
                node[i] = value
                return
            if not isinstance(node[i], dict | list):
                raise ConfigError(key, f"{where}.{p} is {node[i]!r}, not a section")
            node = node[i]
            continue
        if last:
            node[p] = value
            return
        nxt = node.get(p)
        if not isinstance(nxt, dict | list):
            if p in node and nxt is not None:
                raise ConfigError(key, f"{'.'.join(parts[:depth + 1])} is {nxt!r}, not a section")
            node[p] = nxt = {}
        node = nxt


class ExperimentLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (at any depth), naming the key's path and
    both lines: plain YAML keeps the last one silently (a second ``train:`` would replace the whole section)."""

    source = "<yaml>"

    def construct_document(self, node):
        self._visited: set[int] = set()
        self._check_duplicates(node, "")
        return super().construct_document(node)

    def _check_duplicates(self, node, path: str) -> None:
        if id(node) in self._visited:  # an alias: checked where its anchor is (and no exponential walk)
            return
        self._visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for k, v in node.value:
                if k.tag == "tag:yaml.org,2002:merge":
                    self._check_duplicates(v, path)
                    continue
                label = k.value if isinstance(k, yaml.ScalarNode) else None
                child = f"{path}.{label}" if path else str(label)
                if label is not None:
                    ident = (k.tag, label)
                    first = seen.get(ident)
                    if first is not None:
                        raise ConfigError(child, f"duplicate key (first at line {first}): YAML would silently keep "
                                          "only the last one", f"{self.source}:{k.start_mark.line + 1}")
                    seen[ident] = k.start_mark.line + 1
                self._check_duplicates(v, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._check_duplicates(v, f"{path}[{i}]")


def load_yaml(text: str, source: str = "<yaml>"):
    """Parse an experiment file's text; a duplicate key is a :class:`ConfigError` naming ``source:line``."""
    loader = ExperimentLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_experiment(path: str | Path | None, overrides: list[str] | None = None,
                    include_paths: list[str] | None = None, allow_shadowing: bool = False) -> dict:  # fmt: skip
    """The resolved experiment: defaults < file < ``key=value`` overrides. ``task_paths`` are made absolute
    (relative to the experiment file, else the working dir), then ``include_paths`` (``--include-path`` and
    ``$PROMPTINTERN_TASK_PATHS``, which the command line reads) are added; ``allow_shadowing`` sets
    ``allow_task_shadowing``."""
    raw: dict = {}
    source = str(path) if path else "<defaults>"
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("experiment", f"file not found: {p}")
        try:
            raw = load_yaml(p.read_text(), source) or {}
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
        extra = [str(Path(x).expanduser().resolve()) for x in include_paths or []]
        cfg["task_paths"] = list(dict.fromkeys(cfg["task_paths"] + extra))
    for m in cfg.get("methods") if isinstance(cfg.get("methods"), list) else []:
        opts = m.get("options") if isinstance(m, dict) and m.get("name") == "adapter" else None
        if isinstance(opts, dict) and isinstance(opts.get("path"), str):
            opts["path"] = str((base / Path(opts["path"]).expanduser()).resolve())
    if allow_shadowing:
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


# Dotted field -> rule, for every field of a fixed type (the rest: tasks, methods, compressor, below): the rules
# the settings dataclasses carry beside their defaults (promptintern/harness/settings.py).
FIELD_RULES: dict[str, Spec] = rules(ExperimentSettings)


# Per-method fields (``methods[i].<key>``); ``stages`` and ``schedules`` have their own checks below.
METHOD_FIELDS: dict[str, Spec] = {
    "k_examples": integer(0),
    "lam": number(0, lo_open=True),
    "rates": list_of(number(0, 1, lo_open=True), what="a non-empty list of keep rates in (0, 1] (write [0.5] for one)"),
    "options": Spec("a mapping of option -> value", lambda v: isinstance(v, dict)),
}
# Option values the methods' plan functions do not check themselves (promptintern/methods.py).
OPTION_FIELDS: dict[str, Spec] = {
    "teacher_batch_size": integer(1),
    "teacher_max_new_tokens": integer(1, null=True),
    "temperature": number(0, lo_open=True),
    "path": text(),
}


def _get(cfg: dict, dotted: str):
    node = cfg
    for p in dotted.split("."):
        node = node[p]
    return node


def compressor_factory(name: str):
    """The registered factory of a compressor name (aliases allowed), or None."""
    try:
        return COMPRESSORS.lookup(name)
    except ConfigError:
        return None


def check_kwargs(factory, kwargs: dict, where: str, what: str, source: str) -> None:
    """``kwargs`` against ``factory``'s signature: an unknown keyword is an error naming ``where.<key>``; a value
    whose parameter has a plain default (int, float, bool, str) must have that default's type. Nothing is built."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = sorted(n for n, p in params.items()
                     if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))
    for k, v in kwargs.items():
        if k not in params or k not in allowed:
            raise ConfigError(f"{where}.{k}", f"unknown keyword for {what}; allowed: {', '.join(allowed)}", source)
        default = params[k].default
        if v is None or default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, bool):
            boolean().check(v, f"{where}.{k}", source)
        elif isinstance(default, int):
            integer().check(v, f"{where}.{k}", source)
        elif isinstance(default, float):
            number().check(v, f"{where}.{k}", source)
        elif isinstance(default, str):
            text().check(v, f"{where}.{k}", source)


def _method_error(e: ConfigError, where: str, name: str, source: str) -> ConfigError:
    """A plan function's error (``methods.<name>.options.x`` / ``options.x`` / ``prompt.x``) renamed to the entry."""
    field = e.field
    for prefix in (f"methods.{name}.", "methods."):
        if field.startswith(prefix):
            field = field[len(prefix):]
            break
    msg = str(e).split(f"{e.field}: ", 1)[-1]
    return ConfigError(field if field.startswith("prompt.") else f"{where}.{field}", msg, source)


def _check_methods(cfg: dict, source: str, warnings: list) -> None:
    _require(isinstance(cfg["methods"], list) and cfg["methods"], "methods",
             f"must be a non-empty list of methods ({{name: ...}} entries), {got(cfg['methods'])}", source)
    first_stage = cfg["prompt"]["first_stage"]
    for i, m in enumerate(cfg["methods"]):
        where = f"methods[{i}]"
        _require(isinstance(m, dict) and "name" in m, where, f"each method needs a name, {got(m)}", source)
        _check_keys(m, METHOD_KEYS, f"{where}.", source)
        name = m["name"]
        _require(isinstance(name, str) and name in METHODS, f"{where}.name",
                 f"unknown method {name!r}; allowed: {', '.join(sorted(METHODS))}", source)
        info = METHODS[name]
        for k in sorted(set(m) - info.keys()):
            raise ConfigError(f"{where}.{k}", f"{name} does not use {k!r} (it would be ignored); its keys: "
                              f"{', '.join(sorted(info.keys()))}", source)
        if not cfg["tasks"]["train"]:
            _require(not info.trained, f"{where}.name", f"{name} fine-tunes on a train task, but "
                     "tasks.train is empty (evaluation only: few_shot, compress_at_inference, adapter, or a model "
                     "path in models)", source)
        for key, spec in METHOD_FIELDS.items():
            if key in m:
                spec.check(m[key], f"{where}.{key}", source)
        if "schedules" in m or info.scheduled:
            sch = m.get("schedules")
            _require(isinstance(sch, list) and bool(sch) and all(isinstance(s, str) for s in sch),
                     f"{where}.schedules", f"{name} needs a non-empty list of schedule names (write [linear] for "
                     f"one), {got(sch)}", source)
            _require(len(set(sch)) == len(sch), f"{where}.schedules", f"lists a schedule twice: {sch}", source)
            for s in sch:
                try:
                    schedules.get_schedule(s)
                except Exception as e:
                    raise ConfigError(f"{where}.schedules", str(e), source) from None
        if "rates" in m:
            _require(len(set(m["rates"])) == len(m["rates"]), f"{where}.rates", f"lists a rate twice: {m['rates']}",
                     source)
        if info.scheduled or info.staged:
            st = m.get("stages")
            _require(is_int(st) and st >= MIN_STAGES, f"{where}.stages",
                     f"{name} needs an integer stages >= {MIN_STAGES} (with one stage it is query_only_ft), "
                     f"{got(st)}", source)
        opts = m.get("options")
        if isinstance(opts, dict):
            allowed = info.option_keys()
            for k, v in opts.items():
                if allowed is not None and k not in allowed:
                    raise ConfigError(f"{where}.options.{k}", f"unknown option of {name}; allowed: "
                                      f"{', '.join(sorted(allowed))}", source)
                if k in OPTION_FIELDS and info.options is not None:
                    OPTION_FIELDS[k].check(v, f"{where}.options.{k}", source)
        # every grid point of the entry plans (options, schedule parameters): errors name this entry
        try:
            specs = method_specs({"prompt": cfg["prompt"], "methods": [m]})
            for spec in specs:
                plan_method(spec)
        except ConfigError as e:
            raise _method_error(e, where, name, source) from None
        k_ex = m.get("k_examples", cfg["prompt"]["k_examples"])
        lam = float(m.get("lam", 3.0))
        if info.scheduled and len(m["schedules"]) > 1:
            same = coinciding_schedules(name, list(m["schedules"]), m["stages"], k_ex, lam,
                                        list(m.get("rates") or [1.0]), first_stage)
            for a, b in same:
                warnings.append(f"{where}.schedules: {a} and {b} give identical stage plans at stages="
                                f"{m['stages']}: comparing them compares identical runs (use more stages)")
        if info.uses_rate and m.get("rates"):
            for sched in (m.get("schedules") or [None]):
                idle = ineffective_rates(name, list(m["rates"]), schedule=sched, stages=m.get("stages", 1),
                                         k=k_ex, lam=lam, first_stage=first_stage)
                if idle:
                    warnings.append(f"{where}.rates: {', '.join(f'{r:g}' for r in idle)} change nothing for "
                                    f"{name}{'/' + sched if sched else ''} at stages={m.get('stages', 1)} with "
                                    f"prompt.first_stage={first_stage}: the run equals "
                                    "rate 1 (no template is ever compressed)")


def _check_tasks(cfg: dict, source: str) -> set:
    """``tasks.*``: names known, limits and strata per task; returns the known task names."""
    t = cfg["tasks"]
    known = set(tasks.list_tasks(include=cfg["task_paths"], allow_shadowing=cfg["allow_task_shadowing"]))
    names = list_of(text(), nonempty=False)
    train_tasks, ev = t["train"], t["eval"]
    _require(names.test(train_tasks), "tasks.train", "must be a list of task names ([] for an evaluation-only "
             f"experiment), {got(train_tasks)}", source)
    _require(ev == "same" or (names.test(ev) and bool(ev)), "tasks.eval",
             f"must be 'same' or a non-empty list of task names, {got(ev)}", source)
    if not train_tasks:
        _require(isinstance(ev, list), "tasks.eval", "an evaluation-only experiment (tasks.train: []) needs a list "
                 "of eval tasks", source)
    for key, values in (("tasks.train", train_tasks), ("tasks.eval", ev if isinstance(ev, list) else [])):
        for j, name in enumerate(values):
            _require(name in known, f"{key}[{j}]",
                     f"unknown task {name!r}; allowed: {', '.join(sorted(known))}", source)
        dup = sorted({x for x in values if values.count(x) > 1})
        _require(not dup, key, f"lists {', '.join(dup)} twice", source)

    def _count(v) -> bool:
        return v is None or (is_int(v) and v > 0)

    grid_tasks = list(train_tasks) + ([] if ev == "same" else [x for x in ev if x not in train_tasks])
    for key in ("train_limit", "test_limit"):
        v = t[key]
        if isinstance(v, dict):
            for k, x in v.items():
                _require(k in known, f"tasks.{key}.{k}", f"unknown task {k!r}", source)
                _require(_count(x), f"tasks.{key}.{k}", f"must be a positive integer or null, {got(x)}", source)
            missing = [x for x in grid_tasks if x not in v]
            _require(not missing, f"tasks.{key}", f"a mapping must name every task of the grid (missing: "
                     f"{', '.join(missing)}; null means all items)", source)
        else:
            _require(_count(v), f"tasks.{key}", f"must be a positive integer, null, or a mapping task -> either, "
                     f"{got(v)}", source)
    strat = t["stratify"]
    _require(isinstance(strat, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in strat.items()),
             "tasks.stratify", "must map task names to a meta field, e.g. {nl2bash: utilities}", source)
    for k in strat:
        _require(k in known, f"tasks.stratify.{k}", f"unknown task {k!r}", source)
    return known


def _check_compressor(cfg: dict, source: str) -> None:
    comp = cfg["prompt"]["compressor"]
    allowed = ", ".join(sorted(COMPRESSORS))
    _require(isinstance(comp, dict), "prompt.compressor", f"must be a mapping {{name: ..., <options>}} "
             f"(compressors: {allowed}), {got(comp)}", source)
    name = comp.get("name")
    factory = compressor_factory(name) if isinstance(name, str) else None
    _require(factory is not None, "prompt.compressor.name",
             f"unknown compressor {name!r}; allowed: {allowed}"
             + (f" (aliases: {', '.join(sorted(ALIASES))})" if ALIASES else ""), source)
    check_kwargs(factory, {k: v for k, v in comp.items() if k != "name"}, "prompt.compressor",
                 f"compressor {name}", source)


def validate(cfg: dict, source: str = "<config>") -> None:
    """Check the resolved experiment; the first problem is a :class:`ConfigError` naming its field. Checks need no
    model, no data and no Ray (:mod:`promptintern.harness.preflight` does those, before Ray starts)."""
    cfg.pop(WARNINGS_KEY, None)
    warnings: list[str] = []
    _check_keys(cfg, set(DEFAULTS), "", source)
    for sec in ("tasks", "prompt", "train", "generation", "timing", "scoring", "resources", "ray"):
        _require(isinstance(cfg[sec], dict), sec, f"must be a mapping, {got(cfg[sec])}", source)
        _check_keys(cfg[sec], set(DEFAULTS[sec]), f"{sec}.", source)
    _require(isinstance(cfg["timing"]["slo"], dict), "timing.slo", "must be a mapping {ttft_s: seconds, tpot_s: "
             f"seconds}}, {got(cfg['timing']['slo'])}", source)
    _check_keys(cfg["timing"]["slo"], set(DEFAULTS["timing"]["slo"]), "timing.slo.", source)
    _require(isinstance(cfg["train"]["lora"], dict), "train.lora", f"must be a mapping, {got(cfg['train']['lora'])}",
             source)
    _check_keys(cfg["train"]["lora"], set(DEFAULTS["train"]["lora"]), "train.lora.", source)
    _require(isinstance(cfg["name"], str) and bool(cfg["name"]) and
             cfg["name"].replace("-", "").replace("_", "").isalnum(),
             "name", "must be a simple identifier (letters, digits, - and _)", source)
    for field, spec in FIELD_RULES.items():
        spec.check(_get(cfg, field), field, source)
    _require(isinstance(cfg["models"], list) and bool(cfg["models"]), "models",
             f"must be a non-empty list of model names or paths (write [tiny] for one), {got(cfg['models'])}",
             source)
    for i, m in enumerate(cfg["models"]):
        text().check(m, f"models[{i}]", source)
    _require(len(set(cfg["models"])) == len(cfg["models"]), "models", "lists a model twice", source)
    _require(isinstance(cfg["seeds"], list) and bool(cfg["seeds"]), "seeds",
             f"must be a non-empty list of integers (write [0] for one), {got(cfg['seeds'])}", source)
    for s in cfg["seeds"]:
        _require(is_int(s), "seeds", f"seeds must be integers, {got(s)}", source)
    _require(len(set(cfg["seeds"])) == len(cfg["seeds"]), "seeds", "lists a seed twice", source)
    _require(isinstance(cfg["task_paths"], list) and all(isinstance(x, str) for x in cfg["task_paths"]),
             "task_paths", "must be a list of folders holding task YAMLs", source)
    known = _check_tasks(cfg, source)
    mnt = cfg["generation"]["max_new_tokens"]
    for k, v in (mnt.items() if isinstance(mnt, dict) else [(None, mnt)]):
        where = "generation.max_new_tokens" + (f".{k}" if k is not None else "")
        _require(k is None or k in known, where, f"unknown task {k!r}", source)
        _require(v is None or (is_int(v) and v > 0), where,
                 f"must be null (the task's own), a positive integer, or a mapping task -> either, {got(v)}",
                 source)
    _check_compressor(cfg, source)
    _check_methods(cfg, source, warnings)
    if warnings:
        cfg[WARNINGS_KEY] = warnings
