"""A two-node Ray cluster on this machine, started as docs/cluster.md says (``ray start --head`` and ``ray start
--address``, token authentication: ``RAY_AUTH_MODE=token`` and the token on every node and on the driver), a tiny
grid run through it with ``promptintern run --address``, and Ray 2.60's token authentication: without
``RAY_AUTH_MODE=token`` a client of a token cluster is refused with the message the docs quote.

Only the processes this module starts are stopped (each ``ray start --block`` in its own process group, its own
``--temp-dir``); other Ray instances on the machine are left alone.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
# what a client without RAY_AUTH_MODE=token sees (ray.exceptions.AuthenticationError, Ray 2.60)
REFUSED = "Authentication token is missing or incorrect"
MODE_NOTE = "RAY_AUTH_MODE is currently 'disabled' (not 'token')"
UNIT_ID = re.compile(r"\b(?:eval|stage|engine)-[0-9a-f]{16}\b")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(token_file: Path | None, **extra) -> dict:
    """This environment without any Ray auth setting; with ``token_file``: token mode with that token."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    if token_file is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    env.update(extra)
    return env


def _client(address: str, env: dict, timeout: float = 90) -> subprocess.CompletedProcess:
    code = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
            "print('ALIVE', sum(1 for n in ray.nodes() if n['Alive']))")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


class LocalCluster:
    """A head and one worker node, each a ``ray start --block`` (1 CPU) with its own temp dir."""

    def __init__(self, root: Path, token_file: Path):
        self.root, self.token_file = root, token_file
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.temp = {"head": root / "h", "worker": root / "w"}

    def _start(self, name: str, args: list[str]) -> None:
        self.temp[name].mkdir(parents=True)
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen(
            [RAY, "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
             "--temp-dir", str(self.temp[name]), "--disable-usage-stats", *args],
            env=_env(self.token_file), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def start(self) -> None:
        self._start("head", ["--head", "--port", str(self.port), "--include-dashboard=false"])
        self._wait_nodes(1)
        self._start("worker", ["--address", self.address])
        self._wait_nodes(2)

    def _wait_nodes(self, n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"ray start exited ({p.returncode}): {self.logs()}")
            r = _client(self.address, _env(self.token_file), timeout=60)
            if f"ALIVE {n}" in r.stdout:
                return
            time.sleep(1)
        raise RuntimeError(f"{n} node(s) not alive after {timeout} s: {self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        """SIGTERM to each `ray start --block` we started (it stops its node's processes), worker first; what is
        left of our process groups after 40 s is killed."""
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        for p in reversed(self.procs):
            try:
                p.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # anything of ours still in the group
            except ProcessLookupError:
                pass
            p.wait()


@pytest.fixture(scope="module")
def cluster():
    if shutil.which(RAY) is None:
        pytest.skip("the ray CLI is not installed")
    root = Path(tempfile.mkdtemp(prefix="pirc", dir="/tmp"))  # short: Ray's socket paths have a length limit
    token_file = root / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    c = LocalCluster(root, token_file)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_client_without_the_token_mode_is_refused_with_the_documented_message(cluster):
    r = _client(cluster.address, _env(None))  # no RAY_AUTH_MODE: 'disabled', even with the token file named
    assert r.returncode != 0
    assert REFUSED in r.stderr and MODE_NOTE in r.stderr, r.stderr[-3000:]
    r = _client(cluster.address, _env(None, RAY_AUTH_TOKEN_PATH=str(cluster.token_file)))
    assert r.returncode != 0 and REFUSED in r.stderr and MODE_NOTE in r.stderr
    r = _client(cluster.address, _env(None, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64))  # a wrong token
    assert r.returncode != 0 and REFUSED in r.stderr and MODE_NOTE not in r.stderr
    r = _client(cluster.address, _env(cluster.token_file))
    assert r.returncode == 0 and "ALIVE 2" in r.stdout, r.stderr[-3000:]


def _grid(tmp_path: Path) -> Path:
    # three units ready at once (a few-shot evaluation and two first stages), each asking for the 1 CPU a node has
    exp = {"name": "cluster", "models": ["tiny"],
           "tasks": {"train": ["mbpp"], "eval": "same", "train_limit": 2, "test_limit": 2},
           "methods": [{"name": "few_shot"}, {"name": "query_only_ft"}, {"name": "full_prompt_ft"}],
           "prompt": {"k_examples": 1, "compressor": {"name": "truncate", "tokenizer": "tiny"}},
           "train": {"batch_size": 2, "max_length": 256},
           "generation": {"batch_size": 2, "max_new_tokens": 8, "throughput_batch_sizes": [1],
                          "latency_samples": 1, "latency_repeats": 1, "throughput_repeats": 1,
                          "exclusive_timing": False},
           "resources": {"num_cpus": 1}, "retries": 0}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def _unit_nodes(cluster: LocalCluster) -> dict[str, set[str]]:
    """Node (head / worker) -> the unit ids whose Ray task ran there, from each node's own worker logs (Ray
    writes ``:task_name:<unit id>`` into the log of the worker that runs a task, in that node's temp dir)."""
    out: dict[str, set[str]] = {}
    for node, temp in cluster.temp.items():
        out[node] = {m for log in temp.glob("session_*/logs/worker-*")
                     for m in UNIT_ID.findall(log.read_text(errors="replace"))}
    return out


def test_a_grid_runs_on_both_nodes_through_promptintern_run_address(cluster, tmp_path, data):
    exp = _grid(tmp_path)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "promptintern.cli", "run", str(exp), "--address", cluster.address, "--results-dir",
           str(results), "--quiet"]
    # without the token mode the driver is refused, with a one-line error
    r = subprocess.run(cmd, env=_env(None), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"cannot connect to the Ray cluster at {cluster.address}" in r.stderr
    assert not (results / "cluster" / "runs").is_dir() or not list((results / "cluster" / "runs").glob("*.json"))
    r = subprocess.run(cmd, env=_env(cluster.token_file), capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + cluster.logs()
    plan = json.loads((results / "cluster" / "plan.json").read_text())
    planned = {u["id"] for u in plan["units"]}
    # few-shot eval; query-only and full-prompt FT: a stage and an evaluation each; the engine timing unit
    assert sorted(u.split("-")[0] for u in planned) == ["engine", "eval", "eval", "eval", "stage", "stage"], planned
    records = {p.stem: json.loads(p.read_text()) for p in (results / "cluster" / "runs").glob("*.json")}
    assert planned <= set(records) and all(records[u]["status"] == "ok" for u in planned)
    assert f"{len(planned)} ran, 0 already done, 0 failed" in r.stdout
    nodes = _unit_nodes(cluster)
    assert nodes["head"] and nodes["worker"], (nodes, cluster.logs())  # units ran on both nodes
    assert (nodes["head"] | nodes["worker"]) & planned == planned, nodes
