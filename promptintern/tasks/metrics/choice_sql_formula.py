"""Multiple-choice accuracy (CosmosQA), Spider SQL match / execution accuracy, NL2Formula exact match."""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

from ...task_types import Example
from ..registry import register_metric
from .common import grouped_mean, mean_aggregate

LETTERS = "ABCDEFGH"


# ------------------------------------------------------------------------------------------- multiple choice
def extract_choice(text: str, n_choices: int, choices: list[str] | None = None) -> int | None:
    """The chosen option index in a generation: a letter (``B``, ``(B)``, ``B)``, ``Answer: B``, ``the answer is
    B``), else an option number 1..n (1-based, as printed to users), else the exact text of an option."""
    letters = LETTERS[:n_choices]
    t = text.strip()
    patterns = [
        rf"(?i:answer|option|choice)\s*(?i:is|:)?\s*\(?([{letters}{letters.lower()}])\b",
        rf"^\(?([{letters}])(?:[\).:]|\s|$)",
        rf"\(([{letters}])\)",
        rf"\b([{letters}])\b",
    ]
    for pat in patterns:
        m = re.search(pat, t)
        if m:
            return letters.index(m.group(1).upper())
    m = re.search(rf"\b([1-{n_choices}])\b", t)
    if m:
        return int(m.group(1)) - 1
    if choices:
        norm = " ".join(t.lower().split())
        for i, c in enumerate(choices):
            if norm == " ".join(c.lower().split()):
                return i
    return None


@register_metric("choice_accuracy")
def choice_accuracy(predictions: list[str], examples: list[Example], **_) -> list[dict]:
    out = []
    for pred, ex in zip(predictions, examples, strict=True):
        choices = ex.meta["choices"]
        idx = extract_choice(pred, len(choices), choices)
        out.append({"id": ex.id, "accuracy": float(idx == ex.meta["label"]), "extracted": idx})
    return out


# ------------------------------------------------------------------------------------------- Spider
def normalize_sql(sql: str) -> str:
    """Lower case outside string literals, ``"`` literals as ``'``, spaces around punctuation and operators
    normalised, trailing ``;`` dropped, ``AS`` aliases kept: a *normalised string* match (Spider's official
    component-wise exact match needs its SQL parser and is not reproduced)."""
    sql = sql.strip().rstrip(";").strip()
    parts = re.split(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")", sql)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 1:  # a literal
            inner = part[1:-1]
            out.append("'" + inner.lower() + "'")
        else:
            p = part.lower()
            p = re.sub(r"\s*([(),])\s*", r" \1 ", p)
            p = re.sub(r"\s*(!=|<>|>=|<=|=|<|>)\s*", r" \1 ", p)
            out.append(p)
    return " ".join("".join(out).split())


def _run_sql(db: Path, sql: str, timeout_s: float) -> list[tuple] | None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    try:
        return conn.execute(sql).fetchall()
    except (sqlite3.Error, ValueError, OverflowError):
        return None
    finally:
        conn.close()


def _same_result(pred: list[tuple], gold: list[tuple], ordered: bool) -> bool:
    if ordered:
        return pred == gold
    return Counter(map(repr, pred)) == Counter(map(repr, gold))


@register_metric("spider", version=2)
def spider_metrics(answers: list[str], examples: list[Example], db_dir: str | None = None,
                   timeout_s: float = 10.0, **_) -> list[dict]:  # fmt: skip
    """exact_match (normalised SQL string) always; execution_accuracy when the example's SQLite database is
    available (``<data dir>/spider/database/<db_id>/<db_id>.sqlite``; results compared as multisets unless
    the gold query has ORDER BY). Without the database the sample has ``execution_accuracy: None``."""
    out = []
    for sql, ex in zip(answers, examples, strict=True):
        rec = {
            "id": ex.id,
            "exact_match": float(normalize_sql(sql) == normalize_sql(ex.reference)),
            "execution_accuracy": None,
            "prediction": sql,
        }
        db = ex.meta.get("db_path")
        if db and Path(db).is_file():
            gold = _run_sql(Path(db), ex.reference, timeout_s)
            got = _run_sql(Path(db), sql, timeout_s) if sql else None
            if gold is not None:
                ordered = "order by" in ex.reference.lower()
                rec["execution_accuracy"] = float(got is not None and _same_result(got, gold, ordered))
        out.append(rec)
    return out


# ------------------------------------------------------------------------------------------- NL2Formula
def normalize_formula(f: str) -> str:
    """Whitespace outside string literals removed, leading ``=`` dropped, function names upper-cased."""
    f = f.strip().lstrip("=").strip()
    parts = re.split(r"(\"(?:[^\"]|\"\")*\")", f)
    return "".join(p if i % 2 else re.sub(r"\s+", "", p).upper() for i, p in enumerate(parts))


def formula_aggregate(per_sample: list[dict], **_) -> dict[str, float]:
    out = mean_aggregate(per_sample)
    out.update(grouped_mean(per_sample, "exact_match", "level"))
    return out


@register_metric("nl2formula", aggregate=formula_aggregate, version=2)
def nl2formula_metrics(answers: list[str], examples: list[Example], **_) -> list[dict]:
    """exact_match against ``Formula2`` after :func:`normalize_formula`; ``exact_match/level=<Level>`` in the
    aggregate."""
    out = []
    for got, ex in zip(answers, examples, strict=True):
        out.append(
            {
                "id": ex.id,
                "exact_match": float(normalize_formula(got) == normalize_formula(ex.reference)),
                "level": str(ex.meta.get("level", "unknown")),
            }
        )
    return out
