"""The sandbox's settings and results: limits per sample, a program with its tests apart, a run's outcome."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["MODE_ENV", "MODES", "N_SLOTS", "STATUSES", "UID_BASE", "UNSHARE_FLAGS", "VERIFIER_UID_OFFSET", "ExecResult",
           "Limits", "Program"]

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
