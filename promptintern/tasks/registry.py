"""Small name -> function registries for loaders, metrics and formatters.

A task YAML names its loader, its metric and (optionally) a formatter; each is a plain function registered
here with a decorator. Registries are dictionaries, nothing deeper:

    @register_loader("mbpp")
    def load_mbpp(data_dir, split, **args) -> list[Example]: ...

    @register_metric("exact_match")
    def exact_match(predictions, examples, **args) -> list[dict]: ...

Extractors turn a generation into the answer a metric scores (``tasks/extract.py``):

    @register_extractor("code")
    def extract_code(generation, example, **args) -> Extracted: ...

A metric may also register an ``aggregate`` function (per-sample dicts -> summary dict); the default
aggregate averages every numeric field over the samples that have it and adds ``n``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

LOADERS: dict[str, Callable] = {}
METRICS: dict[str, MetricSpec] = {}
EXTRACTORS: dict[str, ExtractorSpec] = {}
SPLIT_SIZES: dict[str, Callable] = {}


@dataclass(frozen=True)
class MetricSpec:
    name: str
    score: Callable  # (answers, examples, **args) -> list[dict]
    aggregate: Callable | None = None  # (per_sample, **args) -> dict
    version: int = 1  # bump when the scores it gives change: evaluations scored by another version re-run
    executes_code: bool = False  # runs answers in the sandbox: a grid using it self-tests the sandbox first


@dataclass(frozen=True)
class ExtractorSpec:
    name: str
    extract: Callable  # (generation, example, **args) -> promptintern.tasks.extract.Extracted
    version: int = 1


def register_loader(name: str):
    def deco(fn):
        if name in LOADERS and LOADERS[name] is not fn:
            raise ValueError(f"loader {name!r} registered twice")
        LOADERS[name] = fn
        return fn

    return deco


def register_metric(name: str, aggregate: Callable | None = None, version: int = 1, executes_code: bool = False):
    def deco(fn):
        if name in METRICS and METRICS[name].score is not fn:
            raise ValueError(f"metric {name!r} registered twice")
        METRICS[name] = MetricSpec(name, fn, aggregate, version, executes_code)
        return fn

    return deco


def register_extractor(name: str, version: int = 1):
    def deco(fn):
        if name in EXTRACTORS and EXTRACTORS[name].extract is not fn:
            raise ValueError(f"extractor {name!r} registered twice")
        EXTRACTORS[name] = ExtractorSpec(name, fn, version)
        return fn

    return deco


def metric_names() -> list[str]:
    """The registered metrics a task YAML can name (without the tasks' own metric files)."""
    ensure_builtins_registered()
    return sorted(n for n in METRICS if not n.startswith("file:"))


def ensure_builtins_registered() -> None:
    """Import the built-in loader and metric modules (each registers itself on import)."""
    from . import extract as _extract  # noqa: F401
    from . import loaders as _loaders  # noqa: F401
    from . import metrics as _metrics  # noqa: F401
