"""The sandbox works wherever the project and its interpreter live (issue 25): a virtual environment under a
folder the sandbox replaces with a private mount (/tmp, /var/tmp, /dev/shm, /run), under root's closed home
(/root), or under a path with spaces, both as the program's interpreter and as the evaluator's own. It is visible
read-only; the preflight self-test passes there and names the cause when the interpreter cannot start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from promptintern.tasks import sandbox
from promptintern.tasks.infra import InfraError, sandbox_self_test

REPO = Path(__file__).resolve().parent.parent
SANDBOX = REPO / "promptintern" / "tasks" / "sandbox"  # stdlib only: loads without the project installed
MODES = [m for m in ("namespace", "userns") if m == sandbox.sandbox_mode() or (
    os.geteuid() == 0 and sandbox._probe(["unshare", "--user", "--map-root-user", *sandbox.UNSHARE_FLAGS, "true"]))]
if sandbox.sandbox_mode() not in MODES:
    MODES.append(sandbox.sandbox_mode())
GOOD = sandbox.Program("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n")
BAD = sandbox.Program("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5\n")
LIMITS = {"timeout_s": 5.0}


def _bases() -> list[str]:
    """Folders the namespace sandbox covers or closes, where this user can create a folder."""
    out = []
    for base in ("/tmp", "/var/tmp", "/dev/shm", "/run", "/root"):
        if os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            out.append(base)
    return out


@pytest.fixture(scope="module")
def venvs():
    """One virtual environment (no pip: the sandbox needs the standard library only) per location, in a folder
    whose name has spaces."""
    made, dirs = {}, []
    for base in _bases():
        d = tempfile.mkdtemp(prefix="pi sandbox loc ", dir=base)
        dirs.append(d)
        env = os.path.join(d, "my venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True, timeout=120)
        made[base] = os.path.join(env, "bin", "python")
    yield made
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def test_there_are_covered_locations_to_test(venvs):
    assert "/tmp" in venvs  # a clone under /tmp is the first thing a new user tries


@pytest.mark.parametrize("mode", MODES)
def test_program_interpreter_in_a_covered_folder(venvs, mode):
    for base, python in venvs.items():
        for site in (False, True):
            limits = sandbox.Limits(python=python, site_packages=site, **LIMITS)
            good = sandbox.run_python(GOOD, limits, mode=mode)
            assert good.status == "passed", (base, mode, site, good.reason)
            bad = sandbox.run_python(BAD, limits, mode=mode)
            assert bad.status == "assertion_error", (base, mode, site, bad.reason)
        # it runs the interpreter named (as named: the venv's, with its pyvenv.cfg), and it sees it, and the
        # folders recreated around it, read-only (a raw write, past the Python-level guard, is refused)
        env = os.path.dirname(os.path.dirname(python))
        targets = [env + "/x", os.path.dirname(env) + "/y"]
        probe = (f"import sys, _io\nprint(sys.executable)\nfor t in {targets!r}:\n    try:\n"
                 "        _io.FileIO(t, 'w')\n        print('WROTE', t)\n    except OSError as e:\n"
                 "        print('refused', e.errno)\n")
        res = sandbox.run_python(probe, sandbox.Limits(python=python, **LIMITS), mode=mode)
        assert res.status == "passed", (base, mode, res.reason)
        lines = res.stdout.splitlines()
        assert lines[0] == python, (base, mode, res.stdout)
        # EROFS: a read-only mount (userns, where the program has the uid that created them); or EACCES
        assert all(x in ("refused 30", "refused 13") for x in lines[1:]) and len(lines) == 3, (base, mode, lines)
        if mode == "userns":
            assert lines[1:] == ["refused 30"] * 2, (base, lines)
        assert not any(os.path.exists(t) for t in targets)


SELF_TEST = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sb", {path!r}, submodule_search_locations=[{folder!r}])
sb = importlib.util.module_from_spec(spec); sys.modules["sb"] = sb; spec.loader.exec_module(sb)
out = {{}}
for site in (False, True):
    lim = sb.Limits(timeout_s=5.0, site_packages=site)
    good = sb.run_python(sb.Program("def f(x):\\n    return x + 1\\n", "assert f(1) == 2\\n"), lim)
    bad = sb.run_python(sb.Program("def f(x):\\n    return x\\n", "assert f(1) == 2\\n"), lim)
    out[str(site)] = [good.status, bad.status, good.reason]
print(json.dumps(out))
"""


def test_evaluator_running_from_a_covered_folder(venvs):
    """The original failure: the evaluator's own interpreter (sys.executable, sys.prefix) lives in the clone."""
    import json

    for base, python in venvs.items():
        res = subprocess.run([python, "-c", SELF_TEST.format(path=str(SANDBOX / "__init__.py"), folder=str(SANDBOX))],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
        assert res.returncode == 0, (base, res.stderr[-2000:])
        got = json.loads(res.stdout.strip().splitlines()[-1])
        for site, (good, bad, why) in got.items():
            assert (good, bad) == ("passed", "assertion_error"), (base, site, why)


def test_self_test_passes_and_names_the_cause_when_the_interpreter_is_hidden(tmp_path):
    assert sandbox_self_test(sandbox.Limits(**LIMITS)) in sandbox.MODES
    missing = str(tmp_path / "gone venv" / "bin" / "python")
    with pytest.raises(InfraError, match=r"cannot run code: a known-good program ended as sandbox_error.*gone venv"):
        sandbox_self_test(sandbox.Limits(python=missing, **LIMITS))
