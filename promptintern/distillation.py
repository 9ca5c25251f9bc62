"""Context distillation: the prompted base model's own answers become the query-only student's targets.

Teacher = the base model (no adapter) given the teacher prompt (full template + K retrieved examples + query).
It answers every training query by greedy decoding (:func:`promptintern.generation.generate`). The target is
the teacher's answer *as deployed*: its text up to and including the first task stop string that counts (so an
MBPP answer keeps its closing code fence, as the references do, and a preamble's opening fence is not a stop), or up to its end of turn / the token budget. The student
(LoRA adapter) is then fine-tuned on query-only prompts with those targets, loss on the completion only — the
references are never used as targets. Prompt baking with ``targets: teacher`` uses the same answers.

Teacher answers can be cached on disk (:func:`load_or_generate`), keyed by everything that determines them,
so that context distillation and prompt baking with the same teacher generate only once.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .generation import batch_seconds, generate
from .stopping import match_stop


def cut_keep_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """``text`` up to and including its first stop string that counts (:mod:`promptintern.stopping`: found in
    the continuation only, never opening or inside a code fence); and whether one was found."""
    m = match_stop(text, stop)
    if m is None:
        return text, False
    return text[: m[0] + len(m[1])], True


@dataclass
class TeacherAnswers:
    """The teacher's answers to the training prompts, in order, with what they cost."""

    texts: list[str]  # targets: the answer up to and including the first stop string
    raw: list[str]  # the decoded generations before cutting
    prompt_tokens: list[int]
    output_tokens: list[int]
    stopped: list[bool]  # ended by a stop string or the end of turn (not by the token budget)
    seconds: float  # generation wall time (prefill + decoding, every batch)
    max_new_tokens: int
    cached: bool = False
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TeacherAnswers:
        return cls(**d)

    def summary(self, references: Sequence[str] | None = None) -> dict:
        n = len(self.texts)
        out = {
            "n": n,
            "seconds": self.seconds,
            "cached": self.cached,
            "max_new_tokens": self.max_new_tokens,
            "mean_prompt_tokens": sum(self.prompt_tokens) / n if n else 0.0,
            "mean_output_tokens": sum(self.output_tokens) / n if n else 0.0,
            "hit_token_budget": sum(1 for s in self.stopped if not s),
            "empty": sum(1 for t in self.texts if not t.strip()),
        }
        if references is not None:
            out["equal_to_reference"] = sum(
                1 for t, r in zip(self.texts, references, strict=True) if t.strip() == r.strip()
            )
        return out


def teacher_answers(
    model,
    tokenizer,
    rendered_prompts: list[str],
    *,
    max_new_tokens: int,
    stop: Sequence[str] | None = None,
    batch_size: int = 8,
    eos_strings: tuple[str, ...] = ("<|im_end|>",),
) -> TeacherAnswers:
    """Greedy answers of ``model`` as it is: pass the base model (or call inside a PEFT model's
    ``disable_adapter()``) for the un-adapted teacher. ``rendered_prompts`` are already chat-formatted."""
    gens = generate(
        model,
        tokenizer,
        rendered_prompts,
        max_new_tokens=max_new_tokens,
        stop=None,
        batch_size=batch_size,
        eos_strings=eos_strings,
    )
    texts, stopped = [], []
    for g in gens:
        text, hit = cut_keep_stop(g.text, stop)
        texts.append(text)
        stopped.append(hit or g.output_tokens < max_new_tokens)
    return TeacherAnswers(
        texts=texts,
        raw=[g.text for g in gens],
        prompt_tokens=[g.prompt_tokens for g in gens],
        output_tokens=[g.output_tokens for g in gens],
        stopped=stopped,
        seconds=batch_seconds(gens),
        max_new_tokens=max_new_tokens,
    )


def load_or_generate(
    path: str | Path | None, key: dict, make: Callable[[], TeacherAnswers]
) -> TeacherAnswers:
    """The cached answers at ``path`` when present and made for the same ``key``; else ``make()``, saved there
    atomically (two workers racing write the same content)."""
    if path is None:
        return make()
    path = Path(path)
    if path.is_file():
        try:
            blob = json.loads(path.read_text())
            if blob.get("key") == json.loads(json.dumps(key, default=str)):
                answers = TeacherAnswers.from_dict(blob["answers"])
                answers.cached = True
                return answers
        except (OSError, ValueError, TypeError, KeyError):
            pass  # unreadable or stale: generate again
    answers = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, "answers": answers.to_dict()}, f, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return answers
