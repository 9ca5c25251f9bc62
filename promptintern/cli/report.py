"""`promptintern report RESULTS`: tables, plots, report.html/md and submission.json for one results folder; prints the summary table."""

from __future__ import annotations

from . import common


def cmd(args) -> int:
    from promptintern.harness.report import summarize

    print(summarize(common.results_folder(args.results), args.price_table, args.hardware))
    return 0


def register(sub) -> None:
    sp = sub.add_parser("report", help="tables, plots, report.html/md and submission.json for a results folder")
    sp.add_argument("results", help="results/<experiment>")
    common.pricing_args(sp)
    sp.set_defaults(fn=cmd)
