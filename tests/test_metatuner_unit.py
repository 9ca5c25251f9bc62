"""The MetaTuner harness unit end to end on the tiny model: train, evaluate, one eval record, reload."""

import json

import pytest
import torch

from promptintern.harness.metatuner_unit import run_metatuner
from promptintern.harness.store import ResultStore

EVAL_SAMPLE_KEYS = {  # what harness/eval_unit.py writes per sample
    "id", "prompt", "rendered_prompt_tokens", "generation", "reference", "demo_ids", "tokens", "parts",
    "output_tokens", "ttft_s", "e2e_s", "batch_size", "batch_index", "compressor_s", "compressor_input_tokens",
    "template_rate_achieved", "score",
}
TINY_OPTIONS = {
    "n_rollouts": 2,
    "max_prompt_tokens": 8,
    "rollout_max_new_tokens": 6,
    "seed_prompt": "first_paragraph",
    "max_length": 256,
    "batch_size": 4,
    "d2_threshold": 0.0,  # a random model is never right: let every rollout into D2 so the regularizer runs
}


def _inputs(task: str) -> dict:
    """The plan's item selection for a hand-built unit: the first 8 training and 5 test items."""
    from promptintern import tasks
    t = tasks.get_task(task)
    return {task: {"train_ids": [ex.id for ex in t.load(t.train_split)[:8]],
                   "test_ids": [ex.id for ex in t.load(t.test_split)[:5]], "removed_ids": []}}


def _unit(uid: str, task: str, measure: bool = False, **options) -> dict:
    return {
        "id": uid,
        "kind": "metatuner",
        "resources": {"num_cpus": 1, "num_gpus": 0},
        "deps": [],
        "inputs": _inputs(task),
        "config": {
            "model": "tiny",
            "seed": 0,
            "method": {"name": "metatuner", "options": {**TINY_OPTIONS, **options}},
            "train_task": task,
            "eval_task": task,
            "items": {"train": {"n_train": 8}},
            "generation": {"batch_size": 5, "max_new_tokens": 8, "measure": measure, "throughput_batch_sizes": [1, 2],
                           "throughput_max_new_tokens": 3, "latency_samples": 2},
            "prompt": {"chat": True},
        },
    }


def test_metatuner_unit_trains_evaluates_and_reloads(tmp_path, data_dir):
    torch.set_num_threads(1)
    store = ResultStore(tmp_path)
    rec = run_metatuner(_unit("mt-gsm8k-I", "gsm8k", measure=True, variant="I"), str(tmp_path), None, str(data_dir))

    assert store.read("mt-gsm8k-I") is not None  # valid record, kind eval
    assert rec["kind"] == "eval" and rec["status"] == "ok"
    assert rec["config"]["method"]["label"] == "metatuner-I"
    assert rec["task"] == {"name": "gsm8k", "primary_metric": "accuracy", "split": "test"}
    assert "accuracy" in rec["metrics"]
    eff = rec["efficiency"]
    assert eff["n"] == 5 and eff["generation_seconds"] == pytest.approx(
        eff["actor_generation_seconds"] + eff["prompt_generation_seconds"] + eff["hypernetwork_seconds"]
    )
    assert eff["mean_total_input_tokens"] > eff["mean_input_tokens"] > 0
    for s in rec["samples"]:
        assert EVAL_SAMPLE_KEYS <= set(s)
        # the actor reads the generated prompt: its tokens are inside tokens.model
        assert s["generated_prompt"] and s["generated_prompt"] in s["prompt"]
        assert s["tokens"]["model"] >= s["generated_prompt_tokens"] > 0
        assert s["generator_tokens"]["model"] > 0 and 0 < s["generator_tokens"]["output"] <= 8
        assert s["e2e_s"] == pytest.approx(s["prompt_generation_s"] + s["hypernetwork_s"] + s["actor_e2e_s"])
        assert s["hypernetwork_s"] > 0 and s["prompt_generation_s"] > 0

    # pipeline measurements in eval_unit's shape: batch-1 latency and throughput count G and F too
    lat = rec["measurements"]["latency"]
    assert lat["e2e_s"]["n"] == 2 * 3 and all(  # 2 queries x 3 repeats (generation.latency_repeats)
        x["e2e_s"] == pytest.approx(x["prompt_generation_s"] + x["hypernetwork_s"] + x["actor_e2e_s"]) for x in lat["samples"])
    points = rec["measurements"]["throughput"]["points"]
    assert [p["batch_size"] for p in points] == [1, 2] and all(p["output_tokens"] == 3 * p["batch_size"] for p in points)
    assert rec["generations_sha256"] and rec["adapter_sha256"] and rec["model_info"]["n_params"] > 0

    train = rec["metatuner"]["train"]
    assert rec["metatuner"]["trained_here"] and rec["metatuner"]["k"] == 1
    assert train["rollouts"] and train["rollouts"][0]["d2_size"] > 0
    assert all(st["task_loss"] is not None and st["reg_loss"] is not None for st in train["steps"])
    art = tmp_path / rec["metatuner"]["artefact_dir"]
    assert art == store.adapter_dir("mt-gsm8k-I")
    for f in ("generator_lora.safetensors", "hypernet.safetensors", "meta.json", "metatuner_curve.json",
              "actor_warmup/adapter_model.safetensors", "actor_warmup/loss_curve.json"):
        assert (art / f).is_file(), f
    assert json.loads((art / "metatuner_curve.json").read_text())["steps"]
    assert train["actor_warmup"]["adapter_dir"] == "actor_warmup"  # relative to the artefact folder
    assert str(tmp_path) not in json.dumps({k: v for k, v in rec.items() if k != "hardware"})

    # a unit that depends on it (same training key) loads the artefacts and reproduces the generations
    again = run_metatuner(_unit("mt-gsm8k-I-again", "gsm8k", variant="I"), str(tmp_path), rec, str(data_dir))
    assert not again["metatuner"]["trained_here"]
    assert [s["generated_prompt"] for s in again["samples"]] == [s["generated_prompt"] for s in rec["samples"]]
    assert [s["generation"] for s in again["samples"]] == [s["generation"] for s in rec["samples"]]

    from promptintern.harness.aggregate import eval_frame

    df = eval_frame(store)
    assert set(df["label"]) == {"metatuner-I"} and set(df["method"]) == {"metatuner"}


