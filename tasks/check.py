"""``promptintern tasks --check DIR``: validate a task folder before anything runs.

For every task YAML below DIR: the schema (unknown or missing keys, a metric or loader that is not registered, a
missing template or metric file), every split loaded with every mapped field present in every record (a failure
names the file and line), no empty split, and the template's token counts. ``promptintern plan`` and ``run`` load
the same way (:func:`harness.plan.prepare_tasks`), so they fail on the same input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from promptintern.errors import ConfigError, PromptInternError

from .catalog import _builtin_files, _is_task_yaml, yaml_files
from .yaml_task import YamlTask, load_config


@dataclass
class TaskCheck:
    path: str
    name: str
    error: str | None = None
    split_sizes: dict = field(default_factory=dict)
    template_tokens: dict = field(default_factory=dict)
    metric: str | None = None
    template_role: str | None = None
    warnings: list = field(default_factory=list)
    reference_score: float | None = None  # the primary metric of the references scored as answers (expect the max)

    @property
    def ok(self) -> bool:
        return self.error is None


def check_splits(task, splits) -> None:
    """The splits are not empty and the example ids in them are non-empty and unique (missing fields, bad files and
    unknown names fail while loading); each error names the task's YAML and key. ``plan`` checks the grid's train
    and test splits, ``tasks --check`` every split."""
    seen: dict[str, str] = {}
    for split in splits:
        if not split:  # no train split (an evaluation-only task)
            continue
        examples = task.load(split)
        if not examples:
            raise ConfigError("splits", f"split {split!r} of task {task.name!r} is empty", task.config.source)
        for ex in examples:
            if not ex.id or ex.id.endswith("/"):
                raise ConfigError("loader.args.fields.id", f"an empty example id in split {split!r}",
                                  task.config.source)
            if ex.id in seen:
                raise ConfigError("loader.args.fields.id", f"example id {ex.id!r} appears twice (splits "
                                  f"{seen[ex.id]!r} and {split!r}): ids must be unique", task.config.source)
            seen[ex.id] = split


def check_task_file(path: Path, data_dir=None, counters: dict | None = None, allow_shadowing: bool = False,
                    reference_sample: int = 20) -> TaskCheck:  # fmt: skip
    """Check one task YAML end to end; the first problem found is ``error``. The metric scores the first
    ``reference_sample`` test references as if they were answers."""
    res = TaskCheck(str(path), path.stem)
    try:
        if path.stem in _builtin_files() and not allow_shadowing:
            res.error = (f"{path}: name: task {path.stem!r} shadows the built-in task; rename it, or allow it "
                         "explicitly (allow_task_shadowing: true / --allow-shadowing)")
            return res
        cfg = load_config(path)
        res.metric, res.template_role = cfg.metric, cfg.template_role
        task = YamlTask(cfg, data_dir)
        for c_name, counter in (counters or {}).items():
            res.template_tokens[c_name] = counter.count(task.template)
        for split in task.splits:
            examples = task.load(split)
            res.split_sizes[split] = len(examples)
            empty = [ex.id for ex in examples if not ex.query.strip() or not ex.reference.strip()]
            if empty:
                res.warnings.append(f"split {split!r}: {len(empty)} record(s) with an empty query or reference, "
                                    f"e.g. {empty[0]}")
        check_splits(task, task.splits)
        # the metric on the references themselves: data the metric cannot read fails here, not after generation
        sample = task.load(task.test_split)[:reference_sample]
        try:
            scored = task.score([task.format_target(ex) for ex in sample], sample)
        except Exception as exc:  # noqa: BLE001 - any metric failure is the data's or the YAML's to fix
            raise PromptInternError(f"{path}: metric: scoring the reference answers failed: "
                                    f"{type(exc).__name__}: {exc}") from None
        res.reference_score = task.aggregate(scored).get(task.primary_metric)
        if res.reference_score is None:
            raise PromptInternError(f"{path}: primary_metric: {task.primary_metric!r} is not a key of the metric's "
                                    f"results ({', '.join(sorted(task.aggregate(scored)))})")
    except (PromptInternError, OSError) as exc:
        res.error = str(exc)
    return res


def check_folder(folder, data_dir=None, counters: dict | None = None, allow_shadowing: bool = False) -> list[TaskCheck]:
    """Every task YAML below ``folder``; a folder without any is one failed check."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        return [TaskCheck(str(root), "-", error=f"{root}: not a directory")]
    out, names = [], {}
    for path in yaml_files(root):
        try:
            if not _is_task_yaml(path):
                continue
        except PromptInternError as exc:
            out.append(TaskCheck(str(path), path.stem, error=str(exc)))
            continue
        res = check_task_file(path, data_dir, counters, allow_shadowing)
        if path.stem in names:
            res.error = f"{path}: task {path.stem!r} is defined twice (also {names[path.stem]})"
        names[path.stem] = path
        out.append(res)
    if not out:
        out.append(TaskCheck(str(root), "-", error=f"{root}: no task YAML (a YAML file with a top-level loader: key)"))
    return out
