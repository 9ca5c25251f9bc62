"""A training-stage unit: build the stage's prompts, train from the previous adapter, save adapter + record.

The stage's rule (``config["rule"]``) says what it trains on and how (:mod:`promptintern.methods`):

- ``sft`` (a plain :class:`~promptintern.methods.PromptRule`): SFT on the references, completion-only loss.
- ``distill`` (context distillation): the base model, given the teacher prompt, answers every training query
  (greedy); the student is fine-tuned on its own prompt with those answers as targets.
- ``bake`` (prompt baking): KL(teacher ‖ student) over the answer tokens, teacher = the base model with the
  adapter disabled given the teacher prompt, student = the adapter given its own prompt; answer tokens = the
  references or the teacher's answers.

Teacher answers are cached under ``<results>/teacher/<key>.json`` (key: model, task, items, prompt settings,
teacher rule, token budget), so distillation and baking with the same teacher generate once; the record says
whether they were cached and what generating them cost. Every item's teacher answer is saved beside the
adapter (``targets.json``), so what the student learned from can be read back.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict

from promptintern.baking import pair_record, train_bake_stage
from promptintern.distillation import load_or_generate, teacher_answers
from promptintern.hashing import content_id
from promptintern.methods import DISTILL_OPTIONS, objective_of, rule_from_dict
from promptintern.models import load_model
from promptintern.prompts import encode_for_training, render
from promptintern.stopping import STOP_RULE_VERSION
from promptintern.trainer import TrainConfig, attach_adapter, train_stage

from .artifacts import partial_dir, publish_dir, weights_sha256
from .records import stage_record
from .store import ResultStore
from .unit_common import prompt_builder, release_hosts, run_meta, set_threads, task_data


def _mean_tokens(tok, prompts, chat: bool) -> float:
    counts = [len(tok(render(p, tok, chat), add_special_tokens=False)["input_ids"]) for p in prompts]
    return statistics.fmean(counts) if counts else 0.0


def _teacher_answers(cfg: dict, store: ResultStore, model, tok, task, items, teacher_built, rule, chat: bool):
    """The base model's greedy answers to the teacher prompts (cached across units with the same teacher)."""
    opts = cfg["method"].get("options") or {}
    max_new = rule.max_new_tokens or task.max_new_tokens
    batch_size = int(opts.get("teacher_batch_size") or DISTILL_OPTIONS["teacher_batch_size"])
    key = {
        "model": cfg["model"],
        "task": cfg["train_task"],
        "items": [ex.id for ex in items],
        "prompt": cfg["prompt"],
        "k_examples": cfg["method"]["k_examples"],
        "teacher": asdict(rule.teacher),
        "max_new_tokens": max_new,
        "batch_size": batch_size,
        "stop": list(task.stop or []),
        "stop_rule_version": STOP_RULE_VERSION,
    }
    path = store.root / "teacher" / f"{content_id(key)}.json"
    rendered = [render(b.prompt, tok, chat) for b in teacher_built]
    return load_or_generate(
        path,
        key,
        lambda: teacher_answers(
            model, tok, rendered, max_new_tokens=max_new, stop=task.stop, batch_size=batch_size
        ),
    )


def stage_train_config(cfg: dict):
    """The :class:`~promptintern.trainer.TrainConfig` a stage unit trains with: the experiment's ``train`` section
    (its defaults are TrainConfig's own), seeded per stage."""
    return TrainConfig.from_dict({**cfg["train"], "seed": cfg["seed"] + cfg["stage"], "progress": False})


