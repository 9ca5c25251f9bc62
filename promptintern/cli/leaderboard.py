"""`promptintern leaderboard validate FILE [--rescore]` and `promptintern leaderboard build DIR`.

``validate`` exits 1 with the reasons when a submission is malformed, inconsistent, tampered or priced with an
unknown table. With ``--rescore`` every generation is scored again with its task's own metric (code through the
sandbox) on the task's data, and the results are re-derived from those scores: a score or aggregate that differs, a
sample that is not a test item, a test item the grid should have but lacks, or a sample whose re-score crashed is an
error naming entry, task and sample. Tasks of your own: ``--include-path DIR``, or the submission's
``task_folders`` (relative to the submission file). ``build`` renders a ranked leaderboard.html and leaderboard.md.
"""

from __future__ import annotations

from pathlib import Path

from promptintern.errors import PromptInternError

from . import common


def cmd_validate(args) -> int:
    from promptintern.harness.submission import validate_file

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
    from promptintern.harness.leaderboard import build_leaderboard

    d = Path(args.dir)
    if not d.is_dir():
        raise PromptInternError(f"{d}: not a folder of submissions")
    paths = build_leaderboard(d, args.output)
    print(f"leaderboard: {paths['html']}\n             {paths['markdown']}")
    return 0


def register(sub) -> None:
    lb = sub.add_parser("leaderboard", help="validate submissions and build the leaderboard")
    lsub = lb.add_subparsers(dest="lb_cmd", required=True)
    sp = lsub.add_parser("validate", help="check a submission; exit 1 with the reasons when it is not acceptable")
    sp.add_argument("file")
    sp.add_argument("--rescore", action="store_true",
                    help="also re-score every generation with its task's metric (code tasks in the sandbox) and "
                         "re-derive the results from those scores (needs the tasks and their data)")
    sp.add_argument("--data-dir", help="data directory for --rescore (default: $PROMPTINTERN_DATA_DIR)")
    sp.set_defaults(fn=cmd_validate)
    common.task_folder_args(sp)
    sp = lsub.add_parser("build", help="render leaderboard.html and leaderboard.md from a folder of submissions")
    sp.add_argument("dir")
    sp.add_argument("-o", "--output", help="output folder (default: the submissions folder)")
    sp.set_defaults(fn=cmd_build)