def test_metatuner_unit_ablation_without_prompt_branch_on_nl2bash(tmp_path, data_dir):
    torch.set_num_threads(1)
    rec = run_metatuner(_unit("mt-bash", "nl2bash", ablation="no_prompt"), str(tmp_path), None, str(data_dir))
    assert rec["config"]["method"]["label"] == "metatuner-J/no-prompt"
    assert rec["task"]["primary_metric"] == "bleu"
    seed = rec["metatuner"]["seed_prompt"]
    for s in rec["samples"]:
        assert s["generated_prompt"] == seed and s["prompt_generation_s"] == 0.0
        assert s["generator_tokens"]["output"] == 0 and s["hypernetwork_s"] > 0
    train = rec["metatuner"]["train"]
    assert not train["rollouts"] and all(st["reg_loss"] is None for st in train["steps"])


def test_variants_and_ablations_become_table_rows(tmp_path, data_dir):
    """J and the parameter-branch / sharing ablations in one store: they share the cached warm-ups and each
    lands as its own row of the main table, next to whatever else the store holds."""
    from promptintern.harness.aggregate import eval_frame, main_table

    torch.set_num_threads(1)
    variants = {"mt-J": {}, "mt-noparam": {"ablation": "no_param"}, "mt-noshare": {"ablation": "no_share"}}
    recs = {uid: run_metatuner(_unit(uid, "nl2bash", **opts), str(tmp_path), None, str(data_dir))
            for uid, opts in variants.items()}
    assert recs["mt-noparam"]["efficiency"]["hypernetwork_seconds"] == 0.0
    assert all(s["hypernetwork_s"] == 0.0 for s in recs["mt-noparam"]["samples"])
    assert all(st["task_loss"] is None for st in recs["mt-noparam"]["metatuner"]["train"]["steps"])
    assert recs["mt-noshare"]["metatuner"]["train"]["trainable_params"]["encoder_separate"] > 0
    # the warm-ups were trained once and reused: one actor warm-up for all, one generator warm-up per G layout (the
    # no-share ablation's separate encoder slots change the live slots' initial values, so it trains its own)
    warm = ResultStore(tmp_path).adapters / "metatuner-warmup"
    dirs = sorted(p.name.split("-")[0] for p in warm.iterdir() if p.is_dir())
    assert dirs == ["actor", "generator", "generator"]
    table = main_table(eval_frame(ResultStore(tmp_path)))
    assert sorted(table["label"]) == ["metatuner-J", "metatuner-J/no-param", "metatuner-J/no-share"]
