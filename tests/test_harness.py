"""The distributed harness on the tiny model: plan, run on Ray (2 CPUs), resume, faults, config errors."""

import json
import os
import signal
import threading
import time

import pytest
import yaml

from promptintern.errors import ConfigError
from promptintern.harness.config import load_experiment
from promptintern.harness.executor import run_plan
from promptintern.harness.plan import build_plan
from promptintern.harness.store import ResultStore

TINY = {
    "name": "tinygrid",
    "models": ["tiny"],
    "tasks": {"train": ["mbpp"], "eval": "same", "train_limit": 4, "test_limit": 2},
    "methods": [
        {"name": "query_only_ft"},
        {"name": "promptintern", "schedules": ["linear"], "stages": 2, "rates": [0.5]},
    ],
    "prompt": {"compressor": {"name": "truncate", "tokenizer": "tiny"}},
    "train": {"batch_size": 2, "max_length": 384},
    "generation": {"batch_size": 2, "max_new_tokens": 8},
    "retries": 2,
}


def _experiment(tmp_path, **over):
    cfg = {**TINY, **over, "results_dir": str(tmp_path / "results")}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_invalid_yaml_names_the_bad_field(tmp_path):
    path = _experiment(tmp_path, methods=[{"name": "promptintern", "schedules": ["zigzag"]}])
    with pytest.raises(ConfigError, match=r"methods\[0\]\.schedules"):
        load_experiment(path)
    path = _experiment(tmp_path, methods=[{"name": "magic"}])
    with pytest.raises(ConfigError, match=r"methods\[0\]\.name.*allowed: .*promptintern"):
        load_experiment(path)
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_experiment(_experiment(tmp_path), ["train.lr=-1"])
    with pytest.raises(ConfigError, match=r"tasks\.train_limt.*unknown key"):
        load_experiment(_experiment(tmp_path), ["tasks.train_limt=3"])
    with pytest.raises(ConfigError, match=r"unknown task 'mbbp'"):
        load_experiment(_experiment(tmp_path), ["tasks.train=[mbbp]"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_experiment(bad)


def test_overrides_and_plan_ids_are_stable(tmp_path):
    cfg = load_experiment(_experiment(tmp_path), ["tasks.test_limit=3", "train.lora.r=4"])
    assert cfg["tasks"]["test_limit"] == 3 and cfg["train"]["lora"]["r"] == 4
    units = build_plan(cfg)
    kinds = [u.kind for u in units]
    assert kinds.count("stage") == 3 and kinds.count("eval") == 2  # query-only: 1 stage; PromptIntern: 2
    assert [u.id for u in build_plan(cfg)] == [u.id for u in units]
    stage2 = next(u for u in units if u.kind == "stage" and u.config["stage"] == 1)
    stage1 = next(u for u in units if u.id == stage2.deps[0])
    assert stage1.config["rule"] == {"template_rate": 1.0, "n_examples": 1}  # prompt.first_stage: full
    assert stage2.config["rule"] == {"template_rate": 0.0, "n_examples": 0}
    # Changing an upstream setting changes every id downstream.
    units_lr = build_plan(load_experiment(_experiment(tmp_path), ["train.lr=0.001"]))
    assert not set(u.id for u in units) & set(u.id for u in units_lr)
    # ... but how a unit is executed does not: resources and gradient checkpointing leave every id as it was,
    # while the unit's config still carries the setting it runs with.
    ckpt = build_plan(load_experiment(_experiment(tmp_path), ["tasks.test_limit=3", "train.lora.r=4",
                                                              "train.gradient_checkpointing=true",
                                                              "resources.num_cpus=2"]))
    assert [u.id for u in ckpt] == [u.id for u in units]
    assert all(u.config["train"]["gradient_checkpointing"] for u in ckpt if u.kind == "stage")


def test_grid_completes_resumes_and_reruns_corrupt_results(tmp_path, ray_local, data_dir):
    cfg = load_experiment(_experiment(tmp_path))
    store = ResultStore(tmp_path / "results" / cfg["name"])
    units = build_plan(cfg)
    first = run_plan(units, store, data_dir=str(data_dir), progress=False)
    assert first.ok and first.completed == len(units), first.failed
    evals = store.records(kind="eval")
    assert len(evals) == 2
    for rec in evals:
        assert rec["config"]["eval_task"] == "mbpp" and len(rec["samples"]) == 2
        assert "pass@1" in rec["metrics"]
    stage2 = next(u for u in units if u.kind == "stage" and u.config["stage"] == 1)
    rec2 = store.read(stage2.id)
    assert rec2["init_adapter"] == f"adapters/{stage2.deps[0]}"  # chained from stage 1; relative to the results
    assert all(rec["adapter"] == f"adapters/{u.deps[0]}" for rec in evals for u in units if u.id == rec["unit_id"])

    second = run_plan(units, store, data_dir=str(data_dir), progress=False)
    assert second.completed == 0 and second.skipped == len(units)

    victim = next(u for u in units if u.kind == "eval")
    path = store.path(victim.id)
    path.write_text(path.read_text()[:200])  # truncated: not valid JSON
    third = run_plan(units, store, data_dir=str(data_dir), progress=False)
    assert third.completed == 1 and third.skipped == len(units) - 1
    assert store.read(victim.id) is not None

    # Adapters are not committed: results without them still aggregate, and nothing re-runs for them ...
    import shutil

    from promptintern.harness.executor import units_to_run

    chain = [u for u in units if u.kind == "stage" and u.config["method"]["name"] == "promptintern"]
    chain_eval = next(u for u in units if u.kind == "eval" and u.deps == [chain[-1].id])
    for u in (u for u in units if u.kind == "stage"):
        shutil.rmtree(store.adapter_dir(u.id))
    assert len(store.records(kind="stage")) == len([u for u in units if u.kind == "stage"])
    assert units_to_run(units, store) == set()
    # ... until a unit downstream must run: then its chain's stages train again, and nothing else.
    store.path(chain_eval.id).unlink()
    assert units_to_run(units, store) == {chain_eval.id, *(u.id for u in chain)}
    fourth = run_plan(units, store, data_dir=str(data_dir), progress=False)
    assert fourth.ok and fourth.completed == 3 and fourth.skipped == len(units) - 3


def test_killed_worker_is_retried_and_the_grid_completes(tmp_path, ray_local, data_dir):
    cfg = load_experiment(_experiment(tmp_path, methods=[{"name": "query_only_ft"}]))
    store = ResultStore(tmp_path / "results" / cfg["name"])
    units = build_plan(cfg)
    killed = {}

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for marker in store.runs.glob("stage-*.running") if store.runs.is_dir() else []:
                try:
                    pid = json.loads(marker.read_text())["pid"]
                except (OSError, ValueError):
                    continue
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    summary = run_plan(units, store, data_dir=str(data_dir), retries=2, progress=False)
    t.join()
    assert killed, "the test never saw the stage running"
    assert summary.ok and summary.completed == len(units), summary.failed
    # the retry is recorded: in the summary and in the unit's record
    (uid, n), = summary.retried.items()
    assert n == 2 and store.read(uid)["attempts"] == 2


def test_a_unit_that_keeps_failing_is_recorded_and_the_rest_completes(tmp_path, ray_local, data_dir):
    cfg = load_experiment(_experiment(tmp_path, methods=[{"name": "query_only_ft"}, {"name": "few_shot"}]))
    store = ResultStore(tmp_path / "results" / cfg["name"])
    units = build_plan(cfg)
    stage = next(u for u in units if u.kind == "stage")
    stage.config = {**stage.config, "model": str(tmp_path / "no-such-model")}  # fails on every attempt
    summary = run_plan(units, store, data_dir=str(data_dir), retries=1, progress=False)
    assert stage.id in summary.failed
    downstream = next(u for u in units if u.deps == [stage.id])
    assert "upstream" in summary.failed[downstream.id]
    few = next(u for u in units if u.config["method"]["name"] == "few_shot")
    assert store.read(few.id) is not None
    failed_record = json.loads(store.path(stage.id).read_text())
    assert failed_record["status"] == "failed" and "no-such-model" in failed_record["error"]
    assert store.read(stage.id) is None  # a failed record is never taken as done: the next run retries it


def test_fast_paths_run_through_the_grid(tmp_path, ray_local, data_dir):
    """train.packing and generation.engine reach the units: packed stages report padding and FLOPs, evaluations
    decode with the chosen engine and report time per output token; ids of default-valued grids are unchanged."""
    base = load_experiment(_experiment(tmp_path, methods=[{"name": "query_only_ft"}]))
    fast = load_experiment(_experiment(tmp_path, methods=[{"name": "query_only_ft"}]),
                           ["train.packing=true", "generation.engine=fast", "generation.latency_samples=1"])
    default_ids = {u.id for u in build_plan(base)}
    units = build_plan(fast)
    assert not default_ids & {u.id for u in units}  # non-default values change every id
    store = ResultStore(tmp_path / "results" / fast["name"])
    summary = run_plan(units, store, data_dir=str(data_dir), progress=False)
    assert summary.ok and summary.completed == len(units), summary.failed
    stage = store.records(kind="stage")[0]
    assert stage["config"]["train"]["packing"] is True
    train = stage["train"]
    assert train["padded_tokens"] >= train["train_tokens"] > 0 and train["model_flops"] > 0 and train["mfu"] is None
    ev = store.records(kind="eval")[0]
    assert ev["measurements"]["throughput"]["engine"] == "fast"
    assert ev["efficiency"]["model_load"]["reused"] in (True, False)
    assert ev["measurements"]["latency"]["tpot_s"]["n"] <= 3  # one query, 3 repeats (generation.latency_repeats)


def test_workers_load_models_without_library_noise(tmp_path, monkeypatch):
    """The environment Ray workers get silences transformers' progress bars and deprecation warnings (the run log
    keeps one progress view); a value the user sets in the driver's environment is passed on instead."""
    import subprocess
    import sys

    from promptintern.harness.executor import QUIET_WORKER_ENV, worker_env

    code = ("from promptintern.models import load_model\n"
            "m, _ = load_model('tiny', device='cpu')\nm.gradient_checkpointing_enable()\nprint('loaded')\n")
    for k in QUIET_WORKER_ENV:
        monkeypatch.delenv(k, raising=False)
    base = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def stderr(env):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                             cwd=str(tmp_path))
        assert out.returncode == 0 and "loaded" in out.stdout, out.stderr
        return out.stderr

    noisy = stderr(base)
    assert "Loading weights" in noisy and "FutureWarning" in noisy  # what every worker printed before
    assert stderr({**base, **worker_env()}).strip() == ""
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    assert worker_env()["TRANSFORMERS_VERBOSITY"] == "info"


def test_workers_reuse_large_blocks_instead_of_page_faulting(monkeypatch):
    """With the allocator settings workers get, a process that allocates and frees a 64 MiB tensor again and again
    stops taking page faults once its heap has grown; with glibc's defaults every allocation is a fresh mmap, faulted in
    page by page. The user's own value wins; the records say which settings their worker had."""
    import subprocess
    import sys

    from promptintern.harness.env_info import ALLOCATOR_ENV
    from promptintern.harness.executor import worker_env

    for k in ALLOCATOR_ENV:
        monkeypatch.delenv(k, raising=False)
    code = ("import resource, torch\n"
            "for _ in range(3):\n    torch.ones(16 << 20).sum()\n"  # warm
            "f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(20):\n    torch.ones(16 << 20).sum()\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)\n")

    def faults(env):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    base = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    tensor = (64 << 20) // 4096  # pages of one tensor
    assert faults(base) >= 18 * tensor  # every 64 MiB tensor faulted in again
    assert faults({**base, **worker_env()}) <= 4 * tensor  # the heap grows a few times, then is reused
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    assert worker_env()["MALLOC_TOP_PAD_"] == "0"
    from promptintern.harness.env_info import hardware

    assert hardware()["allocator"] == {"MALLOC_TOP_PAD_": "0"}
