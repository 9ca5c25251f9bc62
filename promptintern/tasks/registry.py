"""The tasks' registries: loaders, metrics and extractors (:class:`promptintern.registry.Registry`).

A task YAML names its loader, its metric and (optionally) an extractor; each is a plain function registered
here with a decorator; the built-in modules register themselves when a registry is first read:

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

from ..registry import Registry

# The modules that register the built-in loaders, metrics and extractors (imported on a registry's first use).
BUILTIN_MODULES = ("promptintern.tasks.extract", "promptintern.tasks.loaders", "promptintern.tasks.metrics")
LOADERS: Registry[Callable] = Registry("loader", plugins=BUILTIN_MODULES)
METRICS: Registry[MetricSpec] = Registry("metric", plugins=BUILTIN_MODULES, same=lambda a, b: a.score is b.score)
EXTRACTORS: Registry[ExtractorSpec] = Registry("extractor", field="extract", plugins=BUILTIN_MODULES,
                                               same=lambda a, b: a.extract is b.extract)


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
    return LOADERS.register(name)


def register_metric(name: str, aggregate: Callable | None = None, version: int = 1, executes_code: bool = False):
    return METRICS.register(name, wrap=lambda fn: MetricSpec(name, fn, aggregate, version, executes_code))


def register_extractor(name: str, version: int = 1):
    return EXTRACTORS.register(name, wrap=lambda fn: ExtractorSpec(name, fn, version))


def metric_names() -> list[str]:
    """The registered metrics a task YAML can name (without the tasks' own metric files)."""
    ensure_builtins_registered()
    return sorted(n for n in METRICS if not n.startswith("file:"))


def ensure_builtins_registered() -> None:
    """Import the built-in loader, metric and extractor modules (each registers itself on import)."""
    for registry in (LOADERS, METRICS, EXTRACTORS):
        registry.load_plugins()
