"""Prompt baking (Bhargava et al. 2024, "Prompt Baking", arXiv 2409.13697) with a LoRA student.

Teacher: the base model with the adapter disabled (peft's ``with model.disable_adapter():``) given the teacher
prompt u (full template + K examples) and the query x. Student: the same model with the adapter enabled, given
the query alone. Over the answer tokens y_1..y_n (the reference answer or the teacher's greedy answer, plus the
end-of-turn token) the loss is

    L = (τ² / N) Σ_i Σ_j KL( softmax(z^T_ij / τ) ‖ softmax(z^S_ij / τ) )

where z^T_ij = teacher logits predicting y_j given (u, x, y_<j), z^S_ij = student logits given (x, y_<j),
N = the number of answer tokens in the batch, τ = ``temperature`` (1 by default; τ² keeps gradient scales
comparable across τ, as in Hinton et al.'s distillation). The direction is KL(teacher ‖ student) — the forward
KL, mass-covering, as in the paper, whose objective is KL(P_θ(·|u) ‖ P_θu(·)) on trajectories drawn from the
prompted model. We use the teacher's greedy answer (``targets: teacher``) or the reference answer
(``targets: reference``) as the trajectory, one per training query.

Teacher and student sequences of an item share the same answer tokens: both are tokenized with
:func:`promptintern.prompts.encode_for_training`, and when truncation leaves one with fewer answer tokens the
other is cut to match (the prompt is cut from the left, the answer from the right, so the kept answer tokens are
the same prefix). The KL is exactly zero when teacher and student see the same input and the adapter is the
identity (a fresh LoRA adapter has B = 0).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .prompts import Prompt, encode_for_training
from .trainer import StageResult, TrainConfig, collate, train_loop


def _trim(enc: dict, n_answer: int) -> dict:
    """Keep the prompt and the first ``n_answer`` answer tokens of an encoded sequence."""
    keep = enc["prompt_tokens"] + n_answer
    return {**enc, "input_ids": enc["input_ids"][:keep], "labels": enc["labels"][:keep]}


def pair_record(teacher: Prompt, student: Prompt, tokenizer, max_length: int, chat: bool = True) -> dict:
    """One training item: the student's sequence (``input_ids``/``labels``) and the teacher's
    (``teacher_input_ids``/``teacher_labels``), over the same answer tokens."""
    if teacher.answer != student.answer:
        raise ValueError("teacher and student prompts must carry the same answer")
    t = encode_for_training(teacher, tokenizer, max_length, chat)
    s = encode_for_training(student, tokenizer, max_length, chat)
    n = min(len(t["input_ids"]) - t["prompt_tokens"], len(s["input_ids"]) - s["prompt_tokens"])
    t, s = _trim(t, n), _trim(s, n)
    if t["labels"][t["prompt_tokens"] :] != s["labels"][s["prompt_tokens"] :]:
        raise ValueError("teacher and student answer tokens differ after tokenization")
    return {
        "input_ids": s["input_ids"],
        "labels": s["labels"],
        "prompt_tokens": s["prompt_tokens"],
        "truncated_tokens": s["truncated_tokens"] + t["truncated_tokens"],
        "teacher_input_ids": t["input_ids"],
        "teacher_labels": t["labels"],
        "teacher_prompt_tokens": t["prompt_tokens"],
    }


def answer_logits(model, ids, mask, labels):
    """Logits (float32) at the positions that predict an answer token, row by row: shape [N, vocab].

    Like :func:`promptintern.trainer.completion_loss`, the LM head runs only where there are labels; models whose
    head does more than a linear projection (logit soft-capping) take the plain path."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    keep = labels[:, 1:] != -100
    if getattr(lm.config, "final_logit_softcapping", None) or not hasattr(lm, "get_decoder"):
        return model(input_ids=ids, attention_mask=mask).logits[:, :-1][keep].float()
    hidden = lm.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    return lm.get_output_embeddings()(hidden[:, :-1][keep]).float()


def kl_teacher_student(teacher_logits, student_logits, temperature: float = 1.0):
    """Mean over positions of KL(softmax(teacher/τ) ‖ softmax(student/τ)), times τ²."""
    import torch.nn.functional as F

    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher logits {tuple(teacher_logits.shape)} vs student {tuple(student_logits.shape)}"
        )
    n = max(1, teacher_logits.shape[0])
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="sum") / n * temperature**2


def teacher_logits(model, ids, mask, labels):
    """The teacher's answer logits: the same model with its adapter disabled, in eval mode, without gradients."""
    import torch

    was_training = model.training
    model.eval()
    ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    try:
        with torch.no_grad(), ctx:
            return answer_logits(model, ids, mask, labels)
    finally:
        model.train(was_training)


def bake_loss(model, student: tuple, teacher: tuple, temperature: float = 1.0):
    """KL(teacher ‖ student) over the answer tokens; ``student`` / ``teacher`` are (ids, mask, labels)."""
    t = teacher_logits(model, *teacher)
    s = answer_logits(model, *student)
    return kl_teacher_student(t, s, temperature)


def _split(batch: list[dict], pad_id: int, device):
    ids, labels, mask = collate(batch, pad_id, device)
    teacher = [{"input_ids": r["teacher_input_ids"], "labels": r["teacher_labels"]} for r in batch]
    t_ids, t_labels, t_mask = collate(teacher, pad_id, device)
    return (ids, mask, labels), (t_ids, t_mask, t_labels)


def train_bake_stage(
    model,
    tokenizer,
    records: list[dict],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    temperature: float = 1.0,
    desc: str = "bake",
) -> StageResult:
    """Train a PEFT model in place on :func:`pair_record` records by prompt baking; save the adapter and the
    loss (KL) curve to out_dir. Same optimizer, schedule, batching and seeding as
    :func:`promptintern.trainer.train_stage`. ``train_tokens`` counts student and teacher tokens (the teacher's
    forward pass is part of the cost); ``target_tokens`` counts answer tokens."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def step(batch, device):
        student, teacher = _split(batch, pad_id, device)
        loss = bake_loss(model, student, teacher, temperature)
        teacher_tokens = int(teacher[1].sum())
        return loss, {
            "tokens": int(student[1].sum()) + teacher_tokens,
            "target_tokens": int((student[2] != -100).sum()),
            "teacher_tokens": teacher_tokens,
        }

    extra = {"objective": "bake", "loss": "KL(teacher || student)", "temperature": temperature}
    return train_loop(model, records, cfg, out_dir, step, desc=desc, postfix="kl", curve_extra=extra)
