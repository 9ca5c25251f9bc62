"""`promptintern internalize --template FILE --data FILE --metric NAME`: does internalizing your prompt pay? The grid on
your prompt and data, then the decision (accuracy, tokens, speed, cost, break-even)."""

from __future__ import annotations

from promptintern.trainer import BUDGETS


def cmd(args) -> int:
    from promptintern.harness.config import load_experiment
    from promptintern.harness.cost import load_price_table
    from promptintern.harness.decision import decision_rows, write_decision
    from promptintern.harness.internalize import prepare
    from promptintern.harness.runner import run_experiment

    exp_file, overrides = prepare(args)
    cfg = load_experiment(exp_file, overrides)
    store, summary = run_experiment(cfg, quiet=args.quiet)
    table = load_price_table(args.price_table)
    from promptintern.harness.aggregate import eval_frame, main_table

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
    sp.add_argument("--budget", choices=BUDGETS, default="matched",
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
    sp.set_defaults(fn=cmd)
