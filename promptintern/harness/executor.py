"""Run a plan on Ray: stages as chained tasks, evaluations after their chain's last stage.

- ``ray.init()`` locally by default, ``address`` (or RAY_ADDRESS) for a cluster.
- Every unit asks for ``resources.num_cpus`` / ``resources.num_gpus`` (fractions allowed, so several small
  jobs share one GPU). A stage is its own task, so its GPU memory is freed when it returns.
- Units whose valid result already exists are not submitted (resume, and re-runs cost nothing). A stage whose
  adapter is missing or corrupt (truncated, or weights that differ from its record's hash) runs again when a
  unit that needs it has to run.
- Concurrent runs of one grid share it: a unit is submitted only by the run that holds its claim
  (:mod:`promptintern.harness.claims`), and a run claims only what it can start now (dependencies done, room on the
  cluster); it waits for the units another live run holds and counts them as done elsewhere. A unit another
  run failed meanwhile is not tried again by this one.
- A worker that dies (killed, out of memory) is retried by Ray up to ``retries`` times (the record and the
  summary say how many attempts it took); a unit that still fails is recorded as failed (with its error), its
  dependents are skipped, the rest of the grid completes. A failure never replaces a valid result.
- Each unit's worker output (library progress bars, warnings) goes to ``logs/<id>.log``; the console shows one
  progress view and a line per finished unit.
- Ctrl-C stops scheduling and cancels the units in flight; the caller writes the tables of what is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from promptintern import progress
from promptintern.errors import ConfigError
from promptintern.models import release_memory

from .artifacts import adapter_problem, remove_partials
from .claims import UnitClaims
from .engine_unit import run_engine
from .env_info import ALLOCATOR_ENV
from .eval_unit import run_eval
from .metatuner_unit import run_metatuner
from .plan import Unit
from .progress_view import ProgressView
from .records import failure_record
from .stage_unit import run_stage
from .store import ResultStore, atomic_write_json

LOGS_DIR = "logs"  # <experiment>/logs/<unit id>.log: each unit's worker output, one header per attempt
ATTEMPT_HEADER = "=== attempt:"


class ClusterError(ConfigError):
    """The cluster at ``ray.address`` cannot be used (unreachable, authentication refused)."""

ENV_PASSTHROUGH = (
    "PROMPTINTERN_DATA_DIR",
    "PROMPTINTERN_CACHE_DIR",
    "PROMPTINTERN_MAX_BASE_MODELS",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "TOKENIZERS_PARALLELISM",
)
# Workers' library noise stays out of the run log (one progress view): no "Loading weights" bars, no advisory
# and deprecation warnings from every worker. A value set in the driver's environment wins.
QUIET_WORKER_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
}


def worker_env() -> dict[str, str]:
    """The environment Ray workers get: the passthrough variables that are set, over the quiet and allocator
    defaults (:data:`promptintern.harness.env_info.ALLOCATOR_ENV`)."""
    defaults = {**QUIET_WORKER_ENV, **ALLOCATOR_ENV}
    env = {k: v for k, v in defaults.items() if k not in os.environ}
    env.update({k: os.environ[k] for k in (*ENV_PASSTHROUGH, *defaults) if k in os.environ})
    return env


@dataclass
class Summary:
    total: int = 0
    skipped: int = 0  # valid before this run started
    completed: int = 0  # run by this run
    shared: int = 0  # run meanwhile by another run of the same grid (it held the unit's claim)
    failed: dict[str, str] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)  # unit id -> attempts it took (worker deaths)
    cancelled: list[str] = field(default_factory=list)  # in flight when the run was interrupted
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def line(self) -> str:
        parts = [f"{self.completed} ran"]
        if self.shared:
            parts.append(f"{self.shared} run by another process")
        parts += [f"{self.skipped} already done", f"{len(self.failed)} failed"]
        if self.retried:
            parts.append(f"{len(self.retried)} retried")
        text = f"{', '.join(parts)} of {self.total} units in {self.seconds:.0f} s"
        if self.interrupted:
            text = (f"interrupted: {text}; {len(self.cancelled)} cancelled, "
                    f"{self.total - self.skipped - self.completed - self.shared - len(self.failed)} not done "
                    "(the next `promptintern run` resumes)")
        return text


def _marker(store: ResultStore, unit_id: str) -> Path:
    return store.runs / f"{unit_id}.running"


LOG_PROGRESS_EVERY_S = 30.0  # a progress line in the unit's log at most this often (and at each phase's ends)
MARKER_PROGRESS_EVERY_S = 1.0  # the running marker the progress view reads, at most this often


@contextlib.contextmanager
def _running_marker(store: ResultStore, unit_id: str):
    """`runs/<id>.running` names the worker process on a unit while it runs (its run's claim says whether it is
    live: ``promptintern status``) and carries the unit's progress inside it (:mod:`promptintern.progress`),
    which also goes, as lines, to the unit's log (its stdout while it runs)."""
    marker = _marker(store, unit_id)
    head = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    atomic_write_json(marker, head)

    def to_marker(p: progress.Progress) -> None:
        with contextlib.suppress(OSError):
            atomic_write_json(marker, {**head, "progress": p.to_dict()})

    def to_log(p: progress.Progress) -> None:
        print(f"progress: {p.line()}", flush=True)

    log_sink = progress.Throttled(to_log, LOG_PROGRESS_EVERY_S)
    marker_sink = progress.Throttled(to_marker, MARKER_PROGRESS_EVERY_S)

    def sink(p: progress.Progress) -> None:
        log_sink(p)
        marker_sink(p)

    try:
        with progress.reporting(sink):
            yield
    finally:
        marker.unlink(missing_ok=True)
        release_memory()


