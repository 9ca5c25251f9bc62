"""`promptintern submit RESULTS [-o submission.json]`: a leaderboard submission for a results folder, validated."""

from __future__ import annotations

import sys

from promptintern.errors import PromptInternError

from . import common


def cmd(args) -> int:
    from promptintern.harness.submission import validate_file, write_submission

    store = common.results_folder(args.results)
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


def register(sub) -> None:
    sp = sub.add_parser("submit", help="write a leaderboard submission.json for a results folder")
    sp.add_argument("results", help="results/<experiment>")
    sp.add_argument("-o", "--output", help="output file (default: <results>/submission.json)")
    common.pricing_args(sp)
    sp.set_defaults(fn=cmd)
