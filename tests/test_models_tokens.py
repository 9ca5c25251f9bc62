import pytest

from promptintern.errors import UnknownModelError
from promptintern.models import load_model, resolve
from promptintern.tokens import HFTokenCounter, TiktokenCounter, tiktoken_encoding


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(UnknownModelError, match="unknown model 'no-such-model'.*registered name"):
        resolve("no-such-model")


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(UnknownModelError, match="no config.json"):
        resolve(str(tmp_path))


def test_uncached_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModelError, match="not in the local Hugging Face cache"):
        resolve("someone/not-a-cached-model")


def test_tiny_model_is_a_small_llama_with_the_real_tokenizer(tiny):
    model, tok = tiny
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert len(tok) == model.config.vocab_size == 49152
    ids = tok("def add(a, b):", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "def add(a, b):"


def test_local_folder_loads_like_a_name(tiny):
    path = resolve("tiny")
    model, _ = load_model(path, device="cpu")
    assert model.config.hidden_size == tiny[0].config.hidden_size


def test_tiktoken_counts_fixed_strings_offline(monkeypatch):
    # Any network attempt would fail loudly.
    import tiktoken.load

    monkeypatch.setattr(tiktoken.load, "read_file", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
    cl = tiktoken_encoding("cl100k_base")
    assert cl.encode("Hello, world!") == [9906, 11, 1917, 0]  # published cl100k ids
    assert TiktokenCounter("cl100k_base").count("Hello, world!") == 4
    o2 = tiktoken_encoding("o200k_base")
    assert o2.encode("Hello, world!") == [13225, 11, 2375, 0]  # published o200k ids
    text = "PromptIntern internalizes the template: 90% fewer input tokens."
    assert cl.decode(cl.encode(text)) == text and o2.decode(o2.encode(text)) == text
    pieces = ["Prompt", "Intern", " internal", "izes", " the", " template", ":", " ", "90", "%", " fewer",
              " input", " tokens", "."]
    assert [cl.decode([i]) for i in cl.encode(text)] == pieces
    assert TiktokenCounter("cl100k_base").count(text) == 14
    assert TiktokenCounter("o200k_base").count(text) == 14
    assert TiktokenCounter("cl100k_base").count("<|endoftext|>") == 7  # special text counted as plain text


def test_unknown_tiktoken_encoding():
    with pytest.raises(ValueError, match="unknown tiktoken encoding"):
        tiktoken_encoding("p99k_base")


def test_model_tokenizer_counts_fixed_strings(tiny):
    _, tok = tiny
    counter = HFTokenCounter(tok)
    assert counter.count("Hello, world!") == 4
    assert counter.count("") == 0
    text = "PromptIntern internalizes the template: 90% fewer input tokens."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    # SmolLM2's BPE splits digits one by one.
    assert tok.convert_ids_to_tokens(ids)[:3] == ["Prom", "pt", "Intern"] and "9" in tok.convert_ids_to_tokens(ids)
    assert counter.count(text) == 16
