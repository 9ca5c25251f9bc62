"""CLI subcommands for reports, submissions and the leaderboard (registered into `promptintern`)."""

from __future__ import annotations


def register(sub) -> None:
    """Add subcommands to the `promptintern` argparse subparsers."""
