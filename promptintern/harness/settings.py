"""The experiment's sections as dataclasses: the one place their defaults (and what each key means) are written.

:data:`promptintern.harness.config.DEFAULTS` is :func:`experiment_defaults`: the plain dict an experiment file is
merged into, validated (``promptintern/harness/config.py``) and recorded in every result. The ``train`` section is
:class:`promptintern.trainer.TrainConfig`'s fields and the ``prompt`` section
:class:`promptintern.prompt_builder.PromptSettings`'s, so the library API (:mod:`promptintern.api`) and the harness
train and prompt with the same defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from promptintern.fields import boolean, integer, list_of, number, setting, text
from promptintern.generation import ENGINES
from promptintern.prompt_builder import PromptSettings
from promptintern.trainer import TrainConfig

BATCH_SIZES = "a non-empty list of integers >= 1 (write [8] for one)"

# TrainConfig fields that are not experiment settings: the harness sets them per stage.
PER_STAGE_TRAIN_FIELDS = ("seed", "progress", "max_steps")


@dataclass
class TaskSelection:
    """``tasks``: which tasks train and evaluate, and how many items of each."""

    train: list = field(default_factory=lambda: ["mbpp"])
    eval: str | list = "same"  # "same": each train task is also the eval task; or a list of eval tasks
    train_limit: int | None = 16
    test_limit: int | None = 10
    sample_seed: int = setting(0, spec=integer())
    # training items this similar to a test item (token-set Jaccard) are removed from training and the pool
    near_duplicate_threshold: float | None = setting(0.9, spec=number(0, 1, lo_open=True, null=True))
    stratify: dict = field(default_factory=dict)


@dataclass
class GenerationSettings:
    """``generation``: how evaluations generate and time their own answers."""

    # vllm: vLLM's server from its own environment (`make setup-vllm`; promptintern/vllm_engine.py)
    engine: str = setting("hf", spec=text(sorted((*ENGINES, "vllm"))))
    vllm_dtype: str = setting("bfloat16", spec=text(["bfloat16", "float16", "float32"]))
    # engine vllm: the share of items whose answer must equal transformers' generate to call them in agreement
    # (every disagreement is listed in the record whatever the rate)
    vllm_agreement_threshold: float = setting(0.8, spec=number(0, 1))
    batch_size: int = setting(8, spec=integer(1))
    max_new_tokens: int | None = None
    # per-evaluation timings (throughput and batch-1 latency of its own answers, below). With the engine
    # measurement on (`timing`), which times every condition on the same requests, turn these off; MetaTuner
    # units always time themselves (the engine unit cannot serve a per-query LoRA)
    measure: bool = setting(True, spec=boolean())
    throughput_batch_sizes: list = setting(factory=lambda: [1, 8], spec=list_of(integer(1), what=BATCH_SIZES))
    throughput_max_new_tokens: int = setting(16, spec=integer(1))
    throughput_repeats: int = setting(3, spec=integer(1))
    latency_samples: int = setting(3, spec=integer(0))
    latency_repeats: int = setting(3, spec=integer(1))
    latency_max_new_tokens: int | None = setting(None, spec=integer(1, null=True))
    exclusive_timing: bool = setting(True, spec=boolean())
    # serve every method that sends a fixed template with its recurring prefix's KV cache reused (encoded once):
    # its evaluation generates so (the same tokens), and the engine measurement times it cached and uncached
    prefix_cache: bool = setting(False, spec=boolean())


@dataclass
class TimingSettings:
    """``timing``: the engine measurement (``promptintern/harness/engine_unit.py``): per (model, eval task, seed),
    every serving condition decodes the same number of tokens on the same requests, at batch 1 and in static
    batches."""

    measure: bool = setting(True, spec=boolean())
    # L: tokens every request decodes (end of sequence ignored)
    max_new_tokens: int = setting(16, spec=integer(2))
    # batch-1 timed queries: the first test items (all, if fewer)
    queries: int = setting(20, spec=integer(1))
    repeats: int = setting(2, spec=integer(1))
    # each repeat cut into rounds; every condition times its share in every round (interleaved)
    rounds: int = setting(10, spec=integer(1))
    # the saturation sweep beyond batch 1
    batch_sizes: list[int] = setting(factory=lambda: [8], spec=list_of(
        integer(1), nonempty=False, what="a list of batch sizes >= 1 ([] for batch 1 only)"))
    # requests per batch size (the timed queries, cycled)
    sweep_requests: int = setting(16, spec=integer(1))
    # as-answered latency: decode up to the real answer's length (None: no cap, at least L)
    answered_max_tokens: int | None = setting(None, spec=integer(1, null=True))
    # the objective goodput counts
    slo: dict = setting(factory=lambda: {"ttft_s": 1.0, "tpot_s": 0.1},
                        keys={"ttft_s": number(0, lo_open=True), "tpot_s": number(0, lo_open=True)})
    # accuracy-qualified goodput: an item counts as correct from this score (None: the metric's best score)
    correct_at: float | None = setting(None, spec=number(null=True))
    exclusive: bool = setting(True, spec=boolean())  # hold the machine-wide timing lock
    # CPUs the unit asks Ray for (None: resources.num_cpus); all of a small machine
    num_cpus: float | None = setting(None, spec=number(0, lo_open=True, null=True, whole_above_1=True))

    @classmethod
    def from_dict(cls, d: dict | None) -> TimingSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})

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
    max_infra_failures: int = setting(0, spec=integer(0))


@dataclass
class ResourceSettings:
    """Per unit. Not part of unit ids."""

    num_cpus: float = setting(1, spec=number(0, whole_above_1=True))
    num_gpus: float = setting(0, spec=number(0, whole_above_1=True))
    # GiB of RAM Ray reserves for each unit (None: no reservation)
    memory: float | None = setting(None, spec=number(0, lo_open=True, null=True))


@dataclass
class RaySettings:
    address: str | None = setting(None, spec=text(null=True))
    num_cpus: int | None = setting(None, spec=integer(1, null=True))
    num_gpus: int | None = setting(None, spec=integer(0, null=True))


@dataclass
class ExperimentSettings:
    name: str = "experiment"
    results_dir: str = setting("results", spec=text())
    data_dir: str | None = setting(None, spec=text(null=True))
    # folders of the user's own task YAMLs (relative to the experiment file), as lm-eval's --include_path
    task_paths: list = field(default_factory=list)
    allow_task_shadowing: bool = setting(False, spec=boolean())
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
    retries: int = setting(2, spec=integer(0))


def train_section(cfg: TrainConfig) -> dict:
    """A :class:`TrainConfig` as an experiment's ``train`` section (the per-stage fields left out)."""
    return {k: v for k, v in asdict(cfg).items() if k not in PER_STAGE_TRAIN_FIELDS}


def experiment_defaults() -> dict:
    """The defaults of every experiment key, as the plain dict experiment files are merged into."""
    out = asdict(ExperimentSettings())
    out["train"] = train_section(TrainConfig())
    return out
