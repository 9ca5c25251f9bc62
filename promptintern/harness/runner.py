"""Run an experiment: plan it, check everything checkable, then run its units on Ray (the library entry point
behind ``promptintern run`` and ``promptintern benchmark``).

    from promptintern.harness.config import load_experiment
    from promptintern.harness.runner import run_experiment
    store, summary = run_experiment(load_experiment("experiments/benchmark.yaml", ["tasks.test_limit=20"]))
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from promptintern.paths import data_dir as resolve_data_dir

from .config import WARNINGS_KEY
from .executor import run_plan, units_to_run
from .plan import build_plan, prepare_tasks, write_plan
from .preflight import check_feasible, local_nodes, preflight
from .store import ResultStore, atomic_write_json


def results_store(cfg: dict) -> ResultStore:
    """The experiment's results folder: ``results_dir/name``."""
    return ResultStore(Path(cfg["results_dir"]) / cfg["name"])


def data_dir_of(cfg: dict) -> str | None:
    """The data folder: the experiment's ``data_dir``, else ``$PROMPTINTERN_DATA_DIR`` (:mod:`promptintern.paths`)."""
    d = resolve_data_dir(cfg.get("data_dir"))
    return str(d) if d else None


def print_warnings(cfg: dict) -> None:
    """The validation warnings the resolved experiment carries, on stderr."""
    for w in cfg.get(WARNINGS_KEY) or []:
        print(f"warning: {w}", file=sys.stderr)


def selection_lines(prep) -> list[str]:
    out = []
    for name, p in prep.items():
        s = p["selection"]
        out.append(f"{name}: {len(s.train_ids)} training items (of {s.pool_size} in the pool), {len(s.test_ids)} test "
                   f"items (of {s.test_split_size}); {len(s.removed)} near-duplicates of test items removed from "
                   "training and the pool")
    return out


def run_experiment(cfg: dict, quiet: bool = False):
    """Plan and run a resolved experiment (resume: units with a valid result are skipped); (store, summary).
    Everything checkable is checked before Ray starts (:mod:`promptintern.harness.preflight`)."""
    print_warnings(cfg)
    store = results_store(cfg)
    data_dir = data_dir_of(cfg)
    preflight(cfg, data_dir)  # models, data, options, results folder: before anything starts
    prep = prepare_tasks(cfg)
    units = build_plan(cfg, prep)
    check_local_feasibility(cfg, units)
    store.root.mkdir(parents=True, exist_ok=True)
    # task folders relative to the results folder: the record does not name this machine's layout
    root = store.root.resolve()
    atomic_write_json(store.root / "experiment.json",
                      {**cfg, "task_paths": [os.path.relpath(p, root) for p in cfg.get("task_paths") or []]})
    write_plan(store.root, units, prep)
    print("\n".join(selection_lines(prep)))
    ray_opts = {k: v for k, v in cfg["ray"].items() if v is not None}
    summary = run_plan(units, store, data_dir=data_dir, retries=cfg["retries"], progress=not quiet,
                       ray_options=ray_opts)
    if summary.interrupted:
        return store, summary
    print(f"\n{summary.line()}")
    for uid, err in summary.failed.items():
        print(f"  FAILED {uid}: {err} (log: {store.root / 'logs' / (uid + '.log')})")
    for uid, n in summary.retried.items():
        print(f"  retried {uid}: {n} attempts (its worker died)")
    return store, summary


def check_local_feasibility(cfg: dict, units) -> None:
    """Without a cluster address, no unit that has to run may ask for more than this machine has (Ray would wait
    forever); finished units do not count, so a grid resumes on a smaller machine."""
    if not (cfg["ray"].get("address") or os.environ.get("RAY_ADDRESS")):
        todo = units_to_run(units, results_store(cfg))
        check_feasible([u for u in units if u.id in todo], local_nodes(cfg))
