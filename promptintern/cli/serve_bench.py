"""`promptintern serve-bench SETTINGS [key=value ...]`: the serving benchmark on vLLM's server (its own environment,
`make setup-vllm`): every condition under a concurrency sweep and Poisson arrivals, one record per run, then its
table, the headline ratio with its interval, and report.md. `--report-only` rebuilds them from the records."""

from __future__ import annotations

from pathlib import Path

from promptintern.errors import ConfigError


def settings_from(path: str, overrides: list[str]):
    """The settings file with its ``key=value`` overrides, checked (a ConfigError naming the file and field)."""
    from promptintern.harness.config import apply_override, load_yaml
    from promptintern.harness.serving import ServingSettings

    p = Path(path)
    if not p.is_file():
        raise ConfigError("settings", f"{p} does not exist")
    raw = load_yaml(p.read_text(), str(p)) or {}
    for item in overrides or []:
        apply_override(raw, item)
    return ServingSettings.from_dict(raw, source=str(p))


def cmd(args) -> int:
    from promptintern.harness.serving_report import write_serving_report
    from promptintern.harness.serving_run import run_serving
    from promptintern.vllm_engine import check_vllm

    settings = settings_from(args.settings, args.overrides)
    if args.report_only:
        folder = Path(settings.results_dir) / settings.name
    else:
        check_vllm()
        folder = run_serving(settings, command=" ".join(["promptintern serve-bench", args.settings,
                                                          *(args.overrides or [])]))
    out = write_serving_report(folder)
    print(f"table:  {out['table']}\nreport: {out['report']}")
    return 0


def register(sub) -> None:
    sp = sub.add_parser("serve-bench", help="serving benchmark on vLLM's server: TTFT, TPOT, ITL, E2EL, throughput "
                        "and goodput per condition, concurrency sweep and Poisson arrivals")
    sp.add_argument("settings", help="serving settings YAML (experiments/serving_cpu.yaml)")
    sp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. requests=8")
    sp.add_argument("--report-only", action="store_true", help="rebuild the table and report from the records")
    sp.set_defaults(fn=cmd)
