"""Checks that need the filesystem or installed libraries, but neither Ray nor model weights: run after
:func:`promptintern.harness.config.load_experiment` and before Ray starts, so a malformed experiment fails with a
:class:`~promptintern.errors.ConfigError` naming its field (or file:line) instead of a failure record per unit.

- :func:`preflight` ``(cfg, data_dir=None)``: every model resolvable (:func:`check_models`, also the compressor's
  model when the grid compresses), the data directory and the data files of the splits the grid uses present and
  parseable (:func:`check_data`), the results folder writable (:func:`check_results_dir`), and, when a task's
  metric executes code (MBPP, HumanEval, ``code_tests``), the code sandbox runs a known-good and a known-bad
  program here (:func:`check_sandbox`).
- :func:`check_feasible` ``(units, nodes)``: every unit fits on at least one node; nodes from :func:`local_nodes`
  (what a local Ray would offer, before it starts) or :func:`ray_nodes` (a connected cluster).

(The compressor's keyword arguments and every field's type and range are checked by ``validate`` itself.)
"""

from __future__ import annotations

import inspect
import os
import uuid
from pathlib import Path

from promptintern import models, tasks
from promptintern.errors import ConfigError, DatasetNotFoundError, PromptInternError, UnknownModelError
from promptintern.methods import plan_method
from promptintern.paths import DATA_DIR_ENV
from promptintern.paths import data_dir as resolve_data_dir
from promptintern.tasks.infra import InfraError, sandbox_self_test
from promptintern.tasks.loaders.common import read_json, read_jsonl
from promptintern.tasks.metrics.code_exec import _limits
from promptintern.tasks.registry import METRICS

from .config import compressor_factory
from .plan import method_specs

GIB = 2**30
# A local Ray offers about this share of the available memory as the ``memory`` resource (the rest is its object
# store, 30% by default).
RAY_MEMORY_SHARE = 0.7
MODEL_KEYS = ("model", "tokenizer", "counter")  # compressor keywords that name a model (or its tokenizer)


def preflight(cfg: dict, data_dir: str | os.PathLike | None = None, *, write: bool = True) -> None:
    """Every check that needs no Ray: models, data, results folder (unless ``write=False``, for ``plan``, which
    writes nothing). ``data_dir``: the ``--data-dir`` value (default: the experiment's ``data_dir``, else
    ``$PROMPTINTERN_DATA_DIR``)."""
    check_models(cfg)
    check_engine(cfg)
    check_compressor(cfg)
    check_data(cfg, data_dir)
    if write:
        check_results_dir(cfg)
        check_sandbox(cfg, data_dir)


# -- code sandbox -----------------------------------------------------------------------------------------------
def check_sandbox(cfg: dict, data_dir=None) -> None:
    """Before a grid whose evaluations execute code: the sandbox self-test (:func:`promptintern.tasks.infra.sandbox_self_test`)
    with each such task's limits, so a sandbox that cannot start fails the run with its cause instead of scoring
    every sample as wrong."""
    root = resolve_data_dir(_data_setting(cfg, data_dir)[1])
    tested = set()
    ev = cfg["tasks"]["eval"]
    scored = list(cfg["tasks"]["train"]) if ev == "same" else list(ev)
    if any(m.get("name") == "metatuner" for m in cfg["methods"]):  # MetaTuner scores its training rollouts too
        scored += list(cfg["tasks"]["train"])
    for name in dict.fromkeys(scored):
        task = tasks.get_task(name, data_dir=root, include=cfg.get("task_paths") or [],
                              allow_shadowing=cfg.get("allow_task_shadowing", False))
        spec = METRICS.get(task.config.metric)
        if spec is None or not spec.executes_code:
            continue
        limits = _limits(task.config.metric_args or {})
        if limits in tested:
            continue
        tested.add(limits)
        try:
            sandbox_self_test(limits)
        except InfraError as e:
            raise InfraError(f"task {name!r} (metric {task.config.metric}) executes code, but {e}") from None


# -- generation engine -------------------------------------------------------------------------------------------
def check_engine(cfg: dict) -> None:
    """``generation.engine: vllm`` needs vLLM's own environment (``make setup-vllm``; vLLM is not a dependency of
    the project's): say so now, naming what is missing."""
    if (cfg.get("generation") or {}).get("engine") == "vllm":
        from promptintern.vllm_engine import check_vllm

        check_vllm()


# -- models -----------------------------------------------------------------------------------------------------
def check_model(name: str, field: str) -> None:
    """:func:`promptintern.models.resolve`'s rules without exporting or loading anything (``export=False``): a
    registered name needs its source, a path needs a ``config.json``, a hub id must be in the local cache when
    ``HF_HUB_OFFLINE`` is set."""
    try:
        models.resolve(name, export=False)
    except UnknownModelError as e:
        raise ConfigError(field, str(e)) from None


def check_models(cfg: dict) -> None:
    for i, m in enumerate(cfg["models"]):
        check_model(m, f"models[{i}]")


