"""Where task YAMLs come from: the package's ``tasks/configs`` (the built-ins) and task folders given by the user
(``--include-path DIR``, ``task_paths:`` in an experiment file, or ``$PROMPTINTERN_TASK_PATHS``, folders separated
by ``os.pathsep``, which the ``promptintern`` command reads at its start and passes on), as lm-eval's
``--include_path``.

A task folder holds task YAMLs anywhere below it: a YAML file with a top-level ``loader`` key is a task (other
YAMLs, e.g. experiment files, are ignored), named by its file name. Its template file, data files and a metric
file are found relative to the YAML. A folder task whose name is a built-in's, or a name defined twice, is an
error unless shadowing is allowed (``allow_shadowing`` / ``allow_task_shadowing: true`` /
``$PROMPTINTERN_ALLOW_TASK_SHADOWING=1``): then the folder's task replaces the built-in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from promptintern.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TASK_PATHS_ENV = "PROMPTINTERN_TASK_PATHS"
SHADOW_ENV = "PROMPTINTERN_ALLOW_TASK_SHADOWING"
BUILTIN = "built-in"


@dataclass(frozen=True)
class TaskCatalog:
    """Task name -> (YAML path, origin): the built-ins, then each folder in order."""

    files: dict
    origins: dict

    def names(self) -> list[str]:
        return sorted(self.files)

    def path(self, name: str) -> Path:
        if name not in self.files:
            raise ConfigError("task", f"unknown task {name!r}; available: {', '.join(self.names())}"
                              + ("" if len(self.files) > len(_builtin_files()) else
                                 " (a task of your own: pass its folder with --include-path DIR or task_paths:)"))
        return self.files[name]


def _is_task_yaml(path: Path) -> bool:
    from .yaml_task import read_yaml

    raw = read_yaml(path)
    return isinstance(raw, dict) and "loader" in raw


def yaml_files(root: Path) -> list[Path]:
    """The YAML files below a folder (outside hidden folders), in a stable order: the candidates for task YAMLs."""
    return [p for p in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")])
            if not any(part.startswith(".") for part in p.relative_to(root).parts)]


def folder_tasks(folder: str | os.PathLike) -> dict[str, Path]:
    """The task YAMLs below one folder, by name. Errors name the folder or the two files defining one name."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError("task_paths", f"not a directory: {root}")
    out: dict[str, Path] = {}
    for path in yaml_files(root):
        if not _is_task_yaml(path):
            continue
        if path.stem in out:
            raise ConfigError("task_paths", f"task {path.stem!r} is defined twice: {out[path.stem]} and {path}")
        out[path.stem] = path
    return out


@lru_cache(maxsize=1)
def _builtin_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def catalog(include=None, allow_shadowing: bool | None = None) -> TaskCatalog:
    """The tasks visible with these folders (None: the built-ins alone)."""
    folders = [str(Path(p).expanduser().resolve()) for p in include or []]
    shadow = bool(allow_shadowing)
    return _catalog(tuple(dict.fromkeys(folders)), shadow)


def _catalog(folders: tuple[str, ...], shadow: bool) -> TaskCatalog:
    files: dict[str, Path] = dict(_builtin_files())
    origins = {n: BUILTIN for n in files}
    for folder in folders:
        for name, path in folder_tasks(folder).items():
            if name in files:
                clash = "the built-in task" if origins[name] == BUILTIN else f"{files[name]} (from {origins[name]})"
                if not shadow:
                    raise ConfigError("task_paths", f"{path} defines task {name!r}, which shadows {clash}; rename "
                                      "it, or allow it explicitly (allow_task_shadowing: true, "
                                      f"--allow-shadowing or {SHADOW_ENV}=1)")
            files[name], origins[name] = path, folder
    return TaskCatalog(files, origins)
