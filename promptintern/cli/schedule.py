"""`promptintern schedule`: a PromptIntern stage plan (template rate, examples, mean prompt tokens) before training."""

from __future__ import annotations

from . import common


def cmd(args) -> int:
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

        task = tasks_mod.get_task(args.task, data_dir=args.data_dir, include=args.include_path,
                                  allow_shadowing=args.allow_shadowing)
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


def register(sub) -> None:
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
    common.task_folder_args(sp)
    sp.set_defaults(fn=cmd)
