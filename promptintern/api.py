"""The library in a few calls: internalize your own prompt, then answer from the query alone.

    from promptintern import api
    result = api.internalize("smollm2-135m", template=MY_LONG_PROMPT, data=[(query, answer), ...],
                             schedule="linear", stages=3, k_examples=2, out_dir="my-adapter")
    model, tok = api.load_internalized("smollm2-135m", result.adapter_dir)
    print(api.answer(model, tok, ["a new query"]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from promptintern.task_types import Example

from .compressors import get_compressor
from .generation import generate
from .methods import MethodSpec, plan_method
from .models import load_model
from .prompt_builder import PromptBuilder, PromptSettings
from .prompts import Prompt, encode_for_training, render
from .retrievers import get_retriever
from .trainer import StageResult, TrainConfig, attach_adapter, train_stage

_PROMPT = PromptSettings()  # the prompt defaults, shared with the harness's ``prompt`` section


@dataclass
class PromptTask:
    """A user's own prompt as a task: a template, and examples rendered as query + answer."""

    template: str
    name: str = "custom"
    protect: list | None = None

    def format_query(self, ex: Example) -> str:
        return ex.query

    def format_target(self, ex: Example) -> str:
        return ex.reference

    def format_demo(self, ex: Example) -> str:
        return f"{ex.query}\n{ex.reference}"


@dataclass
class InternalizeResult:
    adapter_dir: str
    stages: list[StageResult]
    plan: list[dict] = field(default_factory=list)  # per stage: template rate, examples, mean prompt tokens


def _examples(data) -> list[Example]:
    out = []
    for i, item in enumerate(data):
        if isinstance(item, Example):
            out.append(item)
        else:
            query, answer = item
            out.append(Example(id=str(i), query=query, reference=answer))
    return out


def internalize(
    model: str,
    template: str,
    data: Sequence,
    *,
    schedule: str = "linear",
    stages: int = 3,
    rate: float = 1.0,
    k_examples: int = _PROMPT.k_examples,
    compressor: str = _PROMPT.compressor["name"],
    retriever: str = _PROMPT.retriever,
    out_dir: str | Path = "promptintern-adapter",
    train: dict | None = None,
    protect: list | None = None,
) -> InternalizeResult:
    """Progressively fine-tune `model` on `data` ((query, answer) pairs) so that it no longer needs `template`.

    Stage t trains on prompts whose template is compressed to rate·S_t and that carry ⌊k·S_t⌋ retrieved
    examples; the last stage is query-only. Returns the final adapter folder (each stage's is kept beside it).
    """
    examples = _examples(data)
    task = PromptTask(template=template, protect=protect)
    spec = MethodSpec(name="promptintern", schedule=schedule, rate=rate, stages=stages, k_examples=k_examples)
    plan = plan_method(spec)
    cfg = train_config(train)
    base, tok = load_model(model)
    needs_compressor = any(0 < r.template_rate < 1 for r in plan.train)
    builder = PromptBuilder(
        task,
        examples,
        k=k_examples,
        retriever=get_retriever(retriever).fit(examples) if k_examples else None,
        compressor=get_compressor(compressor) if needs_compressor else None,
    )
    out_dir = Path(out_dir)
    results, rows, adapter, peft_model = [], [], None, None
    for t, rule in enumerate(plan.train):
        built = [builder.build(ex, rule, with_answer=True) for ex in examples]
        records = [encode_for_training(b.prompt, tok, cfg.max_length) for b in built]
        peft_model = attach_adapter(base, cfg, adapter)
        stage_dir = out_dir / f"stage-{t + 1}"
        results.append(train_stage(peft_model, tok, records, cfg, stage_dir, desc=f"stage {t + 1}/{len(plan.train)}"))
        base = peft_model.unload()  # back to the plain base model; the next stage loads this stage's adapter
        adapter = str(stage_dir)
        tokens = [len(tok(render(b.prompt, tok), add_special_tokens=False)["input_ids"]) for b in built]
        rows.append({"stage": t + 1, "template_rate": rule.template_rate, "n_examples": rule.n_examples,
                     "mean_prompt_tokens": sum(tokens) / len(tokens)})
    return InternalizeResult(adapter_dir=adapter, stages=results, plan=rows)


def train_config(train: dict | None = None) -> TrainConfig:
    """The stages' training settings: :class:`TrainConfig`'s defaults (the harness's too) updated with ``train``."""
    return TrainConfig.from_dict(train)


def load_internalized(model: str, adapter_dir: str | Path, *, merge: bool = True):
    """Base model + the final adapter (merged for speed), and its tokenizer."""
    from peft import PeftModel

    base, tok = load_model(model)
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    return (peft_model.merge_and_unload() if merge else peft_model), tok


def answer(model, tokenizer, queries: Sequence[str], *, max_new_tokens: int = 128, batch_size: int = 8) -> list[str]:
    """Answer from the query alone: no template, no examples."""
    rendered = [render(Prompt(query=q), tokenizer) for q in queries]
    return [g.text for g in generate(model, tokenizer, rendered, max_new_tokens=max_new_tokens, batch_size=batch_size)]
