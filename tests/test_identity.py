"""Result identity: a unit's id covers the data files it reads and the scoring code's version, so a changed data
file or a fixed metric re-runs exactly the units affected, and records store no absolute paths."""

import json
import shutil

import pytest

from promptintern.harness.config import load_experiment
from promptintern.harness.executor import run_plan, units_to_run
from promptintern.harness.plan import build_plan, prepare_tasks
from promptintern.harness.store import ResultStore

GRID = [
    "name=ident",
    "models=[tiny]",
    "tasks.train=[mbpp, nl2bash]",
    "tasks.train_limit=2",
    "tasks.test_limit=1",
    "methods=[{name: query_only_ft}]",
    "prompt.compressor={name: truncate, tokenizer: tiny}",
    "train.batch_size=2",
    "train.max_length=256",
    "generation.batch_size=1",
    "generation.max_new_tokens=4",
    "generation.measure=false",
    "timing.measure=false",
]


def _copy_data(src, dst):
    for name in ("mbpp", "nl2bash"):
        shutil.copytree(src / name, dst / name)
    return dst


def test_a_modified_data_file_reruns_exactly_the_units_that_read_it(tmp_path, data, ray_local):
    data_a = _copy_data(data, tmp_path / "data_a")
    cfg = load_experiment(None, [*GRID, f"results_dir={tmp_path / 'results'}", f"data_dir={data_a}"])
    units = build_plan(cfg)
    store = ResultStore(tmp_path / "results" / "ident")
    first = run_plan(units, store, data_dir=str(data_a), progress=False)
    assert first.ok and first.completed == len(units) == 4, first.failed

    # a copy of the data dir with one MBPP training record changed (its problem text)
    data_b = _copy_data(data, tmp_path / "data_b")
    path = data_b / "mbpp" / "mbpp.jsonl"
    lines = path.read_text().splitlines()
    for k, line in enumerate(lines):
        rec = json.loads(line)
        if rec["task_id"] == 601:
            rec["text"] += " (changed)"
            lines[k] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")

    cfg_b = load_experiment(None, [*GRID, f"results_dir={tmp_path / 'results'}", f"data_dir={data_b}"])
    units_b = build_plan(cfg_b)
    rerun = units_to_run(units_b, store)
    assert {u.config["train_task"] for u in units_b if u.id in rerun} == {"mbpp"}
    assert len(rerun) == 2  # the MBPP stage and its evaluation; NL2Bash's two units are still valid
    second = run_plan(units_b, store, data_dir=str(data_b), progress=False)
    assert second.ok and (second.completed, second.skipped) == (2, 2)

    # identical content under another path is the same data: nothing re-runs
    data_c = _copy_data(data, tmp_path / "data_c")
    units_c = build_plan(load_experiment(None, [*GRID, f"results_dir={tmp_path / 'results'}", f"data_dir={data_c}"]))
    assert units_to_run(units_c, store) == set()

    # records name the data they read (by content), and no absolute path of this machine
    from promptintern.hashing import file_sha256

    expected = {"mbpp": {"mbpp/mbpp.jsonl"}, "nl2bash": {"nl2bash/all.nl", "nl2bash/all.cm"}}
    for rec in store.records():
        task = rec["config"].get("train_task") or rec["config"]["eval_task"]
        files = {k: v for k, v in rec["config"]["data"].items() if k != "task_definition"}
        assert set(files) == expected[task]
        assert all(v in (file_sha256(data_a / k), file_sha256(data_b / k)) for k, v in files.items())
        assert str(tmp_path) not in json.dumps({k: v for k, v in rec.items() if k not in ("hardware",)})


def test_a_new_scoring_version_changes_evaluation_ids_only(data, monkeypatch):
    from promptintern.tasks.registry import METRICS

    cfg = load_experiment(None, [*GRID, "results_dir=/nonexistent"])
    before = build_plan(cfg)
    spec = METRICS["nl2bash"]
    monkeypatch.setitem(METRICS, "nl2bash", type(spec)(spec.name, spec.score, spec.aggregate, spec.version + 1))
    after = build_plan(cfg)
    changed = {(a.kind, a.config["train_task"]) for a, b in zip(before, after, strict=True) if a.id != b.id}
    assert changed == {("eval", "nl2bash")}


def test_missing_data_fails_at_plan_time_naming_the_dataset(tmp_path, monkeypatch):
    from promptintern.errors import DatasetNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load_experiment(None, [*GRID, f"data_dir={tmp_path / 'empty'}"])
    with pytest.raises(DatasetNotFoundError, match="mbpp"):
        prepare_tasks(cfg)
