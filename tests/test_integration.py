"""Integration tier: the real SmolLM2-135M-Instruct on a few real examples (`make test-integration`)."""

import time

import pytest

pytestmark = pytest.mark.integration


def test_smollm2_loads_from_the_packaged_gguf_and_answers():
    from promptintern.generation import generate
    from promptintern.models import load_model
    from promptintern.prompts import Prompt, render

    load_model("smollm2-135m")  # exports once
    t0 = time.perf_counter()
    model, tok = load_model("smollm2-135m")
    print(f"second load of smollm2-135m: {time.perf_counter() - t0:.2f} s")
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    out = generate(model, tok, [render(Prompt(query="What is the capital of France?"), tok)], max_new_tokens=12)
    assert "Paris" in out[0].text


def test_three_stage_promptintern_on_real_mbpp_shrinks_the_prompt(tmp_path, data_dir):
    """A small version of issue 3's CPU acceptance run (the 64-item run is experiments/promptintern_mbpp64.yaml)."""
    from promptintern.harness.config import load_experiment
    from promptintern.harness.executor import run_plan
    from promptintern.harness.plan import build_plan
    from promptintern.harness.store import ResultStore

    cfg = load_experiment(
        None,
        [
            "name=pi3",
            f"results_dir={tmp_path}",
            "tasks.train=[mbpp]",
            "tasks.train_limit=4",
            "tasks.test_limit=2",
            "methods=[{name: promptintern, schedules: [linear], stages: 3, rates: [0.6]}]",
            "prompt.k_examples=2",
            "train.batch_size=1",
            "train.max_length=2560",
            "generation.max_new_tokens=48",
            "ray.num_cpus=2",
        ],
    )
    store = ResultStore(tmp_path / "pi3")
    units = build_plan(cfg)
    summary = run_plan(units, store, data_dir=str(data_dir), progress=False, ray_options={"num_cpus": 2})
    assert summary.ok, summary.failed
    stages = sorted(store.records(kind="stage"), key=lambda r: r["config"]["stage"])
    tokens = [s["train"]["mean_prompt_tokens"] for s in stages]
    assert len(stages) == 3 and tokens[0] > tokens[1] > tokens[2], tokens
    assert [s["train"]["examples_per_prompt"] for s in stages] == [2, 1, 0]
    # prompt.first_stage: full — stage 0 keeps the whole template; stage 1 compresses it to rate x S_1 = 0.3
    assert stages[0]["train"]["template_rate_requested"] == 1.0
    assert abs(stages[1]["train"]["template_rate_achieved"] - 0.3) <= 0.05


def test_fast_engine_compiled_decode_step_matches_eager_on_smollm2():
    """torch.compile of the decode step (CUDA graphs on a GPU; inductor on CPU) changes no token."""
    import torch

    from promptintern.fast_decode import fast_greedy
    from promptintern.models import load_model
    from promptintern.prompts import Prompt, render

    model, tok = load_model("smollm2-135m")
    texts = [render(Prompt(query=q), tok) for q in ("Write a Python function that reverses a list.", "Say hi")]
    tok.padding_side = "left"
    enc = tok.pad({"input_ids": [tok(t, add_special_tokens=False)["input_ids"] for t in texts]}, return_tensors="pt")
    kw = dict(max_new_tokens=24, eos_ids=[], pad_id=tok.pad_token_id, cache_len=256)
    eager, _ = fast_greedy(model, enc["input_ids"], enc["attention_mask"], compile=False, **kw)
    compiled, _ = fast_greedy(model, enc["input_ids"], enc["attention_mask"], compile=True, **kw)
    assert torch.equal(eager, compiled)
