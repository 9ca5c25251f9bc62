"""Progress inside a unit of work: ``k`` of ``n`` (samples generated, programs executed, optimizer batches, timed
requests) with an ETA, sent to the one sink the process has set.

The library code that loops (generation, the trainer, the code sandbox, the engine measurement) counts through
:func:`track`; it knows nothing of where the counts go. The harness's unit runner sets the sink for the unit it
runs (:func:`reporting`): a line in the unit's log every so often and the unit's running marker, which the
driver's progress view reads. Without a sink, counting costs a clock read.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Progress:
    """One phase of a unit: ``done`` of ``total`` ``what`` (e.g. "samples generated"), after ``elapsed_s``."""

    what: str
    done: int
    total: int
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first item is done)."""
        if self.done <= 0 or self.total <= 0:
            return None
        return max(0.0, self.elapsed_s * (self.total - self.done) / self.done)

    def to_dict(self) -> dict:
        return {**asdict(self), "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}

    def line(self) -> str:
        """``samples generated 20/50 (40%) 0:31 elapsed, eta 0:46``: the form of the log and the console."""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = "" if self.eta_s is None else f", eta {clock(self.eta_s)}"
        return f"{self.what} {self.done}/{self.total}{pct} {clock(self.elapsed_s)} elapsed{eta}"


def clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


Sink = Callable[[Progress], None]
_sink: Sink | None = None
_lock = threading.Lock()


@contextlib.contextmanager
def reporting(sink: Sink) -> Iterator[None]:
    """Send every :func:`track` count in this process to ``sink`` while the block runs."""
    global _sink
    old, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = old


class Tracker:
    """Counts one phase; :meth:`advance` is safe from several threads (the sandbox's pool)."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.done = what, int(total), 0
        self.start = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        if _sink is None:
            return
        with _lock:
            self.done = min(self.total, self.done + int(n))
            report = Progress(self.what, self.done, self.total, time.perf_counter() - self.start)
        _sink(report)


def track(what: str, total: int) -> Tracker:
    """A tracker for ``total`` items of ``what``; reports ``0/total`` at once so a phase shows before its first
    item ends."""
    t = Tracker(what, total)
    if _sink is not None and total > 0:
        _sink(Progress(what, 0, t.total, 0.0))
    return t


class Throttled:
    """A sink that passes a report on when it starts or ends a phase, or ``every_s`` after the last one passed:
    how the unit runner keeps the log readable and the marker file writes few."""

    def __init__(self, sink: Sink, every_s: float):
        self.sink, self.every_s = sink, float(every_s)
        self.last: float = float("-inf")
        self.phase: tuple[str, int] | None = None

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        edge = p.done in (0, p.total) or (p.what, p.total) != self.phase
        if edge or now - self.last >= self.every_s:
            self.last, self.phase = now, (p.what, p.total)
            self.sink(p)


class Bar:
    """A phase's :class:`Tracker` and, when ``desc`` is given, a tqdm bar on the terminal (the library used on
    its own, outside the harness): what the trainers and :func:`promptintern.generation.generate` count with."""

    def __init__(self, what: str, total: int, desc: str | None = None):
        self.tracker = track(what, total)
        self.tqdm = None
        if desc:
            from tqdm.auto import tqdm

            self.tqdm = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.tracker.advance(n)
        if self.tqdm is not None:
            self.tqdm.update(n)

    def set_postfix(self, values: dict) -> None:
        if self.tqdm is not None:
            self.tqdm.set_postfix(values)

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
