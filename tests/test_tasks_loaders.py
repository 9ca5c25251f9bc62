"""Loaders: split sizes on the authors' files, the NL2Bash split procedure, and clear errors for malformed
or missing data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptintern.errors import DataFormatError, DatasetNotFoundError
from promptintern.tasks import get_task
from promptintern.tasks.loaders import common, nl2bash


@pytest.mark.parametrize(
    "name, sizes",
    [
        ("mbpp", {"train": 374, "validation": 90, "test": 500, "prompt": 10}),
        ("gsm8k", {"train": 7473, "test": 1319}),
        ("math500", {"test": 500}),
        ("cosmosqa", {"train": 200, "test": 2785, "dev": 2985}),
        ("spider", {"train": 100, "test": 934, "dev": 1034}),
        ("humaneval", {"test": 164}),
        ("nl2bash", nl2bash.EXPECTED_SIZES),
    ],
)
def test_split_sizes(data, name, sizes):
    assert get_task(name, data).split_sizes() == sizes


def test_mbpp_splits_follow_task_ids(data):
    task = get_task("mbpp", data)
    ids = {s: [e.meta["task_id"] for e in task.load(s)] for s in task.splits}
    assert (min(ids["test"]), max(ids["test"])) == (11, 510)
    assert (min(ids["train"]), max(ids["train"])) == (601, 974)
    assert (min(ids["validation"]), max(ids["validation"])) == (511, 600)
    ex = task.load("test", limit=1)[0]
    assert ex.id == "mbpp/11" and len(ex.meta["test_list"]) == 3
    assert task.load("test", limit=3) == task.load("test")[:3]


def test_nl2bash_split_is_the_authors_procedure(data):
    task = get_task("nl2bash", data)
    train, dev, test = (task.load(s) for s in ("train", "dev", "test"))
    # every pair is used at most once, and all three come from the same aligned files
    lines = [e.meta["line"] for e in train + dev + test]
    assert len(lines) == len(set(lines))
    # no command of dev/test occurs in train (moved to train by the authors' script)
    train_cms = {e.reference for e in train}
    assert not any(e.reference in train_cms for e in dev + test)
    # description groups are split whole: dev and test never share one (pairs only ever move to train)
    dev_keys = {nl2bash.canonicalize_text(e.query) for e in dev}
    assert not any(nl2bash.canonicalize_text(e.query) in dev_keys for e in test)
    # the 10:1:1 ratio (by description group) shows in the sizes
    assert 0.85 < len(train) / (len(train) + len(dev) + len(test)) < 0.9
    # descriptions longer than 50 words are filtered out
    assert max(len(e.query.split()) for e in train + dev + test) <= 50


def test_nl2bash_helpers():
    assert nl2bash.command_utilities("find . -name '*.txt' | xargs -0 grep -l foo 2>&1 | sort -u") == [
        "find", "xargs", "grep", "sort"]  # fmt: skip
    assert nl2bash.command_utilities("find . -type f -exec chmod 644 {} \\;") == ["find", "chmod"]
    assert nl2bash.command_utilities("echo $(date +%s) > out.txt && cat `which ls`") == ["echo", "date", "cat", "which"]
    with pytest.raises(nl2bash.UnparsableCommand):
        nl2bash.command_utilities("echo 'unterminated")
    # grouping key: case, stop words, plural/stemming and trailing punctuation do not matter
    assert nl2bash.canonicalize_text("Find all the files.") == nl2bash.canonicalize_text("find all files")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    good = {"text": "t", "code": "def f(): pass", "task_id": 11, "test_list": ["assert True"] * 3}
    bad_file = _write(tmp_path / "mbpp" / "mbpp.jsonl", json.dumps(good) + "\n" + '{"text": "oops", \n')
    with pytest.raises(DataFormatError) as err:
        get_task("mbpp", tmp_path).load("test")
    assert err.value.line == 2
    assert err.value.path == str(bad_file)
    assert f"{bad_file}:2" in str(err.value)


def test_wrong_field_type_names_the_field(tmp_path):
    rec = {"text": "t", "code": "x", "task_id": "eleven", "test_list": []}
    _write(tmp_path / "mbpp" / "mbpp.jsonl", json.dumps(rec) + "\n")
    with pytest.raises(DataFormatError, match=r"mbpp.jsonl:1: field 'task_id' should be int"):
        get_task("mbpp", tmp_path).load("test")


def test_gsm8k_answer_without_final_line(tmp_path):
    _write(tmp_path / "gsm8k" / "test.jsonl", json.dumps({"question": "q", "answer": "no final"}) + "\n")
    with pytest.raises(DataFormatError, match=r"test.jsonl:1: .*####"):
        get_task("gsm8k", tmp_path).load("test")


def test_cosmosqa_bad_label(tmp_path):
    header = "id,context,question,answer0,answer1,answer2,answer3,label\n"
    _write(tmp_path / "cosmosqa" / "valid.csv", header + 'x1,"ctx, with comma",q?,a,b,c,d,7\n')
    with pytest.raises(DataFormatError, match=r"valid.csv:2: label 7"):
        get_task("cosmosqa", tmp_path).load("dev")


def test_nl2bash_misaligned_files(tmp_path):
    _write(tmp_path / "nl2bash" / "all.nl", "list files\nshow date\n")
    _write(tmp_path / "nl2bash" / "all.cm", "ls\n")
    with pytest.raises(DataFormatError, match="line-aligned"):
        get_task("nl2bash", tmp_path).load("train")


@pytest.mark.parametrize("name, rel", [("mbpp", "mbpp/mbpp.jsonl"), ("gsm8k", "gsm8k/test.jsonl"),
                                       ("nl2bash", "nl2bash/all.nl"), ("spider", "spider/dev.json")])  # fmt: skip
def test_missing_dataset_offline(tmp_path, monkeypatch, name, rel):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = get_task(name, tmp_path)  # an empty data dir
    with pytest.raises(DatasetNotFoundError) as err:
        task.load(task.test_split)
    msg = str(err.value)
    assert err.value.dataset == name
    assert str(tmp_path / rel) in msg
    assert "PROMPTINTERN_DATA_DIR" in msg and "--data-dir" in msg


def test_missing_data_dir_entirely(monkeypatch):
    monkeypatch.delenv("PROMPTINTERN_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match="PROMPTINTERN_DATA_DIR is not set"):
        get_task("math500").load("test")


def test_hub_fallback_when_online(tmp_path, monkeypatch):
    """Without the local file and with HF_HUB_OFFLINE unset, the loader takes the hub's records."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_hub(dataset, hub):
        calls.append((dataset, hub["path"]))
        rec = {"text": "Add.", "code": "def add(a, b): return a + b", "task_id": 11,
               "test_list": ["assert add(1, 2) == 3"] * 3, "test_setup_code": "", "challenge_test_list": []}  # fmt: skip
        return {"test": [rec]}

    monkeypatch.setattr("promptintern.tasks.loaders.mbpp.hub_records", fake_hub)
    ex = get_task("mbpp", tmp_path).load("test")
    assert calls == [("mbpp", "google-research-datasets/mbpp")]
    assert [e.id for e in ex] == ["mbpp/11"]


