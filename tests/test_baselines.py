"""Baselines on the tiny model: prompt baking's KL, context distillation's targets, and every method end to end
through the same stage and evaluation units (real task data, no Ray)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from promptintern.baking import bake_loss, pair_record, train_bake_stage
from promptintern.distillation import cut_keep_stop, load_or_generate, teacher_answers
from promptintern.prompts import Prompt, render
from promptintern.trainer import TrainConfig, attach_adapter, collate

TEMPLATE = "Answer with the list reversed, written as a Python list. " * 4
DEMOS = ("Reverse [1, 2]\n[2, 1]", "Reverse [5, 6, 7]\n[7, 6, 5]")


@pytest.fixture()
def fresh_tiny():
    from promptintern.models import load_model

    return load_model("tiny", device="cpu")


def _pair(i, teacher_full=True, student_full=False):
    xs = [i, i + 1, i + 2]
    q, a = f"Reverse {xs}", str(xs[::-1])
    full = Prompt(template=TEMPLATE, examples=DEMOS, query=q, answer=a)
    bare = Prompt(query=q, answer=a)
    return (full if teacher_full else bare), (full if student_full else bare)


def _batch(records, tok):
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, labels, mask = collate(records, pad, "cpu")
    t = [{"input_ids": r["teacher_input_ids"], "labels": r["teacher_labels"]} for r in records]
    t_ids, t_labels, t_mask = collate(t, pad, "cpu")
    return (ids, mask, labels), (t_ids, t_mask, t_labels)


CFG = {"lr": 2e-2, "epochs": 4, "batch_size": 4, "progress": False, "warmup_ratio": 0.0,
       "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}


def test_baking_kl_is_zero_when_teacher_and_student_see_the_same_input(fresh_tiny):
    model, tok = fresh_tiny
    peft = attach_adapter(model, TrainConfig.from_dict(CFG), None)  # fresh LoRA: B = 0, the identity
    same = [pair_record(*_pair(i, student_full=True), tok, 512) for i in range(4)]
    student, teacher = _batch(same, tok)
    assert torch.equal(student[0], teacher[0])
    assert bake_loss(peft, student, teacher).item() == pytest.approx(0.0, abs=1e-7)
    # Query-only student, fully prompted teacher: the distributions differ.
    diff = [pair_record(*_pair(i), tok, 512) for i in range(4)]
    student, teacher = _batch(diff, tok)
    assert bake_loss(peft, student, teacher).item() > 1e-3
    # Same input, after the adapter has moved away from the identity: no longer zero (the teacher has no adapter).
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    student, teacher = _batch(same, tok)
    assert bake_loss(peft, student, teacher).item() > 1e-6


def test_pair_record_aligns_answer_tokens_under_truncation(fresh_tiny):
    _, tok = fresh_tiny
    teacher, student = _pair(3)
    teacher = Prompt(template="word " * 300, examples=DEMOS, query=teacher.query, answer=teacher.answer)
    r = pair_record(teacher, student, tok, max_length=64)
    assert len(r["teacher_input_ids"]) <= 64
    t_ans = [x for x in r["teacher_labels"] if x != -100]
    s_ans = [x for x in r["labels"] if x != -100]
    assert t_ans == s_ans and tok.decode(s_ans).startswith("[5, 4, 3]")
    with pytest.raises(ValueError):
        pair_record(teacher, Prompt(query="x", answer="other"), tok, 64)


def test_baking_trains_the_student_towards_the_teacher(fresh_tiny, tmp_path):
    model, tok = fresh_tiny
    cfg = TrainConfig.from_dict(CFG)
    records = [pair_record(*_pair(i), tok, 512) for i in range(8)]
    peft = attach_adapter(model, cfg, None)
    student, teacher = _batch(records, tok)
    with peft.disable_adapter(), torch.no_grad():
        base_logits = peft(input_ids=teacher[0], attention_mask=teacher[1]).logits.clone()
    before = bake_loss(peft, student, teacher).item()
    result = train_bake_stage(peft, tok, records, cfg, tmp_path / "bake")
    after = bake_loss(peft, student, teacher).item()
    assert after < 0.5 * before, (before, after, result.losses)
    assert (tmp_path / "bake" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "bake" / "loss_curve.json").read_text())["loss"] == "KL(teacher || student)"
    with peft.disable_adapter(), torch.no_grad():  # the teacher (base weights) never moves
        assert torch.equal(peft(input_ids=teacher[0], attention_mask=teacher[1]).logits, base_logits)


def test_cut_keep_stop_and_teacher_cache(fresh_tiny, tmp_path):
    assert cut_keep_stop("```python\nx = 1\n```\nmore", ["\n```"]) == ("```python\nx = 1\n```", True)
    assert cut_keep_stop("ls -la\nrm", ["\n"]) == ("ls -la\n", True)
    assert cut_keep_stop("no stop", ["\n"]) == ("no stop", False)
    model, tok = fresh_tiny
    prompts = [render(_pair(i)[0], tok) for i in range(3)]
    calls = []

    def make():
        calls.append(1)
        return teacher_answers(model, tok, prompts, max_new_tokens=6, batch_size=2)

    a = load_or_generate(tmp_path / "t.json", {"k": 1}, make)
    b = load_or_generate(tmp_path / "t.json", {"k": 1}, make)
    assert len(calls) == 1 and b.cached and not a.cached and b.texts == a.texts
    load_or_generate(tmp_path / "t.json", {"k": 2}, make)  # another key: generated again
    assert len(calls) == 2


# ---------------------------------------------------------------- every method through the harness units


METHODS_UNDER_TEST = [
    {"name": "full_prompt_ft"},
    {"name": "query_only_ft"},
    {"name": "few_shot"},
    {"name": "compress_at_inference", "rates": [0.5]},
    {"name": "full_prompt_ft_compressed", "rates": [0.5]},
    {"name": "promptintern", "schedules": ["linear"], "stages": 2, "rates": [0.5]},
    {"name": "promptintern_template_only", "schedules": ["linear"], "stages": 2, "rates": [0.5]},
    {"name": "promptintern_examples_only", "schedules": ["linear"], "stages": 2},
    {"name": "promptintern_no_progression", "stages": 3, "rates": [0.5]},
    {"name": "context_distillation", "options": {"teacher_max_new_tokens": 12, "teacher_batch_size": 3}},
    {"name": "prompt_baking", "options": {"teacher_max_new_tokens": 12, "teacher_batch_size": 3}},
    {"name": "prompt_baking", "options": {"targets": "reference"}},
]


def _plan(cfg):
    """promptintern.harness.plan.build_plan, with `stages` passed to every staged method."""
    import dataclasses

    from promptintern.harness import plan as plan_mod
    from promptintern.methods import METHODS

    original = plan_mod.method_specs

    def method_specs(c):
        stages = {m["name"]: int(m.get("stages", 1)) for m in c["methods"]}
        return [
            dataclasses.replace(s, stages=stages[s.name]) if METHODS[s.name].staged else s for s in original(c)
        ]

    plan_mod.method_specs = method_specs
    try:
        return plan_mod.build_plan(cfg)
    finally:
        plan_mod.method_specs = original


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    import os

    from promptintern.harness.config import load_experiment
    from promptintern.harness.eval_unit import run_eval
    from promptintern.harness.stage_unit import run_stage
    from promptintern.harness.store import ResultStore

    data_dir = os.environ.get("PROMPTINTERN_DATA_DIR")
    if not data_dir or not Path(data_dir).is_dir():
        pytest.skip("no data directory (set PROMPTINTERN_DATA_DIR)")
    root = tmp_path_factory.mktemp("baselines")
    exp = {
        "name": "baselines",
        "results_dir": str(root),
        "models": ["tiny"],
        "tasks": {"train": ["mbpp"], "eval": "same", "train_limit": 3, "test_limit": 2},
        "methods": METHODS_UNDER_TEST,
        "prompt": {"k_examples": 2, "compressor": {"name": "perplexity", "model": "tiny"}},
        "train": {"batch_size": 3, "max_length": 384, "lora": {"r": 4, "alpha": 8}},
        "generation": {"batch_size": 2, "max_new_tokens": 6},
    }
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    cfg = load_experiment(path)
    cfg["timing"]["measure"] = False  # the engine measurement (harness/engine_unit.py): tested elsewhere
    units = _plan(cfg)
    store = ResultStore(root / "store")
    records = {}
    for u in units:  # build_plan lists every unit after its dependency
        prev = records[u.deps[0]] if u.deps else None
        prev_dir = str(store.root / prev["adapter_dir"]) if prev else None
        run = run_stage if u.kind == "stage" else run_eval
        records[u.id] = run(u.to_dict(), str(store.root), prev_dir, data_dir)
    return units, records, store


def _evals(grid):
    units, records, _ = grid
    return {u.config["method"]["label"]: records[u.id] for u in units if u.kind == "eval"}


def test_every_baseline_runs_and_reports_the_same_columns(grid):
    evals = _evals(grid)
    assert set(evals) == {
        "full_prompt_ft", "query_only_ft", "few_shot", "compress_at_inference/r0.5", "full_prompt_ft_compressed/r0.5",
        "promptintern/linear-T2/r0.5", "promptintern_template_only/linear-T2/r0.5",
        "promptintern_examples_only/linear-T2", "promptintern_no_progression/jump-T3/r0.5",
        "context_distillation", "prompt_baking/teacher-targets", "prompt_baking/reference-targets",
    }
    keys = None
    # the prompt's own shape: a multi-turn conversation only where the prompt has demonstrations
    shape = {"messages", "rendered_prompt", "system_prompt"}
    for label, rec in evals.items():
        assert rec["status"] == "ok" and rec["efficiency"]["n"] == 2, label
        sample_keys = {k for s in rec["samples"] for k in s} - shape
        keys = keys or sample_keys
        assert sample_keys == keys, label  # same token / latency / compressor columns for every method
        for s in rec["samples"] if not rec["config"]["test_compressed"] else []:  # (compressed into the context)
            # demonstrations are user/assistant turns (the default few-shot layout)
            turns = [m["role"] for m in s.get("messages") or []]
            assert bool(s["demo_ids"]) == ("assistant" in turns), label
            assert turns.count("assistant") == len(s["demo_ids"]), label
        trained = bool(rec["adapter"])
        assert trained == (label not in {"few_shot", "compress_at_inference/r0.5"}), label
    tokens = {label: rec["efficiency"]["mean_input_tokens"] for label, rec in evals.items()}
    full = tokens["full_prompt_ft"]
    assert tokens["few_shot"] == full
    for label in ("compress_at_inference/r0.5", "full_prompt_ft_compressed/r0.5"):
        assert tokens[label] < full
        assert all(s["compressor_s"] > 0 and s["compressor_input_tokens"] > 0 for s in evals[label]["samples"])
    query_only = tokens["query_only_ft"]
    for label in ("promptintern/linear-T2/r0.5", "promptintern_no_progression/jump-T3/r0.5",
                  "context_distillation", "prompt_baking/teacher-targets", "prompt_baking/reference-targets"):
        assert tokens[label] == query_only, label
    assert query_only < tokens["promptintern_template_only/linear-T2/r0.5"] < full  # examples kept
    assert query_only < tokens["promptintern_examples_only/linear-T2"] < full  # template kept


def test_stage_records_follow_the_method_plans(grid):
    units, records, _ = grid
    stages = {}
    for u in units:
        if u.kind == "stage":
            stages.setdefault(u.config["method"]["label"], []).append(records[u.id]["train"])
    assert [s["examples_per_prompt"] for s in stages["promptintern_template_only/linear-T2/r0.5"]] == [2, 2]
    assert [s["template_rate_requested"] for s in stages["promptintern_examples_only/linear-T2"]] == [1.0, 1.0]
    assert [s["template_rate_requested"] for s in stages["promptintern_no_progression/jump-T3/r0.5"]] == [1.0, 1.0, 0]
    (bake,) = stages["prompt_baking/teacher-targets"]
    (ref_bake,) = stages["prompt_baking/reference-targets"]
    (distill,) = stages["context_distillation"]
    assert bake["objective"] == "bake" and distill["objective"] == "distill" and ref_bake["targets"] == "reference"
    assert "teacher" not in ref_bake  # no generation when baking on the references
    # Distillation and teacher-target baking share one teacher: the later stage reads the cached answers.
    assert sorted([bake["teacher"]["cached"], distill["teacher"]["cached"]]) == [False, True]
    for s in (bake, ref_bake, distill):
        assert s["teacher_prompt"]["mean_prompt_tokens"] > 2 * s["mean_prompt_tokens"]  # teacher sees the full prompt


def test_context_distillation_targets_come_from_the_teacher_not_the_references(grid):
    """The student's targets are the base model's greedy answers to the full prompt, recomputed here
    independently, and they are not the references."""
    from promptintern.harness.unit_common import prompt_builder, task_data
    from promptintern.methods import PromptRule
    from promptintern.models import load_model
    from promptintern.prompts import encode_for_training

    units, records, store = grid
    (u,) = [u for u in units if u.kind == "stage" and u.config["method"]["name"] == "context_distillation"]
    saved = json.loads((store.adapter_dir(u.id) / "targets.json").read_text())
    assert saved["targets_from"] == "teacher"
    targets = [it["target"] for it in saved["items"]]

    cfg = u.config
    data = task_data(u.to_dict(), cfg["train_task"], None)
    task, items = data.task, data.train
    assert len(items) == 3  # the grid's train_limit, drawn by the plan
    builder = prompt_builder(cfg, task, data.pool, data.test_split)
    model, tok = load_model("tiny")
    prompts = [render(builder.build(ex, PromptRule(1.0, 2), with_answer=False).prompt, tok) for ex in items]
    answers = teacher_answers(model, tok, prompts, max_new_tokens=12, stop=task.stop, batch_size=3)
    assert targets == answers.texts
    references = [task.format_target(ex) for ex in items]
    assert [it["reference"] for it in saved["items"]] == references
    assert all(t != r for t, r in zip(targets, references, strict=True))
    # ... and what the student is trained on is the query alone followed by the teacher's answer.
    student = builder.build(items[0], PromptRule(0.0, 0), with_answer=True).with_answer(targets[0])
    enc = encode_for_training(student.prompt, tok, cfg["train"]["max_length"])
    assert tok.decode([t for t in enc["labels"] if t != -100]) == targets[0] + "<|im_end|>"
