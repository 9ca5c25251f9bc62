"""Every experiment file in experiments/ validates and plans (and every serving-benchmark settings file there
validates as one); the reference grid holds what issue 9 asks for."""

from pathlib import Path

import pytest
import yaml

from promptintern.harness.config import load_experiment
from promptintern.harness.plan import build_plan, method_specs

REPO = Path(__file__).resolve().parent.parent
FILES = sorted((REPO / "experiments").glob("*.yaml"))
# serving-benchmark settings (`promptintern serve-bench`): a list of served conditions, no grid
SERVING = [p for p in FILES if "conditions" in (yaml.safe_load(p.read_text()) or {})]
EXPERIMENTS = [p for p in FILES if p not in SERVING]
# grids written by `promptintern internalize` live beside their results
COMMITTED = EXPERIMENTS + sorted((REPO / "results").glob("*/internalize.yaml"))


@pytest.mark.parametrize("path", SERVING, ids=[p.name for p in SERVING])
def test_serving_settings_file_validates(path):
    from promptintern.cli.serve_bench import settings_from

    s = settings_from(str(path), [])
    assert len(s.concurrency) >= 3 and s.ratio == ["promptintern", "full_prompt_ft_cached"]
    assert s.warmup + s.requests <= 50  # the benchmark's test items: no request repeated


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_experiment_file_validates_and_plans(path):
    units = build_plan(load_experiment(path))
    assert units and len({u.id for u in units}) == len(units)


def test_reference_grid_is_paper_sized():
    cfg = load_experiment(Path(__file__).resolve().parent.parent / "experiments" / "reference.yaml")
    assert cfg["tasks"]["train"] == ["mbpp", "nl2bash"]
    assert {"humaneval", "gsm8k", "math500", "cosmosqa"} <= set(cfg["tasks"]["eval"])
    specs = method_specs(cfg)
    pi = {(s.schedule, s.rate) for s in specs if s.name == "promptintern"}
    assert pi == {(sch, r) for sch in ("linear", "exponential", "inverse_exponential") for r in (0.3, 0.5, 0.7)}
    names = {s.name for s in specs}
    assert {"full_prompt_ft", "query_only_ft", "few_shot", "compress_at_inference", "context_distillation",
            "prompt_baking", "metatuner"} <= names
    assert {s.options.get("variant") for s in specs if s.name == "metatuner"} == {"I", "J"}
    assert cfg["train"]["packing"] is True and cfg["generation"]["engine"] == "fast"


@pytest.mark.parametrize("path", COMMITTED, ids=[p.relative_to(REPO).as_posix() for p in COMMITTED])
def test_committed_results_still_cover_their_grid(path):
    """A schema change must not orphan published results: every unit of a committed grid keeps its id."""
    from promptintern.harness.executor import units_to_run
    from promptintern.harness.store import ResultStore

    cfg = load_experiment(path)
    root = REPO / cfg["results_dir"] / cfg["name"]
    if not (root / "runs").is_dir():
        pytest.skip(f"no committed results for {path.name}")
    assert units_to_run(build_plan(cfg), ResultStore(root)) == set()
