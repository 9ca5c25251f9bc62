"""User task folders: YAML-only tasks outside the package, `tasks --check`, template roles, evaluation-only
experiments, `promptintern internalize` and its decision table."""

import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from promptintern import cli
from promptintern.errors import ConfigError, DataFormatError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "support_routing"

TASK = {
    "name": "adder",
    "loader": {"name": "records", "args": {"file": "data/qa.jsonl", "fractions": {"train": 0.5, "test": 0.5},
                                           "seed": 0, "fields": {"id": "qid", "query": "{question}",
                                                                 "reference": "answer"}}},
    "splits": ["train", "test"],
    "train_split": "train",
    "test_split": "test",
    "template_file": "system.md",
    "template_role": "system",
    "metric": {"name": "normalized_exact_match"},
    "primary_metric": "exact_match",
    "generation": {"max_new_tokens": 6, "stop": ["\n"]},
}


def records(n=24):
    return [{"qid": f"q{i}", "question": f"What is {i} plus {i + 3}?", "answer": str(2 * i + 3)} for i in range(n)]


def make_folder(root: Path, task=None, recs=None) -> Path:
    folder = root / "mytasks"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "system.md").write_text("You are the Adder. Reply with the sum only, digits, no words.\n" * 4)
    (folder / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (recs or records())))
    (folder / "adder.yaml").write_text(yaml.safe_dump(task or TASK, sort_keys=False))
    return folder


def experiment(tmp_path, folder, **over) -> Path:
    exp = {"name": "mine", "results_dir": str(tmp_path / "results"), "task_paths": [str(folder)], "models": ["tiny"],
           "tasks": {"train": ["adder"], "eval": "same", "train_limit": 6, "test_limit": 4},
           "methods": [{"name": "few_shot"}, {"name": "full_prompt_ft"}, {"name": "query_only_ft"}],
           "prompt": {"k_examples": 1, "compressor": {"name": "truncate", "tokenizer": "tiny"}},
           "train": {"batch_size": 2, "max_length": 256},
           "generation": {"batch_size": 4, "throughput_batch_sizes": [1, 2], "latency_samples": 2,
                          "latency_repeats": 1, "throughput_repeats": 1, "exclusive_timing": False},
           "resources": {"num_cpus": 1}, "retries": 0, **over}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def package_state() -> str:
    out = subprocess.run(["git", "status", "--porcelain", "--", "tasks", "harness", "promptintern"], cwd=ROOT,
                         capture_output=True, text=True)
    hashes = subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard", "tasks", "harness", "promptintern"],
                            cwd=ROOT, capture_output=True, text=True).stdout.split()
    import hashlib

    return out.stdout + "".join(hashlib.sha256((ROOT / h).read_bytes()).hexdigest() for h in hashes
                                if (ROOT / h).is_file())


# -- a task from a folder, end to end -----------------------------------------------------------------------------
def test_folder_task_runs_plan_run_tables_report_and_submission(tmp_path, ray_local, capsys):
    from promptintern.harness.submission import validate_submission

    before = package_state()
    # a task defined by one YAML (template inline) and one data file, outside the repository
    task = {k: v for k, v in TASK.items() if k != "template_file"}
    task["template"] = "You are the Adder. Reply with the sum only, digits, no words.\n" * 4
    folder = make_folder(tmp_path, task)
    (folder / "system.md").unlink()
    assert not folder.resolve().is_relative_to(ROOT)
    exp = experiment(tmp_path, folder)
    assert cli.main(["plan", str(exp)]) == 0
    assert cli.main(["run", str(exp), "--quiet"]) == 0
    root = tmp_path / "results" / "mine"
    assert cli.main(["report", str(root)]) == 0
    assert "adder" in (root / "tables" / "main.md").read_text()
    assert "Does internalizing the prompt pay?" in (root / "report.md").read_text()
    sub = json.loads((root / "submission.json").read_text())
    assert validate_submission(sub) == []
    assert {r["method"] for r in sub["decision"]} == {"few_shot", "full_prompt_ft", "query_only_ft"}
    # the system role: the template is a system message in the records, and it is counted in the API tokens
    rec = next(json.loads(p.read_text()) for p in (root / "runs").glob("eval-*.json")
               if json.loads(p.read_text())["config"]["method"]["name"] == "few_shot")
    s = rec["samples"][0]
    assert s["system_prompt"].startswith("You are the Adder") and "You are the Adder" not in s["prompt"]
    assert "<|im_start|>system\nYou are the Adder" in cli_render(rec)
    assert package_state() == before  # no file of the package was changed


