"""Metrics: executed pass@1 (MBPP, HumanEval), BLEU / exact match / utilities (NL2Bash), answer extraction
and normalisation (GSM8K, MATH), choice extraction (CosmosQA), SQL match and execution (Spider)."""

from __future__ import annotations

import sqlite3

import pytest

from promptintern.task_types import Example
from promptintern.tasks import get_task
from promptintern.tasks.extract import extract_code, fenced_blocks
from promptintern.tasks.metrics import choice_sql_formula as csf
from promptintern.tasks.metrics import math_answers as ma
from promptintern.tasks.metrics import text
from promptintern.tasks.metrics.common import mean_aggregate


# ------------------------------------------------------------------------------------------- code
def test_mbpp_canonical_solutions_pass(data):
    task = get_task("mbpp", data)
    sample = task.load("test")[::10]  # 50 problems across the test split
    assert len(sample) == 50
    per = task.score([task.format_target(e) for e in sample], sample)
    failed = [(p["id"], p["failure"]) for p in per if p["pass@1"] != 1.0]
    assert failed == []
    agg = task.aggregate(per)
    assert agg["pass@1"] == 1.0 and agg["n"] == 50


def test_mbpp_wrong_solutions_fail_with_reasons(data):
    task = get_task("mbpp", data)
    ex = task.load("test", limit=3)
    fn = ex[0].meta["test_list"][0].split("(")[0].replace("assert", "").strip()
    preds = [
        f"```python\ndef {fn}(*args):\n    return None\n```",  # wrong answer
        "```python\ndef broken(:\n```",  # syntax error
        "I cannot solve this.",  # no code at all
    ]
    per = task.score(preds, ex)
    assert [p["pass@1"] for p in per] == [0.0, 0.0, 0.0]
    assert per[0]["status"] == "assertion_error" and fn in per[0]["failure"]
    assert per[1]["status"] == "syntax_error"
    assert per[2]["status"] in ("syntax_error", "exception")
    assert task.aggregate(per)["pass@1"] == 0.0


def test_code_extraction():
    def code(text, name=None, **kw):
        return extract_code(text, Example("x", "q", "r", {"entry_point": name}), entry_meta="entry_point", **kw)

    gen = "Here is the code:\n```python\ndef f(x):\n    return x\n```\nAnd a test:\n```python\nprint(f(1))\n```"
    assert code(gen, "f").answer == "def f(x):\n    return x"
    assert code(gen, "f").how == "fenced block (python)" and code(gen, "f").failure is None
    # the block defining the function wins over an earlier one that does not
    assert code("```python\nprint(1)\n```\n```python\ndef f():\n    pass\n```", "f").answer == "def f():\n    pass"
    got = code("```python\ndef g():\n    return 2", "g")  # unclosed: runs to the end
    assert (got.answer, got.how) == ("def g():\n    return 2", "fenced block (python)")
    # bare code followed by a stray closing fence (and prose): the code before the fence
    for tail in ("\n```", "\n```\nThis returns three."):
        got = code("def h():\n    return 3" + tail, "h")
        assert (got.answer, got.how, got.failure) == ("def h():\n    return 3", "text before the first fence", None)
    assert code("def k():\n    return 4", "k").how == "raw text (no fence)"
    # failures say why
    assert code("I cannot solve this.", "f").failure == "no function 'f' is defined"
    assert code("```python\n```", "f").failure == "no code in the generation"
    assert code("   return x + 1", "f", continuation=True).failure is None  # HumanEval: a body continuing the prompt
    assert code("   return x + 1", "f", continuation=True).answer == "   return x + 1"  # indentation kept
    assert [(b.lang, b.closed) for b in fenced_blocks("```bash\nls\n```\n```\nx")] == [("bash", True), ("", False)]


def test_a_fenced_nl2bash_answer_scores_its_content():
    task = get_task("nl2bash")
    ref = "find . -name '*.txt'"
    gens = ["```bash\nfind . -name '*.txt'\n```\nThis finds the text files.", "```bash\n$ find . -name '*.txt'\n```",
            "find . -name '*.txt'\nExplanation follows", "```bash\n```", "",
            "```bash\n#!/bin/bash\n# list the text files\nfind . -name '*.txt'\n```"]
    per = task.score(gens, [_ex(ref)] * len(gens))
    assert [p["bleu"] for p in per[:3] + per[5:]] == [pytest.approx(100.0)] * 4
    assert [p["answer"] for p in per[:3] + per[5:]] == [ref] * 4  # comments and the shebang are not the command
    assert per[0]["extraction"] == "fenced block (bash), first line" and per[2]["extraction"].startswith("raw text")
    assert per[3]["extraction_failure"] == per[4]["extraction_failure"] == "no command in the generation"
    assert per[3]["bleu"] == per[4]["bleu"] == 0.0


