"""Benchmark tasks: a registry of YAML-defined tasks (``tasks/configs/<name>.yaml``).

    from promptintern.tasks import get_task, list_tasks
    task = get_task("mbpp")                 # data dir: argument, else $PROMPTINTERN_DATA_DIR
    test = task.load(task.test_split, limit=10)
    prompt = task.format_prompt(test[0], demos=task.load(task.train_split, limit=3))
    per_sample = task.score(predictions, test); summary = task.aggregate(per_sample)

A task of your own lives in a folder outside the package (``--include-path DIR``, ``task_paths:``, see
:mod:`promptintern.tasks.catalog`): a YAML naming its data files, field mapping, template and metric. Adding a built-in task
needs only ``tasks/configs/<name>.yaml`` (plus, at most, a small metric or loader function
registered with :func:`promptintern.tasks.registry.register_metric` / :func:`~promptintern.tasks.registry.register_loader`).
"""

from __future__ import annotations

from pathlib import Path

from ..task_types import Example, Task
from .catalog import catalog
from .registry import LOADERS, METRICS, register_loader, register_metric
from .yaml_task import TaskConfig, YamlTask, load_config

__all__ = [
    "Example",
    "Task",
    "TaskConfig",
    "YamlTask",
    "get_task",
    "list_tasks",
    "task_origin",
    "describe_tasks",
    "load_config",
    "register_loader",
    "register_metric",
    "LOADERS",
    "METRICS",
]


def list_tasks(include=None, allow_shadowing: bool | None = None) -> list[str]:
    """Names of the built-in tasks (``tasks/configs``) and of the tasks in the ``include`` folders (None:
    ``$PROMPTINTERN_TASK_PATHS``; see :mod:`promptintern.tasks.catalog`)."""
    return catalog(include, allow_shadowing).names()


def task_origin(name: str, include=None, allow_shadowing: bool | None = None) -> str:
    """``"built-in"`` or the folder a task comes from."""
    cat = catalog(include, allow_shadowing)
    cat.path(name)
    return cat.origins[name]


def get_task(name: str, data_dir: str | Path | None = None, include=None,
             allow_shadowing: bool | None = None) -> YamlTask:  # fmt: skip
    """A task by name (built-in or from a task folder) or by the path of a task YAML."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return YamlTask(load_config(path), data_dir)
    return YamlTask(load_config(catalog(include, allow_shadowing).path(name)), data_dir)


def describe_tasks(data_dir: str | Path | None = None, tokenizer=None, include=None,
                   allow_shadowing: bool | None = None) -> list[dict]:  # fmt: skip
    """For every task: name, description, splits with sizes (or the error that prevented loading),
    metric, generation settings and the template's token counts (tiktoken cl100k_base and o200k_base;
    ``model`` too when a transformers tokenizer is given)."""
    from promptintern.errors import PromptInternError
    from promptintern.tokens import counters_for

    counters = counters_for(tokenizer)
    rows = []
    cat = catalog(include, allow_shadowing)
    for name in cat.names():
        task = YamlTask(load_config(cat.path(name)), data_dir)
        row: dict = {
            "name": name,
            "origin": cat.origins[name],
            "template_role": task.config.template_role,
            "description": task.config.description,
            "train_split": task.train_split or None,
            "test_split": task.test_split,
            "metric": task.config.metric,
            "primary_metric": task.primary_metric,
            "max_new_tokens": task.max_new_tokens,
            "template_chars": len(task.template),
            "template_tokens": {k: c.count(task.template) for k, c in counters.items()},
        }
        try:
            row["split_sizes"] = task.split_sizes()
            row["error"] = None
        except (PromptInternError, OSError) as exc:
            row["split_sizes"] = None
            row["error"] = str(exc)
        rows.append(row)
    return rows
