"""Benchmark tasks: a registry of YAML-defined tasks (``tasks/configs/<name>.yaml``).

    from tasks import get_task, list_tasks
    task = get_task("mbpp")                 # data dir: argument, else $PROMPTINTERN_DATA_DIR
    test = task.load(task.test_split, limit=10)
    prompt = task.format_prompt(test[0], demos=task.load(task.train_split, limit=3))
    per_sample = task.score(predictions, test); summary = task.aggregate(per_sample)

Adding a task needs only ``tasks/configs/<name>.yaml`` (plus, at most, a small metric or loader function
registered with :func:`tasks.registry.register_metric` / :func:`~tasks.registry.register_loader`).
"""

from __future__ import annotations

from pathlib import Path

from .base import Example, Task
from .registry import LOADERS, METRICS, register_loader, register_metric
from .yaml_task import CONFIG_DIR, TaskConfig, YamlTask, load_config

__all__ = [
    "Example",
    "Task",
    "TaskConfig",
    "YamlTask",
    "get_task",
    "list_tasks",
    "describe_tasks",
    "load_config",
    "register_loader",
    "register_metric",
    "LOADERS",
    "METRICS",
]


def list_tasks() -> list[str]:
    """Names of the tasks with a YAML in ``tasks/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def get_task(name: str, data_dir: str | Path | None = None) -> YamlTask:
    """A task by name (or by the path of a task YAML)."""
    from promptintern.errors import ConfigError

    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return YamlTask(load_config(path), data_dir)
    cfg_path = CONFIG_DIR / f"{name}.yaml"
    if not cfg_path.is_file():
        raise ConfigError("task", f"unknown task {name!r}; available: {list_tasks()}")
    return YamlTask(load_config(cfg_path), data_dir)


def describe_tasks(data_dir: str | Path | None = None, tokenizer=None) -> list[dict]:
    """For every task: name, description, splits with sizes (or the error that prevented loading),
    metric, generation settings and the template's token counts (tiktoken cl100k_base and o200k_base;
    ``model`` too when a transformers tokenizer is given)."""
    from promptintern.errors import PromptInternError
    from promptintern.tokens import HFTokenCounter, TiktokenCounter

    counters = {enc: TiktokenCounter(enc) for enc in ("cl100k_base", "o200k_base")}
    if tokenizer is not None:
        counters["model"] = HFTokenCounter(tokenizer)
    rows = []
    for name in list_tasks():
        task = get_task(name, data_dir)
        row: dict = {
            "name": name,
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