def uses_compressor(cfg: dict) -> bool:
    """Whether any grid point compresses a prompt (a rule keeping a fraction of the template strictly between 0
    and 1, or compression at inference); only then is the compressor's model needed."""
    for spec in method_specs(cfg):
        plan = plan_method(spec)
        if plan.test_compressed or any(0 < r.template_rate < 1 for r in [*plan.train, plan.test]):
            return True
    return False


def check_compressor(cfg: dict) -> None:
    """The models a compressor names (or defaults to) are resolvable; LLMLingua-2's package and weights are
    present. Only when the grid compresses."""
    if not uses_compressor(cfg):
        return
    comp = dict(cfg["prompt"]["compressor"])
    name = comp.pop("name")
    factory = compressor_factory(name)
    params = inspect.signature(factory).parameters
    if factory.__name__ == "llmlingua2_compressor":
        from promptintern.compressors import missing_requirements

        model = comp.get("model_name") or params["model_name"].default
        missing = missing_requirements(model)
        if missing:
            raise ConfigError("prompt.compressor.model_name" if "model_name" in comp else "prompt.compressor.name",
                              f"compressor llmlingua2 cannot run here: {'; '.join(missing)}")
    for key in MODEL_KEYS:
        if key not in params:
            continue
        value = comp.get(key, params[key].default)
        if isinstance(value, str):
            check_model(value, f"prompt.compressor.{key}")


# -- data -------------------------------------------------------------------------------------------------------
def _data_setting(cfg: dict, data_dir) -> tuple[str, str | None]:
    """(the setting that chose the data directory, its value): ``data_dir`` (the experiment's, which ``--data-dir``
    overrides), ``$PROMPTINTERN_DATA_DIR``, or ``--data-dir`` when only the argument names it."""
    env = os.environ.get(DATA_DIR_ENV) or None
    given = resolve_data_dir(data_dir) if data_dir not in (None, "") else None
    if cfg.get("data_dir") not in (None, "") and (given is None or resolve_data_dir(cfg["data_dir"]) == given):
        return "data_dir", str(cfg["data_dir"])
    if given is not None:
        return ("$" + DATA_DIR_ENV if env and resolve_data_dir(env) == given else "--data-dir"), str(given)
    if env:
        return "$" + DATA_DIR_ENV, env
    return f"data_dir (or ${DATA_DIR_ENV}, --data-dir)", None


def grid_tasks(cfg: dict) -> list[str]:
    names = list(cfg["tasks"]["train"])
    ev = cfg["tasks"]["eval"]
    return names + ([] if ev == "same" else [t for t in ev if t not in names])


