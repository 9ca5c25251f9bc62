"""CLI subcommands for reports, submissions and the leaderboard (registered into `promptintern`).

- ``promptintern report <results dir> [--price-table ID] [--hardware KEY]``: tables, plots, report.html/md and
  submission.json for one experiment folder; prints the main table and the paths.
- ``promptintern submit <results dir> [--price-table ID] [--hardware KEY] [-o submission.json]``
- ``promptintern leaderboard validate <file> [--rescore] [--data-dir DIR] [--include-path DIR]``: non-zero exit
  with the reasons when the submission is malformed, inconsistent, tampered or priced with an unknown table. With
  ``--rescore`` every generation is scored again with its task's own metric (code through the sandbox) on the
  task's data, and the results are re-derived from those scores: a score or aggregate that differs, a sample that
  is not a test item, a test item the grid should have but lacks, or a sample whose re-score crashed is an error
  naming entry, task and sample. Tasks of your own: ``--include-path DIR``, or the submission's ``task_folders``
  (relative to the submission file).
- ``promptintern leaderboard build <dir> [-o OUT]``: ranked leaderboard.html and leaderboard.md.
- ``promptintern prices``: the available price tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

from promptintern.errors import PromptInternError


def _results_store(path: str):
    from .store import ResultStore

    store = ResultStore(path)
    if not store.runs.is_dir():
        raise PromptInternError(f"{path}: not an experiment results folder (no runs/ inside); "
                                "pass results/<experiment>")
    return store


def cmd_report(args) -> int:
    from .report import summarize

    print(summarize(_results_store(args.results), args.price_table, args.hardware))
    return 0


def cmd_submit(args) -> int:
    from .submission import validate_file, write_submission

    store = _results_store(args.results)
    if not store.records(kind="eval"):
        raise PromptInternError(f"{args.results}: no evaluation results to submit")
    path = write_submission(store, args.output, args.price_table, args.hardware)
    errors = validate_file(path)
    if errors:  # a submission we cannot validate ourselves is a bug: say so loudly
        print(f"wrote {path}, but it does not validate:", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} (valid)")
    return 0


def cmd_validate(args) -> int:
    from .submission import validate_file

    errors = validate_file(args.file, rescore=args.rescore, data_dir=args.data_dir,
                           include=getattr(args, "include_path", None) or None,
                           allow_shadowing=True if getattr(args, "allow_shadowing", False) else None)
    if errors:
        print(f"{args.file}: REJECTED ({len(errors)} problem(s))")
        for e in errors[:50]:
            print(f"  - {e}")
        if len(errors) > 50:
            print(f"  ... and {len(errors) - 50} more")
        return 1
    print(f"{args.file}: valid")
    return 0


def cmd_build(args) -> int:
    from .leaderboard import build_leaderboard

    d = Path(args.dir)
    if not d.is_dir():
        raise PromptInternError(f"{d}: not a folder of submissions")
    paths = build_leaderboard(d, args.output)
    print(f"leaderboard: {paths['html']}\n             {paths['markdown']}")
    return 0


def cmd_prices(args) -> int:
    from .cost import available_tables, caching_rule_text, load_price_table, prices_dir

    names = available_tables()
    if not names:
        print(f"no price tables in {prices_dir()}")
        return 1
    for n in names:
        t = load_price_table(n)
        hw = ", ".join(f"{h.key} ${h.usd_per_hour:.4g}/{h.per}-h" + (" (unverified)" if h.unverified else "")
                       for h in t.hardware)
        print(f"{n}{' (default)' if t.default else ''}: {t.title}; retrieved {t.retrieved}\n"
              f"  API models: {', '.join(t.api_models)} (headline {t.headline_model})\n"
              f"  prompt caching: {caching_rule_text(t)}\n  hardware: {hw}")
    return 0


def register(sub) -> None:
    """Add subcommands to the `promptintern` argparse subparsers."""

    def pricing(sp):
        sp.add_argument("--price-table", help="price table id (see `promptintern prices`; default: the table marked "
                                              "default)")
        sp.add_argument("--hardware", help="hardware price entry key to use instead of matching the recorded hardware")

    sp = sub.add_parser("report", help="tables, plots, report.html/md and submission.json for a results folder")
    sp.add_argument("results", help="results/<experiment>")
    pricing(sp)
    sp.set_defaults(fn=cmd_report)

    sp = sub.add_parser("submit", help="write a leaderboard submission.json for a results folder")
    sp.add_argument("results", help="results/<experiment>")
    sp.add_argument("-o", "--output", help="output file (default: <results>/submission.json)")
    pricing(sp)
    sp.set_defaults(fn=cmd_submit)

    lb = sub.add_parser("leaderboard", help="validate submissions and build the leaderboard")
    lsub = lb.add_subparsers(dest="lb_cmd", required=True)
    sp = lsub.add_parser("validate", help="check a submission; exit 1 with the reasons when it is not acceptable")
    sp.add_argument("file")
    sp.add_argument("--rescore", action="store_true",
                    help="also re-score every generation with its task's metric (code tasks in the sandbox) and "
                         "re-derive the results from those scores (needs the tasks and their data)")
    sp.add_argument("--data-dir", help="data directory for --rescore (default: $PROMPTINTERN_DATA_DIR)")
    sp.set_defaults(fn=cmd_validate)
    from .cli import task_folder_args

    task_folder_args(sp)
    sp = lsub.add_parser("build", help="render leaderboard.html and leaderboard.md from a folder of submissions")
    sp.add_argument("dir")
    sp.add_argument("-o", "--output", help="output folder (default: the submissions folder)")
    sp.set_defaults(fn=cmd_build)

    sp = sub.add_parser("prices", help="list the price tables")
    sp.set_defaults(fn=cmd_prices)
