"""Prefix caching of the recurring prompt: the cached run decodes the same tokens as the uncached one and as plain
`model.generate` on each prompt alone, for every engine; only the part after the prefix is prefilled."""

import pytest
import torch

from promptintern.generation import ENGINES, generate
from promptintern.prefix_cache import encode_prefix, middle_padded, prefix_token_ids, shared_prefix_text
from promptintern.prompts import Prompt, render

TEMPLATE = ("You write one bash command for the task below.\n\n## Rules\n- Use standard utilities (find, grep, "
            "sed, awk) only.\n- Print the command alone, without explanation.\n- Quote every path that may hold "
            "spaces.\n\n## Style\nPrefer long options where they exist; never use sudo.")
QUERIES = ["List all files in the current folder.", "Count the lines of every Python file below src, recursively.",
           "Print the disk usage of /var in human units.", "Find empty directories.",
           "Show the ten largest files under the home directory, biggest first, with their sizes."]


def _prompts(tok, role="system", examples=()):
    return [Prompt(template=TEMPLATE, examples=tuple(examples), query=q, template_role=role) for q in QUERIES]


def _cached(tiny, prompts, engine, batch_size, max_new_tokens=10):
    model, tok = tiny
    rendered = [render(p, tok) for p in prompts]
    encoded = [tok(r, add_special_tokens=False)["input_ids"] for r in rendered]
    ids = prefix_token_ids(shared_prefix_text(prompts[0], tok), tok, encoded)
    prefix = encode_prefix(model, ids)
    plain = generate(model, tok, rendered, max_new_tokens=max_new_tokens, batch_size=batch_size, engine=engine)
    cached = generate(model, tok, rendered, max_new_tokens=max_new_tokens, batch_size=batch_size, engine=engine,
                      prefix=prefix)
    return rendered, prefix, plain, cached


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("role", ["system", "user"])
def test_cached_generations_are_token_identical_to_uncached_and_to_plain_generate(tiny, engine, role):
    model, tok = tiny
    rendered, prefix, plain, cached = _cached(tiny, _prompts(tok, role), engine, batch_size=3)
    assert prefix.tokens > 60  # the template and its markup, not just a few tokens of chat markup
    for p, c in zip(plain, cached, strict=True):
        assert c.raw_text == p.raw_text and c.output_tokens == p.output_tokens
        assert c.prompt_tokens == p.prompt_tokens and c.cached_tokens == prefix.tokens and p.cached_tokens == 0
    # outside truth: transformers' own generate on each prompt alone (no padding, no cache tricks)
    for r, c in zip(rendered, cached, strict=True):
        ids = tok(r, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
        ref = out[0, ids.shape[1]:].tolist()
        assert tok.decode(ref[:c.output_tokens], skip_special_tokens=True) == c.raw_text


def test_prefix_with_retrieved_examples_stops_before_the_examples(tiny):
    model, tok = tiny
    demo = "### Example\nTask: list files\nCommand: ls"
    prompts = [Prompt(template=TEMPLATE, examples=(demo + str(i),), query=q, template_role="system")
               for i, q in enumerate(QUERIES)]
    text = shared_prefix_text(prompts[0], tok)
    # the fixed examples header is part of the recurring text; the retrieved example is not
    assert TEMPLATE in text and text.endswith("### Examples\n\n") and "Task: list files" not in text
    _, prefix, plain, cached = _cached(tiny, prompts, "hf", batch_size=2)
    assert [c.raw_text for c in cached] == [p.raw_text for p in plain]


def test_shared_prefix_text_is_what_every_rendering_starts_with(tiny):
    _, tok = tiny
    for role in ("system", "user"):
        prompts = _prompts(tok, role)
        text = shared_prefix_text(prompts[0], tok)
        assert all(render(p, tok).startswith(text) for p in prompts)
        assert TEMPLATE in text and QUERIES[0] not in text
    assert shared_prefix_text(Prompt(query="x"), tok) == shared_prefix_text(Prompt(query="y"), tok)


def test_prefix_tokens_stop_where_a_prompt_tokenizes_differently(tiny):
    _, tok = tiny
    ids = tok("abc def", add_special_tokens=False)["input_ids"]
    longer = ids + [5, 6]
    assert prefix_token_ids("abc def", tok, [longer]) == ids
    assert prefix_token_ids("abc def", tok, [ids[:-1] + [7]]) == ids[:-1]


def test_middle_padding_keeps_the_prefix_at_the_same_positions():
    b = middle_padded(2, [[1, 2, 3, 4], [1, 2, 5]], 0, "cpu")
    assert b["input_ids"].tolist() == [[1, 2, 3, 4], [1, 2, 0, 5]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 1]]


def test_a_prefix_is_refused_with_prompts_that_do_not_start_with_it(tiny):
    model, tok = tiny
    rendered = [render(p, tok) for p in _prompts(tok)]
    prefix = encode_prefix(model, tok(rendered[0], add_special_tokens=False)["input_ids"][:40])
    with pytest.raises(ValueError, match="does not start with the cached prefix"):
        generate(model, tok, ["another prompt entirely"], max_new_tokens=2, prefix=prefix)


def test_a_prefix_encoded_before_an_adapter_switch_is_stale(tiny):
    model, tok = tiny
    prefix = encode_prefix(model, [1, 2, 3])
    model.__dict__["_promptintern_adapter_serial"] = model.__dict__.get("_promptintern_adapter_serial", 0) + 1
    with pytest.raises(ValueError, match="another model or adapter"):
        prefix.check(model)


def test_the_prefix_is_encoded_with_the_adapter_active(tmp_path):
    """With a LoRA adapter merged by the AdapterHost, the cached run decodes the adapted model's tokens, and a
    prefix encoded before the switch is refused (its keys and values are the base model's)."""
    from peft import LoraConfig, get_peft_model

    from promptintern.adapter_host import AdapterHost
    from promptintern.models import load_model

    model, tok = load_model("tiny", device="cpu")
    torch.manual_seed(3)
    pm = get_peft_model(load_model("tiny", device="cpu")[0],
                        LoraConfig(r=4, lora_alpha=32, init_lora_weights=False, target_modules="all-linear"))
    pm.save_pretrained(tmp_path / "a")
    host = AdapterHost(model, tok)
    prompts = _prompts(tok)
    rendered = [render(p, tok) for p in prompts]
    encoded = [tok(r, add_special_tokens=False)["input_ids"] for r in rendered]
    ids = prefix_token_ids(shared_prefix_text(prompts[0], tok), tok, encoded)
    base_prefix = encode_prefix(host.activate(None), ids)
    base = generate(model, tok, rendered, max_new_tokens=10, batch_size=2)
    adapted = host.activate(tmp_path / "a")
    with pytest.raises(ValueError, match="another model or adapter"):
        generate(adapted, tok, rendered, max_new_tokens=2, prefix=base_prefix)
    plain = generate(adapted, tok, rendered, max_new_tokens=10, batch_size=2)
    cached = generate(adapted, tok, rendered, max_new_tokens=10, batch_size=2, prefix=encode_prefix(adapted, ids))
    assert [c.raw_text for c in cached] == [p.raw_text for p in plain]
    assert [p.raw_text for p in plain] != [b.raw_text for b in base]  # the adapter changes the answers
