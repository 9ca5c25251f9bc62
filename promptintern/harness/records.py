"""The result records: one typed, versioned schema per record kind, each built by one function.

Every unit writes one JSON record (``results/<experiment>/runs/<unit id>.json``):

- :class:`StageRecord` (``kind: stage``): one fine-tuning stage — its adapter, training summary and the split of
  the stage's work (``work_seconds``: prompt building with compression and retrieval, teacher passes, training);
- :class:`EvalRecord` (``kind: eval``): one evaluation — every sample (prompt, tokens, generation, answer,
  score), the task's metrics and what generating them took. Evaluation units and MetaTuner units (``unit_kind``
  says which) write this kind; MetaTuner adds its own sections (``extra``). Records of schema 1 also carry
  per-unit timings (``measurements``), read as legacy as-answered latencies;
- :class:`EngineRecord` (``kind: engine``): the equal-length engine measurement of one (model, eval task, seed)
  group (:mod:`promptintern.harness.engine_unit`);
- a failure record (:func:`failure_record`): status "failed", never a valid result.

Readers get plain dicts (the JSON); the dataclasses fix the fields, their defaults and the derived ones
(``generations_sha256``, ``schema_version``) in one place. :data:`RECORD_KIND` maps a unit kind to the kind of
record it writes, success or failure.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
import traceback
from dataclasses import asdict, dataclass, field

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)  # schema 1: evaluation records with per-unit timings (generation.measure)
RECORD_KIND = {"stage": "stage", "eval": "eval", "metatuner": "eval", "engine": "engine"}


def generations_sha256(pairs) -> str:
    """sha256 of the (sample id, generation) pairs in order, as compact UTF-8 JSON."""
    blob = json.dumps([[str(i), str(g)] for i, g in pairs], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class TaskInfo:
    name: str
    primary_metric: str
    split: str | None = None


@dataclass
class EvalRecord:
    config: dict
    task: TaskInfo
    metrics: dict
    samples: list[dict]
    efficiency: dict
    meta: dict  # run_meta(): versions, git commit, hardware, Ray node
    unit_kind: str = "eval"
    adapter: str | None = None
    adapter_sha256: str | None = None
    model_info: dict = field(default_factory=dict)
    seconds_total: float = 0.0
    measurements: dict | None = None  # per-unit timings (schema 1, or generation.measure on)
    extra: dict = field(default_factory=dict)  # a unit kind's own sections (MetaTuner: metatuner, diagnostics)

    def to_dict(self) -> dict:
        out = {"kind": "eval", "unit_kind": self.unit_kind, "status": "ok", "config": self.config,
               "adapter": self.adapter, "task": asdict(self.task), "metrics": self.metrics,
               "efficiency": self.efficiency}
        if self.measurements is not None:
            out["measurements"] = self.measurements
        out.update({"model_info": self.model_info, "adapter_sha256": self.adapter_sha256,
                    "generations_sha256": generations_sha256((s["id"], s["generation"]) for s in self.samples),
                    "samples": self.samples, **self.extra, "seconds_total": self.seconds_total, **self.meta})
        return out


def eval_record(**kw) -> dict:
    """The one builder of evaluation records (evaluation and MetaTuner units, the leaderboard's re-derivation, the
    tests): :class:`EvalRecord`'s fields as keywords; ``task`` may be a TaskInfo or its dict."""
    task = kw.pop("task")
    kw["task"] = task if isinstance(task, TaskInfo) else TaskInfo(**task)
    return EvalRecord(**kw).to_dict()


def efficiency_summary(samples: list[dict], *, generation_seconds: float, batch_size: int, max_new_tokens: int,
                       **more) -> dict:
    """An evaluation record's ``efficiency`` section: the mean input and output tokens of its samples, the main
    run's wall time (what generating the answers took, batched: no per-query figure is derived from it), the
    compressor's seconds, and whatever the unit adds (``more``)."""
    n = len(samples)
    return {"n": n,
            "mean_input_tokens": statistics.fmean(s["tokens"]["model"] for s in samples) if n else 0.0,
            "mean_output_tokens": statistics.fmean(s["output_tokens"] for s in samples) if n else 0.0,
            "generation_seconds": generation_seconds,
            "compressor_seconds": sum(s.get("compressor_s") or 0.0 for s in samples),
            "generation_batch_size": batch_size, "max_new_tokens": max_new_tokens, **more}


@dataclass
class StageRecord:
    config: dict
    adapter_dir: str
    adapter_sha256: str | None
    init_adapter: str | None
    train: dict
    work_seconds: dict  # prompts (compression, retrieval), teacher, training, other: what the stage's work cost
    meta: dict
    seconds_total: float = 0.0

    def to_dict(self) -> dict:
        return {"kind": "stage", "status": "ok", "config": self.config, "adapter_dir": self.adapter_dir,
                "adapter_sha256": self.adapter_sha256, "init_adapter": self.init_adapter, "train": self.train,
                "work_seconds": self.work_seconds, "seconds_total": self.seconds_total, **self.meta}


def stage_record(**kw) -> dict:
    return StageRecord(**kw).to_dict()


@dataclass
class EngineRecord:
    config: dict
    settings: dict  # the timing settings applied (promptintern.harness.engine_unit.TimingSettings)
    conditions: list[dict]  # one per (evaluation, serving condition): its timed requests and batches
    meta: dict
    model_info: dict = field(default_factory=dict)
    timing_lock: dict = field(default_factory=dict)
    seconds_total: float = 0.0

    def to_dict(self) -> dict:
        return {"kind": "engine", "status": "ok", "config": self.config, "settings": self.settings,
                "conditions": self.conditions, "model_info": self.model_info, "timing_lock": self.timing_lock,
                "seconds_total": self.seconds_total, **self.meta}


def engine_record(**kw) -> dict:
    return EngineRecord(**kw).to_dict()


def failure_record(unit_id: str, unit_kind: str, config: dict, error: str, exc: BaseException | None = None, *,
                   attempts: int = 0, run_id: str | None = None, log: str | None = None) -> dict:
    """A failed unit's record: the kind its success would have had, status "failed" (never valid, so a later run
    retries it), the error and its traceback."""
    return {"schema_version": SCHEMA_VERSION, "unit_id": unit_id, "kind": RECORD_KIND.get(unit_kind, unit_kind),
            "unit_kind": unit_kind, "status": "failed", "error": error, "attempts": attempts, "run_id": run_id,
            "failed_at": time.time(), "log": log,
            "traceback": "".join(traceback.format_exception(exc))[-8000:] if exc is not None else None,
            "config": config}
