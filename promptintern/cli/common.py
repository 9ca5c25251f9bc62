"""What the subcommands share: experiment arguments and loading, task folders, a results folder argument."""

from __future__ import annotations

import os
from pathlib import Path

from promptintern.errors import PromptInternError
from promptintern.tasks.catalog import SHADOW_ENV, TASK_PATHS_ENV


def experiment(args) -> dict:
    """The experiment the command names, resolved and validated, with its command-line settings applied."""
    from promptintern.harness.config import load_experiment

    cfg = load_experiment(args.experiment, args.overrides, include_paths=getattr(args, "include_path", None),
                          allow_shadowing=getattr(args, "allow_shadowing", False))
    if getattr(args, "data_dir", None):
        cfg["data_dir"] = args.data_dir
    if getattr(args, "results_dir", None):
        cfg["results_dir"] = args.results_dir
    if getattr(args, "address", None):
        cfg["ray"]["address"] = args.address
    return cfg


def task_folder_args(sp) -> None:
    sp.add_argument("--include-path", metavar="DIR", action="append", default=None,
                    help="a folder of your own task YAMLs (repeatable; added to the experiment's task_paths)")
    sp.add_argument("--allow-shadowing", action="store_true",
                    help="let a folder's task replace the built-in task of the same name")


def experiment_args(sp) -> None:
    sp.add_argument("experiment", help="experiment YAML")
    sp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. tasks.test_limit=20")
    sp.add_argument("--data-dir", help="data directory (default: $PROMPTINTERN_DATA_DIR)")
    sp.add_argument("--results-dir", help="results root (default: the experiment's results_dir)")
    task_folder_args(sp)


def read_environment(args) -> None:
    """The entry point's one reading of the environment: ``$PROMPTINTERN_TASK_PATHS`` (folders separated by
    ``os.pathsep``) joins ``--include-path`` and ``$PROMPTINTERN_ALLOW_TASK_SHADOWING=1`` sets ``--allow-shadowing``,
    as absolute paths on ``args``; every command passes them on explicitly (to the experiment, its units and Ray
    workers, verify, rescoring)."""
    env = [p for p in os.environ.get(TASK_PATHS_ENV, "").split(os.pathsep) if p]
    paths = [*(getattr(args, "include_path", None) or []), *env]
    args.include_path = list(dict.fromkeys(str(Path(p).expanduser().resolve()) for p in paths))
    args.allow_shadowing = (bool(getattr(args, "allow_shadowing", False))
                            or os.environ.get(SHADOW_ENV, "").lower() in ("1", "true", "yes"))


def results_folder(path: str):
    from promptintern.harness.store import ResultStore

    store = ResultStore(path)
    if not store.runs.is_dir():
        raise PromptInternError(f"{path}: not an experiment results folder (no runs/ inside); "
                                "pass results/<experiment>")
    return store


def pricing_args(sp) -> None:
    sp.add_argument("--price-table", help="price table id (see `promptintern prices`; default: the table marked "
                                          "default)")
    sp.add_argument("--hardware", help="hardware price entry key to use instead of matching the recorded hardware")
