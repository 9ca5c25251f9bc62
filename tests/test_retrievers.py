"""Retrievers: self-exclusion, pool leak checks, BM25 relevance, determinism, dense offline."""

from __future__ import annotations

import pytest

from promptintern.errors import ConfigError
from promptintern.retrievers import (
    RETRIEVERS,
    PoolLeakError,
    bm25_tokenize,
    build_index,
    build_pool,
    check_pool,
    get_retriever,
)
from promptintern.task_types import Example


def ex(i, query, ref="") -> Example:
    return Example(id=f"train-{i}", query=query, reference=ref)


POOL = [
    ex(0, "find all text files in the current directory and delete them"),
    ex(1, "count the number of lines in every python file recursively"),
    ex(2, "compress the folder logs into a gzip tar archive named logs.tar.gz"),
    ex(3, "show disk usage of the home directory in human readable form"),
    ex(4, "list running processes sorted by memory usage"),
    ex(5, "print the first 10 lines of the file data.csv"),
    ex(6, "search for the word error in all log files ignoring case"),
    ex(7, "change permissions of script.sh to make it executable"),
]
TEST = [Example(id="test-0", query="extract the tar archive backup.tar.gz", reference="")]


@pytest.mark.parametrize("name", ["bm25", "random"])
def test_never_retrieves_itself(name):
    r = get_retriever(name)
    for item in POOL:
        got = r.top_k(item.query, POOL, k=len(POOL), exclude_ids=(item.id,))
        assert item not in got and len(got) == len(POOL) - 1
    assert POOL[0] not in r.top_k(POOL[0].query + " x", POOL, k=8, exclude_ids=POOL[0].id)  # a bare id string
    # Same query text under another id is excluded too (duplicates across records).
    dup = POOL + [
        Example(
            id="train-dup",
            query="  count the number of lines in every python   file recursively",
            reference="",
        )
    ]
    got = r.top_k(POOL[1].query, dup, k=20, exclude_ids=(POOL[1].id,))
    assert all(g.id not in {"train-1", "train-dup"} for g in got)


def test_bm25_finds_the_relevant_item_and_tokenization():
    assert bm25_tokenize("Tar -xzf backup.tar.gz; file_name!") == [
        "tar",
        "xzf",
        "backup",
        "tar",
        "gz",
        "file_name",
    ]
    r = get_retriever("bm25")
    assert r.top_k("make a gzip tar archive of logs", POOL, k=1)[0].id == "train-2"
    assert r.top_k("grep error in log files", POOL, k=1)[0].id == "train-6"
    assert [e.id for e in r.top_k("lines", POOL, k=3)][0] in {"train-1", "train-5"}


def test_index_is_built_once_and_is_deterministic(monkeypatch):
    r = get_retriever("bm25")
    calls = []
    real_fit = r.fit
    monkeypatch.setattr(r, "fit", lambda pool: calls.append(1) or real_fit(pool))
    a = [e.id for e in r.top_k("unrelated words entirely", POOL, k=8)]
    b = [e.id for e in r.top_k("unrelated words entirely", list(POOL), k=8)]
    r.top_k("another query", POOL, k=2)
    assert len(calls) == 1
    assert a == b == [e.id for e in POOL]  # all scores tie at 0: pool order
    idx = build_index("bm25", POOL, TEST)
    assert [e.id for e in idx.top_k("delete text files", 2)] == [
        e.id for e in r.top_k("delete text files", POOL, 2)
    ]
    many = idx.top_k_many(["delete text files", POOL[4].query], 2, exclude_ids=[(), (POOL[4].id,)])
    assert many[0] == idx.top_k("delete text files", 2) and POOL[4] not in many[1]


def test_edge_k():
    r = get_retriever("bm25")
    assert r.top_k("files", POOL, 0) == []
    assert len(r.top_k("files", POOL, 100)) == len(POOL)
    assert r.top_k("files", [], 3) == []
    assert [e.id for e in get_retriever("bm25").top_k("x", [ex(0, "!!!")], 1)] == [
        "train-0"
    ]  # no tokens at all


def test_random_is_seeded_per_query():
    a = get_retriever("random", seed=1)
    b = get_retriever("random", seed=1)
    c = get_retriever("random", seed=2)
    q = "some query"
    ids = lambda r: [e.id for e in r.top_k(q, POOL, 8)]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)


def test_test_items_never_in_pool():
    assert build_pool(POOL, TEST) == POOL
    with pytest.raises(PoolLeakError):
        build_pool(POOL + TEST, TEST)
    same_query = Example(id="other", query=" extract the tar archive  backup.tar.gz ", reference="")
    with pytest.raises(PoolLeakError):
        check_pool(POOL + [same_query], TEST)
    assert build_pool(POOL + [same_query] + TEST, TEST, on_overlap="drop") == POOL
    with pytest.raises(PoolLeakError):
        build_index("bm25", POOL + TEST, TEST)
    with pytest.raises(ConfigError):
        build_pool(POOL, TEST, on_overlap="ignore")
    with pytest.raises(ConfigError):
        get_retriever("nope")
    assert set(RETRIEVERS) >= {"bm25", "dense", "random"}


def test_dense_offline():
    r = get_retriever("dense")
    idx = r.fit(POOL)
    got = idx.top_k("how do I pack a directory into a .tar.gz file", 2)
    assert got[0].id == "train-2"
    assert POOL[3] not in idx.top_k(POOL[3].query, 8, exclude_ids=(POOL[3].id,))
    batch = idx.top_k_many(
        ["how do I pack a directory into a .tar.gz file", "which programs use the most RAM"], 1
    )
    assert batch[0][0].id == "train-2" and batch[1][0].id == "train-4"