def _parse_file(path: Path) -> None:
    """Every record of a local JSON / JSON Lines file parses (a loader may skip records outside its split)."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".jsonl"):
        for _ in read_jsonl(path):
            pass
    elif name.endswith(".json") and not path.name.endswith(".gz"):
        read_json(path)


def _loader_files(task, root) -> str:
    """``loader <name>, <the data files its arguments name>`` for messages."""
    files = []
    for v in (task.config.loader_args or {}).values():
        vals = v.values() if isinstance(v, dict) else [v]
        files += [str(Path(root) / x if root is not None else x) for x in vals
                  if isinstance(x, str) and Path(x).suffix in (".jsonl", ".json", ".csv", ".gz", ".parquet", ".nl",
                                                                ".cm")]
    return ", ".join([f"loader {task.config.loader}", *files])


def check_data(cfg: dict, data_dir=None) -> None:
    """The data directory exists when a task reads from it, and the train and test splits of every task of the
    grid load (their files present, every record parses: :class:`DataFormatError` names file:line). A data
    directory that is set but missing is an error naming the setting when a task needs it."""
    setting, value = _data_setting(cfg, data_dir)
    root = resolve_data_dir(value)
    missing_root = root is None or not root.is_dir()
    if root is not None and root.exists() and not root.is_dir():
        raise ConfigError(setting, f"{root} is not a directory")
    for name in grid_tasks(cfg):
        task = tasks.get_task(name, data_dir=root, include=cfg.get("task_paths") or [],
                              allow_shadowing=cfg.get("allow_task_shadowing", False))
        for split in dict.fromkeys(s for s in (task.train_split, task.test_split) if s):
            try:
                task.load(split)
            except DatasetNotFoundError as e:
                if missing_root:
                    where = f"{root} does not exist" if root is not None else "is not set"
                    raise ConfigError(setting, f"the data directory {where}, and task {name!r} needs it: {e}") from None
                raise
            except PromptInternError:  # DataFormatError (file:line), ConfigError of the task's YAML
                raise
            except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
                # a record the loader uses without checking it (e.g. a field of the wrong type): no line to name,
                # but the task, the split and the files it reads instead of a raw traceback
                raise ConfigError(f"tasks: {name}", f"loading split {split!r} ({_loader_files(task, root)}) failed: "
                                  f"{type(e).__name__}: {e}", task.config.source) from None
            for src in getattr(task, "_sources", {}).get(split, []):
                if isinstance(src, Path):
                    _parse_file(src)


# -- results folder ---------------------------------------------------------------------------------------------
def check_results_dir(cfg: dict) -> None:
    """``results_dir/<name>`` can be created and written: a probe file is created and deleted in its nearest
    existing ancestor (nothing is created when the folder does not exist yet)."""
    target = Path(cfg["results_dir"]).expanduser() / cfg["name"]
    probe_dir = target.absolute()
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ConfigError("results_dir", f"cannot create {target}: {probe_dir} is a file, not a folder")
    probe = probe_dir / f".promptintern-write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise ConfigError("results_dir", f"cannot write results to {target}: {probe_dir} is not writable "
                          f"({e.strerror or e})") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


# -- feasibility ------------------------------------------------------------------------------------------------
def _fmt_gib(b) -> str:
    return f"{float(b) / GIB:.1f} GiB"


def _unit_request(u) -> tuple[float, float, float | None]:
    r = u.resources or {}
    mem = r.get("memory")
    return float(r.get("num_cpus", 1) or 0), float(r.get("num_gpus", 0) or 0), (float(mem) * GIB if mem else None)


def check_feasible(units, nodes: list[dict]) -> None:
    """Every unit's request (``resources``: num_cpus, num_gpus, memory in GiB) fits on at least one node (dicts
    ``{"name", "CPU", "GPU", "memory"}``, memory in bytes as Ray reports it); else a :class:`ConfigError` naming the
    first unit that fits nowhere (Ray would wait for it forever)."""
    if not nodes:
        raise ConfigError("ray", "no alive Ray node to run on")

    def fits(req, n) -> bool:
        cpu, gpu, mem = req
        return (cpu <= float(n.get("CPU", 0) or 0) and gpu <= float(n.get("GPU", 0) or 0)
                and (mem is None or mem <= float(n.get("memory", 0) or 0)))

    largest = max(nodes, key=lambda n: (float(n.get("GPU", 0) or 0), float(n.get("CPU", 0) or 0),
                                        float(n.get("memory", 0) or 0)))
    for u in units:
        req = _unit_request(u)
        if any(fits(req, n) for n in nodes):
            continue
        cpu, gpu, mem = req
        asks = f"{cpu:g} CPUs, {gpu:g} GPUs" + (f", {_fmt_gib(mem)}" if mem is not None else "")
        which = "the node" if len(nodes) == 1 else "the largest node"
        has = (f"{float(largest.get('CPU', 0) or 0):g} CPUs, {float(largest.get('GPU', 0) or 0):g} GPUs, "
               f"{_fmt_gib(largest.get('memory', 0) or 0)}")
        raise ConfigError("resources", f"unit {u.id} ({u.label}) asks for {asks}; {which} "
                          f"({largest.get('name', '?')}) has {has}: lower resources.num_cpus / num_gpus / memory, "
                          "or add a bigger node")


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: line.split()[1] for line in f if ":" in line}
        return int(info.get("MemAvailable", info.get("MemTotal", 0))) * 1024
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return int(psutil.virtual_memory().available)
        except ImportError:
            return 0


def local_nodes(cfg: dict) -> list[dict]:
    """This machine as a local ``ray.init`` would see it: ``ray.num_cpus`` if set, else the CPUs this process may
    use; ``ray.num_gpus`` if set, else ``torch.cuda.device_count()``; memory: ~70% of the available memory."""
    ray_cfg = cfg.get("ray") or {}
    cpus = ray_cfg.get("num_cpus")
    if cpus is None:
        try:  # what a local ray.init counts (it honours a container's cgroup CPU quota)
            from ray._private.utils import get_num_cpus

            cpus = get_num_cpus()
        except Exception:  # noqa: BLE001 - a Ray without that helper: the CPUs this process may use
            try:
                cpus = len(os.sched_getaffinity(0))
            except (AttributeError, OSError):
                cpus = os.cpu_count() or 1
    gpus = ray_cfg.get("num_gpus")
    if gpus is None:
        try:
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except ImportError:
            gpus = 0
    return [{"name": "local", "CPU": float(cpus), "GPU": float(gpus),
             "memory": float(int(_meminfo_available() * RAY_MEMORY_SHARE))}]


def ray_nodes() -> list[dict]:
    """The alive nodes of the connected Ray cluster (``ray.nodes()``), as :func:`check_feasible` wants them."""
    import ray

    out = []
    for n in ray.nodes():
        if not n.get("Alive", n.get("alive", False)):
            continue
        r = n.get("Resources") or {}
        out.append({"name": n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or n.get("NodeID", "?"),
                    "CPU": float(r.get("CPU", 0)), "GPU": float(r.get("GPU", 0)),
                    "memory": float(r.get("memory", 0))})
    return out
