"""Infrastructure failures are never scores.

A sample can fail for a reason of the harness rather than of the answer: the code sandbox could not start
(``status: sandbox_error``: an interpreter it cannot see, namespaces refused, ...), or a metric raised. Such a
sample has no score: the code metrics record it with ``pass@1: None`` and its reason in ``infra_error``, and the
evaluation that holds it

- fails (the default, ``scoring.max_infra_failures: 0``): :func:`screen` raises :class:`InfraError`, naming how
  many samples, the first reason and the setting; the executor turns it into a failed unit (a FAILED row, never
  a score of 0.0);
- or, when the experiment allows up to ``scoring.max_infra_failures`` such samples, leaves them out of every mean
  and counts them: ``metrics["infra_excluded"]`` and the record's ``infra`` block (ids and reasons), shown in the
  tables' ``n`` column and in the report.

A stored record whose samples hold infrastructure failures it did not account for (written before this rule) is
not a valid result (:func:`unaccounted`), so a re-run evaluates it again.

:func:`sandbox_self_test` runs a known-good and a known-bad program in the sandbox; the harness's preflight calls
it before a grid whose evaluations execute code.
"""

from __future__ import annotations

import sys

from promptintern.errors import PromptInternError

INFRA_STATUSES = ("sandbox_error",)  # sandbox statuses that say nothing about the answer
SETTING = "scoring.max_infra_failures"


class InfraError(PromptInternError, RuntimeError):
    """An evaluation could not be scored for a reason of the harness (sandbox, metric), not of the answers."""


def _line(text) -> str:
    return " ".join(str(text).split())  # one line: a failed unit's error is the message's last line


def infra_reason(rec: dict) -> str | None:
    """Why a per-sample score record is an infrastructure failure (one line), or None when it is a score."""
    if not isinstance(rec, dict):
        return None
    if rec.get("infra_error"):
        return _line(rec["infra_error"])
    if rec.get("status") in INFRA_STATUSES:
        return _line(rec.get("failure") or rec["status"])
    return None


def score(task, generations: list[str], examples: list) -> list[dict]:
    """``task.score``; a metric that raises (other than a task-definition error, which names its field) fails the
    evaluation with an :class:`InfraError` naming the task and the metric, never a partial or zero score."""
    try:
        return task.score(generations, examples)
    except PromptInternError:
        raise
    except Exception as e:
        metric = getattr(getattr(task, "config", None), "metric", None) or "its"
        raise InfraError(f"task {task.name!r}: the {metric} metric raised {type(e).__name__}: {_line(e)}; no sample of "
                         "this evaluation was scored (an error of the harness, not of the answers)") from e


def screen(task, per_sample: list[dict], max_failures: int = 0) -> tuple[dict, dict | None]:
    """(the task's aggregate over the samples that were scored, the ``infra`` block or None). Raises
    :class:`InfraError` when more than ``max_failures`` samples are infrastructure failures."""
    bad = [(i, r) for i, rec in enumerate(per_sample) if (r := infra_reason(rec)) is not None]
    if len(bad) > int(max_failures or 0) or (bad and len(bad) == len(per_sample)):
        first = f"first: {per_sample[bad[0][0]].get('id', bad[0][0])}: {bad[0][1][:400]}"
        raise InfraError(
            f"task {task.name!r}: {len(bad)} of {len(per_sample)} samples could not be scored for a reason of the "
            f"harness, not of the answers ({first}). Fix the cause (for the code sandbox: "
            "`python -c 'from promptintern.tasks.infra import sandbox_self_test; sandbox_self_test()'` shows it), or allow up to "
            f"N such samples to be left out and counted with {SETTING}=N (now {int(max_failures or 0)})")
    if not bad:
        return task.aggregate(per_sample), None
    skip = {i for i, _ in bad}
    metrics = task.aggregate([rec for i, rec in enumerate(per_sample) if i not in skip])
    metrics["infra_excluded"] = float(len(bad))
    block = {"excluded": len(bad), "max_infra_failures": int(max_failures),
             "samples": [{"id": per_sample[i].get("id"), "reason": r[:300]} for i, r in bad]}
    return metrics, block


def unaccounted(record: dict) -> str | None:
    """Why a stored evaluation record is not a valid result: samples that are infrastructure failures which its
    ``infra`` block does not account for (a record written before failures were screened, its mean counting them
    as wrong answers). None when there is nothing wrong."""
    if record.get("kind") not in ("eval", "metatuner"):
        return None
    n = sum(1 for s in record.get("samples") or () if isinstance(s, dict) and infra_reason(s.get("score") or {}))
    if n and n != int((record.get("infra") or {}).get("excluded") or 0):
        return (f"{n} sample(s) ended in an infrastructure failure (e.g. sandbox_error) and were scored as wrong "
                "answers: not a result; the evaluation runs again")
    return None


def sandbox_self_test(limits=None, mode: str | None = None) -> str:
    """Run a known-good and a known-bad program in the code sandbox; raise :class:`InfraError` naming the cause
    when the good one does not pass or the bad one is not caught. Returns the mode it ran in."""

    from .sandbox import Limits, Program, run_python, sandbox_mode

    limits = limits or Limits()
    try:
        mode = mode or sandbox_mode()
    except ValueError as e:
        raise InfraError(f"code sandbox: {e}") from None
    python = limits.python or sys.executable
    good = run_python(Program("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n"), limits, mode=mode)
    bad = run_python(Program("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5\n"), limits, mode=mode)
    where = f"the code sandbox (mode {mode}, interpreter {python})"
    hint = ("; $PROMPTINTERN_SANDBOX_MODE picks another mode (namespace, userns, setuid, basic: see tasks/README.md, "
            "'The sandbox')")
    if not good.passed:
        raise InfraError(f"{where} cannot run code: a known-good program ended as {good.status}: "
                         f"{_line(good.reason)[:400]}{hint}")
    if bad.passed or bad.status != "assertion_error":
        raise InfraError(f"{where} does not report failures: a known-bad program ended as {bad.status} "
                         f"({_line(bad.reason)[:300]}) instead of assertion_error{hint}")
    return mode