def test_humaneval_canonical_solutions_pass_and_wrong_fail():
    task = get_task("humaneval")
    sample = task.load("test")[::8]  # 21 problems
    continuation = task.score([e.reference for e in sample], sample)  # prompt + body
    assert all(p["pass@1"] == 1.0 for p in continuation), [p for p in continuation if p["pass@1"] < 1]
    fenced = task.score([task.format_target(e) for e in sample[:5]], sample[:5])  # a full fenced function
    assert all(p["pass@1"] == 1.0 for p in fenced)
    wrong = task.score(["    return None\n"] * 3, sample[:3])
    assert all(p["pass@1"] == 0.0 and p["status"] in ("assertion_error", "exception") for p in wrong)


# ------------------------------------------------------------------------------------------- NL2Bash
def _ex(ref: str, **meta) -> Example:
    return Example("x", "q", ref, meta)


def test_bleu_of_identical_strings_is_100():
    for cmd in ("ls", "find . -name '*.txt' -exec rm {} \\;", "du -sh * | sort -h"):
        rec = text.nl2bash_metrics([cmd], [_ex(cmd)])[0]
        assert rec["bleu"] == pytest.approx(100.0)
        assert rec["exact_match"] == 1.0 and rec["utility_all"] == 1.0


def test_nl2bash_partial_credit():
    ref = "find . -type f -name '*.log' -delete"
    per = get_task("nl2bash").score(
        ["find . -name '*.log' -type f -exec rm {} +", "```bash\n$ grep -r foo .\n```", "find  . -type f -name '*.log'  -delete"],
        [_ex(ref)] * 3,
    )
    assert 0 < per[0]["bleu"] < 100 and per[0]["exact_match"] == 0.0
    assert per[0]["utility_first"] == 1.0 and per[0]["utility_all"] == 0.0  # find + rm vs find
    assert per[1]["prediction"] == "grep -r foo ." and per[1]["utility_first"] == 0.0
    assert per[2]["exact_match"] == 1.0  # whitespace-normalised
    agg = text.bleu_aggregate(per)
    assert agg["n"] == 3 and 0 < agg["corpus_bleu"] < 100 and agg["exact_match"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------- GSM8K
@pytest.mark.parametrize(
    "generation, expected",
    [
        ("She makes 9 * 2 = 18 dollars.\n#### 18", "18"),
        ("#### 1,234", "1,234"),
        ("The total is $1,234.00.", "$1,234.00"),
        ("So the answer is 42.", "42"),
        ("The answer is: -3.5 degrees", "-3.5"),
        ("First 3 apples, then 5 more, so 8 in total.", "8"),
        ("Therefore \\boxed{72}", "72"),
        ("no number here", None),
    ],
)
def test_gsm8k_extraction(generation, expected):
    assert ma.extract_gsm8k_answer(generation) == expected


def test_gsm8k_numeric_comparison():
    assert ma.gsm8k_equal("$1,234.00", "1234")
    assert ma.gsm8k_equal("1,234", "1234")
    assert ma.gsm8k_equal("18.", "18")
    assert not ma.gsm8k_equal("18", "17")
    assert not ma.gsm8k_equal(None, "1")
    exs = [_ex("x", answer="18"), _ex("x", answer="1234")]
    per = ma.gsm8k_accuracy(["#### 18", "It costs $1,234.00 in total."], exs)
    assert [p["accuracy"] for p in per] == [1.0, 1.0]


# ------------------------------------------------------------------------------------------- MATH
@pytest.mark.parametrize(
    "a, b, equal",
    [
        ("\\frac{1}{2}", "0.5", True),  # the reference maps exactly "0.5" to \frac{1}{2}
        ("\\frac12", "\\frac{1}{2}", True),
        ("\\dfrac{3}{4}", "\\frac{3}{4}", True),
        ("1/2", "\\frac{1}{2}", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
        ("90^\\circ", "90", True),
        ("\\$5", "5", True),
        ("x = 5", "5", True),
        ("\\sqrt2", "\\sqrt{2}", True),
        ("10\\%", "10", True),
        ("5 \\text{ cm}", "5", True),
        ("\\frac{1}{4}", "0.25", False),  # no numeric comparison in the reference
        ("2", "2.0", False),
        ("3", "4", False),
    ],
)
def test_math_is_equiv(a, b, equal):
    assert ma.is_equiv(a, b) is equal


def test_math_boxed_extraction():
    sol = "We get $x=\\frac{1}{2}$, so the answer is $\\boxed{\\frac{1}{2}}$. Also \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}"
    assert ma.last_boxed_content(sol) == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert ma.last_boxed_content("\\fbox{7}") == "7"
    assert ma.last_boxed_content("\\boxed 5$") == "5"
    assert ma.last_boxed_content("no box") is None
    exs = [_ex("s", answer="\\frac{1}{2}", level=2, subject="Algebra"), _ex("s", answer="3", level=5, subject="Geometry")]
    per = ma.math_accuracy(["so $\\boxed{0.5}$", "$\\boxed{4}$"], exs)
    agg = ma.math_aggregate(per)
    assert agg["accuracy"] == 0.5 and agg["accuracy/level=2"] == 1.0 and agg["accuracy/subject=Geometry"] == 0.0


def test_math500_references_are_self_consistent(data):
    task = get_task("math500", data)
    ex = task.load("test")
    per = task.score([e.reference for e in ex], ex)  # the reference solutions box the reference answers
    assert task.aggregate(per)["accuracy"] > 0.97


# ------------------------------------------------------------------------------------------- CosmosQA
@pytest.mark.parametrize(
    "generation, expected",
    [("B", 1), ("(C)", 2), ("D) He wants to go.", 3), ("The answer is A.", 0), ("answer: b", 1), ("3", 2),
     ("He wants to get married to a different person .", 1), ("I am not sure", None)],
)  # fmt: skip
def test_choice_extraction(generation, expected):
    choices = ["x", "He wants to get married to a different person .", "y", "z"]
    assert csf.extract_choice(generation, 4, choices) == expected


# ------------------------------------------------------------------------------------------- Spider / formulas
def test_spider_exact_and_execution_match(tmp_path):
    db = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE item(id INTEGER, name TEXT, price REAL);"
        "INSERT INTO item VALUES (1, 'pen', 1.5), (2, 'book', 12.0), (3, 'bag', 30.0);"
    )
    conn.commit()
    conn.close()
    ex = Example("s", "q", "SELECT name FROM item WHERE price > 10", {"db_path": str(db)})
    preds = [
        "select name from item where price>10;",  # same string after normalisation
        "SELECT name FROM item WHERE price >= 12",  # different string, same result
        "SELECT name FROM item",  # wrong
        "SELECT nonsense FROM nowhere",  # error
    ]
    per = csf.spider_metrics(preds, [ex] * 4)
    assert [p["exact_match"] for p in per] == [1.0, 0.0, 0.0, 0.0]
    assert [p["execution_accuracy"] for p in per] == [1.0, 1.0, 0.0, 0.0]
    no_db = csf.spider_metrics(["SELECT 1"], [Example("s", "q", "SELECT 1", {"db_path": None})])[0]
    assert no_db["execution_accuracy"] is None
    assert "execution_accuracy" not in mean_aggregate([no_db])


def test_formula_normalisation():
    assert csf.normalize_formula('=sumif(A2:A9, "Paris", B2:B9)') == 'SUMIF(A2:A9,"Paris",B2:B9)'
    assert csf.normalize_formula("=SUM(B2:B10)") == csf.normalize_formula("sum(b2:b10)")
    assert csf.normalize_formula('=COUNTIF(A:A,"a b")') != csf.normalize_formula('=COUNTIF(A:A,"ab")')


def test_mean_aggregate_counts_and_skips_non_numeric():
    agg = mean_aggregate([{"a": 1.0, "ok": True, "s": "x"}, {"a": 0.0, "ok": False, "b": None}])
    assert agg == {"a": 0.5, "ok": 0.5, "n": 2.0}
