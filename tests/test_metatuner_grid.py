"""Issue 8 acceptance: MetaTuner-I, -J and the three ablations land as rows of the main table next to
PromptIntern, after a grid run through the planner and Ray (tiny model, GSM8K)."""

from promptintern.harness.aggregate import eval_frame, main_table
from promptintern.harness.config import load_experiment
from promptintern.harness.executor import run_plan
from promptintern.harness.plan import build_plan
from promptintern.harness.store import ResultStore


def test_metatuner_rows_sit_beside_promptintern(tmp_path, ray_local, data_dir):
    small = {"batch_size": 2, "max_length": 256, "n_rollouts": 1, "max_prompt_tokens": 8,
             "rollout_max_new_tokens": 8, "epochs": 1, "m_warmup_epochs": 1, "g_warmup_epochs": 1}
    variants = [{"variant": "I"}, {"variant": "J"}, {"variant": "J", "ablation": "no_param"},
                {"variant": "J", "ablation": "no_prompt"}, {"variant": "J", "ablation": "no_share"}]
    methods = [{"name": "promptintern", "schedules": ["linear"], "stages": 2, "rates": [0.5]}]
    methods += [{"name": "metatuner", "options": {**small, **v}} for v in variants]
    cfg = load_experiment(None, [f"results_dir={tmp_path}", "name=mt", "models=[tiny]", "tasks.train=[gsm8k]",
                                 "tasks.train_limit=3", "tasks.test_limit=2", "generation.max_new_tokens=6",
                                 "generation.measure=false", "prompt.compressor={name: truncate, tokenizer: tiny}",
                                 "train.max_length=512", f"methods={methods}"])
    store = ResultStore(tmp_path / "mt")
    units = build_plan(cfg)
    assert sum(u.kind == "metatuner" for u in units) == 5
    summary = run_plan(units, store, data_dir=str(data_dir), progress=False)
    assert summary.ok, summary.failed
    labels = set(main_table(eval_frame(store))["label"])
    assert labels == {"promptintern/linear-T2/r0.5", "metatuner-I", "metatuner-J", "metatuner-J/no-param",
                      "metatuner-J/no-prompt", "metatuner-J/no-share"}
