"""A prompt is template + few-shot examples + query (+ the reference answer when training).

The template (the recurring prompt) is sent either as the start of the user turn (``template_role="user"``) or
as a system message (``"system"``) before the user turn holding examples and query; either is rendered through
the model's chat template (plain text for base models or tokenizers without one: the messages' texts joined by
a blank line), so the token count of every part, and of the chat overhead, is known. A prompt without a template is the
same in both roles: the query alone.

Few-shot demonstrations have two layouts (``prompt.fewshot_layout``):

- ``multiturn`` (the default; lm-evaluation-harness's ``--fewshot_as_multiturn``): each demonstration is a user
  turn (its query) and an assistant turn (its answer), then the query is the last user turn; the template is the
  system message or opens the first user turn, as the task puts it (``demos``). A model without a chat template
  (a base model, ``prompt.chat: false``) gets the same sequence as plain text, with an answer cue (``answer_cue``,
  default ``Answer:``) on the line after every query, so it knows where the answer starts.
- ``single``: the demonstrations and the query in one user message under ``### Examples`` / ``### Task``
  headers (``examples``; the layout of results before the multi-turn default).
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXAMPLES_HEADER = "### Examples"
QUERY_HEADER = "### Task"
FEWSHOT_LAYOUTS = ("multiturn", "single")
DEFAULT_ANSWER_CUE = "Answer:"


@dataclass(frozen=True)
class Prompt:
    template: str = ""
    examples: tuple[str, ...] = ()
    query: str = ""
    answer: str | None = None
    meta: dict = field(default_factory=dict, compare=False)
    template_role: str = "user"  # "system": the template is a system message
    # multi-turn demonstrations: (user turn, assistant turn) pairs, used instead of ``examples``
    demos: tuple[tuple[str, str], ...] = ()
    # plain-text rendering (no chat template): the line after each query that the answer follows ("" = none)
    answer_cue: str = ""

    def __post_init__(self):
        if self.demos and self.examples:
            raise ValueError("a prompt has single-message examples or multi-turn demos, not both")

    @property
    def in_system(self) -> bool:
        return self.template_role == "system" and bool(self.template.strip())

    def system_text(self) -> str:
        """The system message ("" when the template opens the user turn, or when there is no template)."""
        return self.template.strip() if self.in_system else ""

    def user_text(self) -> str:
        """The user turn: what an API would be sent (without chat markup); with multi-turn demonstrations, the
        last user turn (the query: :meth:`messages` has the whole conversation)."""
        if self.demos:
            return self.query.strip()
        parts = []
        if self.template.strip() and not self.in_system:
            parts.append(self.template.strip())
        if self.examples:
            parts.append(EXAMPLES_HEADER + "\n\n" + "\n\n".join(e.strip() for e in self.examples))
        if parts:
            parts.append(QUERY_HEADER + "\n" + self.query.strip())
        else:
            parts.append(self.query.strip())
        return "\n\n".join(parts)

    def messages(self) -> list[dict]:
        """The chat messages an API is sent."""
        system = self.system_text()
        head = [{"role": "system", "content": system}] if system else []
        if not self.demos:
            return head + [{"role": "user", "content": self.user_text()}]
        lead = self.template.strip() + "\n\n" if self.template.strip() and not self.in_system else ""
        turns = []
        for i, (q, a) in enumerate(self.demos):
            turns += [{"role": "user", "content": (lead if i == 0 else "") + q.strip()},
                      {"role": "assistant", "content": a.strip()}]
        return head + turns + [{"role": "user", "content": self.query.strip()}]

    @property
    def multiturn(self) -> bool:
        return bool(self.demos)

    def plain_text(self) -> str:
        """The plain-text layout of a model without a chat template: template, then every demonstration's query,
        the answer cue and its answer, then the query and the cue (the model answers after it)."""
        cue = "\n" + self.answer_cue.strip() if self.answer_cue.strip() else ""
        parts = [self.template.strip()] if self.template.strip() else []
        parts += [f"{q.strip()}{cue}\n{a.strip()}" for q, a in self.demos]
        parts.append(self.query.strip() + cue)
        return "\n\n".join(parts)

    def api_text(self) -> str:
        """The text of every message (what an API bills as input, without per-message markup)."""
        return "\n\n".join(m["content"] for m in self.messages())

    def parts(self) -> dict[str, str]:
        examples = self.examples or tuple(t for pair in self.demos for t in pair)
        return {"template": self.template, "examples": "\n\n".join(examples), "query": self.query}


TEMPLATE_ROLES = ("system", "user")


def resolve_template_role(setting: str | None, task_role: str | None, chat: bool = True) -> str:
    """The role of the recurring prompt: the experiment's ``prompt.template_role`` unless ``auto``, else the task's
    ``template_role``, else a system message for chat models and user text otherwise."""
    if setting not in (None, "auto"):
        if setting not in TEMPLATE_ROLES:
            raise ValueError(f"template_role must be auto, system or user, got {setting!r}")
        return setting
    if task_role:
        return task_role
    return "system" if chat else "user"


def render(prompt: Prompt, tokenizer=None, chat: bool = True) -> str:
    """The exact text the model is conditioned on (chat template with the generation prompt when available; else
    plain text: the cued layout for a base model or multi-turn demonstrations, when the prompt has a cue)."""
    if chat and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
    if prompt.answer_cue and (prompt.demos or not chat):
        return prompt.plain_text() + "\n"
    return prompt.api_text() + "\n"


def prompt_settings(prompt_cfg: dict) -> dict:
    """The :class:`~promptintern.prompt_builder.PromptBuilder` keywords of an experiment's ``prompt`` section that
    shape the layout (settings absent from a stored config mean the single-message layout it ran with)."""
    layout = prompt_cfg.get("fewshot_layout", "single")
    if layout not in FEWSHOT_LAYOUTS:
        raise ValueError(f"fewshot_layout must be one of {FEWSHOT_LAYOUTS}, got {layout!r}")
    return {"fewshot_layout": layout, "answer_cue": prompt_cfg.get("answer_cue", DEFAULT_ANSWER_CUE)}


def end_of_turn(tokenizer, chat: bool = True) -> str:
    """What the model must emit after the answer so that generation stops."""
    if chat and getattr(tokenizer, "chat_template", None) and "<|im_end|>" in tokenizer.get_vocab():
        return "<|im_end|>"
    return tokenizer.eos_token or ""


def part_token_counts(prompt: Prompt, counter, tokenizer=None, chat: bool = True) -> dict[str, int]:
    """Tokens of each part, of the whole rendered prompt, and the chat/markup overhead."""
    counts = {name: counter.count(text) if text else 0 for name, text in prompt.parts().items()}
    counts["total"] = counter.count(render(prompt, tokenizer, chat))
    counts["overhead"] = counts["total"] - counts["template"] - counts["examples"] - counts["query"]
    return counts


def encode_for_training(prompt: Prompt, tokenizer, max_length: int, chat: bool = True) -> dict:
    """input_ids and labels with the loss on the completion only (prompt positions are -100).

    Prompt and completion are tokenized separately so the boundary is exact. When too long, the prompt is cut
    from the left (the query sits at its end) and the completion keeps at least half the budget.
    """
    if prompt.answer is None:
        raise ValueError("encode_for_training needs a prompt with an answer")
    prompt_ids = tokenizer(render(prompt, tokenizer, chat), add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(prompt.answer + end_of_turn(tokenizer, chat), add_special_tokens=False)["input_ids"]
    truncated = 0
    if len(prompt_ids) + len(target_ids) > max_length:
        target_ids = target_ids[: max(max_length // 2, max_length - len(prompt_ids))]
        keep = max_length - len(target_ids)
        truncated = len(prompt_ids) - keep
        prompt_ids = prompt_ids[len(prompt_ids) - keep :]
    return {
        "input_ids": prompt_ids + target_ids,
        "labels": [-100] * len(prompt_ids) + target_ids,
        "prompt_tokens": len(prompt_ids),
        "truncated_tokens": truncated,
    }