def unit_progress(store: ResultStore, unit_id: str) -> dict | None:
    """The progress a running unit last reported (:meth:`promptintern.progress.Progress.to_dict`), or None."""
    try:
        p = json.loads(_marker(store, unit_id).read_text()).get("progress")
    except (OSError, ValueError, AttributeError):
        return None
    return p if isinstance(p, dict) else None


def unit_log(store: ResultStore, unit_id: str) -> Path:
    return store.root / LOGS_DIR / f"{unit_id}.log"


def _start_attempt(log: Path, run_id: str) -> int:
    """Append an attempt header to the unit's log; the attempt's number within run ``run_id``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        # on a line of its own: a worker killed mid-line leaves no newline behind
        f.write(f"\n{ATTEMPT_HEADER} run {run_id} pid {os.getpid()} host {socket.gethostname()} "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return attempts(log, run_id)


def attempts(log: Path, run_id: str | None = None) -> int:
    """How many times run ``run_id`` (any run: None) started the unit whose log this is."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return 0
    tag = f"{ATTEMPT_HEADER} run {run_id} " if run_id else ATTEMPT_HEADER
    return sum(line.startswith(tag) for line in lines)


@contextlib.contextmanager
def _output_to(log: Path):
    """The worker's stdout and stderr (file descriptors 1 and 2: Python, C libraries, progress bars, warnings)
    go to the unit's log while the unit runs, not to the run's console."""
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = (os.dup(1), os.dup(2))
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for x in (*saved, fd):
            os.close(x)


class CorruptArtifactError(RuntimeError):
    """An upstream unit's artefact is missing or corrupt (the next run re-runs that unit)."""


def _upstream_adapter(store: ResultStore, prev: dict | None) -> str | None:
    """The upstream stage's adapter folder, checked (files present, safetensors intact, weights hash as recorded)."""
    if not prev or not prev.get("adapter_dir"):
        return None
    path = store.root / prev["adapter_dir"]
    problem = adapter_problem(path, prev.get("adapter_sha256"))
    if problem:
        raise CorruptArtifactError(f"upstream unit {prev.get('unit_id')}: adapter {problem}")
    return str(path)


def _run_stage(unit: dict, store: ResultStore, data_dir: str | None, prev: dict | None) -> dict:
    return run_stage(unit, str(store.root), _upstream_adapter(store, prev), data_dir)


def _run_eval(unit: dict, store: ResultStore, data_dir: str | None, prev: dict | None) -> dict:
    adapter = _upstream_adapter(store, prev)
    method = unit["config"]["method"]
    if method["name"] == "adapter":  # an existing adapter, by path: its weights must be those the plan hashed
        path = Path(method["options"]["path"]).expanduser().resolve()
        problem = adapter_problem(path, unit["config"].get("adapter_sha256"))
        if problem:
            raise CorruptArtifactError(f"methods adapter options.path: {problem}")
        adapter = str(path)
    return run_eval(unit, str(store.root), adapter, data_dir)


def _run_metatuner(unit: dict, store: ResultStore, data_dir: str | None, prev: dict | None) -> dict:
    return run_metatuner(unit, str(store.root), prev, data_dir)


