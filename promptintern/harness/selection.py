"""Which items a grid trains on, tests on and retrieves from: the same for every method, seeded, recorded.

For every task of a grid:

- **near-duplicates out** (``tasks.near_duplicate_threshold``, default 0.9; null turns the guard off): every
  training-split record that is a near-duplicate (:mod:`promptintern.tasks.contamination`) of a record of its own test split,
  or (with a list in ``tasks.eval``) of the test split of any task its models are evaluated on, is removed from
  training and from the example pool;
- **test items**: ``tasks.test_limit`` records (a number, or a mapping task -> number) drawn from the test split at random with ``tasks.sample_seed``
  (all of them when the limit is null), in file order;
- **training items**: ``tasks.train_limit`` records drawn the same way from what remains of the training split.

``tasks.stratify`` maps a task to a field of its records' ``meta`` (``{nl2bash: utilities}``: a list's first
element is used): the draw then keeps each stratum's share, largest remainders first. Draws are seeded by
(seed, task, split) with Python's string seeding, so they do not depend on the process or on other tasks.

The plan computes the selection once; units receive the ids (``Unit.inputs``) and their configs carry the
selection's content hashes, so a changed selection changes exactly the units that use it; ``selection.json``
beside the results records every id and every removed near-duplicate with the test item it duplicates.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from promptintern.hashing import content_id
from promptintern.tasks.contamination import near_duplicates

DEFAULT_THRESHOLD = 0.9


@dataclass
class TaskSelection:
    task: str
    train_ids: list[str] = field(default_factory=list)  # the training items, in file order
    test_ids: list[str] = field(default_factory=list)  # the test items, in file order
    removed: list[dict] = field(default_factory=list)  # near-duplicates taken out of training and the pool
    pool_size: int = 0  # training split minus the removed records: the example pool
    train_split_size: int = 0
    test_split_size: int = 0

    @property
    def removed_ids(self) -> list[str]:
        return [r["id"] for r in self.removed]

    def inputs(self) -> dict:
        """What a unit needs to rebuild its data: the ids (its config carries only their hashes)."""
        return {"train_ids": self.train_ids, "test_ids": self.test_ids, "removed_ids": self.removed_ids}

    def identity(self) -> dict:
        """Content hashes and counts of the selection, for unit configs (ids are in selection.json)."""
        return {"train": content_id(self.train_ids), "test": content_id(self.test_ids),
                "removed": content_id(self.removed_ids), "n_train": len(self.train_ids),
                "n_test": len(self.test_ids), "n_removed": len(self.removed), "pool": self.pool_size}

    def to_dict(self) -> dict:
        return asdict(self)


def _stratum(ex, key: str | None) -> str:
    if not key:
        return ""
    v = ex.meta.get(key)
    if isinstance(v, list | tuple):
        v = v[0] if v else None
    return str(v)


def draw(examples: list, n: int | None, seed: int, name: str, stratify: str | None = None) -> list[str]:
    """Ids of ``n`` of ``examples`` drawn at random (all when n is None or >= len), in file order; stratified by
    ``meta[stratify]`` when given (proportional allocation, largest remainders)."""
    if n is None or n >= len(examples):
        return [ex.id for ex in examples]
    rng = random.Random(f"{seed}/{name}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[_stratum(ex, stratify)].append(i)
    keys = sorted(groups)
    quota = {k: n * len(groups[k]) / len(examples) for k in keys}
    take = {k: int(quota[k]) for k in keys}
    for k in sorted(keys, key=lambda k: (-(quota[k] - take[k]), k))[: n - sum(take.values())]:
        take[k] += 1
    chosen: list[int] = []
    for k in keys:
        idx = list(groups[k])
        rng.shuffle(idx)
        chosen += idx[: take[k]]
    return [examples[i].id for i in sorted(chosen)]


def limit_for(value, task: str) -> int | None:
    """A ``tasks.train_limit`` / ``test_limit`` value for one task: a number, null, or a mapping task -> either."""
    return value.get(task) if isinstance(value, dict) else value


def select(cfg: dict, tasks_by_name: dict) -> dict[str, TaskSelection]:
    """The grid's selection for every task in ``tasks_by_name`` (name -> YamlTask); see the module docstring."""
    t = cfg["tasks"]
    seed = int(t.get("sample_seed", 0))
    threshold = t.get("near_duplicate_threshold", DEFAULT_THRESHOLD)
    stratify = t.get("stratify") or {}
    ev = t["eval"]
    cross = [] if ev == "same" else list(ev)  # with "same", a task's models are tested on its own split only
    out: dict[str, TaskSelection] = {}
    for name, task in tasks_by_name.items():
        test = task.load(task.test_split)
        train = task.load(task.train_split) if task.train_split else []
        removed: dict[str, dict] = {}
        if threshold is not None and train:
            # its own test split, and those of the tasks the grid evaluates on (a cross-domain test item must not
            # be trained on either)
            others = [n for n in dict.fromkeys([name, *cross]) if n in tasks_by_name]
            for other in others:
                o = tasks_by_name[other]
                for d in near_duplicates(train, o.load(o.test_split), float(threshold),
                                         task.config.near_duplicate_fields, o.config.near_duplicate_fields):
                    if d.item_id not in removed:
                        removed[d.item_id] = {**d.to_dict(), "test_task": other}
        pool = [ex for ex in train if ex.id not in removed]
        out[name] = TaskSelection(
            task=name,
            train_ids=draw(pool, limit_for(t.get("train_limit"), name), seed, f"{name}/{task.train_split}",
                           stratify.get(name)),
            test_ids=draw(test, limit_for(t.get("test_limit"), name), seed, f"{name}/{task.test_split}",
                          stratify.get(name)),
            removed=sorted(removed.values(), key=lambda r: r["id"]),
            pool_size=len(pool),
            train_split_size=len(train),
            test_split_size=len(test),
        )
    return out


@dataclass
class UnitItems:
    """A unit's data, rebuilt from its inputs: the example pool (training split minus near-duplicates), the
    training items, the test items, and the whole test split (which must never enter the pool)."""

    task: object
    pool: list
    train: list
    test: list
    test_split: list


def unit_items(task, inputs: dict | None) -> UnitItems:
    """``inputs``: one task's entry of ``Unit.inputs`` (None: every record, no guard — a unit planned by hand)."""
    train_all = task.load(task.train_split) if task.train_split else []
    test_all = task.load(task.test_split)
    if inputs is None:
        return UnitItems(task, train_all, train_all, test_all, test_all)
    removed = set(inputs.get("removed_ids") or [])
    pool = [ex for ex in train_all if ex.id not in removed]
    by_train = {ex.id: ex for ex in pool}
    by_test = {ex.id: ex for ex in test_all}
    missing = [i for i in inputs.get("train_ids") or [] if i not in by_train] + \
              [i for i in inputs.get("test_ids") or [] if i not in by_test]
    if missing:
        raise ValueError(f"task {task.name!r}: planned item ids not in the data: {missing[:5]} (data changed since "
                         "the plan? plan again)")
    train = [by_train[i] for i in inputs["train_ids"]] if inputs.get("train_ids") is not None else pool
    test = [by_test[i] for i in inputs["test_ids"]] if inputs.get("test_ids") is not None else test_all
    return UnitItems(task, pool, train, test, test_all)
