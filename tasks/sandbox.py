"""Run untrusted Python (generated code + its tests) in a separate, limited process.

Every program runs in a fresh Python interpreter (``sys.executable -I -S -B``), in a new session (its own
process group), with a clean environment, in a fresh working directory that is removed afterwards, under
resource limits (CPU time, address space, process count, file size, open files, no core dumps), a wall-clock
timeout that kills the whole process group, and capped output (a program that prints more than
``max_output_bytes`` is killed). The program source goes in on stdin; a small trusted runner compiles and
executes it and reports how it ended on a private pipe, so every sample gets a ``status`` and a ``reason``
(syntax error, assertion, exception, timeout, memory, output too large, network blocked, write blocked,
permission denied, killed by a signal, exited early...).

Isolation depends on what the machine allows; :func:`sandbox_mode` picks the strongest mode available
(override with ``$PROMPTINTERN_SANDBOX_MODE``):

``namespace`` (root, util-linux ``unshare`` works)
    New network namespace (no interface up: nothing, not even 127.0.0.1, is reachable), new PID namespace
    (the program cannot see or signal the evaluator; when the program's runner ends, every process it left
    behind is killed by the kernel), new mount namespace in which the whole file tree is re-mounted
    read-only (best effort: ``mount_setattr``, Linux >= 5.12) and /tmp, /var/tmp, /dev/shm and /run/lock are
    fresh size-limited tmpfs mounts that vanish with the namespace, so files written anywhere never land
    on the host. The program runs as an unprivileged uid (one per parallel slot) with no capabilities, so
    RLIMIT_NPROC binds (fork bombs stop at ``max_procs``) and kernel permissions protect everything else.
``userns`` (not root, unprivileged user namespaces allowed)
    The same namespaces inside a user namespace; the program keeps the caller's uid outside, so the
    read-only re-mount is what protects the caller's files (if it fails, only the Python-level guard does).
``setuid`` (root, no usable ``unshare``)
    An unprivileged uid per slot + new session + limits; afterwards every process of that uid is killed.
    Network access is blocked only by the Python-level guard; world-writable directories (/tmp) are
    writable at the kernel level and guarded only at the Python level.
``basic`` (neither)
    New session + limits + the Python-level guards. A determined program (ctypes, a shell subprocess) can
    get around the guards, reach the network, write the caller's files and signal the caller.

Python-level guards (all modes, defence in depth and clear failure reasons): ``socket`` refuses AF_INET /
AF_INET6 sockets and DNS look-ups (``SandboxNetworkError``); ``open``/``os.open`` and the ``os``/``shutil``
file mutators refuse paths outside the working directory (``SandboxWriteError``); ``os.kill``/``killpg``
refuse to signal processes outside the program's own process group.

What is NOT guaranteed in any mode: secrecy of world-readable files (the program can read them), protection
against kernel exploits, and an unforgeable verdict (the tests run in the same interpreter as the program, so
a program written to cheat the harness could forge a pass; this sandbox contains accidents and misbehaving
model outputs, it is not a security boundary against an adversary who targets it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

MODE_ENV = "PROMPTINTERN_SANDBOX_MODE"
MODES = ("namespace", "userns", "setuid", "basic")
UNSHARE_FLAGS = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
UID_BASE = 200_000  # sandbox uids: UID_BASE + 64 * (pid % 4096) + slot (need not exist in /etc/passwd)
N_SLOTS = 64


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0  # wall clock, program start to end
    cpu_s: float | None = None  # RLIMIT_CPU; default ceil(timeout_s) + 1
    memory_mb: int = 1024  # RLIMIT_AS of every process
    max_procs: int = 32  # processes (threads count too) the program may have at once
    max_output_bytes: int = 1_000_000  # stdout + stderr; more kills the program
    max_file_mb: int = 16  # RLIMIT_FSIZE
    tmpfs_mb: int = 64  # size of each private tmpfs (namespace modes)
    site_packages: bool = False  # let the program import installed third-party packages
    python: str | None = None  # interpreter for the program (default: this one; see _interpreter)

    def cpu_limit(self) -> int:
        return int(self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout_s) + 1)


@dataclass
class ExecResult:
    status: str  # passed | syntax_error | assertion_error | exception | timeout | memory_error | output_too_large
    #              | network_blocked | write_blocked | permission_denied | exit_called | killed | sandbox_error
    passed: bool
    reason: str  # one line, human readable
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    mode: str

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- runner
# Trusted code that runs first inside the sandboxed interpreter: limits (basic/setuid modes), guards, then
# compile + exec of the program read from stdin, then one JSON status line on the status fd.
RUNNER = r'''
import sys, os, json, builtins, io, errno, resource
_fd = int(sys.argv[1]); _cfg = json.loads(sys.argv[2])
_src = sys.stdin.read()
_devnull = os.open(os.devnull, os.O_RDONLY); os.dup2(_devnull, 0); os.close(_devnull)
if _cfg["set_limits"]:
    def _lim(res, soft, hard=None):
        try: resource.setrlimit(res, (soft, soft if hard is None else hard))
        except (ValueError, OSError): pass
    _lim(resource.RLIMIT_AS, _cfg["as"]); _lim(resource.RLIMIT_CPU, _cfg["cpu"], _cfg["cpu"] + 1)
    _lim(resource.RLIMIT_FSIZE, _cfg["fsize"]); _lim(resource.RLIMIT_CORE, 0)
    _lim(resource.RLIMIT_NOFILE, 256)
    if _cfg["nproc"] is not None:
        _n = 0
        _uid = os.getuid()
        for _p in os.listdir("/proc"):
            if _p.isdigit():
                try:
                    if os.stat("/proc/" + _p).st_uid == _uid: _n += 1
                except OSError: pass
        _lim(resource.RLIMIT_NPROC, _n + _cfg["nproc"])

class SandboxNetworkError(PermissionError):
    """Network access is disabled in the sandbox."""
class SandboxWriteError(PermissionError):
    """Writing outside the sandbox working directory is not allowed."""
class SandboxKillError(PermissionError):
    """Signalling processes outside the sandbox is not allowed."""
builtins.SandboxNetworkError = SandboxNetworkError
builtins.SandboxWriteError = SandboxWriteError

import socket as _socket
_AF_BLOCKED = {getattr(_socket, n) for n in ("AF_INET", "AF_INET6", "AF_PACKET") if hasattr(_socket, n)}
_RealSocket = _socket.socket
class _GuardedSocket(_RealSocket):
    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        fam = _socket.AF_INET if family == -1 else family
        if fileno is None and fam in _AF_BLOCKED:
            raise SandboxNetworkError(errno.EACCES, "network access is disabled in the sandbox")
        super().__init__(family, type, proto, fileno)
def _no_net(*a, **k):
    raise SandboxNetworkError(errno.EACCES, "network access is disabled in the sandbox")
_socket.socket = _GuardedSocket
_socket.SocketType = _GuardedSocket
_socket.create_connection = _no_net
_socket.getaddrinfo = _no_net
_socket.gethostbyname = _no_net
_socket.create_server = _no_net

_CWD = os.path.realpath(os.getcwd())
_ALLOWED = (_CWD + os.sep,)
def _inside(path):
    try:
        p = os.fspath(path)
    except TypeError:
        return True  # file descriptors
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if p in (os.devnull, "/dev/stdout", "/dev/stderr"):
        return True
    r = os.path.realpath(os.path.join(_CWD, p))
    return r == _CWD or r.startswith(_ALLOWED)
def _check(path):
    if not _inside(path):
        raise SandboxWriteError(errno.EACCES, "writing outside the sandbox working directory is not allowed", os.fspath(path) if not isinstance(path, int) else path)
_real_open = builtins.open
def _open(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+"):
        _check(file)
    return _real_open(file, mode, *a, **k)
builtins.open = _open
io.open = _open
_real_os_open = os.open
_WFLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def _os_open(path, flags, *a, **k):
    if flags & _WFLAGS:
        _check(path)
    return _real_os_open(path, flags, *a, **k)
os.open = _os_open
def _guard1(fn):
    def g(path, *a, **k):
        _check(path); return fn(path, *a, **k)
    return g
def _guard2(fn):
    def g(src, dst, *a, **k):
        _check(src); _check(dst); return fn(src, dst, *a, **k)
    return g
for _n in ("remove", "unlink", "rmdir", "mkdir", "makedirs", "chmod", "chown", "lchown", "truncate", "mkfifo", "utime", "removedirs"):
    if hasattr(os, _n): setattr(os, _n, _guard1(getattr(os, _n)))
for _n in ("rename", "replace", "link", "symlink"):
    if hasattr(os, _n): setattr(os, _n, _guard2(getattr(os, _n)))
_PGID = os.getpgid(0)
_real_kill, _real_killpg = os.kill, os.killpg
def _kill(pid, sig):
    try:
        mine = pid == os.getpid() or (pid > 0 and os.getpgid(pid) == _PGID) or (pid < -1 and -pid == _PGID) or pid == 0
    except OSError:
        mine = False
    if not mine:
        raise SandboxKillError(errno.EPERM, "signalling processes outside the sandbox is not allowed")
    return _real_kill(pid, sig)
def _killpg(pg, sig):
    if pg not in (0, _PGID):
        raise SandboxKillError(errno.EPERM, "signalling processes outside the sandbox is not allowed")
    return _real_killpg(pg, sig)
os.kill, os.killpg = _kill, _killpg

def _report(status, detail=""):
    try:
        sys.stdout.flush(); sys.stderr.flush()
    except BaseException:
        pass
    msg = json.dumps({"status": status, "detail": str(detail)[:800]}).encode()
    try: os.write(_fd, msg)
    except OSError: pass
    os._exit(0)

_NET_ERRNO = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ECONNREFUSED, errno.EADDRNOTAVAIL}
try:
    _code = compile(_src, "<program>", "exec")
except (SyntaxError, ValueError) as e:
    _report("syntax_error", f"{type(e).__name__}: {e}")
import linecache
linecache.cache["<program>"] = (len(_src), None, _src.splitlines(True), "<program>")
del _src
_g = {"__name__": "__main__", "__builtins__": builtins}
try:
    exec(_code, _g)
except SystemExit as e:
    _report("exit_called", f"the program called exit({e.code!r}) before its tests finished")
except AssertionError as e:
    import traceback
    tb = traceback.extract_tb(e.__traceback__)
    line = tb[-1].line if tb else ""
    _report("assertion_error", f"AssertionError: {line or e}")
except MemoryError:
    _report("memory_error", "MemoryError: the program exceeded its memory limit")
except SandboxNetworkError as e:
    _report("network_blocked", f"network access blocked: {e}")
except SandboxWriteError as e:
    _report("write_blocked", f"write outside the working directory blocked: {e}")
except OSError as e:
    if e.errno in _NET_ERRNO:
        _report("network_blocked", f"network unreachable in the sandbox: {type(e).__name__}: {e}")
    if isinstance(e, PermissionError) or e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        _report("permission_denied", f"{type(e).__name__}: {e}")
    _report("exception", f"{type(e).__name__}: {e}")
except BaseException as e:
    _report("exception", f"{type(e).__name__}: {e}")
_report("passed")
'''

# Runs as root inside the new namespaces (namespace/userns modes): private mounts, then the program as an
# unprivileged child (namespace mode) or in-process exec (userns mode). It is PID 1 of the namespace: when it
# exits, the kernel kills every process the program left behind.
BOOTSTRAP = r'''
import ctypes, ctypes.util, os, sys, json, resource
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18
def mount(src, target, fstype, flags, data):
    return libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags, data.encode() if data else None) == 0
mount("none", "/", None, MS_REC | MS_PRIVATE, None)
ro = False
class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]
try:
    attr = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY
    # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &attr, sizeof attr); syscall 442 on x86_64 and aarch64
    ro = libc.syscall(442, -100, b"/", 0x8000, ctypes.byref(attr), ctypes.sizeof(attr)) == 0
except Exception:
    ro = False
size = f"size={cfg['tmpfs_mb']}m"
ok_tmp = mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777")
for d in ("/var/tmp", "/dev/shm", "/run/lock"):
    if os.path.isdir(d):
        mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777")
if not ok_tmp:
    sys.stderr.write("sandbox bootstrap: could not mount a private /tmp\n"); os._exit(121)
MS_BIND = 4096
def expose(path):
    # make `path` reachable by the unprivileged uid when an ancestor is not (e.g. /root/.pyenv/...): stage a
    # bind mount of it, cover the closed ancestor with an empty tmpfs, recreate the path, bind it back
    path = os.path.realpath(path)
    parts = path.strip("/").split("/")
    closed = None
    for i in range(1, len(parts)):
        anc = "/" + "/".join(parts[:i])
        if not os.stat(anc).st_mode & 0o001:
            closed = anc
            break
    if closed is None:
        return
    stage = "/tmp/.stage-%d" % len(os.listdir("/tmp"))
    os.mkdir(stage, 0o755)
    if not mount(path, stage, None, MS_BIND | MS_REC, None):
        return
    mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    os.makedirs(path, 0o755, exist_ok=True)
    mount(stage, path, None, MS_BIND | MS_REC, None)
    libc.umount2(stage.encode(), 2)
    os.rmdir(stage)
if cfg["uid"] is not None:
    for p in cfg["expose"]:
        try:
            expose(p)
        except OSError as e:
            sys.stderr.write(f"sandbox bootstrap: cannot expose {p}: {e}\n")
work = "/tmp/work"
os.mkdir(work, 0o700)
uid = cfg["uid"]
if uid is not None:
    os.chown(work, uid, uid)
def lim(res, soft, hard=None):
    try: resource.setrlimit(res, (soft, soft if hard is None else hard))
    except (ValueError, OSError): pass
lim(resource.RLIMIT_AS, cfg["as"]); lim(resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 1)
lim(resource.RLIMIT_FSIZE, cfg["fsize"]); lim(resource.RLIMIT_CORE, 0); lim(resource.RLIMIT_NOFILE, 256)
if cfg["nproc"] is not None:
    lim(resource.RLIMIT_NPROC, cfg["nproc"])
env = dict(cfg["env"], HOME=work, TMPDIR=work, PROMPTINTERN_SANDBOX_RO=str(int(ro)))
argv = cfg["argv"]
os.chdir(work)
pid = os.fork()
if pid == 0:
    try:
        if uid is not None:
            os.setgroups([]); os.setgid(uid); os.setuid(uid)
        os.execve(argv[0], argv, env)
    except BaseException as e:
        sys.stderr.write(f"sandbox bootstrap: cannot start the program: {type(e).__name__}: {e}\n")
    finally:
        os._exit(122)
while True:
    try:
        _, status = os.waitpid(pid, 0)
        break
    except ChildProcessError:
        os._exit(123)
    except InterruptedError:
        continue
if os.WIFSIGNALED(status):
    os._exit(128 + os.WTERMSIG(status))
os._exit(os.WEXITSTATUS(status))
'''


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


def run_python(code: str, limits: Limits | None = None, *, mode: str | None = None) -> ExecResult:
    """Run ``code`` (a complete program: solution + tests) in the sandbox and say how it ended."""
    limits = limits or Limits()
    mode = mode or sandbox_mode()
    slot = _slots.get()
    try:
        return _run(code, limits, mode, slot)
    finally:
        _slots.put(slot)


def _run(code: str, limits: Limits, mode: str, slot: int) -> ExecResult:
    uid = _slot_uid(slot) if mode in ("namespace", "setuid") else None
    python = limits.python or sys.executable
    if mode == "setuid" and not limits.python:
        python = _setuid_interpreter() or sys.executable
    py_flags = ["-I", "-B"] + ([] if limits.site_packages and python == sys.executable else ["-S"])
    mem = int(limits.memory_mb) * 1024 * 1024
    cfg = {
        "as": mem,
        "cpu": limits.cpu_limit(),
        "fsize": int(limits.max_file_mb) * 1024 * 1024,
        "nproc": limits.max_procs,
        "set_limits": mode in ("setuid", "basic"),
    }
    env = _clean_env()
    status_r, status_w = os.pipe()
    host_dir = tempfile.mkdtemp(prefix="pi-sandbox-")
    t0 = time.monotonic()
    proc = None
    try:
        os.chmod(host_dir, 0o700)
        runner_argv = [python, *py_flags, "-c", RUNNER, str(status_w)]
        popen_kw: dict = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              pass_fds=(status_w,), start_new_session=True, cwd=host_dir)  # fmt: skip
        if mode in ("namespace", "userns"):
            # limits and the uid switch happen in the bootstrap (root inside the namespace)
            runner_cfg = dict(cfg, set_limits=False)
            boot = {
                **cfg,
                "nproc": limits.max_procs if uid is not None else None,
                "uid": uid,
                "tmpfs_mb": limits.tmpfs_mb,
                "env": env,
                "expose": sorted({sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(python)),
                                  os.path.dirname(os.path.dirname(os.path.realpath(python)))}),
                "argv": runner_argv + [json.dumps(runner_cfg)],
            }
            if mode == "userns":
                # the caller's uid outside: count its processes in the runner (RLIMIT_NPROC is per real uid)
                boot["argv"] = runner_argv + [json.dumps(dict(cfg, set_limits=True))]
            unshare = shutil.which("unshare") or "unshare"
            ns = ["--user", "--map-root-user"] if mode == "userns" else []
            argv = [unshare, *ns, *UNSHARE_FLAGS, sys.executable, "-I", "-S", "-B", "-c", BOOTSTRAP, json.dumps(boot)]
            proc = subprocess.Popen(argv, env=env, **popen_kw)
        else:
            if uid is not None:
                os.chown(host_dir, uid, uid)
                popen_kw.update(user=uid, group=uid, extra_groups=[])
            env = dict(env, HOME=host_dir, TMPDIR=host_dir)
            proc = subprocess.Popen(runner_argv + [json.dumps(cfg)], env=env, **popen_kw)
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

        def feed() -> None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.write(code.encode("utf-8", errors="surrogateescape"))
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout_s + (0.5 if mode in ("namespace", "userns") else 0.2))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            proc.wait()
        duration = time.monotonic() - t0
        if uid is not None and mode == "setuid":
            _kill_uid(uid)
        else:
            _kill_group(proc.pid)  # leftovers that stayed in the group
        for t in (out, err, feeder):
            t.join(timeout=2.0)
        status = _read_status(status_r)
        return _classify(proc.returncode, status, timed_out, overflow.is_set(), out, err, duration, mode, limits)
    except OSError as exc:
        if proc is not None:
            _kill_group(proc.pid)
        return ExecResult("sandbox_error", False, f"could not run the sandbox: {exc}", None, "", "",
                          time.monotonic() - t0, mode)  # fmt: skip
    finally:
        if status_w >= 0:
            os.close(status_w)
        os.close(status_r)
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        shutil.rmtree(host_dir, ignore_errors=True)


def _read_status(fd: int) -> dict | None:
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError, OSError):
        while len(data) < 65536:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    try:
        status = json.loads(data.decode("utf-8"))
        return status if isinstance(status, dict) and "status" in status else None
    except (ValueError, UnicodeDecodeError):
        return None


_SIGNAL_REASONS = {
    signal.SIGXCPU: ("timeout", "CPU time limit exceeded"),
    signal.SIGXFSZ: ("write_blocked", "file size limit exceeded"),
    signal.SIGSEGV: ("killed", "segmentation fault (often the memory limit)"),
    signal.SIGKILL: ("killed", "killed (SIGKILL)"),
    signal.SIGABRT: ("killed", "aborted (SIGABRT; often the memory limit)"),
}


def _classify(rc, status, timed_out, overflow, out, err, duration, mode, limits) -> ExecResult:
    stdout, stderr = out.text(), err.text(tail=True)

    def res(st: str, reason: str) -> ExecResult:
        return ExecResult(st, st == "passed", reason, rc, stdout, stderr, round(duration, 4), mode)

    if overflow:
        return res("output_too_large", f"output exceeded {limits.max_output_bytes} bytes; program killed")
    if timed_out:
        return res("timeout", f"wall-clock timeout after {limits.timeout_s:g} s")
    if status is not None:
        st = status.get("status", "exception")
        if st == "passed" and rc != 0:
            return res("killed", f"reported success but exited with code {rc}")
        return res(st, status.get("detail") or st)
    # no status: the runner did not finish (signal, os._exit, crashed interpreter)
    sig = None
    if rc is not None and rc < 0:
        sig = -rc
    elif rc is not None and rc > 128 and mode in ("namespace", "userns"):
        sig = rc - 128
    if sig is not None:
        with contextlib.suppress(ValueError):
            st, why = _SIGNAL_REASONS.get(signal.Signals(sig), ("killed", f"killed by signal {signal.Signals(sig).name}"))
            return res(st, why)
        return res("killed", f"killed by signal {sig}")
    if rc in (121, 122, 123) and mode in ("namespace", "userns"):
        return res("sandbox_error", f"sandbox bootstrap failed (code {rc}): {stderr.strip()[-300:]}")
    if "MemoryError" in stderr:
        return res("memory_error", "MemoryError: the program exceeded its memory limit")
    return res("exit_called", f"the program ended (exit code {rc}) before its tests finished")


def run_many(programs: list[str], limits: Limits | None = None, workers: int | None = None,
             mode: str | None = None) -> list[ExecResult]:  # fmt: skip
    """Run programs in parallel (a thread per core around the subprocesses), results in input order."""
    if not programs:
        return []
    workers = max(1, min(workers or (os.cpu_count() or 1), len(programs), N_SLOTS))
    mode = mode or sandbox_mode()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run_python(p, limits, mode=mode), programs))
