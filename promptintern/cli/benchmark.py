"""`promptintern benchmark EXPERIMENT [key=value ...]`: run a grid, then print its summary table (`make benchmark`)."""

from __future__ import annotations

from . import run


def cmd(args) -> int:
    return run.cmd(args, report=True)


def register(sub) -> None:
    sp = sub.add_parser("benchmark", help="run a grid and print the main table")
    run.run_args(sp)
    sp.set_defaults(fn=cmd)