def cli_render(rec) -> str:
    from promptintern.harness.verify import plain_render
    from promptintern.models import load_tokenizer

    s = rec["samples"][0]
    return plain_render(load_tokenizer("tiny"), s["prompt"], True, s.get("system_prompt", ""))


def test_include_path_lists_the_folder_task_with_its_origin(tmp_path, capsys):
    from promptintern import tasks
    folder = make_folder(tmp_path)
    assert "adder" not in tasks.list_tasks(include=[])
    assert tasks.task_origin("adder", include=[folder]) == str(folder.resolve())
    assert tasks.task_origin("mbpp", include=[folder]) == "built-in"
    assert cli.main(["tasks", "--include-path", str(folder), "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "adder" in out and "built-in" in out


def test_include_path_on_plan_finds_a_task_the_experiment_does_not_name(tmp_path, capsys):
    folder = make_folder(tmp_path)
    exp = experiment(tmp_path, folder, task_paths=[])
    assert cli.main(["plan", str(exp)]) == 2
    assert "unknown task 'adder'" in capsys.readouterr().err
    assert cli.main(["plan", str(exp), "--include-path", str(folder)]) == 0


def test_a_folder_task_that_shadows_a_builtin_is_an_error_unless_allowed(tmp_path):
    from promptintern import tasks
    folder = make_folder(tmp_path, {**TASK, "name": "mbpp"})
    (folder / "adder.yaml").rename(folder / "mbpp.yaml")
    with pytest.raises(ConfigError, match="shadows the built-in task"):
        tasks.list_tasks(include=[folder])
    task = tasks.get_task("mbpp", include=[folder], allow_shadowing=True)
    assert task.config.loader == "records"


def test_shadowing_and_the_environment_through_the_cli(tmp_path, capsys, monkeypatch):
    from promptintern.tasks.catalog import TASK_PATHS_ENV

    folder = make_folder(tmp_path, {**TASK, "name": "mbpp"})
    (folder / "adder.yaml").rename(folder / "mbpp.yaml")
    exp = experiment(tmp_path, folder, task_paths=[], tasks={"train": ["mbpp"], "eval": "same", "train_limit": 4,
                                                             "test_limit": 4})
    assert cli.main(["plan", str(exp), "--include-path", str(folder)]) == 2
    assert "shadows the built-in task" in capsys.readouterr().err
    assert cli.main(["plan", str(exp), "--include-path", str(folder), "--allow-shadowing"]) == 0
    # $PROMPTINTERN_TASK_PATHS alone finds a folder task: the command reads it once, at its start, and passes it
    # on (the experiment's task_paths, so every unit and its worker has it); the library reads no environment
    from promptintern.cli import build_parser, common, parse_args
    from promptintern.harness.config import load_experiment
    from promptintern.harness.plan import build_plan

    other = make_folder(tmp_path / "env")
    exp = experiment(tmp_path, other, task_paths=[])
    assert cli.main(["plan", str(exp)]) == 2 and "adder" in capsys.readouterr().err
    monkeypatch.setenv(TASK_PATHS_ENV, str(other))
    assert cli.main(["plan", str(exp)]) == 0
    args = parse_args(build_parser(), ["plan", str(exp)])
    common.read_environment(args)
    cfg = common.experiment(args)
    assert str(other.resolve()) in cfg["task_paths"]
    assert all(str(other.resolve()) in u.task_paths for u in build_plan(cfg))
    with pytest.raises(ConfigError, match="adder"):
        load_experiment(exp)


# -- malformed folders fail in tasks --check and in plan, naming the file and line or key -------------------------
def _bad_missing_field(tmp_path):
    recs = records()
    del recs[4]["question"]
    return make_folder(tmp_path, recs=recs), r"data/qa.jsonl:5: missing field 'question'"


def _bad_metric(tmp_path):
    return make_folder(tmp_path, {**TASK, "metric": {"name": "no_such_metric"}}), r"adder.yaml: metric.name: unknown"


def _bad_template(tmp_path):
    folder = make_folder(tmp_path, {**TASK, "template_file": "missing.md"})
    return folder, r"adder.yaml: template_file: file not found"


def _bad_empty_split(tmp_path):
    task = {**TASK, "loader": {**TASK["loader"], "args": {**TASK["loader"]["args"], "file": None,
                                                          "files": {"train": "data/qa.jsonl",
                                                                    "test": "data/empty.jsonl"}}}}
    del task["loader"]["args"]["file"], task["loader"]["args"]["fractions"], task["loader"]["args"]["seed"]
    folder = make_folder(tmp_path, task)
    (folder / "data" / "empty.jsonl").write_text("")
    return folder, r"adder.yaml: splits: split 'test' (of task 'adder' )?is empty"


@pytest.mark.parametrize("bad", [_bad_missing_field, _bad_metric, _bad_template, _bad_empty_split])
def test_malformed_task_folders_fail_in_check_and_in_plan(tmp_path, capsys, bad):
    import re

    folder, pattern = bad(tmp_path)
    assert cli.main(["tasks", "--check", str(folder), "--model", "tiny"]) == 1
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    exp = experiment(tmp_path, folder)
    assert cli.main(["plan", str(exp)]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err), err


def test_check_passes_the_example_folder(capsys):
    assert cli.main(["tasks", "--check", str(ROOT / "examples"), "--model", "tiny"]) == 0
    assert "support_routing" in capsys.readouterr().out


# -- the generic loader ---------------------------------------------------------------------------------------------
def test_jsonl_json_csv_and_parquet_give_the_same_examples(tmp_path):
    import pandas as pd

    from promptintern import tasks
    folder = make_folder(tmp_path)
    recs = records()
    (folder / "data" / "qa.json").write_text(json.dumps(recs))
    pd.DataFrame(recs).to_csv(folder / "data" / "qa.csv", index=False)
    pd.DataFrame(recs).to_parquet(folder / "data" / "qa.parquet")
    got = {}
    for ext in ("jsonl", "json", "csv", "parquet"):
        t = {**TASK, "loader": {"name": "records", "args": {**TASK["loader"]["args"], "file": f"data/qa.{ext}"}}}
        (folder / "adder.yaml").write_text(yaml.safe_dump(t))
        task = tasks.get_task("adder", include=[folder])
        got[ext] = [(e.id, e.query, e.reference) for e in task.load("test")]
    assert got["jsonl"] == got["json"] == got["csv"] == got["parquet"]
    assert len(got["jsonl"]) == 12 and got["jsonl"][0][0].startswith("adder/q")


def test_fractions_are_a_seeded_partition_and_jinja_fields_work(tmp_path):
    from promptintern import tasks
    t = {**TASK, "loader": {"name": "records", "args": {**TASK["loader"]["args"], "seed": 7,
                                                        "fields": {"query": "Q: {{ question | upper }}",
                                                                   "reference": "answer"}}}}
    folder = make_folder(tmp_path, t)
    task = tasks.get_task("adder", include=[folder])
    train, test = task.load("train"), task.load("test")
    assert not {e.id for e in train} & {e.id for e in test} and len(train) + len(test) == 24
    assert test[0].query.startswith("Q: WHAT IS")
    again = tasks.get_task("adder", include=[folder])
    assert [e.id for e in again.load("test")] == [e.id for e in test]
    (folder / "adder.yaml").write_text(yaml.safe_dump({**t, "loader": {"name": "records", "args": {
        **t["loader"]["args"], "seed": 8}}}))
    assert [e.id for e in tasks.get_task("adder", include=[folder]).load("test")] != [e.id for e in test]


def test_bad_loader_args_name_the_key(tmp_path):
    from promptintern.tasks.yaml_task import load_config

    for args, key in (({"fractions": {"train": 0.8, "test": 0.4}}, "loader.args.fractions"),
                      ({"fields": {"query": "question"}}, "loader.args.fields.reference"),
                      ({"colour": 1}, "loader.args.colour")):
        t = {**TASK, "loader": {"name": "records", "args": {**TASK["loader"]["args"], **args}}}
        if key == "loader.args.fields.reference":
            t["loader"]["args"]["fields"] = {"query": "question"}
        folder = make_folder(tmp_path, t)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(folder / "adder.yaml")


def test_a_hub_dataset_offline_is_a_clear_error(tmp_path, monkeypatch):
    from promptintern import tasks
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = {"hub": {"path": "org/some-dataset"}, "fields": {"query": "q", "reference": "a"}}
    folder = make_folder(tmp_path, {**TASK, "loader": {"name": "records", "args": args}})
    with pytest.raises(Exception, match="org/some-dataset.*HF_HUB_OFFLINE"):
        tasks.get_task("adder", include=[folder]).load("test")


def test_a_metric_file_in_the_folder_scores_and_its_content_is_its_version(tmp_path):
    from promptintern import tasks
    folder = make_folder(tmp_path, {**TASK, "metric": {"file": "metric.py", "function": "score"},
                                    "primary_metric": "close"})
    (folder / "metric.py").write_text(
        "def score(answers, examples, **_):\n"
        "    return [{'id': e.id, 'close': float(abs(int(a or 0) - int(e.reference)) <= 1)} "
        "for a, e in zip(answers, examples)]\n")
    task = tasks.get_task("adder", include=[folder])
    ex = task.load("test")[:2]
    scored = task.score([ex[0].reference, str(int(ex[1].reference) + 5)], ex)
    assert [s["close"] for s in scored] == [1.0, 0.0]
    v1, d1 = task.scoring_identity()["metric_version"], task.definition_id()
    (folder / "metric.py").write_text((folder / "metric.py").read_text().replace("<= 1", "<= 9"))
    edited = tasks.get_task("adder", include=[folder])
    assert edited.scoring_identity()["metric_version"] != v1  # the evaluations re-score ...
    assert edited.definition_id() == d1  # ... and no training stage re-runs
    with pytest.raises(ConfigError, match=r"metric\.args\.strip_punctuaton: unknown argument"):
        make_folder(tmp_path / "typo", {**TASK, "metric": {"name": "normalized_exact_match",
                                                           "args": {"strip_punctuaton": False}}})
        tasks.get_task("adder", include=[tmp_path / "typo" / "mytasks"])


def test_a_missing_field_error_names_file_and_line(tmp_path):
    from promptintern import tasks
    recs = records()
    recs[9] = {"qid": "q9", "question": "x"}
    folder = make_folder(tmp_path, recs=recs)
    with pytest.raises(DataFormatError, match=r"qa\.jsonl:10: missing field 'answer'"):
        tasks.get_task("adder", include=[folder]).load("train")


# -- template role --------------------------------------------------------------------------------------------------
def test_template_role_system_sends_the_template_as_a_system_message(tiny):
    from promptintern.prompts import Prompt, render, resolve_template_role

    _, tok = tiny
    sys_p = Prompt(template="RULES", examples=("ex",), query="q", template_role="system")
    user_p = Prompt(template="RULES", examples=("ex",), query="q")
    assert sys_p.system_text() == "RULES" and "RULES" not in sys_p.user_text()
    assert user_p.user_text().startswith("RULES") and user_p.system_text() == ""
    assert render(sys_p, tok).startswith("<|im_start|>system\nRULES<|im_end|>")
    assert "<|im_start|>user\nRULES" in render(user_p, tok)
    assert sys_p.api_text().startswith("RULES") and sys_p.api_text().endswith("q")
    # the query alone is the same prompt in both roles
    assert render(Prompt(query="q", template_role="system"), tok) == render(Prompt(query="q"), tok)
    assert resolve_template_role("auto", None, chat=True) == "system"
    assert resolve_template_role("auto", "user", chat=True) == "user"
    assert resolve_template_role("user", "system") == "user"


def test_builtin_tasks_keep_their_definition_ids():
    """The built-ins say template_role: user, which every stored run used: their definition ids equal the ones in
    the committed result files (so stored results keep their unit ids), and another role changes the id."""
    from dataclasses import replace

    from promptintern import tasks
    stored = {}
    for p in sorted((ROOT / "results").glob("*/runs/eval-*.json")):
        c = json.loads(p.read_text())["config"]
        if c["eval_task"] in tasks.list_tasks(include=[]):
            stored.setdefault(c["eval_task"], c["data"]["task_definition"])
    assert {"mbpp", "nl2bash"} <= set(stored)
    for name, definition in stored.items():
        task = tasks.get_task(name, include=[])
        assert task.config.template_role == "user"
        assert task.definition_id() == definition, name
    task = tasks.get_task("mbpp", include=[])
    assert tasks.YamlTask(replace(task.config, template_role="system")).definition_id() != task.definition_id()


# -- evaluation-only experiments --------------------------------------------------------------------------------------
def test_evaluation_only_experiment_plans_untrained_methods(tmp_path):
    from promptintern.harness.config import load_experiment
    from promptintern.harness.plan import build_plan

    folder = make_folder(tmp_path)
    exp = experiment(tmp_path, folder, tasks={"train": [], "eval": ["adder"], "train_limit": 4, "test_limit": 4},
                     methods=[{"name": "few_shot"}, {"name": "compress_at_inference", "rates": [0.5]}])
    units = build_plan(load_experiment(exp))
    assert [u.kind for u in units] == ["eval", "eval", "engine"]  # the engine unit times both conditions
    assert all(u.config["train_task"] is None for u in units if u.kind == "eval")
    bad = experiment(tmp_path, folder, tasks={"train": [], "eval": ["adder"]}, methods=[{"name": "full_prompt_ft"}])
    with pytest.raises(ConfigError, match=r"methods\[0\]\.name: full_prompt_ft fine-tunes"):
        load_experiment(bad)


def test_an_existing_adapter_is_evaluated_by_path(tmp_path, ray_local):
    from promptintern.harness.config import load_experiment
    from promptintern.harness.plan import build_plan

    folder = make_folder(tmp_path)
    exp = experiment(tmp_path, folder, tasks={"train": [], "eval": ["adder"], "test_limit": 3},
                     methods=[{"name": "adapter", "options": {"path": str(tmp_path / "nope")}}])
    with pytest.raises(ConfigError, match="not a PEFT adapter folder"):
        build_plan(load_experiment(exp))
    # train one adapter with a normal grid, then evaluate it by path in an evaluation-only experiment
    trained = experiment(tmp_path, folder, methods=[{"name": "query_only_ft"}], name="train-one")
    assert cli.main(["run", str(trained), "--quiet"]) == 0
    adapter = next((tmp_path / "results" / "train-one" / "adapters").iterdir())
    exp = experiment(tmp_path, folder, name="by-path", tasks={"train": [], "eval": ["adder"], "test_limit": 4},
                     methods=[{"name": "adapter", "options": {"path": str(adapter)}}])
    assert cli.main(["run", str(exp), "--quiet"]) == 0
    rec = json.loads(next((tmp_path / "results" / "by-path" / "runs").glob("eval-*.json")).read_text())
    from promptintern.harness.artifacts import weights_sha256

    assert rec["adapter_sha256"] == weights_sha256(adapter) and rec["config"]["adapter_sha256"] == weights_sha256(adapter)
    mine = next(json.loads(p.read_text()) for p in (tmp_path / "results" / "train-one" / "runs").glob("eval-*.json"))
    assert [s["generation"] for s in rec["samples"]] == [s["generation"] for s in mine["samples"]]


# -- internalize ------------------------------------------------------------------------------------------------------
def test_internalize_on_the_example_prints_the_decision(tmp_path, ray_local, capsys):
    argv = ["internalize", "--name", "routing", "--template", str(EXAMPLE / "system.md"),
            "--data", str(EXAMPLE / "data" / "tickets.jsonl"), "--query-field", "Channel: {channel}\nMessage: {message}",
            "--reference-field", "route", "--id-field", "ticket_id", "--metric", "normalized_exact_match",
            "--max-new-tokens", "6", "--stop", "\n", "--model", "tiny", "--train-limit", "6", "--test-limit", "4",
            "--results-dir", str(tmp_path / "results"), "--quiet",
            "prompt.compressor={name: truncate, tokenizer: tiny}",
            "timing.queries=2", "timing.repeats=1", "timing.batch_sizes=[2]", "timing.sweep_requests=2",
            "timing.max_new_tokens=4", "timing.exclusive=false", "train.batch_size=2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "break-even vs full prompt" in out and "few_shot (reference)" in out
    root = tmp_path / "results" / "routing"
    rows = json.loads((root / "decision.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"few_shot", "full_prompt_ft", "query_only_ft", "promptintern",
                                           "compress_at_inference"}
    qo = next(r for r in rows if r["method"] == "query_only_ft")
    ref = next(r for r in rows if r["reference"])
    assert qo["tokens_saved"] == pytest.approx(ref["input_tokens"] - qo["input_tokens"])
    assert qo["input_tokens"] < 0.2 * ref["input_tokens"]  # the 1,700-token system prompt is gone
    # the cached reference's API price by hand: gpt-4o-mini base prices, the template prefix cached (>= 1,024 tokens,
    # in steps of 128), from the recorded o200k counts
    fs = next(json.loads(p.read_text()) for p in (root / "runs").glob("eval-*.json")
              if json.loads(p.read_text())["config"]["method"]["name"] == "few_shot")
    per_q = []
    for s in fs["samples"]:
        n_in, n_out = s["tokens"]["o200k_base"], s["output_tokens_tiktoken"]["o200k_base"]
        cached = (s["parts_tiktoken"]["o200k_base"]["template"] // 128) * 128 if n_in >= 1024 else 0
        per_q.append(((n_in - cached) * 0.15 + cached * 0.075 + n_out * 0.60) / 1e6)
    ref_cached = next(r for r in rows if r["method"] == "few_shot" and r["prefix_cache"])
    assert ref_cached["api_usd_per_1k"] == pytest.approx(1000 * sum(per_q) / len(per_q))
    for r in rows:  # the reference trains nothing: the row's whole training cost is repaid by its saving
        if r["reference"] or r["prefix_cache"]:
            continue
        saving = (ref["self_hosted_usd_per_1k"] - r["self_hosted_usd_per_1k"]) / 1000
        if saving > 0:
            assert r["break_even_base"] == pytest.approx(r["train_usd"] / saving)
        else:
            assert r["break_even_base"] == "never"
        saving = (ref["api_usd_per_1k"] - r["api_usd_per_1k"]) / 1000
        if saving <= 0:
            assert r["break_even_api_base"] == "never"
        else:
            assert r["break_even_api_base"] == pytest.approx(r["train_usd_api"] / saving)
    # full-prompt training saw the whole 1,700-token template: max_length was sized to it, nothing was cut
    stages = [json.loads(p.read_text()) for p in (root / "runs").glob("stage-*.json")]
    assert stages and all(s["train"]["truncated_examples"] == 0 for s in stages)
    assert yaml.safe_load((root / "internalize.yaml").read_text())["train"]["max_length"] > 1800
    # the task folder names the user's files relative to itself; the run resumes with nothing to do
    task_yaml = yaml.safe_load((root / "task" / "routing.yaml").read_text())
    assert not Path(task_yaml["loader"]["args"]["file"]).is_absolute()
    assert cli.main(argv) == 0
    assert "0 ran" in capsys.readouterr().out


def test_break_even_arithmetic():
    from promptintern.harness.compare import break_even

    # costs per 1k queries: $10 of training against an untrained reference, $0.002 saved per query
    assert break_even(10.0, 0.0, 3.0, 1.0) == pytest.approx(5000.0)
    # incremental: against a reference that itself trained for $4, only the extra $6 is to repay
    assert break_even(10.0, 4.0, 3.0, 1.0) == pytest.approx(3000.0)
    assert break_even(3.0, 4.0, 3.0, 1.0) == 0  # cheaper to train and cheaper per query: pays from the start
    assert math.isinf(break_even(10.0, 0.0, 1.0, 2.0))
    assert math.isnan(break_even(float("nan"), 0.0, 3.0, 1.0))


def test_the_example_experiment_file_plans(capsys):
    assert cli.main(["plan", str(EXAMPLE / "experiment.yaml"), "models=[tiny]",
                     "prompt.compressor={name: truncate, tokenizer: tiny}"]) == 0
    out = capsys.readouterr().out
    assert "support_routing: 32 training items (of 270 in the pool), 40 test items (of 90)" in out


def test_internalize_rejects_bad_input_before_anything_runs_and_leaves_nothing(tmp_path, capsys):
    base = ["internalize", "--template", str(EXAMPLE / "system.md"), "--data", str(EXAMPLE / "data" / "tickets.jsonl"),
            "--reference-field", "route", "--model", "tiny", "--results-dir", str(tmp_path / "r")]
    assert cli.main([*base, "--query-field", "msg", "--metric", "normalized_exact_match"]) == 2
    assert "tickets.jsonl:1: missing field 'msg'" in capsys.readouterr().err
    assert cli.main([*base, "--query-field", "message", "--metric", "bogus"]) == 2
    assert "--metric: unknown metric 'bogus'" in capsys.readouterr().err
    assert not any((tmp_path / "r").rglob("*.yaml"))
