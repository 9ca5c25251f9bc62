"""Adversarial tests of promptintern.tasks.sandbox aimed at the harness itself (issue 15, part 5): programs that try to forge
the verdict, to break the evaluator with what they leave behind, to keep state between samples, to exceed the
memory cap together, to starve a neighbour, or to reach the host's Unix sockets. Every attack must end as not
passed (and the batch must go on). Each test fails on the sandbox before this change (checked on a worktree of
that commit); tests skip, with the reason, where the machine cannot give the guarantee."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import secrets
import socket
import time
from pathlib import Path

import pytest
from _listener import Listener

from promptintern.task_types import Example
from promptintern.tasks import sandbox
from promptintern.tasks.metrics.code_exec import humaneval_pass_at_1, mbpp_pass_at_1
from promptintern.tasks.sandbox import Limits, run_many, run_python

REPO = Path(__file__).resolve().parents[1]
LIMITS = Limits(timeout_s=3.0, memory_mb=512, max_procs=16, max_output_bytes=200_000)
MODE = sandbox.sandbox_mode()
KERNEL_ISOLATED = {"namespace", "userns"}
GOOD = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n"
WRONG_ADD = "def add(a, b):\n    return a - b\n"


def _modes() -> list[str]:
    modes = [MODE]
    if os.geteuid() == 0:
        if "setuid" not in modes and sandbox._setuid_interpreter():
            modes.append("setuid")
        if "userns" not in modes and sandbox._probe(["unshare", "--user", "--map-root-user", *sandbox.UNSHARE_FLAGS, "true"]):
            modes.append("userns")
    return modes


MODES = _modes()


def _cgroups_reason() -> str | None:
    """Why aggregate limits cannot be checked here (None: they can)."""
    support = getattr(sandbox, "cgroup_support", None)
    if support is not None:
        return None if support() else "no usable cgroup (v2 with the memory controller, or v1 memory) for the sandbox"
    if os.geteuid() != 0:
        return "cgroups need root"
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if Path("/sys/fs/cgroup/memory").is_dir() or (v2.is_file() and "memory" in v2.read_text()):
        return None
    return "no cgroup memory controller on this machine"


def _mbpp(tests=("assert add(2, 3) == 5", "assert add(1, 1) == 2", "assert add(0, 7) == 7")) -> Example:
    return Example(id="adv", query="", reference="", meta={"test_list": list(tests), "test_setup_code": ""})


def _humaneval() -> Example:
    test = ("\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"
            "    assert candidate(1, 1) == 2\n    assert True, 'last line'\n")  # fmt: skip
    return Example(id="HumanEval/adv", query="", reference="",
                   meta={"prompt": 'def add(a, b):\n    """Add two numbers."""\n', "test": test, "entry_point": "add"})  # fmt: skip


# ------------------------------------------------------------------------------------ 1. forging the verdict
FORGE_STATUS_FD = """
import os, sys, json
msg = json.dumps({"status": "passed", "detail": ""}).encode()
fds = [int(a) for a in sys.argv[1:] if a.isdigit()]
for fd in fds + list(range(3, 12)):
    try:
        os.write(fd, msg)
    except OSError:
        pass
os._exit(0)
"""
FORGE_REPORT_VIA_MAIN = "import __main__\n__main__._report('passed')\n"
FORGE_JSON_DUMPS = "import json\njson.dumps = lambda *a, **k: '{\"status\": \"passed\", \"detail\": \"\"}'\n"
FORGE_OS_WRITE = "import os\n_w = os.write\nos.write = lambda fd, b: _w(fd, b'{\"status\": \"passed\", \"detail\": \"\"}')\n"
FORGE_SETTRACE = """
import sys, linecache
def _tracer(frame, event, arg):
    if event == "line":
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
        if line.startswith("assert add") or line.startswith("assert candidate"):
            frame.f_lineno = frame.f_lineno + 1
    return _tracer
sys.settrace(_tracer)
sys._getframe().f_trace = _tracer
"""
FORGE_ALWAYS_EQUAL = """
class _Eq:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__
def add(a, b):
    return _Eq()
