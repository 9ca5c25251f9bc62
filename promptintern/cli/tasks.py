"""`promptintern tasks [--check DIR]`: the tasks with split sizes and template token counts, or a check of a folder of task YAMLs."""

from __future__ import annotations

import sys

from . import common


def cmd(args) -> int:
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


def register(sub) -> None:
    sp = sub.add_parser("tasks", help="list tasks with split sizes and template token counts (or --check a folder)")
    sp.add_argument("--data-dir")
    sp.add_argument("--check", metavar="DIR", action="append", help="validate the task YAMLs below DIR (schema, "
                    "every mapped field of every record, split sizes, metric, template tokens); exit 1 on a failure")
    common.task_folder_args(sp)
    sp.add_argument("--model", default="smollm2-135m", help="also count template tokens with this model's tokenizer "
                    "(and render --check's prompt with its chat template)")
    sp.add_argument("--demos", type=int, default=2, help="--check: demonstrations in the rendered prompt (default 2)")
    sp.add_argument("--fewshot-layout", choices=("multiturn", "single"), default="multiturn",
                    help="--check: the few-shot layout of the rendered prompt (prompt.fewshot_layout)")
    sp.add_argument("--no-chat", action="store_true", help="--check: render as for a base model (prompt.chat: false)")
    sp.set_defaults(fn=cmd)
