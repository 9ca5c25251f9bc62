"""MBPP (Austin et al. 2021), the authors' ``mbpp.jsonl`` (974 problems, task_id 1-974).

Standard splits by task_id, as in the authors' README: prompt 1-10, test 11-510, validation 511-600,
train 601-974 -> prompt 10, test 500, validation 90, train 374.

Query: the problem text plus the first ``num_tests_in_query`` test asserts under the line
"Your code should pass these tests:" (the MBPP paper's prompt wording; the paper shows all three, the default
here shows one so that the function name and signature are known while two asserts stay hidden).
Reference: the authors' ``code`` (CRLF normalised to LF). Meta: test_list, test_setup_code, challenge_test_list,
and entry_point: the function the first test assert calls (what the answer must define).
"""

from __future__ import annotations

import re
from pathlib import Path

from promptintern.errors import ConfigError, DataFormatError

from ...task_types import Example
from ..registry import register_loader
from .common import find_file, hub_records, read_jsonl, require

MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
FIELDS = {"text": str, "code": str, "task_id": int, "test_list": list}


def mbpp_query(text: str, tests: list[str], num_tests: int) -> str:
    shown = tests[:num_tests]
    if not shown:
        return text.strip()
    return text.strip() + "\nYour code should pass these tests:\n\n" + "\n".join(shown)


def mbpp_function_name(test_assert: str) -> str | None:
    """The function an MBPP test assert calls (``assert func(...) == ...``, also under not/set/math.isclose)."""
    m = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*(?:math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", test_assert)
    return m.group(1) if m else None


def _records(data_dir, path: str, hub: dict | None):
    found = find_file(data_dir, path, "mbpp", hub)
    if found is None:  # hub fallback: same fields as the jsonl, spread over its own splits
        for recs in hub_records("mbpp", hub).values():
            for rec in recs:
                yield "hub:" + hub["path"], rec["task_id"], rec
        return
    for lineno, rec in read_jsonl(found):
        require(rec, FIELDS, found, lineno)
        yield found, lineno, rec


@register_loader("mbpp")
def load_mbpp(
    data_dir: Path | None,
    split: str,
    path: str = "mbpp/mbpp.jsonl",
    num_tests_in_query: int = 1,
    hub: dict | None = None,
) -> list[Example]:
    if split not in MBPP_SPLITS:
        raise ConfigError("split", f"MBPP has splits {sorted(MBPP_SPLITS)}, not {split!r}")
    lo, hi = MBPP_SPLITS[split]
    out: dict[int, Example] = {}
    for src, lineno, rec in _records(data_dir, path, hub):
        tid = rec["task_id"]
        if not lo <= tid <= hi:
            continue
        if tid in out:
            raise DataFormatError(src, lineno, f"duplicate task_id {tid}")
        tests = [str(t) for t in rec["test_list"]]
        out[tid] = Example(
            id=f"mbpp/{tid}",
            query=mbpp_query(rec["text"], tests, num_tests_in_query),
            reference=rec["code"].replace("\r\n", "\n").rstrip(),
            meta={
                "task_id": tid,
                "text": rec["text"],
                "test_list": tests,
                "test_setup_code": (rec.get("test_setup_code") or "").replace("\r\n", "\n"),
                "challenge_test_list": list(rec.get("challenge_test_list") or []),
                "entry_point": mbpp_function_name(tests[0]) if tests else None,
            },
        )
    return [out[k] for k in sorted(out)]