def _run_engine(unit: dict, store: ResultStore, data_dir: str | None, prev: dict | None) -> dict:
    return run_engine(unit, str(store.root), data_dir)


RUNNERS = {"stage": _run_stage, "eval": _run_eval, "metatuner": _run_metatuner, "engine": _run_engine}


def unit_entry(unit: dict, store_root: str, data_dir: str | None, prev: dict | None, run_id: str) -> dict:
    """What a Ray worker runs for one unit: its output goes to ``logs/<id>.log``, a valid result that an earlier
    attempt wrote before its worker died is returned as it is (a retry never runs a finished unit again), and a
    retried unit's record says how many attempts it took."""
    store = ResultStore(store_root)
    uid = unit["id"]
    log = unit_log(store, uid)
    attempt = _start_attempt(log, run_id)
    done = store.read(uid)
    if done is not None:
        return done
    with _running_marker(store, uid), _output_to(log):
        record = RUNNERS[unit["kind"]](unit, store, data_dir, prev)
    if attempt > 1:
        record = {**record, "attempts": attempt}
        store.write(uid, {k: v for k, v in record.items() if k not in ("schema_version", "unit_id")})
    return record


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: float | None = None) -> None:
    import ray

    if ray.is_initialized():
        return

    # Ray 2.60 announces on every local start that its token authentication is on (docs/cluster.md says what it
    # means for a cluster); the run log keeps its own lines
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    address = address or os.environ.get("RAY_ADDRESS") or None
    # log_to_driver off: what workers print goes to the units' logs; the console keeps one progress view
    kwargs = dict(runtime_env={"env_vars": worker_env()}, ignore_reinit_error=True, log_to_driver=False)
    if not address:
        if any(ch.isspace() for ch in sys.executable):
            # Ray starts the workers of a runtime_env through a shell command line with the interpreter's path
            # unquoted (ray-project/ray#5288): under a path with spaces they never start. A local Ray's workers
            # inherit its processes' environment instead, so the variables go there for the start.
            env = kwargs.pop("runtime_env")["env_vars"]
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kwargs)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            return
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kwargs)
        return
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:  # noqa: BLE001 - connection errors come in many types; the user needs one sentence
        text = str(e).strip().splitlines()
        chain, x = [], e
        while x is not None and len(chain) < 5:  # ray.init's ConnectionError hides the AuthenticationError below
            chain.append(str(x).lower())
            x = x.__cause__ or x.__context__
        auth = any("auth" in c or "token" in c for c in chain)
        hint = (" The cluster uses token authentication (Ray 2.60): set RAY_AUTH_MODE=token and the cluster's "
                "token (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN) on this machine too "
                "(docs/cluster.md)." if auth else " Is the head node up (`ray status` on it) and the address "
                "reachable?")
        raise ClusterError("ray.address", f"cannot connect to the Ray cluster at {address}: "
                           f"{text[-1] if text else type(e).__name__}.{hint}") from None


def run_plan(
    units: list[Unit],
    store: ResultStore,
    *,
    data_dir: str | None = None,
    retries: int = 2,
    progress: bool = True,
    ray_options: dict | None = None,
    run_id: str | None = None,
) -> Summary:
    """Run the units that have no valid result, sharing the grid with any concurrent run of it (per-unit
    claims), and return what happened. Ctrl-C stops scheduling and cancels what is in flight: the summary says
    ``interrupted`` and what was cancelled; nothing half-written is left behind."""
    ray_options = ray_options or {}
    address = ray_options.get("address") or os.environ.get("RAY_ADDRESS")
    init_ray(address, ray_options.get("num_cpus"), ray_options.get("num_gpus"))
    if address:  # a cluster: no unit to run may ask for more than its largest node has (it would wait forever)
        from .preflight import check_feasible, ray_nodes

        todo = units_to_run(units, store)
        check_feasible([u for u in units if u.id in todo], ray_nodes())
    return _GridRun(units, store, data_dir=data_dir, retries=retries, progress=progress, run_id=run_id).run()


