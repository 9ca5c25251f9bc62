"""The ``promptintern`` command line: one module per subcommand, each with ``register(sub)`` adding its parser.

    promptintern run | benchmark | plan EXPERIMENT [key=value ...]
    promptintern status | report | submit | verify RESULTS
    promptintern tasks | schedule | prices | bench-gpu | leaderboard | internalize

The environment is read here, once (:func:`~.common.read_environment`); what it says is passed on as arguments.
"""

from __future__ import annotations

import argparse
import re
import sys

from promptintern.errors import PromptInternError

from . import (
    bench_gpu,
    benchmark,
    common,
    internalize,
    leaderboard,
    plan,
    prices,
    report,
    run,
    schedule,
    serve_bench,
    status,
    submit,
    tasks,
    verify,
)

SUBCOMMANDS = (run, benchmark, plan, status, verify, tasks, schedule, bench_gpu, report, submit, leaderboard, prices,
               internalize, serve_bench)
OVERRIDE_RE = r"^[A-Za-z_][\w\-]*(\.[\w\-]+)*="


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="promptintern", description="Internalize a recurring prompt into LoRA weights, "
                                "and measure what it keeps and saves.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return p


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Parse with ``key=value`` overrides allowed anywhere on the command line (before or after options)."""
    args, extra = parser.parse_known_args(argv)
    overrides = [x for x in extra if re.match(OVERRIDE_RE, x)]
    rest = [x for x in extra if x not in overrides]
    if overrides and not hasattr(args, "overrides"):
        parser.error(f"{args.cmd} takes no key=value overrides: {' '.join(overrides)}")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if overrides:
        args.overrides = [*(args.overrides or []), *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    try:
        common.read_environment(args)
        return args.fn(args)
    except PromptInternError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted (a run resumes where it stopped: units with a valid result are kept)", file=sys.stderr)
        return 130
