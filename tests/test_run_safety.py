"""Runs that cannot collide or lie: per-unit claims, atomic adapters checked by their weights' hash, a failure
that never replaces a valid result, retries on record, clean Ctrl-C, worker output in unit logs, status."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from promptintern.cli import main
from promptintern.harness.artifacts import adapter_problem, partial_dir, publish_dir, weights_sha256
from promptintern.harness.claims import UnitClaims, holder, live_claims
from promptintern.harness.config import load_experiment
from promptintern.harness.executor import ATTEMPT_HEADER, _GridRun, run_plan, unit_entry, units_to_run
from promptintern.harness.plan import build_plan
from promptintern.harness.store import ResultStore, diagnose

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "name": "safegrid",
    "models": ["tiny"],
    "tasks": {"train": ["mbpp"], "eval": "same", "train_limit": 4, "test_limit": 2},
    "methods": [{"name": "query_only_ft"}, {"name": "promptintern", "schedules": ["linear"], "stages": 2}],
    "prompt": {"compressor": {"name": "truncate", "tokenizer": "tiny"}},
    "train": {"batch_size": 2, "max_length": 256},
    "generation": {"batch_size": 2, "max_new_tokens": 4, "measure": False},
    "ray": {"num_cpus": 1},
    "retries": 1,
}


def _experiment(tmp_path, **over) -> Path:
    cfg = {**TINY, **over, "results_dir": str(tmp_path / "results")}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(data_dir) -> dict:
    return {**os.environ, "PROMPTINTERN_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def _cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "promptintern.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, **kw)


# -- claims -----------------------------------------------------------------------------------------------------

def test_a_claim_is_exclusive_names_its_holder_and_dies_with_its_process(tmp_path):
    a, b = UnitClaims(tmp_path, "run-a"), UnitClaims(tmp_path, "run-b")
    assert a.claim("u1", "stage 1") and not b.claim("u1")
    assert holder(tmp_path, "u1")["run_id"] == "run-a" and list(live_claims(tmp_path)) == ["u1"]
    a.release("u1")
    assert holder(tmp_path, "u1") is None and b.claim("u1")
    b.release_all()
    # a process that dies holding a claim (killed: no clean-up code runs) leaves no stale claim
    code = ("import os,sys,time; from promptintern.harness.claims import UnitClaims; c=UnitClaims(sys.argv[1],'dead');"
            "assert c.claim('u2'); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout.readline().strip() == "held"
    assert holder(tmp_path, "u2")["run_id"] == "dead" and not a.claim("u2")
    p.kill()
    p.wait()
    assert holder(tmp_path, "u2") is None and a.claim("u2")


# -- artefacts ----------------------------------------------------------------------------------------------------

def _adapter(folder: Path, value: float = 1.0, extra: str = "") -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8}))
    save_file({"lora_A": torch.full((4, 4), value), "lora_B": torch.zeros(2, 4)}, str(folder / "adapter_model.safetensors"))
    (folder / "README.md").write_text(f"base model at {folder} {extra}")
    (folder / "loss_curve.json").write_text(json.dumps({"seconds": time.time()}))
    return folder


def test_the_adapter_hash_is_of_the_weights_only(tmp_path):
    a = _adapter(tmp_path / "a", extra="trained in 3.2 s")
    b = _adapter(tmp_path / "elsewhere" / "b", extra="trained in 9.9 s")
    assert weights_sha256(a) == weights_sha256(b)  # other paths, timings, README: the same weights
    assert weights_sha256(_adapter(tmp_path / "c", value=2.0)) != weights_sha256(a)


def test_a_truncated_or_altered_adapter_is_detected(tmp_path):
    a = _adapter(tmp_path / "a")
    digest = weights_sha256(a)
    assert adapter_problem(a, digest) is None
    st = a / "adapter_model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[:-10])
    assert "corrupt" in adapter_problem(a, digest)
    st.write_bytes(data[:-4] + b"\1\1\1\1")  # same size, other weights
    assert "differ" in adapter_problem(a, digest)
    (a / "adapter_config.json").unlink()
    assert "missing adapter_config.json" in adapter_problem(a)


def test_an_adapter_is_published_whole_or_not_at_all(tmp_path):
    final = tmp_path / "adapters" / "u1"
    _adapter(final, value=1.0)
    old = weights_sha256(final)
    tmp = partial_dir(final)
    assert tmp.parent == final.parent and tmp.name.startswith(".u1.partial-")
    _adapter(tmp, value=3.0)
    assert weights_sha256(final) == old  # until published, readers see the old folder
    publish_dir(tmp, final)
    assert weights_sha256(final) != old and not tmp.exists()
    assert sorted(p.name for p in final.parent.iterdir()) == ["u1"]


# -- the grid ----------------------------------------------------------------------------------------------------

def test_a_corrupt_adapter_is_rerun_and_a_failure_never_replaces_a_valid_result(tmp_path, ray_local, data_dir,
                                                                                monkeypatch):  # fmt: skip
    cfg = load_experiment(_experiment(tmp_path, methods=[{"name": "query_only_ft"}]))
    store = ResultStore(tmp_path / "results" / cfg["name"])
    units = build_plan(cfg)
    first = run_plan(units, store, data_dir=str(data_dir), progress=False)
    assert first.ok and first.completed == len(units), first.failed
    stage = next(u for u in units if u.kind == "stage")
    ev = next(u for u in units if u.kind == "eval")
    rec = store.read(stage.id)
    assert rec["adapter_sha256"] == weights_sha256(store.adapter_dir(stage.id))
    assert store.read(ev.id)["adapter_sha256"] == rec["adapter_sha256"]
    assert not list(store.adapters.glob(".*"))  # no partial folder left
    # a truncated adapter: the stage's record is no longer valid with artefacts, and a unit that needs it re-runs it
    st = store.adapter_dir(stage.id) / "adapter_model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    assert store.read(stage.id) is None and "corrupt" in diagnose(store.path(stage.id), stage.id)[1]
    store.path(ev.id).unlink()
    assert units_to_run(units, store) == {stage.id, ev.id}
    second = run_plan(units, store, data_dir=str(data_dir), progress=False)
    assert second.ok and second.completed == 2, second.failed
    assert adapter_problem(store.adapter_dir(stage.id), store.read(stage.id)["adapter_sha256"]) is None
    # a valid result is never overwritten by a failure record (its worker died after writing it)
    valid = json.loads(store.path(ev.id).read_text())
    run = _GridRun(units, store, data_dir=None, retries=0, progress=False, run_id="r")
    run._fail(ev, "worker died", RuntimeError("worker died"))
    assert json.loads(store.path(ev.id).read_text()) == valid
    # and a retry of a unit whose result is already valid returns it without running it again
    import promptintern.harness.executor as ex

    monkeypatch.setitem(ex.RUNNERS, "eval", lambda *a: pytest.fail("a finished unit ran again"))
    assert unit_entry(ev.to_dict(), str(store.root), None, rec, "r")["unit_id"] == ev.id


def _attempts(store: ResultStore, uid: str) -> list[str]:
    log = store.root / "logs" / f"{uid}.log"
    return [x for x in log.read_text().splitlines() if x.startswith(ATTEMPT_HEADER)] if log.is_file() else []


def test_two_concurrent_runs_execute_each_unit_exactly_once(tmp_path, data_dir):
    exp = _experiment(tmp_path)
    cfg = load_experiment(exp)
    units = build_plan(cfg)
    procs = [_cli("run", str(exp), "--quiet", env=_env(data_dir)) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err
    store = ResultStore(tmp_path / "results" / cfg["name"])
    for u in units:
        assert store.read(u.id) is not None
        assert len(_attempts(store, u.id)) == 1, (u.id, _attempts(store, u.id))
    ran = [int(out.split(" ran")[0].split()[-1]) for out, _ in outs]
    assert sum(ran) == len(units), [o for o, _ in outs]
    assert all("run by another process" in o for o, _ in outs if int(o.split(" ran")[0].split()[-1]) < len(units))
    assert not live_claims(store.root) and not list(store.runs.glob("*.running"))
    # worker output went to the unit logs: the console holds only the harness's own lines
    allowed = ("mbpp:", "", "results:", "table:", "csv:")
    for out, _ in outs:
        odd = [x for x in out.splitlines() if not x.startswith(allowed) and " ran" not in x]
        assert not odd, odd


def test_ctrl_c_cancels_cleanly_writes_the_tables_and_exits_with_one_line(tmp_path, data_dir):
    # enough units after the first evaluation that the run is still going when Ctrl-C arrives
    exp = _experiment(tmp_path, methods=[{"name": "query_only_ft"},
                                         {"name": "promptintern", "schedules": ["linear", "exponential"], "stages": 3},
                                         {"name": "full_prompt_ft"}])
    cfg = load_experiment(exp)
    store = ResultStore(tmp_path / "results" / cfg["name"])
    p = _cli("run", str(exp), env=_env(data_dir), start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not any(
            (r := diagnose(f, f.stem)[0]) and r["kind"] == "eval" for f in store.runs.glob("*.json")):
        time.sleep(0.2)
    assert time.time() < deadline, "no evaluation finished"
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "cancelled" in last, out
    assert (store.root / "tables").is_dir() and any((store.root / "tables").iterdir())
    assert not live_claims(store.root) and not list(store.runs.glob("*.running"))
    assert not list(store.adapters.glob(".*")), "a partial adapter was left behind"
    for f in store.runs.glob("*.json"):  # nothing cancelled is recorded as failed
        assert json.loads(f.read_text())["status"] == "ok", f.read_text()[:300]


# -- status ---------------------------------------------------------------------------------------------------------

def test_status_reads_the_plan_and_says_why(tmp_path, capsys):
    store = ResultStore(tmp_path / "exp")
    ids = ["done1", "fail1", "bad1", "miss1", "run1", "retry1"]
    store.root.mkdir()
    (store.root / "plan.json").write_text(json.dumps({"units": [{"id": i, "label": f"label {i}"} for i in ids]}))
    store.write("done1", {"kind": "eval", "status": "ok"})
    store.write("retry1", {"kind": "eval", "status": "ok", "attempts": 3})
    store.path("fail1").write_text(json.dumps({"unit_id": "fail1", "status": "failed", "error": "CUDA out of memory",
                                               "attempts": 2}))
    store.path("bad1").write_text('{"unit_id": "bad1", "status": "o')
    (store.runs / "miss1.running").write_text(json.dumps({"pid": 999999, "host": "gone"}))  # a dead run's marker
    claims = UnitClaims(store.root, "live-run")
    assert claims.claim("run1", "label run1")
    (store.runs / "run1.running").write_text(json.dumps({"pid": 1, "progress": {
        "what": "samples generated", "done": 10, "total": 40, "elapsed_s": 20.0, "eta_s": 60.0}}))
    try:
        assert main(["status", str(store.root)]) == 0
    finally:
        claims.release_all()
    out = capsys.readouterr().out
    assert "failed   fail1  label fail1: CUDA out of memory (2 attempts)" in out
    assert "invalid  bad1" in out and "not valid JSON" in out
    assert "missing  miss1" in out and "running  run1" in out and "live-run" in out
    assert "samples generated 10/40 (25%) 0:20 elapsed, eta 1:00" in out  # the unit's progress, from its marker
    assert "running  miss1" not in out  # a stale marker is not a running unit
    assert "done     retry1  label retry1: after 3 attempts" in out
    assert "6 units: 2 done, 1 failed, 1 invalid, 1 missing, 1 running; 2 retried" in out


def test_overrides_may_follow_options(tmp_path, data_dir, capsys):
    exp = _experiment(tmp_path)
    assert main(["plan", str(exp), "--data-dir", str(data_dir), "tasks.test_limit=1", "seeds=[3]"]) == 0
    out = capsys.readouterr().out
    assert "1 test items" in out
    with pytest.raises(SystemExit):
        main(["plan", str(exp), "--data-dir", str(data_dir), "--no-such-option"])
    with pytest.raises(SystemExit):
        main(["status", str(tmp_path), "tasks.test_limit=1"])  # status takes no overrides


def test_a_unit_asking_for_more_than_the_machine_has_is_refused_before_ray(tmp_path, data_dir, capsys, monkeypatch):
    import promptintern.harness.executor as ex

    monkeypatch.setattr(ex, "init_ray", lambda *a, **k: pytest.fail("Ray was started"))
    exp = _experiment(tmp_path, resources={"num_cpus": 512, "num_gpus": 0})
    assert main(["run", str(exp), "--data-dir", str(data_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "512" in err and "CPU" in err, err
    exp = _experiment(tmp_path, resources={"num_cpus": 1, "num_gpus": 1})
    if not shutil.which("nvidia-smi"):
        assert main(["run", str(exp), "--data-dir", str(data_dir), "--quiet"]) == 2
        assert "1 GPUs" in capsys.readouterr().err
        # a plan is a preview, perhaps for another machine: it warns
        assert main(["plan", str(exp), "--data-dir", str(data_dir)]) == 0
        assert "warning: `promptintern run` here would refuse" in capsys.readouterr().err


def test_workers_library_output_goes_to_the_unit_logs_not_the_console(tmp_path, data_dir):
    """Make the workers' libraries talk (transformers at info level: "loading weights file ..."): every such line
    lands in the units' logs; the console keeps the selection, one line per unit and the summary."""
    exp = _experiment(tmp_path, methods=[{"name": "query_only_ft"}])
    p = _cli("run", str(exp), env={**_env(data_dir), "TRANSFORMERS_VERBOSITY": "info"})
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, out + err
    console = out + err
    assert "loading" not in console.lower(), console
    logs = "".join(f.read_text() for f in (tmp_path / "results" / TINY["name"] / "logs").glob("*.log"))
    # a stage, its evaluation and the engine measurement: three units, three logs
    assert "loading" in logs.lower() and logs.count(ATTEMPT_HEADER) == 3, logs[:2000]
    lines = [x for x in out.splitlines() if x.startswith("done ")]
    assert len(lines) == 3, out
    # progress inside each unit, in its log: the phase's start and its end, of its total
    by_kind = {f.name.split("-")[0]: f.read_text() for f in (tmp_path / "results" / TINY["name"] / "logs").iterdir()}
    assert "progress: training batches 0/" in by_kind["stage"] and "(100%)" in by_kind["stage"], by_kind["stage"]
    assert "progress: samples generated 0/2" in by_kind["eval"], by_kind["eval"]
    assert "progress: samples generated 2/2 (100%)" in by_kind["eval"], by_kind["eval"]
    assert "progress: requests and sweep batches timed" in by_kind["engine"], by_kind["engine"]
    assert "progress:" not in console


