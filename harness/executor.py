"""Run a plan on Ray: stages as chained tasks, evaluations after their chain's last stage.

- ``ray.init()`` locally by default, ``address`` (or RAY_ADDRESS) for a cluster.
- Every unit asks for ``resources.num_cpus`` / ``resources.num_gpus`` (fractions allowed, so several small
  jobs share one GPU). A stage is its own task, so its GPU memory is freed when it returns.
- Units whose valid result already exists are not submitted (resume, and re-runs cost nothing).
- A worker that dies (killed, out of memory) is retried by Ray up to ``retries`` times; a unit that still
  fails is recorded as failed (with its error), its dependents are skipped, the rest of the grid completes.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .plan import Unit
from .store import ResultStore, atomic_write_json

ENV_PASSTHROUGH = (
    "PROMPTINTERN_DATA_DIR",
    "PROMPTINTERN_CACHE_DIR",
    "PROMPTINTERN_MAX_BASE_MODELS",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "TOKENIZERS_PARALLELISM",
    "PROMPTINTERN_TASK_PATHS",
    "PROMPTINTERN_ALLOW_TASK_SHADOWING",
)
# Workers' library noise stays out of the run log (one progress view): no "Loading weights" bars, no advisory
# and deprecation warnings from every worker. A value set in the driver's environment wins.
QUIET_WORKER_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
}


def worker_env() -> dict[str, str]:
    """The environment Ray workers get: the passthrough variables that are set, over the quiet defaults."""
    env = {k: v for k, v in QUIET_WORKER_ENV.items() if k not in os.environ}
    env.update({k: os.environ[k] for k in (*ENV_PASSTHROUGH, *QUIET_WORKER_ENV) if k in os.environ})
    return env


@dataclass
class Summary:
    total: int = 0
    skipped: int = 0
    completed: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


@contextlib.contextmanager
def _running_marker(store_root: str, unit_id: str):
    """`runs/<id>.running` names the process working on a unit while it runs (status shows it)."""
    store = ResultStore(store_root)
    marker = store.runs / f"{unit_id}.running"
    atomic_write_json(marker, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)
        _release_memory()


def _stage_entry(unit: dict, store_root: str, data_dir: str | None, prev: dict | None) -> dict:
    from .stage_unit import run_stage

    prev_adapter = str(Path(store_root) / prev["adapter_dir"]) if prev else None
    with _running_marker(store_root, unit["id"]):
        return run_stage(unit, store_root, prev_adapter, data_dir)


def _eval_entry(unit: dict, store_root: str, data_dir: str | None, prev: dict | None) -> dict:
    from .eval_unit import run_eval

    adapter = str(Path(store_root) / prev["adapter_dir"]) if prev else None
    method = unit["config"]["method"]
    if method["name"] == "adapter":  # an existing adapter, by path
        adapter = str(Path(method["options"]["path"]).expanduser().resolve())
    with _running_marker(store_root, unit["id"]):
        return run_eval(unit, store_root, adapter, data_dir)


def _metatuner_entry(unit: dict, store_root: str, data_dir: str | None, prev: dict | None) -> dict:
    from .metatuner_unit import run_metatuner

    with _running_marker(store_root, unit["id"]):
        return run_metatuner(unit, store_root, prev, data_dir)


ENTRIES = {"stage": _stage_entry, "eval": _eval_entry, "metatuner": _metatuner_entry}


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: float | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = dict(runtime_env={"env_vars": worker_env()}, ignore_reinit_error=True, log_to_driver=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kwargs)


def run_plan(
    units: list[Unit],
    store: ResultStore,
    *,
    data_dir: str | None = None,
    retries: int = 2,
    progress: bool = True,
    ray_options: dict | None = None,
) -> Summary:
    import ray

    ray_options = ray_options or {}
    init_ray(ray_options.get("address"), ray_options.get("num_cpus"), ray_options.get("num_gpus"))
    start = time.perf_counter()
    summary = Summary(total=len(units))
    root = str(store.root.resolve())
    data_dir = str(data_dir) if data_dir else None
    remote = {kind: ray.remote(fn) for kind, fn in ENTRIES.items()}
    refs: dict[str, object] = {}  # unit id -> ObjectRef or a finished record (dict)
    pending: dict[object, Unit] = {}
    failed_upstream: set[str] = set()
    to_run = units_to_run(units, store)
    for u in units:
        if u.id not in to_run:
            refs[u.id] = store.read(u.id, require_artifacts=False)
            summary.skipped += 1
            continue
        prev = refs.get(u.deps[0]) if u.deps else None
        opts = {
            "num_cpus": u.resources.get("num_cpus", 1),
            "num_gpus": u.resources.get("num_gpus", 0),
            "max_retries": retries,
            "retry_exceptions": False,
            "name": u.id,
        }
        ref = remote[u.kind].options(**opts).remote(u.to_dict(), root, data_dir, prev)
        refs[u.id] = ref
        pending[ref] = u
    view = ProgressView(summary, enabled=progress)
    with view:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            view.update(running=len(pending))
            for ref in ready:
                u = pending.pop(ref)
                try:
                    ray.get(ref)
                    summary.completed += 1
                except Exception as e:  # noqa: BLE001 - a unit's failure must not stop the grid
                    upstream = any(d in failed_upstream or d in summary.failed for d in u.deps)
                    msg = f"upstream unit {u.deps[0]} failed" if upstream else _error_text(e)
                    summary.failed[u.id] = msg
                    failed_upstream.add(u.id)
                    _write_failure(store, u, msg, e)
                view.update(running=len(pending))
    summary.seconds = time.perf_counter() - start
    return summary


def units_to_run(units: list[Unit], store: ResultStore) -> set[str]:
    """Ids of the units that must run: those without a valid record, plus, transitively, the upstream stages
    of those whose adapter folder is missing (a stage whose dependants are all done needs no adapter)."""
    run = {u.id for u in units if store.read(u.id, require_artifacts=False) is None}
    for u in reversed(units):  # plans list dependencies first
        if u.id in run:
            run.update(d for d in u.deps if store.read(d) is None)
    return run


def _error_text(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def _write_failure(store: ResultStore, u: Unit, msg: str, e: Exception) -> None:
    """A failed unit leaves a record with status 'failed' (never valid, so a later run retries it)."""
    atomic_write_json(
        store.path(u.id),
        {
            "unit_id": u.id,
            "kind": u.kind,
            "status": "failed",
            "error": msg,
            "traceback": "".join(traceback.format_exception(e))[-8000:],
            "config": u.config,
        },
    )


class ProgressView:
    """Live rich view of units done / running / failed / left with an ETA."""

    def __init__(self, summary: Summary, enabled: bool = True):
        self.summary, self.enabled = summary, enabled
        self.progress = None
        self.start = time.perf_counter()

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]units"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.progress.__enter__()
            s = self.summary
            self.task = self.progress.add_task("units", total=s.total, completed=s.skipped, detail="")
        return self

    def update(self, running: int) -> None:
        if not self.progress:
            return
        s = self.summary
        finished = s.skipped + s.completed + len(s.failed)
        detail = f"done {s.completed} skipped {s.skipped} running≤{running} failed {len(s.failed)} left {s.total - finished}"
        self.progress.update(self.task, completed=finished, detail=detail)

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)
        return False
