"""Near-duplicate detection between a task's test split and what enters training or the example pool.

Two records are near-duplicates when, for one of the task's comparison fields (``near_duplicates.fields`` in the
task YAML, format strings over the record; default the query and the reference), the Jaccard similarity of their
token sets reaches the threshold. Tokens are lower-cased words and single punctuation marks, which suits prose,
code and shell commands alike: MBPP test 248 and train 704 (same text, same function, same code) have similarity
1.0 on both fields; 216/872 (same problem text, other tests) 1.0 on the text.

Similarities come from one sparse matrix product per field (scipy), so a full split against a full split is fast
(NL2Bash: 8,772 × 678 pairs in well under a second).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..task_types import Example

_TOKEN = re.compile(r"\w+|[^\w\s]")
DEFAULT_FIELDS = ("{query}", "{reference}")


def token_set(text: str) -> set[str]:
    return set(_TOKEN.findall(text.lower()))


@dataclass(frozen=True)
class NearDuplicate:
    item_id: str  # the training / pool record removed
    test_id: str  # the test record it duplicates
    field: str  # the comparison field that matched
    similarity: float  # Jaccard similarity of the token sets

    def to_dict(self) -> dict:
        return {"id": self.item_id, "test_id": self.test_id, "field": self.field,
                "similarity": round(self.similarity, 4)}


def _incidence(token_sets: list[set[str]], vocab: dict[str, int]):
    import numpy as np

    rows, cols = [], []
    for i, toks in enumerate(token_sets):
        for t in toks:
            rows.append(i)
            cols.append(vocab.setdefault(t, len(vocab)))
    data = np.ones(len(rows), dtype=np.float32)
    return rows, cols, data


def best_matches(items: Sequence[str], tests: Sequence[str]) -> list[tuple[int, float]]:
    """For each item text, (index of the most similar test text, its Jaccard similarity); (-1, 0.0) when none
    shares a token."""
    import numpy as np
    from scipy.sparse import csr_matrix

    a_sets, b_sets = [token_set(t) for t in items], [token_set(t) for t in tests]
    if not a_sets or not b_sets:
        return [(-1, 0.0)] * len(a_sets)
    vocab: dict[str, int] = {}
    ra, ca, da = _incidence(a_sets, vocab)
    rb, cb, db = _incidence(b_sets, vocab)
    a = csr_matrix((da, (ra, ca)), shape=(len(a_sets), len(vocab)))
    b = csr_matrix((db, (rb, cb)), shape=(len(b_sets), len(vocab)))
    inter = (a @ b.T).tocsr()
    size_a = np.asarray(a.sum(axis=1)).ravel()
    size_b = np.asarray(b.sum(axis=1)).ravel()
    out = []
    for i in range(len(a_sets)):
        start, end = inter.indptr[i], inter.indptr[i + 1]
        if start == end:
            out.append((-1, 0.0))
            continue
        js = inter.indices[start:end]
        vals = inter.data[start:end]
        sims = vals / (size_a[i] + size_b[js] - vals)
        k = int(np.argmax(sims))
        out.append((int(js[k]), float(sims[k])))
    return out


def field_text(fmt: str, ex: Example) -> str:
    return fmt.format_map({"query": ex.query, "reference": ex.reference, "id": ex.id, "meta": ex.meta})


def near_duplicates(items: Sequence[Example], tests: Sequence[Example], threshold: float,
                    fields: Sequence[str] = DEFAULT_FIELDS,
                    test_fields: Sequence[str] | None = None) -> list[NearDuplicate]:
    """The ``items`` that are near-duplicates of some test record (the most similar field and test record for
    each). ``test_fields`` (default: ``fields``) lets records of another task be compared field by field."""
    test_fields = list(test_fields or fields)
    if len(test_fields) != len(fields):
        raise ValueError("fields and test_fields must pair up")
    best: dict[int, NearDuplicate] = {}
    for f_item, f_test in zip(fields, test_fields, strict=True):
        matches = best_matches([field_text(f_item, ex) for ex in items], [field_text(f_test, ex) for ex in tests])
        for i, (j, sim) in enumerate(matches):
            if j >= 0 and sim >= threshold and (i not in best or sim > best[i].similarity):
                best[i] = NearDuplicate(items[i].id, tests[j].id, f_item, sim)
    return [best[i] for i in sorted(best)]