def test_a_failed_rerun_of_a_stage_is_a_failure_not_its_old_record(tmp_path, ray_local, data_dir):
    """A stage re-runs because its adapter is gone; the re-run fails: that is a failure (its old record stays, as
    a record), and the evaluation waiting for it is skipped, not run on a missing adapter."""
    cfg = load_experiment(_experiment(tmp_path, methods=[{"name": "query_only_ft"}]))
    store = ResultStore(tmp_path / "results" / cfg["name"])
    units = build_plan(cfg)
    assert run_plan(units, store, data_dir=str(data_dir), progress=False).ok
    stage = next(u for u in units if u.kind == "stage")
    ev = next(u for u in units if u.kind == "eval")
    old = json.loads(store.path(stage.id).read_text())
    shutil.rmtree(store.adapter_dir(stage.id))
    store.path(ev.id).unlink()
    stage.config = {**stage.config, "model": str(tmp_path / "no-such-model")}  # the re-run fails
    summary = run_plan(units, store, data_dir=str(data_dir), retries=0, progress=False)
    assert summary.completed == 0 and stage.id in summary.failed and "upstream" in summary.failed[ev.id]
    assert json.loads(store.path(stage.id).read_text()) == old


def test_a_unit_another_run_failed_meanwhile_is_not_tried_again(tmp_path):
    from promptintern.harness.executor import _write_failure

    cfg = load_experiment(_experiment(tmp_path, methods=[{"name": "query_only_ft"}]))
    store = ResultStore(tmp_path / "results" / cfg["name"])
    units = build_plan(cfg)
    stage = next(u for u in units if u.kind == "stage")
    run = _GridRun(units, store, data_dir=None, retries=0, progress=False, run_id="mine")
    _write_failure(store, stage, "CUDA out of memory", None, run_id="theirs")
    assert "failed in run theirs: CUDA out of memory" == run._failed_elsewhere(stage)
    _write_failure(store, stage, "old failure", None, run_id="mine")
    assert run._failed_elsewhere(stage) is None  # this run's own failure (or one from before it started) retries


def test_attempts_are_counted_after_a_worker_died_mid_line(tmp_path):
    from promptintern.harness.executor import _start_attempt, attempts

    log = tmp_path / "u.log"
    assert _start_attempt(log, "r1") == 1
    with open(log, "a") as f:
        f.write("50%|█████     | 5/10 [00:01")  # killed here: no newline
    assert _start_attempt(log, "r1") == 2 and attempts(log) == 2 and attempts(log, "r2") == 0


def test_yaml_aliases_do_not_make_the_duplicate_key_check_explode(tmp_path):
    levels = ["a0: &a0 {x: 1, y: 2}"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "exp.yaml"
    path.write_text("\n".join(levels) + "\nname: aliases\n")
    t0 = time.perf_counter()
    with pytest.raises(Exception, match="a0"):  # an unknown key, found fast
        load_experiment(path)
    assert time.perf_counter() - t0 < 5


def test_an_adapter_saved_as_bin_is_accepted_and_hashed(tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.bin").write_bytes(b"pickled weights")
    assert adapter_problem(folder) is None and weights_sha256(folder)
