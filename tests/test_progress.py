"""Progress inside a unit: counts reach the sink the unit runner sets, throttled at the edges of a phase, read
back from the running marker and shown on the one progress view."""

import json
import threading

import pytest

from promptintern import progress
from promptintern.progress import Bar, Progress, Throttled, clock, reporting, track


def test_counts_reach_the_sink_only_while_reporting():
    seen: list[Progress] = []
    t = track("samples generated", 3)  # no sink: nothing, and no error
    t.advance()
    with reporting(seen.append):
        t = track("samples generated", 3)
        for _ in range(3):
            t.advance()
    track("after", 2).advance()
    assert [(p.done, p.total) for p in seen] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert seen[-1].eta_s == 0.0 and seen[0].eta_s is None
    assert progress._sink is None


def test_eta_is_the_rate_so_far_and_the_line_says_it():
    p = Progress("samples generated", 10, 40, 20.0)
    assert p.eta_s == pytest.approx(60.0)
    assert p.line() == "samples generated 10/40 (25%) 0:20 elapsed, eta 1:00"
    assert clock(3725) == "1:02:05" and clock(59.6) == "1:00"
    assert json.loads(json.dumps(p.to_dict()))["eta_s"] == 60.0


def test_throttled_passes_the_edges_and_at_most_one_report_per_interval():
    seen: list[Progress] = []
    sink = Throttled(seen.append, every_s=3600)
    with reporting(sink):
        t = track("training batches", 100)
        for _ in range(100):
            t.advance()
        track("samples generated", 5)  # a new phase passes at once
    assert [(p.what, p.done) for p in seen] == [("training batches", 0), ("training batches", 100),
                                                ("samples generated", 0)]


def test_advance_from_many_threads_counts_every_item():
    seen: list[Progress] = []
    with reporting(seen.append):
        t = track("programs executed", 400)
        threads = [threading.Thread(target=lambda: [t.advance() for _ in range(100)]) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert t.done == 400 and max(p.done for p in seen) == 400


def test_bar_counts_without_a_terminal_bar():
    seen: list[Progress] = []
    with reporting(seen.append):
        b = Bar("training batches", 2)
        b.update()
        b.set_postfix({"loss": "1.0"})
        b.update()
        b.close()
    assert b.tqdm is None and seen[-1].done == 2


def test_the_view_shows_a_line_per_running_unit_with_its_progress(tmp_path):
    from promptintern.harness.executor import Summary, _running_marker, unit_progress
    from promptintern.harness.progress_view import ProgressView
    from promptintern.harness.store import ResultStore

    store = ResultStore(tmp_path)
    store.runs.mkdir(parents=True, exist_ok=True)
    with _running_marker(store, "eval-1"):
        t = track("samples generated", 40)
        for _ in range(40):
            t.advance()
        got = unit_progress(store, "eval-1")
    assert got["what"] == "samples generated" and got["total"] == 40 and got["done"] == 40  # a phase's end passes
    assert unit_progress(store, "eval-1") is None  # the marker is gone with the unit

    view = ProgressView(Summary(total=3))
    with view:
        view.units({"eval-1": ("promptintern nl2bash→nl2bash", {**got, "done": 10, "eta_s": 30.0}),
                    "stage-2": ("query_only_ft nl2bash stage 1/1", None)})
        text = " ".join(str(c) for t in view.progress.tasks for c in (t.description, t.completed, t.total,
                                                                       t.fields.get("detail")))
        assert "promptintern nl2bash→nl2bash" in text and "samples generated" in text and "starting" in text
        view.units({"stage-2": ("query_only_ft nl2bash stage 1/1", None)})  # eval-1 finished: its line goes
        assert len(view.progress.tasks) == 2
