"""vLLM's OpenAI-compatible server from its own environment (`make setup-vllm`), on the CPU build here: an adapter
on SmolLM2-135M is applied, a repeated prefix is served from the cache, and one adapter's cached KV never serves another's
request. Integration tier; skipped (saying why) where `.venv-vllm` is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not PYTHON.is_file():
        pytest.skip("no vLLM environment: `make setup-vllm` installs it into .venv-vllm")
    import torch
    from peft import LoraConfig, get_peft_model

    from promptintern.models import load_model, resolve
    from promptintern.vllm_server import VllmServer

    tmp = tmp_path_factory.mktemp("vllm")
    model, tok = load_model("smollm2-135m")  # the tiny test model's head size (16) has no vLLM CPU attention kernel
    adapters = {}
    for i, seed in enumerate((1, 2)):
        torch.manual_seed(seed)  # random A and B (not PEFT's B = 0): the adapter changes the outputs
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                      init_lora_weights=False))
        peft_model.save_pretrained(tmp / f"ad{i}")
        model = peft_model.unload()
        adapters[f"ad{i}"] = tmp / f"ad{i}"
    server = VllmServer(resolve("smollm2-135m"), python=PYTHON, log_path=tmp / "server.log", max_model_len=1024)
    with server:
        for name, path in adapters.items():
            server.load_adapter(name, path)
        yield server, tok


def test_the_adapter_is_applied_and_a_repeated_prefix_is_served_from_the_cache(served):
    server, tok = served
    prompt = tok("You answer with one word. " * 100, add_special_tokens=False)["input_ids"][:500]
    base = server.complete("base", prompt, max_tokens=8)
    first = server.complete("ad0", prompt, max_tokens=8)
    assert first.text != base.text and first.completion_tokens == 8  # the adapter changed the answer
    before = server.prefix_cache()
    again = server.complete("ad0", prompt, max_tokens=8)
    after = server.prefix_cache()
    assert again.text == first.text
    # every full block of the prompt came from the cache (vLLM's CPU backend caches blocks of 128 tokens)
    assert after["hits"] - before["hits"] >= len(prompt) // 128 * 128 >= 384
    assert again.ttft_s > 0 and again.e2el_s >= again.ttft_s and len(again.itl_s) == 7


def test_one_adapters_cached_prefix_never_serves_another(served):
    server, _ = served
    prompt = list(range(1000, 1500))  # no repeated text to copy: each adapter answers its own way
    own = server.complete("ad0", prompt, max_tokens=8)  # ad0's KV of this prefix is now cached
    before = server.prefix_cache()
    other = server.complete("ad1", prompt, max_tokens=8)
    assert server.prefix_cache()["hits"] == before["hits"]  # ad1 found nothing of ad0's in the cache
    cached = server.complete("ad1", prompt, max_tokens=8)
    assert cached.text == other.text != own.text  # each adapter's cached answer is its own uncached one
