"""Per-unit claims, so concurrent runs of one grid share it instead of running every unit twice.

A run claims a unit before it submits it: ``<experiment>/locks/<unit id>.lock`` held with an exclusive
``flock``. The kernel releases the lock when the holder's process ends, however it ends (killed, crashed,
Ctrl-C), so a claim can never go stale: a unit is claimed exactly while a live run works on it. The file's
text names the holder (run id, pid, host, when it claimed), for ``promptintern status``. Lock files are never
deleted (deleting a lock file while another process waits on it would let two processes hold "the" lock).

On shared storage, the results folder of a cluster run, ``flock`` works over NFSv4 and most POSIX-semantics
mounts (the Linux NFS client maps it to byte-range locks); on a mount without lock support, run one driver
per grid.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path

from promptintern.errors import ConfigError

LOCKS_DIR = "locks"


class ClaimsUnsupportedError(ConfigError):
    pass


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


class UnitClaims:
    """The claims of one run on the units of one results folder."""

    def __init__(self, root: str | Path, run_id: str | None = None):
        self.dir = Path(root) / LOCKS_DIR
        self.run_id = run_id or new_run_id()
        self._held: dict[str, int] = {}  # unit id -> open fd holding the flock

    def path(self, unit_id: str) -> Path:
        return self.dir / f"{unit_id}.lock"

    def claim(self, unit_id: str, label: str = "") -> bool:
        """Take the unit's claim; False when another live process holds it."""
        if unit_id in self._held:
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(unit_id), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise ClaimsUnsupportedError(
                    "results_dir", f"{self.dir} does not support file locks ({e.strerror}), so concurrent runs "
                    "could not share this grid: put results_dir on a local disk or an NFSv4 mount with locking"
                ) from None
            raise
        info = {"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(), "claimed": time.time(),
                "unit": label}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._held[unit_id] = fd
        return True

    def release(self, unit_id: str) -> None:
        fd = self._held.pop(unit_id, None)
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # the holder's text goes with the claim
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def release_all(self) -> None:
        for uid in list(self._held):
            self.release(uid)

    def held(self) -> list[str]:
        return list(self._held)


def holder(root: str | Path, unit_id: str) -> dict | None:
    """Who holds the unit's claim now (its text), or None when no live process does."""
    path = Path(root) / LOCKS_DIR / f"{unit_id}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            text = os.pread(fd, 4096, 0)
            try:
                info = json.loads(text)
            except ValueError:
                info = {}
            return info if isinstance(info, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)  # nobody held it: not running
        return None
    finally:
        os.close(fd)


def live_claims(root: str | Path) -> dict[str, dict]:
    """Unit id -> holder, for every unit of the folder a live process has claimed."""
    d = Path(root) / LOCKS_DIR
    out = {}
    for p in sorted(d.glob("*.lock")) if d.is_dir() else []:
        info = holder(root, p.stem)
        if info is not None:
            out[p.stem] = info
    return out
