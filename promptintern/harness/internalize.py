"""``promptintern internalize``: does internalizing *my* prompt pay?

From a recurring prompt (``--template system.md``) and a file of queries with reference answers (``--data``), it
writes a task folder (a task YAML naming the user's files where they are; nothing is copied) and an experiment
file under ``<results-dir>/<name>/``, checks the task (:mod:`promptintern.tasks.check`), then plans and runs the normal grid
through the harness (Ray, one result file per unit, resume on a re-run):

- ``few_shot``: the full prompt on the base model (the reference: no training),
- ``full_prompt_ft`` and ``query_only_ft``,
- ``promptintern`` (``--schedule``, ``--stages``),
- ``compress_at_inference`` (``--compress-rate``),

every fine-tuning chain with the same optimizer steps (``train.budget: matched``; ``--budget per_stage`` for the
paper's recipe), and prints the decision table (:mod:`promptintern.harness.decision`), also written to ``decision.md`` and
``decision.json`` beside the results.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

from promptintern.errors import ConfigError
from promptintern.models import load_tokenizer
from promptintern.prompts import Prompt, render
from promptintern.tasks.check import check_task_file
from promptintern.tasks.registry import metric_names
from promptintern.tasks.yaml_task import TEMPLATE_ROLES, YamlTask, load_config


def _name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower()
    return name or "my_task"


def _rel(path: str, task_dir: Path) -> str:
    """A user's file relative to the task folder (so the task, and the unit ids, do not depend on where the checkout
    lives), absolute when no relative path exists."""
    p = Path(path).expanduser().resolve()
    try:
        return os.path.relpath(p, task_dir)
    except ValueError:  # another drive
        return str(p)


def task_yaml(args, name: str, task_dir: Path) -> dict:
    """The task definition: the user's files where they are (relative to the task folder), fields mapped, a seeded
    split unless a test file is given."""
    data = _rel(args.data, task_dir)
    fields = {"query": args.query_field, "reference": args.reference_field}
    if args.id_field:
        fields["id"] = args.id_field
    loader: dict = {"fields": fields, "seed": args.split_seed}
    if args.test_data:
        loader = {"fields": fields, "files": {"train": data, "test": _rel(args.test_data, task_dir)}}
    else:
        loader.update(file=data, fractions={"train": round(1.0 - args.test_fraction, 6), "test": args.test_fraction})
    metric: dict = {"name": args.metric}
    if args.metric_args:
        metric["args"] = yaml.safe_load(args.metric_args)
    return {
        "name": name,
        "description": f"internalize: {Path(args.template).name} with {Path(args.data).name}",
        "loader": {"name": "records", "args": loader},
        "splits": ["train", "test"],
        "train_split": "train",
        "test_split": "test",
        "template_file": _rel(args.template, task_dir),
        **({"template_role": args.template_role} if args.template_role else {}),
        "metric": metric,
        "primary_metric": args.primary_metric or _primary_metric(args.metric),
        "generation": {"max_new_tokens": args.max_new_tokens, "stop": list(args.stop or [])},
    }


PRIMARY = {"normalized_exact_match": "exact_match", "exact_match": "exact_match", "bleu": "bleu", "chrf": "chrf",
           "rouge_l": "rouge_l", "choice": "accuracy", "numeric": "accuracy", "regex": "exact_match",
           "json_match": "exact_match", "code_tests": "pass@1"}


def _primary_metric(metric: str) -> str:
    if metric not in metric_names():
        raise ConfigError("--metric", f"unknown metric {metric!r}; registered: {', '.join(metric_names())}")
    if metric not in PRIMARY:
        raise ConfigError("--primary-metric", f"name the key of metric {metric!r} to decide on")
    return PRIMARY[metric]


def experiment(args, name: str, task_dir: Path) -> dict:
    methods = [
        {"name": "few_shot"},
        {"name": "full_prompt_ft"},
        {"name": "query_only_ft"},
        {"name": "promptintern", "schedules": [args.schedule], "stages": args.stages},
        {"name": "compress_at_inference", "rates": [args.compress_rate]},
    ]
    return {
        "name": name,
        "results_dir": os.path.relpath(Path(args.results_dir).resolve(), Path.cwd()),
        "task_paths": ["task"],  # relative to this file
        "models": [args.model],
        "tasks": {"train": [name], "eval": "same", "train_limit": args.train_limit, "test_limit": args.test_limit},
        "methods": methods,
        "seeds": [args.seed],
        "prompt": {"k_examples": args.k_examples},
        # gradient checkpointing: long prompts fit in memory; it does not change the adapter (not part of unit ids)
        "train": {"budget": args.budget, "epochs": args.epochs, "gradient_checkpointing": True},
        # the full-prompt rows also served with the recurring prefix's KV cache reused: the free alternative
        "generation": {"prefix_cache": True, "measure": False},  # timed by the engine unit
    }


def prepare(args) -> tuple[Path, list[str]]:
    """Write the task folder and the experiment file; check the task. Returns (experiment file, overrides)."""
    for flag, path in (("--template", args.template), ("--data", args.data), ("--test-data", args.test_data)):
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(flag, f"file not found: {path}")
    if args.template_role and args.template_role not in TEMPLATE_ROLES:
        raise ConfigError("--template-role", f"must be one of {', '.join(TEMPLATE_ROLES)}")
    if not args.test_data and not 0 < args.test_fraction < 1:
        raise ConfigError("--test-fraction", "must be in (0, 1)")
    name = _name(args.name or Path(args.template).stem)
    root = Path(args.results_dir) / name
    task_dir = (root / "task").resolve()
    text = ("# written by `promptintern internalize`; the files it names are read where they are\n"
            + yaml.safe_dump(task_yaml(args, name, task_dir), sort_keys=False, allow_unicode=True))
    # checked in a sibling folder first (the same relative paths): a bad input leaves nothing behind
    probe_dir = root.resolve() / ".task-check"
    probe_dir.mkdir(parents=True, exist_ok=True)
    try:
        (probe_dir / f"{name}.yaml").write_text(text)
        check = check_task_file(probe_dir / f"{name}.yaml", data_dir=None)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
        if not any(root.iterdir()):
            root.rmdir()
    if not check.ok:
        raise ConfigError("--data", check.error.replace(str(probe_dir), str(task_dir)))
    task_dir.mkdir(parents=True, exist_ok=True)
    task_file = task_dir / f"{name}.yaml"
    task_file.write_text(text)
    exp = experiment(args, name, task_dir)
    overrides = list(args.overrides or [])
    if not any(o.split("=", 1)[0].strip() == "train.max_length" for o in overrides):
        # full-prompt training must see the whole template: never cut it to the default max_length
        exp["train"]["max_length"] = training_length(task_file, args.model, args.k_examples)
    exp_file = root / "internalize.yaml"
    exp_file.write_text("# written by `promptintern internalize`; re-run with `promptintern run` on this file\n"
                        + yaml.safe_dump(exp, sort_keys=False))
    return exp_file, overrides


def training_length(task_file: Path, model: str, k_examples: int, floor: int = 1024) -> int:
    """Tokens the longest full-prompt training sequence needs (template + K of the longest demonstrations + the
    longest query + the longest target, through the model's chat template), rounded up to 64."""
    tok = load_tokenizer(model)
    task = YamlTask(load_config(task_file))
    train = task.load(task.train_split)

    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    role = task.config.template_role or "system"
    demos = sorted((n(task.format_demo(ex)) for ex in train), reverse=True)[:k_examples]
    prompt = max(n(render(Prompt(template=task.template, query=task.format_query(ex), template_role=role), tok))
                 for ex in train)
    target = max(n(task.format_target(ex)) for ex in train) + 2  # + the end-of-turn token(s)
    need = prompt + sum(demos) + 8 * k_examples + target
    return max(floor, -(-need // 64) * 64)
