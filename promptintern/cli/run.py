"""`promptintern run EXPERIMENT [key=value ...]`: run an experiment grid (resumable) and write its tables."""

from __future__ import annotations

from promptintern.harness.runner import run_experiment

from . import common


def cmd(args, *, report: bool = False) -> int:
    from promptintern.harness.tables import write_tables

    cfg = common.experiment(args)
    store, summary = run_experiment(cfg, quiet=args.quiet)
    if summary.interrupted:  # the tables of what is done, then one line
        if store.records(kind="eval"):
            print(f"tables of what is done: {write_tables(store)['markdown']}")
        else:
            print("no evaluation finished yet: no tables")
        print(summary.line())
        return 130
    if report:
        from promptintern.harness.report import summarize

        print()
        print(summarize(store, args.price_table))
    else:
        paths = write_tables(store)
        print(f"results: {store.runs}\ntable:   {paths['markdown']}\ncsv:     {paths['csv']}")
    return 0 if summary.ok else 1


def run_args(sp) -> None:
    common.experiment_args(sp)
    sp.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    sp.add_argument("--quiet", action="store_true", help="no live progress view")
    sp.add_argument("--price-table", help="price table for cost columns (see `promptintern prices`)")


def register(sub) -> None:
    sp = sub.add_parser("run", help="run an experiment grid")
    run_args(sp)
    sp.set_defaults(fn=cmd)
