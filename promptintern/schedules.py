"""Progressive-internalization schedules: how much of the prompt each training stage keeps.

Definitions
-----------
A schedule gives a *keep fraction* ``S_t`` in [0, 1] for each stage ``t = 0 .. T-1``, with
``u = t / (T-1)`` (so ``u`` runs from 0 at the first stage to 1 at the last):

- ``linear``:               ``S = 1 - u``
- ``exponential``:          ``S = (e^{-λu} - e^{-λ}) / (1 - e^{-λ})``  (fast decay first; convex for λ > 0)
- ``inverse_exponential``:  ``S = 1 - (e^{λu} - 1) / (e^{λ} - 1)``   (slow decay first; concave for λ > 0)
- ``step``:                 piecewise constant, from a list of ``(stage, value)`` pairs: stage ``t`` takes the
  value of the last pair whose stage is ``<= t``; stages before the first pair keep the full prompt (1.0).
- ``constant``:             ``S = value`` at every stage.

The three smooth schedules go from ``S_0 = 1`` (full prompt) to ``S_{T-1} = 0`` (query only), are monotone
non-increasing, and both exponential forms tend to ``linear`` as λ → 0 (|λ| < 1e-9 is computed as linear, so
there is no division by zero). They are evaluated in ``expm1`` form, stable for any finite λ of either sign.

**T = 1**: a single stage at the schedule's *final* value: ``u = 1`` for the smooth schedules (S = 0, the
query-only stage), the stage-0 pair's value for ``step`` (a step schedule with T = 1 can only name stage 0),
``value`` for ``constant``.

Stage plans
-----------
:func:`plan_stages` turns a schedule into one :class:`StagePlan` per stage:

- ``keep``          = ``S_t``
- ``template_rate`` = the fraction of the template's tokens kept by the compressor at that stage:
  ``floor + (ceiling - floor) * S_t`` (identity with the defaults floor=0, ceiling=1), except that ``S_t = 0``
  gives ``0`` (the template is dropped entirely: PromptIntern's last stage is query-only). ``floor`` lets an
  ablation stop compressing below some rate before the query-only stage; ``ceiling`` < 1 compresses even the
  first stage.
- ``n_examples``    = ``⌊K · S_t⌋`` of the K retrieved examples (with a 1e-9 tolerance so 10 · 0.3 gives 3).

:func:`plan_table` renders plans as a list of plain dicts for the CLI (which adds mean prompt tokens).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Protocol, runtime_checkable

from .errors import ConfigError
from .registry import Registry

DEFAULT_LAMBDA = 3.0  # our default decay rate for the exponential schedules (a config value, not the paper's)
_LAMBDA_EPS = 1e-9  # |λ| below this is treated as the λ → 0 limit (linear)
_FLOOR_EPS = 1e-9  # tolerance of ⌊K·S_t⌋ against float error
_ZERO_EPS = 1e-12  # S_t at or below this is "zero" (query-only)


def _u(t: int, T: int) -> float:
    """Position of stage t in [0, 1]; T = 1 is the final position (u = 1)."""
    _check_stage(t, T)
    return 1.0 if T == 1 else t / (T - 1)


def _check_stage(t: int, T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ConfigError("T", f"number of stages must be an integer >= 1, got {T!r}")
    if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < T:
        raise ConfigError("stage", f"stage index must be an integer in [0, {T - 1}], got {t!r}")


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def exponential_value(u: float, lam: float) -> float:
    """``(e^{-λu} - e^{-λ}) / (1 - e^{-λ})``, stable for any finite λ; λ → 0 gives ``1 - u``."""
    if abs(lam) < _LAMBDA_EPS:
        return 1.0 - u
    if lam > 0:
        # = e^{-λu} (1 - e^{-λ(1-u)}) / (1 - e^{-λ})
        return _clip01(math.exp(-lam * u) * -math.expm1(-lam * (1.0 - u)) / -math.expm1(-lam))
    # λ < 0, μ = -λ > 0: = (1 - e^{-μ(1-u)}) / (1 - e^{-μ})
    mu = -lam
    return _clip01(-math.expm1(-mu * (1.0 - u)) / -math.expm1(-mu))


def inverse_exponential_value(u: float, lam: float) -> float:
    """``1 - (e^{λu} - 1) / (e^{λ} - 1)``, stable for any finite λ; λ → 0 gives ``1 - u``."""
    if abs(lam) < _LAMBDA_EPS:
        return 1.0 - u
    if lam > 0:
        # (e^{λu} - 1) / (e^{λ} - 1) = e^{λ(u-1)} (1 - e^{-λu}) / (1 - e^{-λ})
        ratio = math.exp(lam * (u - 1.0)) * -math.expm1(-lam * u) / -math.expm1(-lam)
    else:
        ratio = math.expm1(lam * u) / math.expm1(lam)
    return _clip01(1.0 - ratio)


@runtime_checkable
class Schedule(Protocol):
    """Anything with a name and a keep fraction per stage."""

    name: str

    def value(self, t: int, T: int) -> float: ...


def values(schedule: Schedule, T: int) -> list[float]:
    """``[S_0, ..., S_{T-1}]``."""
    _check_stage(0, T)
    return [schedule.value(t, T) for t in range(T)]


@dataclass(frozen=True)
class Linear:
    name: str = "linear"

    def value(self, t: int, T: int) -> float:
        return 1.0 - _u(t, T)


@dataclass(frozen=True)
class Exponential:
    lam: float = DEFAULT_LAMBDA
    name: str = "exponential"

    def value(self, t: int, T: int) -> float:
        return exponential_value(_u(t, T), float(self.lam))


@dataclass(frozen=True)
class InverseExponential:
    lam: float = DEFAULT_LAMBDA
    name: str = "inverse_exponential"

    def value(self, t: int, T: int) -> float:
        return inverse_exponential_value(_u(t, T), float(self.lam))


def _parse_steps(steps) -> tuple[tuple[int, float], ...]:
    if isinstance(steps, Mapping):
        steps = list(steps.items())
    if not steps:
        raise ConfigError("steps", "step schedule needs a non-empty list of (stage, value) pairs")
    pairs: list[tuple[int, float]] = []
    for item in steps:
        try:
            stage, val = item
            stage_i, val_f = int(stage), float(val)
        except (TypeError, ValueError) as e:
            raise ConfigError("steps", f"each step must be a (stage, value) pair, got {item!r}") from e
        if stage_i < 0 or stage_i != float(stage):
            raise ConfigError("steps", f"step stage must be an integer >= 0, got {stage!r}")
        if not 0.0 <= val_f <= 1.0:
            raise ConfigError("steps", f"step value must be in [0, 1], got {val!r}")
        pairs.append((stage_i, val_f))
    pairs.sort(key=lambda p: p[0])
    if len({s for s, _ in pairs}) != len(pairs):
        raise ConfigError("steps", f"a stage appears twice in {steps!r}")
    return tuple(pairs)


@dataclass(frozen=True)
class Step:
    """Piecewise-constant keep fraction: ``steps`` is a list of ``(stage, value)`` (or a {stage: value} map)."""

    steps: tuple = ((0, 1.0),)
    name: str = "step"

    def __post_init__(self):
        object.__setattr__(self, "steps", _parse_steps(self.steps))

    def value(self, t: int, T: int) -> float:
        _check_stage(t, T)
        last = self.steps[-1][0]
        if last >= T:
            raise ConfigError("steps", f"step at stage {last} is beyond the last stage of T={T} stages")
        current = 1.0
        for stage, val in self.steps:
            if stage <= t:
                current = val
        return current


@dataclass(frozen=True)
class Constant:
    c: float = 1.0
    name: str = "constant"

    def __post_init__(self):
        if not 0.0 <= float(self.c) <= 1.0:
            raise ConfigError("value", f"constant keep fraction must be in [0, 1], got {self.c!r}")

    def value(self, t: int, T: int) -> float:
        _check_stage(t, T)
        return float(self.c)


def _make_constant(value: float = 1.0, c: float | None = None) -> Constant:
    """``constant`` takes ``value`` (or its alias ``c``)."""
    return Constant(float(c if c is not None else value))


ALIASES = {
    "exp": "exponential",
    "inverse-exponential": "inverse_exponential",
    "inv_exp": "inverse_exponential",
    "inverse_exp": "inverse_exponential",
}
SCHEDULES: Registry[Callable[..., Schedule]] = Registry("schedule", aliases=ALIASES)
for _name, _factory in (("linear", Linear), ("exponential", Exponential), ("inverse_exponential", InverseExponential),
                        ("step", Step), ("constant", _make_constant)):
    SCHEDULES.add(_name, _factory)


def canonical_name(name: str) -> str:
    return SCHEDULES.canonical(name)


def _accepted_params(factory) -> set[str]:
    if isinstance(factory, type):
        return {f.name for f in fields(factory) if f.name != "name"}

    return set(inspect.signature(factory).parameters)


def get_schedule(name: str, **params) -> Schedule:
    """Build a registered schedule. ``lam`` is passed only to schedules that use it (so one config can name
    ``lam`` for every schedule); any other unknown parameter is an error naming the schedule."""
    key = canonical_name(name)
    factory = SCHEDULES[key]
    accepted = _accepted_params(factory)
    if "lam" in params and "lam" not in accepted:
        params.pop("lam")
    if params.get("lam", 0) is None:
        params.pop("lam")
    unknown = set(params) - accepted
    if unknown:
        raise ConfigError(
            "schedule", f"schedule {key!r} does not take {sorted(unknown)}; it takes {sorted(accepted)}"
        )
    return factory(**params)



def keep_fractions(name: str, T: int, lam: float | None = None, **params) -> list[float]:
    """``[S_0, ..., S_{T-1}]`` of a registered schedule."""
    return values(get_schedule(name, lam=lam, **params), T)


@dataclass(frozen=True)
class StagePlan:
    """What stage ``stage`` trains on: the template compressed to ``template_rate`` and ``n_examples`` examples."""

    stage: int
    keep: float  # S_t
    template_rate: float  # compressor rate (fraction of template tokens kept); 0 = template dropped
    n_examples: int  # ⌊K·S_t⌋

    @property
    def query_only(self) -> bool:
        return self.template_rate <= _ZERO_EPS and self.n_examples == 0

    def as_dict(self) -> dict:
        return {**asdict(self), "query_only": self.query_only}


def template_rate(keep: float, floor: float = 0.0, ceiling: float = 1.0) -> float:
    """Map a keep fraction to a compressor rate in [floor, ceiling]; keep = 0 maps to 0 (template dropped)."""
    if not 0.0 <= floor <= ceiling <= 1.0:
        raise ConfigError(
            "template_floor", f"need 0 <= floor <= ceiling <= 1, got floor={floor}, ceiling={ceiling}"
        )
    if keep <= _ZERO_EPS:
        return 0.0
    return _clip01(floor + (ceiling - floor) * keep)


def n_examples(K: int, keep: float) -> int:
    """``⌊K · S_t⌋`` with a small tolerance for float error."""
    if not isinstance(K, int) or isinstance(K, bool) or K < 0:
        raise ConfigError("K", f"number of examples must be an integer >= 0, got {K!r}")
    return max(0, min(K, math.floor(K * keep + _FLOOR_EPS)))


def plan_stages(
    schedule_name: str | Schedule,
    T: int,
    K: int,
    lam: float | None = DEFAULT_LAMBDA,
    *,
    template_floor: float = 0.0,
    template_ceiling: float = 1.0,
    **params,
) -> list[StagePlan]:
    """One :class:`StagePlan` per stage. ``schedule_name`` is a registered name (extra schedule parameters such
    as ``steps`` or ``value`` go in ``params``) or a :class:`Schedule` object."""
    if isinstance(schedule_name, str):
        schedule = get_schedule(schedule_name, lam=lam, **params)
    else:
        if params:
            raise ConfigError("schedule", f"parameters {sorted(params)} given with a schedule object")
        schedule = schedule_name
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ConfigError("T", f"number of stages must be an integer >= 1, got {T!r}")
    plans = []
    for t, keep in enumerate(values(schedule, T)):
        plans.append(
            StagePlan(
                stage=t,
                keep=keep,
                template_rate=template_rate(keep, template_floor, template_ceiling),
                n_examples=n_examples(K, keep),
            )
        )
    return plans


def plan_table(
    plans: Sequence[StagePlan],
    prompt_tokens: Iterable[float | None] | None = None,
    digits: int = 3,
) -> list[dict]:
    """Rows for printing: stage, keep, template_rate, n_examples, query_only (+ mean_prompt_tokens when given,
    aligned with ``plans``)."""
    rows = []
    tokens = list(prompt_tokens) if prompt_tokens is not None else None
    if tokens is not None and len(tokens) != len(plans):
        raise ValueError(f"prompt_tokens has {len(tokens)} values for {len(plans)} stages")
    for i, p in enumerate(plans):
        row = {
            "stage": p.stage,
            "keep": round(p.keep, digits),
            "template_rate": round(p.template_rate, digits),
            "n_examples": p.n_examples,
            "query_only": p.query_only,
        }
        if tokens is not None:
            row["mean_prompt_tokens"] = None if tokens[i] is None else round(float(tokens[i]), 1)
        rows.append(row)
    return rows


def format_plan_table(rows: Sequence[Mapping]) -> str:
    """A small Markdown table of :func:`plan_table` rows (the CLI may use rich instead)."""
    if not rows:
        return ""
    cols = list(rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)