def run_stage(unit: dict, store_root: str, prev_adapter: str | None, data_dir: str | None) -> dict:
    """Train one stage from the previous stage's adapter; save the adapter and the record."""
    cfg, uid = unit["config"], unit["id"]
    set_threads(unit["resources"].get("num_cpus"))
    release_hosts()  # a base model an earlier eval unit left in this worker would train beside us, uncounted
    store = ResultStore(store_root)
    t0 = time.perf_counter()
    data = task_data(unit, cfg["train_task"], data_dir)
    task, items = data.task, data.train
    builder = prompt_builder(cfg, task, data.pool, data.test_split)
    rule = rule_from_dict(cfg["rule"])
    objective = objective_of(rule)
    student_rule = getattr(rule, "student", rule)
    t_prompts = time.perf_counter()
    built = [builder.build(ex, student_rule, with_answer=True) for ex in items]
    prompt_seconds = time.perf_counter() - t_prompts  # retrieval and compression of the stage's prompts
    teacher_seconds = 0.0
    model, tok = load_model(cfg["model"])
    chat = cfg["prompt"]["chat"]
    tcfg = stage_train_config(cfg)
    final_dir = store.adapter_dir(uid)
    out_dir = partial_dir(final_dir)  # renamed into place when complete: no reader sees half an adapter
    extra: dict = {}
    teacher_built = []
    if objective != "sft":
        t_prompts = time.perf_counter()
        teacher_built = [builder.build(ex, rule.teacher, with_answer=True) for ex in items]
        prompt_seconds += time.perf_counter() - t_prompts
        extra["teacher_prompt"] = {
            "template_rate": rule.teacher_template_rate,
            "n_examples": rule.teacher_n_examples,
            "mean_prompt_tokens": _mean_tokens(tok, [b.prompt for b in teacher_built], chat),
        }
        if rule.targets == "teacher":
            # The teacher is the base model as loaded: answers are generated before any adapter is attached.
            t_teacher = time.perf_counter()
            answers = _teacher_answers(cfg, store, model, tok, task, items, teacher_built, rule, chat)
            teacher_seconds = time.perf_counter() - t_teacher
            built = [b.with_answer(a) for b, a in zip(built, answers.texts, strict=True)]
            teacher_built = [b.with_answer(a) for b, a in zip(teacher_built, answers.texts, strict=True)]
            extra["teacher"] = answers.summary([task.format_target(ex) for ex in items])
    peft_model = attach_adapter(model, tcfg, prev_adapter)
    if objective == "bake":
        records = [
            pair_record(tb.prompt, b.prompt, tok, tcfg.max_length, chat)
            for tb, b in zip(teacher_built, built, strict=True)
        ]
        result = train_bake_stage(
            peft_model, tok, records, tcfg, out_dir, temperature=rule.temperature, desc=uid
        )
        extra["bake"] = {
            "loss": "KL(teacher || student)",
            "temperature": rule.temperature,
            "targets": rule.targets,
        }
    else:  # sft and distill: completion-only cross-entropy on the (reference or teacher) targets
        records = [encode_for_training(b.prompt, tok, tcfg.max_length, chat) for b in built]
        result = train_stage(peft_model, tok, records, tcfg, out_dir, desc=uid)
    if objective != "sft":
        targets = [
            {"id": ex.id, "target": b.prompt.answer, "reference": task.format_target(ex)}
            for ex, b in zip(items, built, strict=True)
        ]
        (out_dir / "targets.json").write_text(
            json.dumps({"targets_from": rule.targets, "items": targets}, indent=1)
        )
    achieved = [b.template_rate_achieved for b in built if b.template_rate_achieved is not None]
    adapter_sha256 = weights_sha256(out_dir)  # of the weights only: identical adapters, one hash
    publish_dir(out_dir, final_dir)
    out_dir = final_dir
    total = time.perf_counter() - t0
    training = float(result.to_dict().get("seconds") or 0.0)
    record = stage_record(
        config=cfg, adapter_dir=str(out_dir.relative_to(store.root)), adapter_sha256=adapter_sha256,
        init_adapter=store.relative(prev_adapter),
        train={
            **result.to_dict(),
            "adapter_dir": str(out_dir.relative_to(store.root)),
            "objective": objective,
            "targets": getattr(rule, "targets", "reference"),
            "n_examples": len(items),
            "mean_prompt_tokens": _mean_tokens(tok, [b.prompt for b in built], chat),
            "template_rate_requested": rule.template_rate,
            "template_rate_achieved": achieved[0] if achieved else None,
            "examples_per_prompt": rule.n_examples,
            **extra,
        },
        # the unit's whole work, priced as its training cost: prompts (retrieval, compression), teacher passes,
        # optimizer steps, and the rest (loading the model and data, saving the adapter)
        work_seconds={"prompts": prompt_seconds, "teacher": teacher_seconds, "training": training,
                      "other": max(0.0, total - prompt_seconds - teacher_seconds - training), "total": total},
        seconds_total=total, meta=run_meta())
    store.write(uid, record)
    return record
