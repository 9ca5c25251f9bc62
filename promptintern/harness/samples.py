"""One evaluation sample's record, the same for every unit kind that generates answers (eval, MetaTuner).

Besides prompt, tokens and timings, a sample keeps the three stages of an answer: ``raw_generation`` (the decoded
output tokens), ``generation`` (cut at the task's first stop string that counts: what the harness treats as the
model's answer text), ``answer`` (what the task's extractor took from it and the metric scored), with
``extraction`` (how) and ``extraction_failure`` (why no usable answer was found), and ``stop_reason``.
"""

from __future__ import annotations

from promptintern.prompts import part_token_counts, render

_LIFTED = ("answer", "extraction", "extraction_failure")  # moved from the scorer's record to the sample


def _plain_cued(prompt, tok, chat: bool) -> bool:
    """Whether ``render`` sent this prompt as the plain-text layout with an answer cue (no chat template)."""
    templated = chat and tok is not None and getattr(tok, "chat_template", None)
    return bool(prompt.answer_cue) and (bool(prompt.demos) or not chat) and not templated


def sample_record(*, example_id: str, prompt, gen, score: dict, reference: str, counters: dict, tok, chat: bool,
                  demo_ids=(), compressor_s: float = 0.0, compressor_input_tokens: int = 0,
                  template_rate_achieved: float | None = None, ttft_s: float | None = None,
                  e2e_s: float | None = None) -> dict:
    """``prompt``: the promptintern Prompt sent; ``gen``: its Generation; ``score``: the task's per-sample record.
    ``ttft_s`` / ``e2e_s`` replace the generation's own times (a pipeline that does more than one call)."""
    api_counters = {name: c for name, c in counters.items() if name != "model"}
    user_text = prompt.user_text()
    api_text = prompt.api_text()  # system message (when the template is one) + user turn: what an API bills
    score = dict(score)
    lifted = {k: score.pop(k, None) for k in _LIFTED}
    return {
        "id": example_id,
        "prompt": user_text,
        **({"system_prompt": prompt.system_text()} if prompt.system_text() else {}),
        # multi-turn few-shot: the whole conversation (``prompt`` is its last user turn); a base model's cued
        # plain-text layout: the exact text (promptintern/prompts.py)
        **({"messages": prompt.messages()} if prompt.demos else {}),
        **({"rendered_prompt": render(prompt, tok, chat)} if _plain_cued(prompt, tok, chat) else {}),
        "rendered_prompt_tokens": gen.prompt_tokens,
        # a reused prefix KV cache: its tokens were not prefilled for this query (prefill = prompt - cached)
        **({"cached_tokens": gen.cached_tokens, "prefill_tokens": gen.prompt_tokens - gen.cached_tokens}
           if getattr(gen, "cached_tokens", 0) else {}),
        "raw_generation": gen.raw_text,
        "generation": gen.text,
        **lifted,
        "stop_reason": gen.stop_reason,
        "reference": reference,
        "demo_ids": list(demo_ids),
        "tokens": {"model": gen.prompt_tokens, **{name: c.count(api_text) for name, c in api_counters.items()}},
        "parts": part_token_counts(prompt, counters["model"], tok, chat),
        "output_tokens": gen.output_tokens,
        "ttft_s": gen.ttft_s if ttft_s is None else ttft_s,
        "e2e_s": gen.e2e_s if e2e_s is None else e2e_s,
        "batch_size": gen.batch_size,
        "batch_index": gen.batch_index,
        "compressor_s": compressor_s,
        "compressor_input_tokens": compressor_input_tokens,
        "template_rate_achieved": template_rate_achieved,
        "score": score,
        # API pricing: the generation and each prompt part counted with the tiktoken encodings.
        "output_tokens_tiktoken": {name: c.count(gen.text) for name, c in api_counters.items()},
        "parts_tiktoken": {
            name: {part: c.count(text) if text else 0 for part, text in prompt.parts().items()}
            for name, c in api_counters.items()
        },
    }
