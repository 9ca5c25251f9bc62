"""`promptintern plan EXPERIMENT [key=value ...]`: the units of a grid, without running anything."""

from __future__ import annotations

import sys

from promptintern.errors import PromptInternError
from promptintern.harness.runner import (
    check_local_feasibility,
    data_dir_of,
    print_warnings,
    results_store,
    selection_lines,
)

from . import common


def cmd(args) -> int:
    from promptintern.harness.plan import build_plan, prepare_tasks
    from promptintern.harness.preflight import preflight

    cfg = common.experiment(args)
    print_warnings(cfg)
    preflight(cfg, data_dir_of(cfg), write=False)
    prep = prepare_tasks(cfg)
    units = build_plan(cfg, prep)
    try:  # a plan is a preview (perhaps for another machine): it warns where run refuses
        check_local_feasibility(cfg, units)
    except PromptInternError as e:
        print(f"warning: `promptintern run` here would refuse this grid: {e}", file=sys.stderr)
    store = results_store(cfg)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{cfg['name']}: {len(units)} units")
    for col in ("id", "kind", "unit", "deps", "cpus", "gpus", "done"):
        t.add_column(col)
    for u in units:
        t.add_row(u.id, u.kind, u.label, ",".join(u.deps) or "-", str(u.resources.get("num_cpus")),
                  str(u.resources.get("num_gpus")), "yes" if store.done(u.id) else "")
    Console().print(t)
    kinds = {k: sum(u.kind == k for u in units) for k in ("stage", "eval", "metatuner", "engine")}
    print(f"grid: {len(cfg['models'])} model(s) x {len(cfg['methods'])} method entries x "
          f"{len(cfg['tasks']['train'])} train task(s) x {len(cfg['seeds'])} seed(s) -> {kinds['stage']} stages, "
          f"{kinds['eval'] + kinds['metatuner']} evaluations, {kinds['engine']} engine measurements")
    print("\n".join(selection_lines(prep)))
    return 0


def register(sub) -> None:
    sp = sub.add_parser("plan", help="print the units of a grid without running anything")
    common.experiment_args(sp)
    sp.set_defaults(fn=cmd)