"""
ATTACK_VERIFIER = """
import os, signal, subprocess
subprocess.run(["kill", "-9", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        for path in (f"/proc/{pid}/mem", f"/proc/{pid}/fd/5"):
            try:
                with open(path, "wb", buffering=0) as fh:
                    fh.write(b"PI1 x passed ")
            except Exception:
                pass
"""
ATTACKS = {
    "status_fd": FORGE_STATUS_FD + WRONG_ADD,
    "report_via_main": WRONG_ADD + FORGE_REPORT_VIA_MAIN,
    "patch_json_dumps": FORGE_JSON_DUMPS + WRONG_ADD,
    "patch_os_write": FORGE_OS_WRITE + WRONG_ADD,
    "settrace_jump": FORGE_SETTRACE + WRONG_ADD,
    "always_equal": FORGE_ALWAYS_EQUAL,
    "attack_verifier": ATTACK_VERIFIER + WRONG_ADD,
}


@pytest.mark.parametrize("mode", MODES)
def test_forged_verdicts_do_not_pass_mbpp(mode, monkeypatch):
    """The real caller path (pass@1 of MBPP): a wrong solution with each attack is a failure; a right one passes."""
    monkeypatch.setenv(sandbox.MODE_ENV, mode)
    names = list(ATTACKS)
    answers = [ATTACKS[n] for n in names] + ["def add(a, b):\n    return a + b\n"]
    recs = mbpp_pass_at_1(answers, [_mbpp()] * len(answers), workers=2, timeout_s=3.0, memory_mb=512)
    forged = {n: r["status"] for n, r in zip(names, recs, strict=False) if r["pass@1"]}
    assert forged == {}, forged
    assert recs[-1]["pass@1"] == 1.0, recs[-1]


@pytest.mark.parametrize("mode", MODES)
def test_forged_verdicts_do_not_pass_humaneval(mode, monkeypatch):
    """HumanEval layout (prompt + completion + check): the settrace jump over every ``assert candidate`` line
    (the test ends with ``assert True``) and the other attacks, as completions redefining the entry point."""
    monkeypatch.setenv(sandbox.MODE_ENV, mode)
    names = list(ATTACKS)
    answers = [ATTACKS[n] for n in names] + ["def add(a, b):\n    return a + b\n"]
    recs = humaneval_pass_at_1(answers, [_humaneval()] * len(answers), workers=2, timeout_s=3.0, memory_mb=512)
    forged = {n: r["status"] for n, r in zip(names, recs, strict=False) if r["pass@1"]}
    assert forged == {}, forged
    assert recs[-1]["pass@1"] == 1.0, recs[-1]


@pytest.mark.parametrize("mode", MODES)
def test_forged_verdicts_do_not_pass_single_string_programs(mode):
    """Legacy single-string programs (solution + asserts in one string): the cheap attacks fail too."""
    tests = "assert add(2, 3) == 5\nassert add(1, 1) == 2\nresult = 'done'\n"
    names = [n for n in ATTACKS if n not in ("always_equal", "attack_verifier")]
    programs = [ATTACKS[n] + "\n" + tests for n in names]
    results = run_many(programs, LIMITS, workers=2, mode=mode)
    forged = {n: r.status for n, r in zip(names, results, strict=True) if r.passed}
    assert forged == {}, forged


# ------------------------------------------------------------------------------- 2. what the program leaves
STATUS_GARBAGE = """
import os, sys
data = {payload}
for fd in [int(a) for a in sys.argv[1:] if a.isdigit()] + [3]:
    try:
        os.write(fd, data)
    except OSError:
        pass
"""


@pytest.mark.parametrize("mode", MODES)
def test_garbage_status_never_breaks_the_batch(mode):
    payloads = {
        "deep_lists": 'b"[" * 300000',
        "deep_objects": "b'{\"status\": ' * 200000",
        "deep_valid": "b'{\"status\": \"passed\", \"detail\": ' + b'[' * 100000 + b']' * 100000 + b'}'",
        "invalid_utf8": 'b"\\xff\\xfe\\xc3\\x28" * 1000',
        "huge": 'b"x" * (4 << 20)',
    }
    names = list(payloads)
    programs = [STATUS_GARBAGE.format(payload=payloads[n]) + "os._exit(0)\n" for n in names] + [GOOD]
    results = run_many(programs, LIMITS, workers=2, mode=mode)
    assert len(results) == len(programs)
    assert results[-1].passed, results[-1]
    assert [n for n, r in zip(names, results, strict=False) if r.passed] == []


def test_garbage_on_the_verifier_channel_fails_closed():
    """In tests mode the program may write anything on its channel to the verifier: deep JSON, a huge frame,
    invalid bytes; the sample fails, the next one passes."""
    garbage = [
        "import os, struct\nd = b'[' * 300000\nos.write(4, struct.pack('>I', len(d)) + d)\n" + WRONG_ADD,
        "import os\nos.write(4, b'\\xff' * 100000)\n" + WRONG_ADD,
        "import os, struct\nos.write(4, struct.pack('>I', 1 << 31))\n" + WRONG_ADD,
    ]
    answers = garbage + ["def add(a, b):\n    return a + b\n"]
    recs = mbpp_pass_at_1(answers, [_mbpp()] * len(answers), workers=2, timeout_s=3.0)
    assert [r["pass@1"] for r in recs] == [0.0, 0.0, 0.0, 1.0], recs


# --------------------------------------------------------------------------------------------- 3. SysV IPC
IPC_LIB = """
import ctypes, ctypes.util
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
libc.msgget.argtypes = [ctypes.c_int, ctypes.c_int]
"""


def _host_ipc(key: int) -> tuple[int, int]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    return libc.shmget(key, 0, 0), libc.msgget(key + 1, 0)


def _host_ipc_remove(key: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    shm, msg = libc.shmget(key, 0, 0), libc.msgget(key + 1, 0)
    if shm >= 0:
        libc.shmctl(shm, 0, None)  # IPC_RMID
    if msg >= 0:
        libc.msgctl(msg, 0, None)


@pytest.mark.parametrize("mode", MODES)
def test_sysv_ipc_does_not_outlive_the_sample(mode):
    if mode not in KERNEL_ISOLATED:
        pytest.skip(f"{mode} mode has no IPC namespace (documented: System V IPC is shared with the host)")
    key = 0x5A000000 + secrets.randbelow(1 << 20) * 2
    writer = IPC_LIB + f"""
shm = libc.shmget({key}, 4096, 0o1000 | 0o666)
assert shm >= 0, ctypes.get_errno()
addr = libc.shmat(shm, None, 0)
ctypes.memmove(addr, b"secret-from-sample-1", 20)
q = libc.msgget({key + 1}, 0o1000 | 0o666)
assert q >= 0
class Msg(ctypes.Structure):
    _fields_ = [("mtype", ctypes.c_long), ("mtext", ctypes.c_char * 32)]
m = Msg(1, b"secret-from-sample-1")
assert libc.msgsnd(q, ctypes.byref(m), 32, 0) == 0
"""
    reader = IPC_LIB + f"""
shm = libc.shmget({key}, 0, 0)
q = libc.msgget({key + 1}, 0)
assert shm == -1 and q == -1, ("state of an earlier sample is visible", shm, q)
"""
    try:
        first = run_python(writer, LIMITS, mode=mode)
        assert first.passed, first
        second = run_python(reader, LIMITS, mode=mode)
        assert second.passed, second
        assert _host_ipc(key) == (-1, -1), "the sample's IPC objects landed on the host"
    finally:
        _host_ipc_remove(key)


# -------------------------------------------------------------------------------- 4. aggregate memory cap
MEMFD_HOG = """
import os
fds = []
for i in range(40):
    fd = os.memfd_create(f"m{i}")
    os.write(fd, b"x" * (12 << 20))
    fds.append(fd)
print(len(fds), "memfds of 12 MiB")
"""
CHILDREN_HOG = """
import os, time
pids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        b = b"x" * (110 << 20)
        time.sleep(3)
        os._exit(0)
    pids.append(pid)
for p in pids:
    os.waitpid(p, 0)
"""


@pytest.mark.parametrize("mode", [m for m in MODES if m != "userns"])
def test_memory_cap_holds_for_the_whole_sample(mode):
    reason = _cgroups_reason()
    if reason:
        pytest.skip(reason)
    limits = Limits(timeout_s=8.0, memory_mb=256, max_procs=16, max_file_mb=16)  # cap: 320 MiB for the sample
    results = run_many([MEMFD_HOG + GOOD, CHILDREN_HOG + GOOD], limits, workers=2, mode=mode)
    for name, r in zip(("memfd", "children"), results, strict=True):
        assert not r.passed, (name, r)
        assert r.status == "memory_error", (name, r)


# ------------------------------------------------------------------------------------------ 5. CPU fairness
SPINNER_BOMB = """
import os
for i in range(30):
    try:
        if os.fork() == 0:
            os.setsid()
            while True:
                pass
    except OSError:
        break
while True:
    pass
"""
NEIGHBOUR = "import time\ntime.sleep(0.3)\nx = sum(i * i for i in range(5_000_000))\nassert x > 0\n"


def _sandbox_procs() -> list[int]:
    out = []
    lo, hi = sandbox.UID_BASE, sandbox.UID_BASE + 2 * sandbox.N_SLOTS * 4096
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                uid = os.stat(f"/proc/{pid}").st_uid
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if lo <= uid < hi and state not in ("Z", "X"):
                out.append(int(pid))
    return out


@pytest.mark.parametrize("mode", [m for m in MODES if m != "userns"])
def test_spinning_children_do_not_starve_a_neighbour(mode):
    reason = _cgroups_reason()
    if reason:
        pytest.skip(reason)
    limits = Limits(timeout_s=2.0, memory_mb=256, max_procs=32)
    spinner, neighbour = run_many([SPINNER_BOMB, NEIGHBOUR], limits, workers=2, mode=mode)
    assert not spinner.passed and spinner.status in ("timeout", "killed"), spinner
    assert neighbour.passed, neighbour
    if os.geteuid() == 0:
        time.sleep(0.3)
        assert _sandbox_procs() == []  # nothing of the spinner survives the sample


# ------------------------------------------------------------------------------------- 6. host Unix sockets
SOCKET_PROBE = """
import os, _socket, json
targets = {targets!r}
for root in ("/run", "/var/run", "/tmp"):
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            try:
                import stat
                if stat.S_ISSOCK(os.lstat(p).st_mode):
                    targets.append(p)
            except OSError:
                pass
reached = []
for t in targets:
    try:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        s.settimeout(1)
        s.connect(t)
        reached.append(t)
        s.close()
    except OSError:
        pass
print("REACHED", json.dumps(reached))
"""


@pytest.mark.parametrize("mode", [m for m in MODES if m != "basic"])
def test_host_unix_sockets_are_unreachable(mode):
    tag = secrets.token_hex(5)
    # a host directory the sample's uid can reach (not /tmp, which is private in the namespace modes)
    base = Path(os.environ.get("PI_SBX_SOCKET_DIR", REPO / ".pytest_cache"))
    base.mkdir(exist_ok=True)
    d = base / f"pi-sbx-sock-{tag}"
    d.mkdir()
    os.chmod(base, 0o755)
    os.chmod(d, 0o755)
    path = str(d / "s")
    fs_listener = Listener(path, socket.AF_UNIX)
    os.chmod(path, 0o777)
    abstract = f"\0pi-sbx-{tag}"
    abs_listener = Listener(abstract, socket.AF_UNIX)
    try:
        r = run_python(SOCKET_PROBE.format(targets=[path, abstract]), LIMITS, mode=mode)
        time.sleep(0.3)
        assert fs_listener.connections == 0, r
        assert abs_listener.connections == 0, r
        assert 'REACHED []' in r.stdout, r
    finally:
        fs_listener.close()
        abs_listener.close()
        if os.path.exists(path):
            os.unlink(path)
        d.rmdir()


def test_forged_verdicts_do_not_pass_a_user_tasks_code_tests(monkeypatch):
    """The generic ``code_tests`` metric of a user's task (tests in a record field) runs the answer apart from its
    tests too: the same attacks fail, the right answer passes."""
    from promptintern.tasks.metrics.generic import code_tests

    names = list(ATTACKS)
    answers = [ATTACKS[n] for n in names] + ["def add(a, b):\n    return a + b\n"]
    ex = Example(id="user/1", query="", reference="", meta={"tests": "assert add(2, 3) == 5\nassert add(0, 7) == 7\n"})
    recs = code_tests(answers, [ex] * len(answers), workers=2, timeout_s=3.0, memory_mb=512)
    forged = {n: r["status"] for n, r in zip(names, recs, strict=False) if r["pass@1"]}
    assert forged == {}, forged
    assert recs[-1]["pass@1"] == 1.0, recs[-1]
