"""Execution-based pass@1 for MBPP and HumanEval: each generation is turned into a program (extracted code +
the task's tests) and run in :mod:`tasks.sandbox`; a sample passes when every test assert passes."""

from __future__ import annotations

import re

from ..base import Example
from ..registry import register_metric
from ..sandbox import Limits, run_many
from .common import extract_python


def _limits(args: dict) -> Limits:
    keys = set(Limits.__dataclass_fields__)
    return Limits(**{k: v for k, v in args.items() if k in keys})


def _records(results, programs_meta) -> list[dict]:
    out = []
    for res, meta in zip(results, programs_meta, strict=True):
        out.append(
            {
                "pass@1": 1.0 if res.passed else 0.0,
                "status": res.status,
                "failure": None if res.passed else res.reason,
                "exec_s": res.duration_s,
                **meta,
            }
        )
    return out


def mbpp_program(solution: str, ex: Example, challenge: bool = False) -> str:
    tests = list(ex.meta["test_list"]) + (list(ex.meta.get("challenge_test_list") or []) if challenge else [])
    setup = ex.meta.get("test_setup_code") or ""
    # the setup code (MBPP 367, 927) builds objects with classes that the solution defines: it runs after it
    return f"{solution}\n\n{setup}\n" + "\n".join(tests) + "\n"


def _mbpp_function_name(ex: Example) -> str | None:
    m = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*(?:math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", ex.meta["test_list"][0])
    return m.group(1) if m else None


@register_metric("mbpp_pass_at_1")
def mbpp_pass_at_1(predictions: list[str], examples: list[Example], challenge_tests: bool = False,
                   workers: int | None = None, **limit_args) -> list[dict]:  # fmt: skip
    """pass@1 with the three MBPP test asserts (plus the challenge tests if ``challenge_tests``)."""
    programs, meta = [], []
    for pred, ex in zip(predictions, examples, strict=True):
        code = extract_python(pred, _mbpp_function_name(ex))
        programs.append(mbpp_program(code, ex, challenge_tests))
        meta.append({"id": ex.id})
    return _records(run_many(programs, _limits(limit_args), workers=workers), meta)


def humaneval_program(completion: str, ex: Example) -> str:
    prompt, entry = ex.meta["prompt"], ex.meta["entry_point"]
    code = extract_python(completion, entry)
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M):
        body = prompt + "\n    pass\n\n" + code  # a full function: the prompt keeps its imports/helpers
    else:
        body = prompt + completion  # a continuation of the prompt's function body
    return f"{body}\n\n{ex.meta['test']}\n\ncheck({entry})\n"


@register_metric("humaneval_pass_at_1")
def humaneval_pass_at_1(predictions: list[str], examples: list[Example], workers: int | None = None,
                        **limit_args) -> list[dict]:  # fmt: skip
    """pass@1: prompt + completion + the task's ``check`` function, as in openai/human-eval."""
    programs = [humaneval_program(p, ex) for p, ex in zip(predictions, examples, strict=True)]
    meta = [{"id": ex.id} for ex in examples]
    return _records(run_many(programs, _limits(limit_args), workers=workers), meta)
