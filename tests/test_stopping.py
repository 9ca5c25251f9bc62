"""Stop strings act on the continuation only, respect code fences, and end each row on its own.

The model here is the tiny random llama with a forward hook that forces a scripted token sequence per row, so
the real SmolLM2 chat template (ending in "<|im_start|>assistant\\n") meets answers whose first token is a fence:
the case that transformers' `stop_strings` (which also searches the prompt) turned into a bare "```".
"""

import contextlib

import pytest

from promptintern.generation import generate
from promptintern.prompts import Prompt, render
from promptintern.stopping import cut_at_stop, find_stop

FENCED = "```python\ndef add(a, b):\n    return a + b\n```\nThat's all."
PREAMBLE = "Here is the function:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
BASH = "```bash\nfind . -name '*.txt'\n```\nThis finds the files."


@contextlib.contextmanager
def scripted(model, tok, texts, width):
    """Force row i of every batch to emit the tokens of texts[i] (then the end of turn), whatever the model says.
    The step is read from the KV cache's length (``width``: the padded prompt length), so warm-up calls and every
    engine (`generate`, the static cache, the fast loop) see the same script."""
    import torch

    scripts = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]

    def hook(module, args, kwargs, output):
        step = output.past_key_values.get_seq_length() - width  # the cache holds prompt + tokens fed so far
        logits = output.logits
        forced = torch.full_like(logits[:, -1, :], -1e9)
        for r in range(logits.shape[0]):
            s = scripts[r % len(scripts)]
            forced[r, s[min(step, len(s) - 1)]] = 0.0
        logits[:, -1, :] = forced
        return output

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _gen(model, tok, texts, stop, engine="hf", **kw):
    prompts = [render(Prompt(query=f"query {i}"), tok) for i in range(len(texts))]
    assert prompts[0].endswith("<|im_start|>assistant\n")  # the real chat template: the prompt ends in "\n"
    width = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    with scripted(model, tok, texts, width):
        return generate(model, tok, prompts, max_new_tokens=64, stop=stop, batch_size=len(texts), engine=engine, **kw)


@pytest.mark.parametrize("engine", ["hf", "static", "fast"])
def test_a_stop_string_starting_with_newline_is_not_matched_across_the_prompt(tiny, engine):
    model, tok = tiny
    [g] = _gen(model, tok, [FENCED], ["\n```"], engine)
    # transformers' stop_strings saw "assistant\n" + "```" and ended here after one token: text "```".
    assert g.text == "```python\ndef add(a, b):\n    return a + b"
    assert g.stop_reason == "stop"
    # the answer ends at the token that completes the closing "\n```" (tokens: ``` python \n def ... \n ```)
    ids = tok(FENCED, add_special_tokens=False)["input_ids"]
    assert g.output_tokens == [tok.decode(ids[:k]).endswith("\n```") for k in range(len(ids) + 1)].index(True)
    assert g.raw_text.startswith(g.text) and g.raw_text.endswith("\n```")


@pytest.mark.parametrize("engine", ["hf", "fast"])
def test_rows_stop_independently_and_a_preamble_does_not_cut_the_opened_fence(tiny, engine):
    model, tok = tiny
    texts = [PREAMBLE, "```\nx = 1\n```\nrest of the text that must not be kept", FENCED + "\n" * 40]
    gens = _gen(model, tok, texts, ["\n```"], engine)
    assert gens[0].text == "Here is the function:\n```python\ndef add(a, b):\n    return a + b"
    assert gens[1].text == "```\nx = 1"  # the shortest answer: this row stops first, the others go on
    assert gens[2].text == "```python\ndef add(a, b):\n    return a + b"
    assert gens[1].output_tokens < gens[2].output_tokens < gens[0].output_tokens
    assert all(g.stop_reason == "stop" for g in gens)


def test_a_newline_stop_keeps_a_fenced_command_whole(tiny):
    model, tok = tiny
    [g] = _gen(model, tok, [BASH], ["\n"])
    assert g.text == "```bash\nfind . -name '*.txt'\n```"
    [g] = _gen(model, tok, ["ls -la\nand an explanation"], ["\n"])
    assert g.text == "ls -la"


def test_end_of_turn_and_token_budget_are_told_apart(tiny):
    model, tok = tiny
    [g] = _gen(model, tok, ["short answer"], ["\n```"])
    assert (g.text, g.stop_reason) == ("short answer", "eos")
    assert g.output_tokens == len(tok("short answer", add_special_tokens=False)["input_ids"]) + 1
    [g] = _gen(model, tok, ["word " * 100], ["\n```"])
    assert g.stop_reason == "length" and g.output_tokens == 64


def test_find_stop_by_hand():
    # outside any fence: plain first occurrence
    assert find_stop("ls -la\nmore", ["\n"]) == 6
    assert cut_at_stop("a;b|c", [";", "|"]) == "a"
    assert cut_at_stop("abc", []) == "abc"
    # an opening fence is not a stop; the closing one is
    text = "Intro:\n```py\nx = 1\n```\ntail"
    assert find_stop(text, ["\n```"]) == text.index("\n```", 8)
    assert cut_at_stop(text, ["\n```"]) == "Intro:\n```py\nx = 1"
    # newlines inside an open fence do not count; the one after the closing fence does
    assert cut_at_stop("```bash\nfind .\n```\nexplained", ["\n"]) == "```bash\nfind .\n```"
    # an unclosed fence never stops
    assert find_stop("```python\ndef f():\n    return 1\n", ["\n", "\n```"]) is None
    # without fence awareness: the plain first occurrence
    assert cut_at_stop(text, ["\n```"], fence_aware=False) == "Intro:"
    # idempotent
    for s in (text, "```bash\nfind .\n```\nexplained", "a\n\n\nb"):
        for stop in (["\n```"], ["\n"], ["\n\n\n"]):
            once = cut_at_stop(s, stop)
            assert cut_at_stop(once, stop) == once