def test_find_file_prefers_local(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    f = _write(tmp_path / "x" / "y.jsonl", "{}\n")
    assert common.find_file(tmp_path, "x/y.jsonl", "x", {"path": "a/b"}) == f
    assert common.find_file(tmp_path, "x/missing.jsonl", "x", {"path": "a/b"}) is None


def test_nl2formula_fixture(tmp_path):
    recs = [
        {"id": 1, "Question": "Total sales?", "Formula2": "=SUM(B2:B10)", "Level": "easy",
         "Table": {"header": ["Region", "Sales"]}},
        {"id": 2, "Question": "How many in Paris?", "Formula2": '=COUNTIF(A2:A10, "Paris")', "Level": "hard"},
    ]  # fmt: skip
    for split in ("train", "valid"):
        _write(tmp_path / "nl2formula" / f"{split}.json", json.dumps(recs))
    _write(tmp_path / "nl2formula" / "test.json", "\n".join(json.dumps(r) for r in recs) + "\n")  # JSON Lines too
    task = get_task("nl2formula", tmp_path)
    assert task.split_sizes() == {"train": 2, "valid": 2, "test": 2}
    test = task.load("test")
    assert test[0].query == "Columns: Region, Sales\nQuestion: Total sales?"
    assert test[0].reference == "=SUM(B2:B10)"
    per = task.score(["=sum( B2:B10 )", '=COUNTIF(A2:A10,"paris")'], test)
    agg = task.aggregate(per)
    assert agg["exact_match"] == 0.5
    assert agg["exact_match/level=easy"] == 1.0 and agg["exact_match/level=hard"] == 0.0
    _write(tmp_path / "nl2formula" / "test.json", json.dumps([{"Question": "q"}]))
    with pytest.raises(DataFormatError, match="Formula2"):
        get_task("nl2formula", tmp_path).load("test")


def test_spider_query_has_schema_and_question(data):
    ex = get_task("spider", data).load("test", limit=1)[0]
    assert ex.query.startswith(f"Database: {ex.meta['db_id']}\nSchema:\n")
    assert "Question: " + ex.meta["question"].strip() in ex.query
    assert ex.reference.lower().startswith("select")
    assert ex.meta["db_path"].endswith(f"spider/database/{ex.meta['db_id']}/{ex.meta['db_id']}.sqlite")


def test_cosmosqa_pool_is_context_disjoint(data):
    task = get_task("cosmosqa", data)
    train_ctx = {e.meta["context"] for e in task.load("train")}
    assert not any(e.meta["context"] in train_ctx for e in task.load("test"))
    ex = task.load("test", limit=1)[0]
    assert ex.reference in "ABCD" and "\nOptions:\nA) " in ex.query