class _GridRun:
    """One run's scheduler. A unit is submitted when its dependencies are done, this run holds its claim, and the
    units in flight leave room for it on the cluster (so a run claims only what it can start now, and a second
    run of the grid finds work); it waits (polling) for units another run holds; it records each outcome."""

    POLL_S = 1.0

    def __init__(self, units, store, *, data_dir, retries, progress, run_id):
        self.units, self.store = units, store
        self.root = str(store.root.resolve())
        self.data_dir = str(data_dir) if data_dir else None
        self.retries = retries
        self.claims = UnitClaims(store.root, run_id)
        self.summary = Summary(total=len(units))
        self.view = ProgressView(self.summary, enabled=progress)
        self.records: dict[str, dict] = {}  # unit id -> a finished record
        self.pending: dict[object, Unit] = {}  # ObjectRef in flight here -> its unit
        self.submitted: dict[str, float] = {}  # unit id -> when this run submitted it (time.time())
        self.failed: set[str] = set()
        self.waiting: list[Unit] = []
        self.started = time.time()
        self.capacity: dict[str, float] = {}

    def run(self) -> Summary:
        import ray

        start = time.perf_counter()
        self.remote = ray.remote(unit_entry)
        total = ray.cluster_resources()
        self.capacity = {"CPU": float(total.get("CPU", 0)), "GPU": float(total.get("GPU", 0))}
        to_run = units_to_run(self.units, self.store)
        for u in self.units:
            if u.id in to_run:
                self.waiting.append(u)
            else:
                self.records[u.id] = self.store.read(u.id, require_artifacts=False)
                self.summary.skipped += 1
        try:
            with self.view:
                while self.waiting or self.pending:
                    self._schedule()
                    self._collect()
        except KeyboardInterrupt:
            self._stop(interrupted=True)
        except BaseException:
            self._stop(interrupted=False)  # cancel what is in flight before the claims go, then say why
            raise
        finally:
            self.claims.release_all()
            self.summary.seconds = time.perf_counter() - start
        return self.summary

    # -- scheduling -------------------------------------------------------------------------------------------
    def _fits(self, u: Unit) -> bool:
        """Room on the cluster for ``u`` next to what this run has in flight (always, when nothing is)."""
        if not self.pending:
            return True
        for key, res in (("CPU", "num_cpus"), ("GPU", "num_gpus")):
            busy = sum(float(x.resources.get(res, 0) or 0) for x in self.pending.values())
            if busy + float(u.resources.get(res, 0) or 0) > self.capacity.get(key, 0) + 1e-9:
                return False
        return True

    def _schedule(self) -> None:
        for u in list(self.waiting):
            if any(d in self.failed for d in u.deps):
                self.waiting.remove(u)
                self._fail(u, f"upstream unit {next(d for d in u.deps if d in self.failed)} failed", None)
                continue
            if not all(d in self.records for d in u.deps) or not self._fits(u):
                continue
            if not self.claims.claim(u.id, u.label):
                continue  # another run holds it: poll again
            rec = self.store.read(u.id, require_artifacts=u.kind == "stage")
            if rec is not None:  # the other run finished it while we waited
                self.claims.release(u.id)
                self.waiting.remove(u)
                self.records[u.id] = rec
                self.summary.shared += 1
                self.view.line(f"done elsewhere  {u.label} ({u.id})")
                continue
            elsewhere = self._failed_elsewhere(u)
            if elsewhere:  # another run of this grid failed it after this run started: not tried twice
                self.waiting.remove(u)
                self.failed.add(u.id)
                self.summary.failed[u.id] = elsewhere
                self.claims.release(u.id)
                self.view.line(f"FAILED elsewhere  {u.label} ({u.id}): {elsewhere}")
                continue
            if u.kind == "stage":
                remove_partials(self.store.adapter_dir(u.id))
            prev = self.records.get(u.deps[0]) if u.deps else None
            opts = {"num_cpus": u.resources.get("num_cpus", 1), "num_gpus": u.resources.get("num_gpus", 0),
                    "max_retries": self.retries, "retry_exceptions": False, "name": u.id}
            if u.resources.get("memory"):
                opts["memory"] = int(float(u.resources["memory"]) * 2**30)
            self.waiting.remove(u)
            self.submitted[u.id] = time.time()
            self.pending[self.remote.options(**opts).remote(u.to_dict(), self.root, self.data_dir, prev,
                                                            self.claims.run_id)] = u
        self.view.update(running=len(self.pending))

    def _failed_elsewhere(self, u: Unit) -> str | None:
        try:
            rec = json.loads(self.store.path(u.id).read_text())
        except (OSError, ValueError):
            return None
        if (isinstance(rec, dict) and rec.get("status") == "failed" and rec.get("run_id")
                and rec["run_id"] != self.claims.run_id and float(rec.get("failed_at") or 0) >= self.started):
            return f"failed in run {rec['run_id']}: {rec.get('error')}"
        return None

    def _written_now(self, u: Unit) -> dict | None:
        """The unit's valid record if this run's attempt wrote it (a stage: with its adapter), else None: an older
        record of a stage that re-runs for its lost adapter is no result of this attempt."""
        rec = self.store.read(u.id, require_artifacts=u.kind == "stage")
        try:
            fresh = self.store.path(u.id).stat().st_mtime >= self.submitted.get(u.id, self.started) - 1.0
        except OSError:
            return None
        return rec if rec is not None and fresh else None

    def _collect(self) -> None:
        import ray

        if not self.pending:
            time.sleep(self.POLL_S)  # every unit left is held by another run, or waits for one
            return
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=self.POLL_S)
        for ref in ready:
            u = self.pending.pop(ref)
            try:
                self._done(u, ray.get(ref))
            except Exception as e:  # noqa: BLE001 - a unit's failure must not stop the grid
                valid = self._written_now(u)
                if valid is not None:  # its worker died after writing a valid result: the result stands
                    self._done(u, valid)
                else:
                    self._fail(u, _error_text(e), e)
        self.view.update(running=len(self.pending))
        if self.view.progress:
            self.view.units({u.id: (u.label, unit_progress(self.store, u.id)) for u in self.pending.values()})

    def _tidy(self, u: Unit) -> None:
        """What a dead attempt of ``u`` may have left: its worker's marker, partial adapter folders."""
        _marker(self.store, u.id).unlink(missing_ok=True)
        if u.kind == "stage":
            remove_partials(self.store.adapter_dir(u.id))

    def _done(self, u: Unit, rec: dict) -> None:
        self.records[u.id] = rec
        self._tidy(u)
        self.claims.release(u.id)
        self.summary.completed += 1
        n = attempts(unit_log(self.store, u.id), self.claims.run_id)
        if n > 1:
            self.summary.retried[u.id] = n
        took = rec.get("seconds_total") or (rec.get("train") or {}).get("seconds")
        self.view.line(f"done    {u.label} ({u.id})" + (f" in {took:.0f} s" if took else "")
                       + (f", {n} attempts" if n > 1 else ""))

    def _fail(self, u: Unit, msg: str, e: Exception | None) -> None:
        self.failed.add(u.id)
        self.summary.failed[u.id] = msg
        n = attempts(unit_log(self.store, u.id), self.claims.run_id)
        if n > 1:
            self.summary.retried[u.id] = n
        if self.store.read(u.id, require_artifacts=False) is None:  # a failure never replaces a valid result
            _write_failure(self.store, u, msg, e, attempts=n, log=unit_log(self.store, u.id),
                           run_id=self.claims.run_id)
        self._tidy(u)
        self.claims.release(u.id)
        self.view.line(f"FAILED  {u.label} ({u.id}): {msg}")

    def _stop(self, interrupted: bool) -> None:
        """Ctrl-C (or an error in the driver): cancel what is in flight (its workers are killed) and remove what
        they leave behind; a unit that finished meanwhile keeps its result. A second Ctrl-C waits for this."""
        import ray

        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            self.summary.interrupted = self.summary.interrupted or interrupted
            for ref in list(self.pending):
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            deadline = time.time() + 10
            for ref, u in list(self.pending.items()):
                with contextlib.suppress(Exception):
                    ray.wait([ref], timeout=max(0.0, deadline - time.time()))
                valid = self._written_now(u)
                if valid is not None:
                    self._done(u, valid)
                    continue
                self.summary.cancelled.append(u.id)
                self._tidy(u)
            self.pending.clear()
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def units_to_run(units: list[Unit], store: ResultStore) -> set[str]:
    """Ids of the units that must run: those without a valid record, plus, transitively, the upstream stages
    of those whose adapter folder is missing or corrupt (a stage whose dependants are all done needs no
    adapter)."""
    run = {u.id for u in units if store.read(u.id, require_artifacts=False) is None}
    for u in reversed(units):  # plans list dependencies first
        if u.id in run:
            run.update(d for d in u.deps if store.read(d) is None)
    return run


def _error_text(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def _write_failure(store: ResultStore, u: Unit, msg: str, e: Exception | None, *, attempts: int = 0,
                   log: Path | None = None, run_id: str | None = None) -> None:  # fmt: skip
    """A failed unit leaves a record with status 'failed' (never valid, so a later run retries it)."""
    atomic_write_json(store.path(u.id), failure_record(u.id, u.kind, u.config, msg, e, attempts=attempts,
                                                       run_id=run_id, log=store.relative(log) if log else None))
