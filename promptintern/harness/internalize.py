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
    from promptintern.tasks.registry import metric_names

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
    from promptintern.tasks.check import check_task_file
    from promptintern.tasks.yaml_task import TEMPLATE_ROLES

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
    from promptintern.models import load_tokenizer
    from promptintern.prompts import Prompt, render
    from promptintern.tasks.yaml_task import YamlTask, load_config

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


def cmd_internalize(args) -> int:
    from .cli import run_experiment
    from .config import load_experiment
    from .cost import load_price_table
    from .decision import decision_rows, write_decision

    exp_file, overrides = prepare(args)
    cfg = load_experiment(exp_file, overrides)
    store, summary = run_experiment(cfg, quiet=args.quiet)
    table = load_price_table(args.price_table)
    from .aggregate import eval_frame, main_table

    rows = decision_rows(main_table(eval_frame(store, table, args.hardware)))
    text = write_decision(store.root, rows, store.relative(exp_file))
    print()
    print(text)
    print(f"\nresults: {store.root}  (decision.md, decision.json; `promptintern report {store.root}` for the report)")
    return 0 if summary.ok else 1


def register(sub) -> None:
    sp = sub.add_parser("internalize", help="does internalizing your prompt pay? run the grid on your prompt and "
                                            "data and print the decision (accuracy, tokens, speed, cost, break-even)")
    sp.add_argument("--template", required=True, help="the recurring prompt (a text or markdown file)")
    sp.add_argument("--data", required=True, help="records with queries and reference answers (JSONL, JSON, CSV, "
                                                  "Parquet)")
    sp.add_argument("--test-data", help="a separate test file (default: a seeded --test-fraction of --data)")
    sp.add_argument("--test-fraction", type=float, default=0.25)
    sp.add_argument("--split-seed", type=int, default=0)
    sp.add_argument("--query-field", default="query", help="column, \"{column}\" text or Jinja (default: query)")
    sp.add_argument("--reference-field", default="reference", help="column of the reference answer")
    sp.add_argument("--id-field", help="column of a stable record id (default: file name and line)")
    sp.add_argument("--metric", required=True, help="a registered metric (normalized_exact_match, exact_match, "
                                                    "bleu, chrf, rouge_l, choice, numeric, regex, json_match, ...)")
    sp.add_argument("--metric-args", help="YAML mapping of the metric's arguments, e.g. '{lowercase: false}'")
    sp.add_argument("--primary-metric", help="the metric key to decide on (default: the metric's main key)")
    sp.add_argument("--template-role", choices=("system", "user"), help="default: system for chat models")
    sp.add_argument("--max-new-tokens", type=int, default=64)
    sp.add_argument("--stop", action="append", help="a stop string (repeatable), e.g. --stop $'\\n'")
    sp.add_argument("--model", default="smollm2-135m", help="model name, HF id or local path")
    sp.add_argument("--budget", choices=("matched", "per_stage"), default="matched",
                    help="matched: every fine-tuning chain gets the same optimizer steps")
    sp.add_argument("--epochs", type=int, default=1)
    sp.add_argument("--schedule", default="linear")
    sp.add_argument("--stages", type=int, default=3)
    sp.add_argument("--compress-rate", type=float, default=0.5)
    sp.add_argument("--k-examples", type=int, default=0, help="retrieved examples in the full prompt (default 0: "
                                                               "your template and the query)")
    sp.add_argument("--train-limit", type=int, default=None)
    sp.add_argument("--test-limit", type=int, default=None)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--name", help="experiment name (default: the template's file name)")
    sp.add_argument("--results-dir", default="results")
    sp.add_argument("--price-table")
    sp.add_argument("--hardware", help="hardware price entry key instead of the recorded hardware's")
    sp.add_argument("--quiet", action="store_true")
    sp.add_argument("overrides", nargs="*", help="key=value experiment overrides, e.g. train.lr=1e-4")
    sp.set_defaults(fn=cmd_internalize)
