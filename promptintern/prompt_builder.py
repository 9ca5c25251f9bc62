"""Build the prompts of one stage or one evaluation from a task, a rule, a retriever and a compressor.

- The template is compressed once per rate (it is the same for every query) and cached.
- Examples are the top-⌊K·S_t⌋ of the K retrieved from the task's training pool (never the query itself;
  test items are never in the pool).
- Demonstrations are laid out as ``fewshot_layout`` says (:mod:`promptintern.prompts`): ``multiturn`` (default)
  as user/assistant turns (the task's ``format_query`` / ``format_target``), ``single`` as one user message (the
  task's ``format_demo`` under ``### Examples``); ``answer_cue`` is the cue of the plain-text (base model) layout.
- ``compress_context=True`` (compression at inference) compresses template + examples of each query, as an
  LLMLingua-style deployment would, and records the compressor's time and input tokens per sample.
- Context distillation and prompt baking build two prompts per training item (the teacher's and the
  student's) and may swap the reference answer for the teacher's own (:meth:`BuiltPrompt.with_answer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from promptintern.task_types import Example, Task

from .fields import boolean, integer, setting, text
from .methods import FIRST_STAGES, PromptRule
from .prompts import DEFAULT_ANSWER_CUE, EXAMPLES_HEADER, FEWSHOT_LAYOUTS, TEMPLATE_ROLES, Prompt
from .retrievers import RETRIEVERS


@dataclass
class PromptSettings:
    """How prompts are built: an experiment's ``prompt`` section, and the library API's defaults."""

    k_examples: int = setting(1, spec=integer(0))  # K: retrieved examples in the full prompt
    retriever: str = setting("bm25", spec=text(sorted(RETRIEVERS)))
    # a test item found in the training pool: dropped from the pool ("raise": an error)
    pool_overlap: str = setting("drop", spec=text(("drop", "raise")))
    compressor: dict = field(default_factory=lambda: {"name": "perplexity", "model": "smollm2-135m"})
    chat: bool = setting(True, spec=boolean())
    # PromptIntern's stage 0: the full template ("rate": already compressed to the rate)
    first_stage: str = setting("full", spec=text(FIRST_STAGES))
    # the recurring prompt as a system message or user text; auto: the task's template_role, else system for chat
    # models
    template_role: str = setting("auto", spec=text(("auto", *TEMPLATE_ROLES)))
    # few-shot demonstrations as user/assistant turns (multiturn) or in one user message (single); a model without
    # a chat template gets the multi-turn sequence as text with answer_cue after every query
    fewshot_layout: str = setting("multiturn", spec=text(FEWSHOT_LAYOUTS))
    answer_cue: str = setting(DEFAULT_ANSWER_CUE, spec=text())


@dataclass
class BuiltPrompt:
    prompt: Prompt
    example: Example
    template_rate_achieved: float | None = None
    compressor_seconds: float = 0.0
    compressor_input_tokens: int = 0
    demo_ids: list[str] = field(default_factory=list)

    def with_answer(self, answer: str | None) -> BuiltPrompt:
        """The same prompt with another completion (e.g. a teacher's answer instead of the reference)."""
        return replace(self, prompt=replace(self.prompt, answer=answer))


class PromptBuilder:
    def __init__(self, task: Task, pool: list[Example], *, k: int, retriever=None, compressor=None,
                 template_role: str = "user", fewshot_layout: str = "multiturn",
                 answer_cue: str = DEFAULT_ANSWER_CUE):
        if fewshot_layout not in FEWSHOT_LAYOUTS:
            raise ValueError(f"fewshot_layout must be one of {FEWSHOT_LAYOUTS}, got {fewshot_layout!r}")
        self.task, self.pool, self.k = task, pool, k
        self.fewshot_layout, self.answer_cue = fewshot_layout, answer_cue
        self.template_role = template_role  # "system": the (compressed) template is sent as a system message
        self.retriever = retriever
        self.compressor = compressor
        self._templates: dict[float, tuple[str, float | None]] = {}
        self.protect = getattr(task, "protect", None)

    def template_at(self, rate: float) -> tuple[str, float | None]:
        """The template kept at `rate` and the achieved rate (None when not compressed)."""
        if rate <= 0:
            return "", 0.0
        if rate >= 1:
            return self.task.template, None
        if rate not in self._templates:
            if self.compressor is None:
                raise ValueError("a template rate below 1 needs a compressor")
            res = self.compressor.compress(self.task.template, rate, protect=self.protect)
            self._templates[rate] = (res.text, res.achieved_rate)
        return self._templates[rate]

    def demos(self, ex: Example, n: int) -> list[Example]:
        if n <= 0 or self.retriever is None or not self.pool:
            return []
        return list(self.retriever.top_k(ex.query, n, exclude_ids=(ex.id,)))

    def build(self, ex: Example, rule: PromptRule, *, with_answer: bool, compress_context: bool = False) -> BuiltPrompt:
        demos = self.demos(ex, rule.n_examples)
        answer = self.task.format_target(ex) if with_answer else None
        query = self.task.format_query(ex)
        ids = [d.id for d in demos]
        multiturn = self.fewshot_layout == "multiturn"
        cue = self.answer_cue if multiturn else ""
        if compress_context and 0 < rule.template_rate < 1:
            # an LLMLingua-style deployment compresses the whole context (template + demonstrations) as one text
            context = self.task.template
            if demos:
                context += "\n\n" + EXAMPLES_HEADER + "\n\n" + "\n\n".join(self.task.format_demo(d) for d in demos)
            res = self.compressor.compress(context, rule.template_rate, protect=self.protect)
            prompt = Prompt(template=res.text, examples=(), query=query, answer=answer,
                            template_role=self.template_role, answer_cue=cue)
            return BuiltPrompt(prompt, ex, res.achieved_rate, res.seconds, res.original_tokens, ids)
        template, achieved = self.template_at(rule.template_rate)
        if multiturn:
            turns = tuple((self.task.format_query(d), self.task.format_target(d)) for d in demos)
            prompt = Prompt(template=template, demos=turns, query=query, answer=answer,
                            template_role=self.template_role, answer_cue=cue)
        else:
            prompt = Prompt(template=template, examples=tuple(self.task.format_demo(d) for d in demos), query=query,
                            answer=answer, template_role=self.template_role)
        return BuiltPrompt(prompt, ex, achieved, 0.0, 0, ids)
