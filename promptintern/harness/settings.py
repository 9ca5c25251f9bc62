"""The experiment's sections as dataclasses: the one place their defaults (and what each key means) are written.

:data:`promptintern.harness.config.DEFAULTS` is :func:`experiment_defaults`: the plain dict an experiment file is
merged into, validated (``promptintern/harness/config.py``) and recorded in every result. The ``train`` section is
:class:`promptintern.trainer.TrainConfig`'s fields and the ``prompt`` section
:class:`promptintern.prompt_builder.PromptSettings`'s, so the library API (:mod:`promptintern.api`) and the harness
train and prompt with the same defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from promptintern.prompt_builder import PromptSettings
from promptintern.trainer import TrainConfig

# TrainConfig fields that are not experiment settings: the harness sets them per stage.
PER_STAGE_TRAIN_FIELDS = ("seed", "progress", "max_steps")


def _from_dict(cls, d: dict | None):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (d or {}).items() if k in names})


@dataclass
class TaskSelection:
    """``tasks``: which tasks train and evaluate, and how many items of each."""

    train: list = field(default_factory=lambda: ["mbpp"])
    eval: str | list = "same"  # "same": each train task is also the eval task; or a list of eval tasks
    train_limit: int | None = 16
    test_limit: int | None = 10
    sample_seed: int = 0
    # training items this similar to a test item (token-set Jaccard) are removed from training and the pool
    near_duplicate_threshold: float | None = 0.9
    stratify: dict = field(default_factory=dict)


@dataclass
class GenerationSettings:
    """``generation``: how evaluations generate and time their own answers."""

    engine: str = "hf"
    batch_size: int = 8
    max_new_tokens: int | None = None
    # per-evaluation timings (throughput and batch-1 latency of its own answers, below). With the engine
    # measurement on (`timing`), which times every condition on the same requests, turn these off; MetaTuner
    # units always time themselves (the engine unit cannot serve a per-query LoRA)
    measure: bool = True
    throughput_batch_sizes: list = field(default_factory=lambda: [1, 8])
    throughput_max_new_tokens: int = 16
    throughput_repeats: int = 3
    latency_samples: int = 3
    latency_repeats: int = 3
    latency_max_new_tokens: int | None = None
    exclusive_timing: bool = True
    # serve every method that sends a fixed template with its recurring prefix's KV cache reused (encoded once):
    # its evaluation generates so (the same tokens), and the engine measurement times it cached and uncached
    prefix_cache: bool = False


@dataclass
class TimingSettings:
    """``timing``: the engine measurement (``promptintern/harness/engine_unit.py``): per (model, eval task, seed),
    every serving condition decodes the same number of tokens on the same requests, at batch 1 and in static
    batches."""

    measure: bool = True
    max_new_tokens: int = 16  # L: tokens every request decodes (end of sequence ignored)
    queries: int = 20  # batch-1 timed queries: the first test items (all, if fewer)
    repeats: int = 2
    rounds: int = 10  # each repeat cut into rounds; every condition times its share in every round (interleaved)
    batch_sizes: list[int] = field(default_factory=lambda: [8])  # the saturation sweep beyond batch 1
    sweep_requests: int = 16  # requests per batch size (the timed queries, cycled)
    # as-answered latency: decode up to the real answer's length (None: no cap, at least L)
    answered_max_tokens: int | None = None
    slo: dict = field(default_factory=lambda: {"ttft_s": 1.0, "tpot_s": 0.1})  # the objective goodput counts
    # accuracy-qualified goodput: an item counts as correct from this score (None: the metric's best score)
    correct_at: float | None = None
    exclusive: bool = True  # hold the machine-wide timing lock
    num_cpus: float | None = None  # CPUs the unit asks Ray for (None: resources.num_cpus); all of a small machine

    @classmethod
    def from_dict(cls, d: dict | None) -> TimingSettings:
        return _from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """What the measurement depends on (execution settings left out, like ``resources``)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("measure", "exclusive", "num_cpus")}


@dataclass
class ScoringSettings:
    # samples that fail for a reason of the harness (sandbox_error, ...) an evaluation may leave out (counted in
    # its record, the tables and the report); more fail the evaluation. 0: any such sample fails it
    # (promptintern/tasks/infra.py)
    max_infra_failures: int = 0


@dataclass
class ResourceSettings:
    """Per unit. Not part of unit ids."""

    num_cpus: float = 1
    num_gpus: float = 0
    memory: float | None = None  # GiB of RAM Ray reserves for each unit (None: no reservation)


@dataclass
class RaySettings:
    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None


@dataclass
class ExperimentSettings:
    name: str = "experiment"
    results_dir: str = "results"
    data_dir: str | None = None
    # folders of the user's own task YAMLs (relative to the experiment file), as lm-eval's --include_path
    task_paths: list = field(default_factory=list)
    allow_task_shadowing: bool = False
    models: list = field(default_factory=lambda: ["smollm2-135m"])
    tasks: TaskSelection = field(default_factory=TaskSelection)
    methods: list = field(default_factory=lambda: [{"name": "full_prompt_ft"}, {"name": "query_only_ft"}])
    seeds: list = field(default_factory=lambda: [0])
    prompt: PromptSettings = field(default_factory=PromptSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    timing: TimingSettings = field(default_factory=TimingSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    resources: ResourceSettings = field(default_factory=ResourceSettings)
    ray: RaySettings = field(default_factory=RaySettings)
    retries: int = 2


def train_section(cfg: TrainConfig) -> dict:
    """A :class:`TrainConfig` as an experiment's ``train`` section (the per-stage fields left out)."""
    return {k: v for k, v in asdict(cfg).items() if k not in PER_STAGE_TRAIN_FIELDS}


def experiment_defaults() -> dict:
    """The defaults of every experiment key, as the plain dict experiment files are merged into."""
    out = asdict(ExperimentSettings())
    out["train"] = train_section(TrainConfig())
    return out
