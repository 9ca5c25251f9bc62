"""Infrastructure failures are never scores (issue 25): a sample the code sandbox could not run, or a metric that
raises, fails its evaluation (or, within ``scoring.max_infra_failures``, is left out and counted), so a broken
sandbox cannot produce a table row of 0.0."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from promptintern import cli
from promptintern.tasks import infra

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pyfuncs"
MISSING_PYTHON = "/nonexistent interpreter/bin/python"


def broken_folder(tmp_path: Path) -> Path:
    """The generic code task, its sandbox pointed at an interpreter that does not exist: the sandbox cannot
    start, whatever the answers."""
    folder = tmp_path / "tasks"
    shutil.copytree(FIXTURE, folder)
    spec = yaml.safe_load((folder / "pyfuncs.yaml").read_text())
    spec["metric"]["args"]["python"] = MISSING_PYTHON
    (folder / "pyfuncs.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def load(folder: Path):
    from promptintern import tasks
    task = tasks.get_task("pyfuncs", include=[str(folder)])
    return task, task.load(task.test_split)


def test_a_sample_the_sandbox_could_not_run_has_no_score(tmp_path):
    task, test = load(broken_folder(tmp_path))
    per = task.score([task.format_target(ex) for ex in test[:2]], test[:2])  # correct answers
    for rec in per:
        assert rec["status"] == "sandbox_error" and rec["pass@1"] is None
        assert "sandbox_error" in rec["infra_error"] and MISSING_PYTHON in rec["infra_error"]
    assert "pass@1" not in task.aggregate(per)  # no mean of anything: not a 0.0
    with pytest.raises(infra.InfraError, match=r"2 of 2 samples could not be scored.*max_infra_failures"):
        infra.screen(task, per, 0)
    with pytest.raises(infra.InfraError, match="could not be scored"):  # every sample: never a score
        infra.screen(task, per, 10)


def test_within_the_threshold_the_failures_are_left_out_and_counted():
    task, test = load(FIXTURE)
    answers = [task.format_target(ex) for ex in test[:3]]
    per = task.score(answers, test[:3])
    assert [r["pass@1"] for r in per] == [1.0, 1.0, 1.0]
    per[1] = {**per[1], "pass@1": None, "status": "sandbox_error", "failure": "sandbox bootstrap failed (code 122)"}
    with pytest.raises(infra.InfraError, match="1 of 3 samples"):
        infra.screen(task, per, 0)
    metrics, block = infra.screen(task, per, 1)
    assert metrics["pass@1"] == 1.0 and metrics["n"] == 2.0 and metrics["infra_excluded"] == 1.0
    assert block == {"excluded": 1, "max_infra_failures": 1,
                     "samples": [{"id": test[1].id, "reason": "sandbox bootstrap failed (code 122)"}]}
    assert infra.screen(task, [per[0], per[2]], 0) == (task.aggregate([per[0], per[2]]), None)


def test_a_metric_that_raises_fails_the_evaluation():
    class Task:
        name = "boom"

        class config:  # noqa: N801 - the shape of YamlTask.config
            metric = "exploding"

        def score(self, generations, examples):
            raise RuntimeError("database locked")

    with pytest.raises(infra.InfraError, match="exploding metric raised RuntimeError: database locked"):
        infra.score(Task(), ["x"], [None])


def test_a_stored_record_that_scored_sandbox_errors_as_wrong_is_not_a_result(tmp_path):
    from _results_factory import build_store, write_price_dir

    from promptintern.harness.aggregate import eval_frame, main_table
    from promptintern.harness.report import measurement_caveats
    from promptintern.harness.tables import to_markdown

    store = build_store(tmp_path / "r", cross_domain=False)
    path = store.path("eval-query-mbpp")
    rec = json.loads(path.read_text())
    rec["samples"][0]["score"].update({"status": "sandbox_error", "pass@1": 0.0, "failure": "bootstrap failed"})
    path.write_text(json.dumps(rec))
    assert store.read("eval-query-mbpp") is None  # an older code's record: its 0.0 was the sandbox's, not the answer's
    # the same sample accounted for (left out within the threshold): valid, and counted in the table and the report
    rec["samples"][0]["score"]["pass@1"] = None
    rec["infra"] = {"excluded": 1, "max_infra_failures": 1, "samples": [{"id": rec["samples"][0]["id"],
                                                                          "reason": "bootstrap failed"}]}
    rec["metrics"] = {"pass@1": 2 / 3, "n": 3.0, "infra_excluded": 1.0}
    path.write_text(json.dumps(rec))
    assert store.read("eval-query-mbpp") is not None
    from promptintern.harness.cost import load_price_table

    ev = eval_frame(store, load_price_table("test-prices", write_price_dir(tmp_path / "prices")))
    row = ev[ev["unit_id"] == "eval-query-mbpp"].iloc[0]
    assert row["n"] == 3 and row["infra_excluded"] == 1 and row["score"] == pytest.approx(2 / 3)
    assert "| 3 (+1 excluded: infra) |" in to_markdown(main_table(ev))
    assert any("1 sample(s) of 1 evaluation(s) failed for a reason of the harness" in line
               for line in measurement_caveats(ev))


def experiment(tmp_path: Path, folder: Path, **over) -> Path:
    exp = {"name": "broken", "results_dir": str(tmp_path / "results"), "task_paths": [str(folder)],
           "models": ["tiny"], "tasks": {"train": ["pyfuncs"], "eval": "same", "train_limit": 4, "test_limit": 2},
           "methods": [{"name": "few_shot"}], "prompt": {"k_examples": 1, "compressor": {"name": "truncate",
                                                                                          "tokenizer": "tiny"}},
           "generation": {"batch_size": 2, "max_new_tokens": 8, "measure": False},
           "resources": {"num_cpus": 1}, "retries": 0, **over}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def test_preflight_fails_the_run_naming_the_cause(tmp_path, capsys):
    exp = experiment(tmp_path, broken_folder(tmp_path))
    assert cli.main(["plan", str(exp)]) == 0  # plan executes nothing
    assert cli.main(["run", str(exp), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "task 'pyfuncs' (metric code_tests) executes code, but the code sandbox" in err
    assert "cannot run code: a known-good program ended as sandbox_error" in err and MISSING_PYTHON in err
    assert not (tmp_path / "results" / "broken" / "runs").exists()  # nothing ran


@pytest.mark.parametrize("allowed", [0, 5])
def test_a_broken_sandbox_fails_the_evaluation_never_a_zero_row(tmp_path, ray_local, monkeypatch, allowed):
    """Past the preflight (e.g. a cluster node whose sandbox breaks), the evaluation unit itself fails: a FAILED
    row with the cause, whatever the threshold (every sample failed), and no score of 0.0 anywhere."""
    from promptintern.harness import preflight
    from promptintern.harness.aggregate import eval_frame, main_table
    from promptintern.harness.store import ResultStore
    from promptintern.harness.tables import to_markdown

    monkeypatch.setattr(preflight, "check_sandbox", lambda *a, **k: None)
    exp = experiment(tmp_path, broken_folder(tmp_path), scoring={"max_infra_failures": allowed})
    assert cli.main(["run", str(exp), "--quiet"]) == 1
    store = ResultStore(tmp_path / "results" / "broken")
    rec = json.loads(next(store.runs.glob("eval-*.json")).read_text())
    assert rec["status"] == "failed" and "could not be scored for a reason of the harness" in rec["error"]
    assert MISSING_PYTHON in rec["error"]
    assert store.records(kind="eval") == []
    ev = eval_frame(store)
    assert list(ev["status"]) == ["failed"] and all(math.isnan(s) for s in ev["score"])
    table = to_markdown(main_table(ev))
    assert "| 0.0" not in table and "| FAILED: promptintern.tasks.infra.InfraError: task 'pyfuncs': 2 of 2 samples" in table
