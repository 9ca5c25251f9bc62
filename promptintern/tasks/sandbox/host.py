"""Running a sample: the isolation mode, the sample's cgroup, the bootstrap that starts the program's runner and
the tests' verifier, and the classification of how it ended (the package docstring says what each mode isolates).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .limits import (
    MODE_ENV,
    MODES,
    N_SLOTS,
    STATUSES,
    UID_BASE,
    UNSHARE_FLAGS,
    VERIFIER_UID_OFFSET,
    ExecResult,
    Limits,
    Program,
)

_HERE = Path(__file__).resolve().parent
_CODEC_IMPORT = re.compile(r"^from \.codec import .*$", re.M)


_CODEC = (_HERE / "codec.py").read_text()


def _program(name: str) -> str:
    """A sandbox program's source as it is shipped (``python -c``: the sample's uid may not read the package's
    folder): the module's text, with codec.py's text in place of its ``from .codec import`` line."""
    return _CODEC_IMPORT.sub(lambda _: _CODEC, (_HERE / f"{name}.py").read_text(), count=1)


RUNNER = _program("runner")
VERIFIER = _program("verifier")
BOOTSTRAP = _program("bootstrap")


# ----------------------------------------------------------------------------------------------- modes
def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20, start_new_session=True).returncode == 0  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False


def _world_accessible(path: str) -> bool:
    """Whether an unprivileged other user can execute ``path`` (every ancestor searchable, file o+rx) and
    load its shared library prefix."""
    real = os.path.realpath(path)
    parts = real.strip("/").split("/")
    try:
        for i in range(1, len(parts)):
            if not os.stat("/" + "/".join(parts[:i])).st_mode & 0o001:
                return False
        return os.stat(real).st_mode & 0o005 == 0o005
    except OSError:
        return False


def _setuid_interpreter() -> str | None:
    """An interpreter usable by the unprivileged sandbox uid in setuid mode (no mount namespace to expose a
    private one): this one if world-accessible, else a system python3."""
    for cand in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if cand and os.path.exists(cand) and _world_accessible(cand):
            prefix = os.path.dirname(os.path.dirname(os.path.realpath(cand)))
            if _world_accessible(os.path.join(prefix, "lib")) or cand == sys.executable:
                return cand
    return None


def _interpreter_paths(python: str, site_packages: bool = False) -> list[str]:
    """What the program's interpreter needs visible in a mount namespace: its folder and prefix as named and as
    resolved (a venv's ``bin/python`` links to its base interpreter), this interpreter's prefixes and, with
    ``site_packages``, the site-packages folders; shortest first (a folder bound covers the ones under it)."""
    import site

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for exe in (python, os.path.realpath(python)):
        paths |= {os.path.dirname(os.path.abspath(exe)), os.path.dirname(os.path.dirname(os.path.abspath(exe)))}
    if site_packages:
        paths |= set(site.getsitepackages())
    paths |= {os.path.realpath(p) for p in paths if p}
    return sorted({os.path.normpath(os.path.abspath(p)) for p in paths if p and os.path.isabs(os.path.abspath(p))})


@functools.lru_cache(maxsize=1)
def _detect_mode() -> str:
    unshare = shutil.which("unshare")
    root = os.geteuid() == 0
    if unshare and sys.platform.startswith("linux"):
        if root and _probe([unshare, *UNSHARE_FLAGS, "true"]):
            return "namespace"
        if not root and _probe([unshare, "--user", "--map-root-user", *UNSHARE_FLAGS, "true"]):
            return "userns"
    return "setuid" if root and _setuid_interpreter() else "basic"


def sandbox_mode() -> str:
    """The isolation mode used (see the module docstring); ``$PROMPTINTERN_SANDBOX_MODE`` overrides."""
    forced = os.environ.get(MODE_ENV, "").strip()
    if forced:
        if forced not in MODES:
            raise ValueError(f"${MODE_ENV}={forced!r}: choose one of {MODES}")
        if forced in ("namespace", "setuid") and os.geteuid() != 0:
            raise ValueError(f"${MODE_ENV}={forced!r} needs root")
        return forced
    return _detect_mode()


_slots: queue.Queue[int] = queue.Queue()
for _i in range(N_SLOTS):
    _slots.put(_i)


def _slot_uid(slot: int) -> int:
    return UID_BASE + N_SLOTS * (os.getpid() % 4096) + slot


def _clean_env() -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


# ----------------------------------------------------------------------------------------------- running
class _Capture(threading.Thread):
    """Reads one pipe; keeps at most ``keep`` bytes; calls ``over()`` once the shared budget is exceeded."""

    def __init__(self, pipe, budget: list[int], lock: threading.Lock, over, keep: int):
        super().__init__(daemon=True)
        self.pipe, self.budget, self.lock, self.over, self.keep = pipe, budget, lock, over, keep
        self.head = bytearray()
        self.tail = bytearray()

    def run(self) -> None:
        try:
            while True:
                chunk = self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536)
                if not chunk:
                    return
                with self.lock:
                    self.budget[0] -= len(chunk)
                    exceeded = self.budget[0] < 0
                if len(self.head) < self.keep:
                    self.head += chunk[: self.keep - len(self.head)]
                self.tail = (self.tail + chunk)[-self.keep :]
                if exceeded:
                    self.over()
                    return
        except (OSError, ValueError):
            return

    def text(self, tail: bool = False) -> str:
        data = self.tail if tail else self.head
        return bytes(data).decode("utf-8", errors="replace")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _kill_uid(uid: int) -> None:
    """Kill every process of a sandbox uid (setuid mode cleanup: catches processes that left the group)."""
    kill = shutil.which("kill") or "/bin/kill"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([kill, "-KILL", "-1"], user=uid, group=uid, extra_groups=[], timeout=5,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip




# ----------------------------------------------------------------------------------------------- cgroups
def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _write(path: str, value) -> None:
    with open(path, "w") as fh:
        fh.write(str(value))


@functools.lru_cache(maxsize=1)
def _cgroup_layout() -> tuple[int, dict[str, str]] | None:
    """Where per-sample cgroups can be made: ``(2, {"": dir})`` for cgroup v2 (memory controller enabled for
    children of ``dir``), ``(1, {controller: dir})`` for the v1 memory/pids/cpu hierarchies, or None."""
    try:
        own: dict[str, str] = {}
        for line in _read("/proc/self/cgroup").splitlines():
            hid, ctrls, path = line.split(":", 2)
            if hid == "0" and not ctrls:
                own[""] = path
            for c in ctrls.split(","):
                if c:
                    own[c] = path
        mounts = []
        for line in _read("/proc/self/mountinfo").splitlines():
            pre, _, post = line.partition(" - ")
            f, p = pre.split(), post.split()
            mounts.append((f[4], p[0], p[2] if len(p) > 2 else "", f[3]))

        def where(mp: str, root: str, path: str) -> str:
            rel = path[len(root):] if root != "/" and path.startswith(root) else path
            return os.path.normpath(mp + "/" + rel)

        def probe(parent: str) -> bool:
            d = os.path.join(parent, f"pi-sbx-probe-{os.getpid()}-{secrets.token_hex(3)}")
            try:
                os.mkdir(d)
            except OSError:
                return False
            with contextlib.suppress(OSError):
                os.rmdir(d)
            return True

        for mp, fs, _opts, root in mounts:
            if fs == "cgroup2" and "" in own:
                d = where(mp, root, own[""])
                ctrls = _read(os.path.join(d, "cgroup.controllers")).split()
                if "memory" not in ctrls:
                    continue
                sub = os.path.join(d, "cgroup.subtree_control")
                for c in ("memory", "pids", "cpu"):
                    if c in ctrls and c not in _read(sub).split():
                        with contextlib.suppress(OSError):
                            _write(sub, "+" + c)
                if "memory" in _read(sub).split() and probe(d):
                    return 2, {"": d}
        dirs = {}
        for c in ("memory", "pids", "cpu"):
            for mp, fs, opts, root in mounts:
                if fs == "cgroup" and c in opts.split(",") and c in own:
                    d = where(mp, root, own[c])
                    if probe(d):
                        dirs[c] = d
                    break
        if "memory" in dirs:
            return 1, dirs
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_support() -> str | None:
    """``"v2"``/``"v1"`` when every sample gets its own cgroup (aggregate memory, pids and CPU share), else None."""
    layout = _cgroup_layout()
    return None if layout is None else f"v{layout[0]}"


class _Cgroup:
    """The cgroup(s) of one sample."""

    def __init__(self, version: int, dirs: dict[str, str]):
        self.version, self.dirs = version, dirs

    @classmethod
    def create(cls, limits: Limits, slot: int) -> _Cgroup | None:
        layout = _cgroup_layout()
        if layout is None:
            return None
        version, parents = layout
        name = f"pi-sbx-{os.getpid()}-{slot}-{secrets.token_hex(4)}"
        cg = cls(version, {})
        mem, pids = limits.sample_memory(), int(limits.max_procs) + 8
        quota = max(1000, int(100_000 * float(limits.sample_cpus)))
        try:
            for ctrl, parent in parents.items():
                d = os.path.join(parent, name)
                os.mkdir(d)
                cg.dirs[ctrl] = d
                if version == 2:
                    files = os.listdir(d)
                    _write(os.path.join(d, "memory.max"), mem)
                    for f, v in (("memory.swap.max", 0), ("memory.oom.group", 1), ("pids.max", pids),
                                 ("cpu.max", f"{quota} 100000")):  # fmt: skip
                        if f in files:
                            _write(os.path.join(d, f), v)
                elif ctrl == "memory":
                    _write(os.path.join(d, "memory.limit_in_bytes"), mem)
                    with contextlib.suppress(OSError):
                        _write(os.path.join(d, "memory.memsw.limit_in_bytes"), mem)
                elif ctrl == "pids":
                    _write(os.path.join(d, "pids.max"), pids)
                elif ctrl == "cpu":
                    _write(os.path.join(d, "cpu.cfs_period_us"), 100_000)
                    _write(os.path.join(d, "cpu.cfs_quota_us"), quota)
        except OSError:
            cg.destroy()
            return None
        return cg

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs.values()]

    def oom_kills(self) -> int:
        d = self.dirs.get("" if self.version == 2 else "memory")
        if not d:
            return 0
        try:
            text = _read(os.path.join(d, "memory.events" if self.version == 2 else "memory.oom_control"))
        except OSError:
            return 0
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill" and v.strip().isdigit():
                return int(v)
        return 0

    def destroy(self) -> None:
        """Kill every process still in the cgroup(s) and remove them."""
        for d in self.dirs.values():
            if self.version == 2:
                with contextlib.suppress(OSError):
                    _write(os.path.join(d, "cgroup.kill"), 1)
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    pass
                with contextlib.suppress(OSError, ValueError):
                    for pid in _read(os.path.join(d, "cgroup.procs")).split():
                        with contextlib.suppress(OSError):
                            os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.01)


# ----------------------------------------------------------------------------------------------- running
def run_python(code: str | Program, limits: Limits | None = None, *, mode: str | None = None,
               tests: str | None = None, context: str = "", entry_points: tuple[str, ...] = ()) -> ExecResult:  # fmt: skip
    """Run a sample in the sandbox and say how it ended: ``code`` alone is a complete program (solution + tests,
    legacy); with ``tests`` (or a :class:`Program`) the tests run apart and the verdict is the verifier's."""
    limits = limits or Limits()
    mode = mode or sandbox_mode()
    if isinstance(code, str) and tests is not None:
        code = Program(code, tests, context or "", tuple(entry_points or ()))
    slot = _slots.get()
    t0 = time.monotonic()
    try:
        return _run(code, limits, mode, slot)
    except Exception as exc:  # never lose a batch to one sample
        return ExecResult("sandbox_error", False, f"sandbox failure: {type(exc).__name__}: {exc}"[:500], None, "", "",
                          round(time.monotonic() - t0, 4), mode)  # fmt: skip
    finally:
        _slots.put(slot)


def _run(prog: str | Program, limits: Limits, mode: str, slot: int) -> ExecResult:
    ns = mode in ("namespace", "userns")
    uid = _slot_uid(slot) if mode in ("namespace", "setuid") else None
    vuid = uid + VERIFIER_UID_OFFSET if uid is not None else None
    python = limits.python or sys.executable
    if mode == "setuid" and not limits.python:
        python = _setuid_interpreter() or sys.executable
    py_flags = ["-I", "-B"] + ([] if limits.site_packages and python == sys.executable else ["-S"])
    tests_mode = isinstance(prog, Program)
    code = prog.code if tests_mode else prog
    nonce = secrets.token_hex(16)
    payload = {"program": code, "nonce": nonce, "tests": None}
    if tests_mode:
        payload["tests"] = {"tests": prog.tests, "context": prog.context or "", "entry_points": list(prog.entry_points)}
    env = _clean_env()
    status_r, status_w = os.pipe()
    host_dir = tempfile.mkdtemp(prefix="pi-sandbox-")
    t0 = time.monotonic()
    proc = None
    cg = _Cgroup.create(limits, slot) if mode != "userns" else None
    try:
        os.chmod(host_dir, 0o711)
        work, vwork = os.path.join(host_dir, "work"), os.path.join(host_dir, "verify")
        if not ns:
            os.mkdir(work, 0o700)
            os.mkdir(vwork, 0o700)
        boot = {
            "as": int(limits.memory_mb) * 1024 * 1024,
            "cpu": limits.cpu_limit(),
            "fsize": int(limits.max_file_mb) * 1024 * 1024,
            "nproc": limits.max_procs,
            "count_procs": uid is None,  # the caller's uid (userns, basic): RLIMIT_NPROC counts its processes too
            "vnproc": 8 if vuid is not None else None,
            "uid": uid,
            "vuid": vuid,
            "ns": ns,
            "work": work,
            "vwork": vwork,
            "tmpfs_mb": limits.tmpfs_mb,
            "env": env,
            "expose": _interpreter_paths(python, limits.site_packages),
            "argv": [python, *py_flags, "-c", RUNNER, json.dumps({"tests": tests_mode})],
            "vargv": [python, *py_flags, "-c", VERIFIER],
            "status_fd": status_w,
            "cgroup_procs": cg.procs_files() if cg else [],
            "seccomp": sys.platform.startswith("linux"),
            "dropcaps": mode == "userns",
        }
        boot_argv = [sys.executable, "-I", "-S", "-B", "-c", BOOTSTRAP, json.dumps(boot)]
        if ns:
            unshare = shutil.which("unshare") or "unshare"
            userns = ["--user", "--map-root-user"] if mode == "userns" else []
            boot_argv = [unshare, *userns, *UNSHARE_FLAGS, *boot_argv]
        proc = subprocess.Popen(boot_argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(status_w,), start_new_session=True, cwd=host_dir)  # fmt: skip
        os.close(status_w)
        status_w = -1

        overflow = threading.Event()

        def over() -> None:
            overflow.set()
            _kill_group(proc.pid)

        budget, lock = [int(limits.max_output_bytes)], threading.Lock()
        out = _Capture(proc.stdout, budget, lock, over, keep=8192)
        err = _Capture(proc.stderr, budget, lock, over, keep=8192)
        out.start()
        err.start()
        data = json.dumps(payload).encode("ascii")

        def feed() -> None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.write(data)
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout_s + (0.5 if ns else 0.2) + (0.2 if tests_mode else 0.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            proc.wait()
        duration = time.monotonic() - t0
        _kill_group(proc.pid)  # leftovers that stayed in the group
        if mode == "setuid":
            _kill_uid(uid)
            _kill_uid(vuid)
        oom = cg.oom_kills() > 0 if cg else False
        if cg:
            cg.destroy()
        for t in (out, err, feeder):
            t.join(timeout=2.0)
        status = _read_status(status_r, nonce)
        return _classify(proc.returncode, status, tests_mode, timed_out, overflow.is_set(), oom, out, err, duration,
                         mode, limits)  # fmt: skip
    except OSError as exc:
        if proc is not None:
            _kill_group(proc.pid)
        return ExecResult("sandbox_error", False, f"could not run the sandbox: {exc}", None, "", "",
                          time.monotonic() - t0, mode)  # fmt: skip
    finally:
        if status_w >= 0:
            os.close(status_w)
        os.close(status_r)
        if cg:
            cg.destroy()
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        shutil.rmtree(host_dir, ignore_errors=True)


TAMPERED = ("tampered", "the sample wrote a status record the sandbox did not issue")


def _read_status(fd: int, nonce: str) -> tuple[str, str] | None:
    """The status record (``PI1 <nonce> <status> <detail>``), None if there is none, ``TAMPERED`` if there is
    anything else; never raises, whatever bytes the sample left."""
    data = b""
    try:
        os.set_blocking(fd, False)
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while len(data) <= 4096:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
    except Exception:
        pass
    if not data:
        return None
    try:
        parts = data.split(b" ", 3)
        if len(data) > 4096 or len(parts) < 3 or parts[0] != b"PI1" or not hmac.compare_digest(parts[1], nonce.encode()):
            return TAMPERED
        status = parts[2].decode("ascii")
        if status not in STATUSES and status != "program_died":
            return TAMPERED
        return status, (parts[3] if len(parts) > 3 else b"").decode("utf-8", errors="replace")
    except Exception:
        return TAMPERED


_SIGNAL_REASONS = {
    signal.SIGXCPU: ("timeout", "CPU time limit exceeded"),
    signal.SIGXFSZ: ("write_blocked", "file size limit exceeded"),
    signal.SIGSEGV: ("killed", "segmentation fault (often the memory limit)"),
    signal.SIGKILL: ("killed", "killed (SIGKILL)"),
    signal.SIGABRT: ("killed", "aborted (SIGABRT; often the memory limit)"),
}


def _classify(rc, status, tests_mode, timed_out, overflow, oom, out, err, duration, mode, limits) -> ExecResult:
    stdout, stderr = out.text(), err.text(tail=True)

    def res(st: str, reason: str) -> ExecResult:
        return ExecResult(st, st == "passed", reason, rc, stdout, stderr, round(duration, 4), mode)

    if overflow:
        return res("output_too_large", f"output exceeded {limits.max_output_bytes} bytes; program killed")
    if oom:
        return res("memory_error", f"the sample exceeded its memory cap of {limits.sample_memory() >> 20} MiB "
                                   "(all its processes together); killed")  # fmt: skip
    if timed_out:
        return res("timeout", f"wall-clock timeout after {limits.timeout_s:g} s")
    if status is not None and status[0] != "program_died":
        st, detail = status
        if st == "passed" and not tests_mode and rc != 0:
            return res("killed", f"reported success but exited with code {rc}")
        return res(st, detail or st)
    # no status: the program did not finish (signal, os._exit, crashed interpreter)
    sig = None
    if rc is not None and rc < 0:
        sig = -rc
    elif rc is not None and rc > 128:
        sig = rc - 128
    if sig is not None:
        with contextlib.suppress(ValueError):
            st, why = _SIGNAL_REASONS.get(signal.Signals(sig), ("killed", f"killed by signal {signal.Signals(sig).name}"))
            return res(st, why)
        return res("killed", f"killed by signal {sig}")
    if rc in (121, 122, 123):
        return res("sandbox_error", f"sandbox bootstrap failed (code {rc}): {stderr.strip()[-300:]}")
    if "MemoryError" in stderr:
        return res("memory_error", "MemoryError: the program exceeded its memory limit")
    return res("exit_called", f"the program ended (exit code {rc}) before its tests finished")


def run_many(programs: list[str | Program], limits: Limits | None = None, workers: int | None = None,
             mode: str | None = None) -> list[ExecResult]:  # fmt: skip
    """Run samples in parallel (a thread per core around the subprocesses), results in input order; a failure
    of the sandbox on one sample is that sample's ``sandbox_error``, never the batch's."""
    if not programs:
        return []
    workers = max(1, min(workers or (os.cpu_count() or 1), len(programs), N_SLOTS))
    mode = mode or sandbox_mode()
    from promptintern.progress import track

    counter = track("programs executed", len(programs))

    def one(p):
        try:
            return run_python(p, limits, mode=mode)
        finally:
            counter.advance()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, programs))
