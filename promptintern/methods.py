"""Methods: how a (task, schedule, rate) becomes training stages and a test-time prompting rule.

Every method is declarative: a list of prompt rules, one per fine-tuning stage (empty = no fine-tuning), and
the rule used at test time. A rule says which fraction of the template's tokens is kept (1 = full template,
0 = none, in between = compressed by the configured compressor) and how many retrieved examples are included.

The compression ``rate`` of a grid point is the template keep rate of PromptIntern's first stage; the schedule
scales it down stage by stage (template_rate_t = rate · S_t, examples ⌊K·S_t⌋) to the query-only last stage.
``rate = 1`` is progressive example absorption and template dropping without compression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .errors import ConfigError
from .schedules import DEFAULT_LAMBDA, plan_stages


@dataclass(frozen=True)
class PromptRule:
    template_rate: float  # fraction of template tokens kept; 0 = no template
    n_examples: int  # retrieved few-shot examples included

    @property
    def query_only(self) -> bool:
        return self.template_rate <= 0 and self.n_examples == 0


@dataclass(frozen=True)
class MethodSpec:
    """One grid point of a method: its name and the knobs that matter to it."""

    name: str
    schedule: str | None = None
    rate: float = 1.0
    stages: int = 1
    lam: float = DEFAULT_LAMBDA
    k_examples: int = 1
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        parts = [self.name]
        if self.schedule:
            parts.append(f"{self.schedule}-T{self.stages}")
        if self.name in RATE_METHODS:
            parts.append(f"r{self.rate:g}")
        return "/".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MethodPlan:
    train: list[PromptRule]
    test: PromptRule
    test_compressed: bool = False  # the compressor runs at inference (its time counts)


def _full(spec: MethodSpec) -> PromptRule:
    return PromptRule(1.0, spec.k_examples)


def full_prompt_ft(spec: MethodSpec) -> MethodPlan:
    return MethodPlan(train=[_full(spec)], test=_full(spec))


def query_only_ft(spec: MethodSpec) -> MethodPlan:
    return MethodPlan(train=[PromptRule(0.0, 0)], test=PromptRule(0.0, 0))


def few_shot(spec: MethodSpec) -> MethodPlan:
    return MethodPlan(train=[], test=_full(spec))


def compress_at_inference(spec: MethodSpec) -> MethodPlan:
    return MethodPlan(train=[], test=PromptRule(spec.rate, spec.k_examples), test_compressed=spec.rate < 1)


def promptintern(spec: MethodSpec) -> MethodPlan:
    if not spec.schedule:
        raise ConfigError("methods.promptintern.schedule", "PromptIntern needs a schedule")
    plans = plan_stages(spec.schedule, spec.stages, spec.k_examples, lam=spec.lam, template_ceiling=spec.rate)
    return MethodPlan(train=[PromptRule(p.template_rate, p.n_examples) for p in plans], test=PromptRule(0.0, 0))


METHODS: dict[str, Callable[[MethodSpec], MethodPlan]] = {
    "full_prompt_ft": full_prompt_ft,
    "query_only_ft": query_only_ft,
    "few_shot": few_shot,
    "compress_at_inference": compress_at_inference,
    "promptintern": promptintern,
}
RATE_METHODS = {"promptintern", "compress_at_inference"}
SCHEDULED_METHODS = {"promptintern"}


def register_method(name: str, fn: Callable[[MethodSpec], MethodPlan], *, uses_rate=False, scheduled=False):
    METHODS[name] = fn
    if uses_rate:
        RATE_METHODS.add(name)
    if scheduled:
        SCHEDULED_METHODS.add(name)


def plan_method(spec: MethodSpec) -> MethodPlan:
    if spec.name not in METHODS:
        raise ConfigError("methods.name", f"unknown method {spec.name!r}; allowed: {', '.join(sorted(METHODS))}")
    return METHODS[spec.name](spec)
