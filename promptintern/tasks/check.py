"""``promptintern tasks --check DIR``: validate a task folder before anything runs.

For every task YAML below DIR: the schema (unknown or missing keys, a metric or loader that is not registered, a
missing template or metric file), every split loaded with every mapped field present in every record (a failure
names the file and line), no empty split, and the template's token counts. ``promptintern plan`` and ``run`` load
the same way (:func:`promptintern.harness.plan.prepare_tasks`), so they fail on the same input. With a ``preview`` (a
tokenizer, ``k`` demonstrations, the few-shot layout), the check also renders the prompt of the first test item
as a few-shot run sends it (:func:`preview_prompt`), so a layout that would derail the model is seen first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from promptintern.errors import ConfigError, PromptInternError
from promptintern.methods import PromptRule
from promptintern.prompt_builder import PromptBuilder
from promptintern.prompts import DEFAULT_ANSWER_CUE, render, resolve_template_role

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
    rendered_prompt: str | None = None  # the first test item's few-shot prompt, as the model sees it
    preview_note: str = ""  # what the rendered prompt is (item, demonstrations, layout, role)

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


class _FirstItems:
    """A retriever that offers the first items of the pool (a preview needs no index)."""

    def __init__(self, pool):
        self.pool = pool

    def top_k(self, query, k, exclude_ids=()):
        return [ex for ex in self.pool if ex.id not in set(exclude_ids)][:k]


def preview_prompt(task, tokenizer=None, *, k: int = 2, fewshot_layout: str = "multiturn", chat: bool = True,
                   template_role: str = "auto", answer_cue: str | None = None) -> tuple[str, str]:
    """(the rendered prompt of the first test item with ``k`` demonstrations, the first items of the train split,
    in ``fewshot_layout``; a line saying what it is). ``template_role`` auto: the task's, else system for chat."""
    test = task.load(task.test_split, limit=1)
    if not test:
        raise ConfigError("test_split", f"split {task.test_split!r} of task {task.name!r} is empty")
    pool = task.load(task.train_split, limit=k + 1) if task.train_split and k else []
    role = resolve_template_role(template_role, getattr(task.config, "template_role", None), chat)
    builder = PromptBuilder(task, pool, k=k, retriever=_FirstItems(pool) if pool else None, template_role=role,
                            fewshot_layout=fewshot_layout,
                            answer_cue=DEFAULT_ANSWER_CUE if answer_cue is None else answer_cue)
    built = builder.build(test[0], PromptRule(1.0, k), with_answer=False)
    text = render(built.prompt, tokenizer, chat)
    shown = "chat template" if chat and getattr(tokenizer, "chat_template", None) else "plain text"
    note = (f"test item {test[0].id!r} with {len(built.demo_ids)} demonstration(s) (the first training items; a run "
            f"retrieves its own), layout {fewshot_layout}, template as {role} text, {shown}")
    return text, note


def check_task_file(path: Path, data_dir=None, counters: dict | None = None, allow_shadowing: bool = False,
                    reference_sample: int = 20, preview: dict | None = None) -> TaskCheck:  # fmt: skip
    """Check one task YAML end to end; the first problem found is ``error``. The metric scores the first
    ``reference_sample`` test references as if they were answers. ``preview``: keyword arguments of
    :func:`preview_prompt` (its ``tokenizer`` included) to render the first test item's prompt."""
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
        if preview is not None:
            res.rendered_prompt, res.preview_note = preview_prompt(task, **preview)
    except (PromptInternError, OSError) as exc:
        res.error = str(exc)
    return res


def check_folder(folder, data_dir=None, counters: dict | None = None, allow_shadowing: bool = False,
                 preview: dict | None = None) -> list[TaskCheck]:  # fmt: skip
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
        res = check_task_file(path, data_dir, counters, allow_shadowing, preview=preview)
        if path.stem in names:
            res.error = f"{path}: task {path.stem!r} is defined twice (also {names[path.stem]})"
        names[path.stem] = path
        out.append(res)
    if not out:
        out.append(TaskCheck(str(root), "-", error=f"{root}: no task YAML (a YAML file with a top-level loader: key)"))
    return out
