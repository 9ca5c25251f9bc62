"""The task seam: what the harness and the methods need from a dataset, its template and its metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Example:
    """One dataset record, normalised.

    query:     what a user sends at inference time (problem statement, NL description, question...)
    reference: the gold output; the training target and the reference for reference-based metrics
    meta:      task-specific data a metric needs (MBPP's test asserts, a SQL db id, choices...)
    """

    id: str
    query: str
    reference: str
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    name: str
    template: str  # the long recurring instruction (+ documentation) that internalization removes
    primary_metric: str  # key of aggregate() used in the main tables
    max_new_tokens: int
    stop: list[str]
    train_split: str  # fine-tuning data and the few-shot example pool
    test_split: str

    def load(self, split: str, limit: int | None = None) -> list[Example]: ...

    def split_sizes(self) -> dict[str, int]: ...

    def format_query(self, ex: Example) -> str: ...

    def format_demo(self, ex: Example) -> str: ...  # a few-shot demonstration: query + answer

    def format_target(self, ex: Example) -> str: ...  # the completion the model is trained to produce

    def score(self, predictions: list[str], examples: list[Example]) -> list[dict]: ...  # per sample

    def aggregate(self, per_sample: list[dict]) -> dict[str, float]: ...
