"""The run's one progress view: units done / running / failed / left with an ETA, and a line per running unit
with the progress it reports (:mod:`promptintern.progress`, through the unit's running marker)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from promptintern.progress import clock

if TYPE_CHECKING:
    from .executor import Summary


class ProgressView:
    """Live rich view of units done / running / failed / left with an ETA, and under it one line per running
    unit with the progress it reports (samples generated of the total, optimizer batches, ...) and its ETA."""

    def __init__(self, summary: Summary, enabled: bool = True):
        self.summary, self.enabled = summary, enabled
        self.progress = None
        self.start = time.perf_counter()
        self.rows: dict[str, object] = {}  # unit id -> its rich task

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                _EtaColumn(),
                transient=False,
            )
            self.progress.__enter__()
            s = self.summary
            self.task = self.progress.add_task("[bold]units", total=s.total, completed=s.skipped, detail="")
        return self

    def update(self, running: int) -> None:
        if not self.progress:
            return
        s = self.summary
        finished = s.skipped + s.completed + len(s.failed)
        finished += s.shared
        detail = (f"done {s.completed} skipped {s.skipped} running≤{running} failed {len(s.failed)} "
                  f"left {s.total - finished}" + (f" elsewhere {s.shared}" if s.shared else ""))
        self.progress.update(self.task, completed=finished, detail=detail)

    def units(self, running: dict[str, tuple[str, dict | None]]) -> None:
        """Show ``{unit id: (label, its last progress or None)}`` for the units in flight; drop the others."""
        if not self.progress:
            return
        for uid in set(self.rows) - set(running):
            self.progress.remove_task(self.rows.pop(uid))
        for uid, (label, p) in running.items():
            name = f"  {label[:48]}"
            if uid not in self.rows:
                self.rows[uid] = self.progress.add_task(name, total=None, detail="starting", eta=None)
            if p:
                self.progress.update(self.rows[uid], total=p.get("total") or None, completed=p.get("done", 0),
                                     detail=p.get("what", ""), eta=p.get("eta_s"))

    def line(self, text: str) -> None:
        """One line per finished unit, above the live view (none without it: `--quiet`)."""
        if self.progress:
            self.progress.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)
        return False


def _EtaColumn():
    """'eta 0:46': the unit's own estimate where it reports one, rich's from the rate of the bar elsewhere."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        def render(self, task):
            eta = task.fields["eta"] if "eta" in task.fields else task.time_remaining
            return Text("" if eta is None else f"eta {clock(eta)}", style="progress.remaining")

    return EtaColumn()
