"""Methods: how a (task, schedule, rate) becomes training stages and a test-time prompting rule.

Every method is declarative: a list of prompt rules, one per fine-tuning stage (empty = no fine-tuning), and
the rule used at test time. A rule says which fraction of the template's tokens is kept (1 = full template,
0 = none, in between = compressed by the configured compressor) and how many retrieved examples are included.
A training stage whose objective is not plain supervised fine-tuning on the references carries a
:class:`StageRule` (a :class:`PromptRule` with the objective and the teacher's prompt), which the stage unit
dispatches on.

The compression ``rate`` of a grid point is the template keep rate of PromptIntern's first stage; the schedule
scales it down stage by stage (template_rate_t = rate · S_t, examples ⌊K·S_t⌋) to the query-only last stage.
``rate = 1`` is progressive example absorption and template dropping without compression.

Methods (K = ``k_examples``; "full prompt" = full template + K retrieved examples + query; every training
stage is LoRA with the loss on the completion only):

- ``full_prompt_ft``: one SFT stage on the full prompt; tested with the full prompt (accuracy/cost ceiling).
- ``query_only_ft``: one SFT stage on the query alone; tested with the query alone (the floor).
- ``few_shot``: no training (base model); tested with the full prompt.
- ``compress_at_inference``: no training; tested with template + examples compressed to ``rate`` per query by
  the configured compressor (its time and input tokens are recorded per sample).
- ``full_prompt_ft_compressed``: trained exactly like ``full_prompt_ft`` (``MethodPlan.train_spec`` names that
  grid point so the plan can share its stage units); tested like ``compress_at_inference``.
- ``promptintern``: T stages, stage t with the template compressed to ``rate·S_t`` and ⌊K·S_t⌋ examples, the
  last stage query-only; tested with the query alone.
- ``promptintern_template_only`` (ablation: template compression only): the template follows the schedule
  (``rate·S_t``, dropped at the last stage); all K examples in every stage *and at test time*.
- ``promptintern_examples_only`` (ablation: example absorption only): ⌊K·S_t⌋ examples per stage (none at the
  last stage); the full, uncompressed template in every stage *and at test time*.
- ``promptintern_no_progression`` (ablation: no progression): T ≥ 2 stages (``stages``, no schedule): stages
  0..T-2 on the stage-0 prompt (template at ``rate``, K examples), the last stage query-only — a jump from
  S = 1 to S = 0 (the ``step`` schedule [(0, 1), (T-1, 0)]); tested with the query alone.
- ``context_distillation``: one stage; the base model given the full prompt answers every training query
  (greedy); the student learns those answers (not the references) from the query alone by SFT; tested with the
  query alone.
- ``prompt_baking``: one stage minimising KL(p_teacher ‖ p_student) of the next-token distributions over the
  answer tokens; teacher = the base model (adapter disabled) given the full prompt, student = the adapter given
  the query alone; answer tokens = the teacher's greedy answers (default) or the references; tested with the
  query alone.

The two ablations that keep a part of the prompt (``template_only`` keeps the examples, ``examples_only`` keeps
the template) keep it at test time too: each internalizes exactly one part of the prompt, the other part stays
in the prompt at training and test time, so each ablation isolates one of PromptIntern's two mechanisms.
``promptintern_no_progression`` isolates the third, the progression: it trains as many stages as PromptIntern,
starts from the same prompt and ends query-only, but without the intermediate, partially compressed stages.
With T = 2 it coincides with PromptIntern's linear T = 2 schedule (which has no intermediate stage either), so
compare it with T ≥ 3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace

from .errors import ConfigError
from .registry import Registry
from .schedules import DEFAULT_LAMBDA, plan_stages


@dataclass(frozen=True)
class PromptRule:
    template_rate: float  # fraction of template tokens kept; 0 = no template
    n_examples: int  # retrieved few-shot examples included

    @property
    def query_only(self) -> bool:
        return self.template_rate <= 0 and self.n_examples == 0


OBJECTIVES = ("sft", "distill", "bake")
TARGETS = ("reference", "teacher")


@dataclass(frozen=True)
class StageRule(PromptRule):
    """A training stage with an objective other than SFT on the references, or with a teacher.

    ``template_rate`` / ``n_examples`` (inherited) describe the *student's* prompt; the teacher is the base
    model (no adapter) given the prompt ``teacher_template_rate`` / ``teacher_n_examples``.

    - ``objective="distill"`` (context distillation): the teacher answers each training query greedily
      (``max_new_tokens`` tokens at most, None = the task's budget); its answer, up to and including the
      first task stop string, is the student's SFT target (completion-only cross-entropy). ``targets`` is
      always ``"teacher"``.
    - ``objective="bake"`` (prompt baking): loss = mean over answer tokens of KL(p_teacher ‖ p_student) of the
      next-token distributions at temperature ``temperature`` (scaled by temperature²). The answer tokens are
      the reference answers (``targets="reference"``) or the teacher's greedy answers (``"teacher"``).
    - ``objective="sft"``: plain SFT on the references (what a :class:`PromptRule` means); the teacher fields
      are unused.

    Plain :class:`PromptRule` stages serialize exactly as before (two keys), so adding this class changed no
    existing unit id.
    """

    objective: str = "sft"
    teacher_template_rate: float = 1.0
    teacher_n_examples: int = 0
    targets: str = "reference"
    temperature: float = 1.0
    max_new_tokens: int | None = None

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                "objective", f"unknown stage objective {self.objective!r}; allowed: {OBJECTIVES}"
            )
        if self.targets not in TARGETS:
            raise ConfigError("options.targets", f"must be one of {TARGETS}, got {self.targets!r}")
        if self.objective == "distill" and self.targets != "teacher":
            raise ConfigError(
                "options.targets", "context distillation always trains on the teacher's answers"
            )
        if not (isinstance(self.temperature, int | float) and self.temperature > 0):
            raise ConfigError("options.temperature", f"must be a number > 0, got {self.temperature!r}")
        mnt = self.max_new_tokens
        if mnt is not None and not (isinstance(mnt, int) and not isinstance(mnt, bool) and mnt > 0):
            raise ConfigError(
                "options.teacher_max_new_tokens", f"must be a positive integer or null, got {mnt!r}"
            )

    @property
    def student(self) -> PromptRule:
        return PromptRule(self.template_rate, self.n_examples)

    @property
    def teacher(self) -> PromptRule:
        return PromptRule(self.teacher_template_rate, self.teacher_n_examples)


_PROMPT_RULE_KEYS = {f.name for f in fields(PromptRule)}


def rule_from_dict(d: dict) -> PromptRule:
    """Inverse of ``asdict(rule)``: a :class:`StageRule` when the dict has more than the two prompt keys."""
    return PromptRule(**d) if set(d) <= _PROMPT_RULE_KEYS else StageRule(**d)


def objective_of(rule: PromptRule) -> str:
    return getattr(rule, "objective", "sft")


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
    # PromptIntern's stage 0: "full" = the full template (then rate·S_t), "rate" = already compressed to ``rate``
    first_stage: str = "full"

    @property
    def label(self) -> str:
        info = method_info(self.name)
        if info.label is not None:
            return info.label(self)
        parts = [self.name]
        if self.schedule:
            parts.append(f"{self.schedule}-T{self.stages}")
        elif info.staged:
            parts.append(f"jump-T{self.stages}")
        if info.uses_rate:
            parts.append(f"r{self.rate:g}")
        if self.name == "prompt_baking":
            parts.append(f"{self.options.get('targets', BAKE_DEFAULT_TARGETS)}-targets")
        if self.first_stage != "full" and (info.scheduled or info.staged):
            parts.append(f"first-{self.first_stage}")
        return "/".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MethodPlan:
    train: list[PromptRule]
    test: PromptRule
    test_compressed: bool = False  # the compressor runs at inference (its time counts)
    # The grid point whose training chain this method reuses (None = its own). A method that trains exactly like
    # another one and differs only at test time names it here, so the plan can give both the same stage units.
    train_spec: MethodSpec | None = None


def _full(spec: MethodSpec) -> PromptRule:
    return PromptRule(1.0, spec.k_examples)


QUERY_ONLY = PromptRule(0.0, 0)


def _options(spec: MethodSpec, allowed: dict) -> dict:
    """The method's options with defaults; an unknown option is an error naming the method."""
    opts = dict(spec.options or {})
    unknown = set(opts) - set(allowed)
    if unknown:
        raise ConfigError(
            f"methods.{spec.name}.options",
            f"unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed) or 'none'}",
        )
    return {**allowed, **opts}


def _needs_schedule(spec: MethodSpec) -> None:
    if not spec.schedule:
        raise ConfigError(f"methods.{spec.name}.schedule", f"{spec.name} needs a schedule")


FIRST_STAGES = ("full", "rate")


def _check_stages(spec: MethodSpec) -> None:
    if spec.stages < MIN_STAGES:
        raise ConfigError(
            f"methods.{spec.name}.stages",
            f"needs stages >= {MIN_STAGES} (got {spec.stages}); with one stage it would be query_only_ft",
        )


def _stage_plans(spec: MethodSpec, **kw):
    """The schedule's stage plans; with ``first_stage: full`` stage 0 keeps the whole template (the later stages
    follow rate·S_t), with ``rate`` it starts compressed to ``rate``."""
    _needs_schedule(spec)
    _check_stages(spec)
    if spec.first_stage not in FIRST_STAGES:
        raise ConfigError("prompt.first_stage", f"must be one of {FIRST_STAGES}, got {spec.first_stage!r}")
    plans = plan_stages(spec.schedule, spec.stages, spec.k_examples, lam=spec.lam, template_ceiling=spec.rate, **kw)
    if spec.first_stage == "full" and plans and plans[0].template_rate > 0:
        plans[0] = replace(plans[0], template_rate=1.0)
    return plans


def full_prompt_ft(spec: MethodSpec) -> MethodPlan:
    return MethodPlan(train=[_full(spec)], test=_full(spec))


def query_only_ft(spec: MethodSpec) -> MethodPlan:
    return MethodPlan(train=[QUERY_ONLY], test=QUERY_ONLY)


def few_shot(spec: MethodSpec) -> MethodPlan:
    return MethodPlan(train=[], test=_full(spec))


def compress_at_inference(spec: MethodSpec) -> MethodPlan:
    return MethodPlan(train=[], test=PromptRule(spec.rate, spec.k_examples), test_compressed=spec.rate < 1)


ADAPTER_OPTIONS = {"path": None, "prompt": "query_only"}
ADAPTER_PROMPTS = {"query_only": QUERY_ONLY, "full": None}


def adapter(spec: MethodSpec) -> MethodPlan:
    """An existing LoRA adapter (``options.path``, a PEFT folder trained elsewhere) evaluated without training, with
    the query alone (``options.prompt: query_only``, default) or the full prompt (``full``)."""
    opts = _options(spec, ADAPTER_OPTIONS)
    if not isinstance(opts["path"], str) or not opts["path"]:
        raise ConfigError("methods.adapter.options.path", "give the folder of a PEFT adapter (adapter_config.json)")
    if opts["prompt"] not in ADAPTER_PROMPTS:
        raise ConfigError("methods.adapter.options.prompt", f"must be one of {', '.join(ADAPTER_PROMPTS)}")
    return MethodPlan(train=[], test=ADAPTER_PROMPTS[opts["prompt"]] or _full(spec))


def full_prompt_ft_compressed(spec: MethodSpec) -> MethodPlan:
    """Trained like ``full_prompt_ft``; tested like ``compress_at_inference`` (template + examples compressed to
    ``rate`` per query, the compressor's time counted). ``train_spec`` is the ``full_prompt_ft`` grid point with
    the same K and options, so the plan can share that chain's stage units."""
    train_spec = MethodSpec(
        name="full_prompt_ft", k_examples=spec.k_examples, options=dict(spec.options or {})
    )
    return MethodPlan(
        train=[_full(spec)],
        test=PromptRule(spec.rate, spec.k_examples),
        test_compressed=spec.rate < 1,
        train_spec=train_spec,
    )


def promptintern(spec: MethodSpec) -> MethodPlan:
    plans = _stage_plans(spec)
    return MethodPlan(train=[PromptRule(p.template_rate, p.n_examples) for p in plans], test=QUERY_ONLY)


def promptintern_template_only(spec: MethodSpec) -> MethodPlan:
    """Ablation "template compression only": the template follows PromptIntern's schedule (rate·S_t, dropped at
    the last stage); the K examples stay in every stage and at test time (they are never absorbed)."""
    plans = _stage_plans(spec)
    k = spec.k_examples
    return MethodPlan(train=[PromptRule(p.template_rate, k) for p in plans], test=PromptRule(0.0, k))


def promptintern_examples_only(spec: MethodSpec) -> MethodPlan:
    """Ablation "example absorption only": ⌊K·S_t⌋ examples per stage (none at the last stage); the full,
    uncompressed template stays in every stage and at test time (it is never internalized or compressed)."""
    plans = _stage_plans(spec)
    return MethodPlan(train=[PromptRule(1.0, p.n_examples) for p in plans], test=PromptRule(1.0, 0))


def promptintern_no_progression(spec: MethodSpec) -> MethodPlan:
    """Ablation "no progression": T stages like PromptIntern, but the keep fraction jumps from 1 to 0 — stages
    0..T-2 train on the stage-0 prompt (template at ``rate``, K examples), the last stage on the query alone
    (a ``step`` schedule [(0, 1), (T-1, 0)]). Same compute, same first and last prompt, no gradual steps."""
    _check_stages(spec)
    T = spec.stages
    plans = plan_stages(
        "step", T, spec.k_examples, template_ceiling=spec.rate, steps=[(0, 1.0), (T - 1, 0.0)]
    )
    if spec.first_stage == "full":  # the same first prompt as PromptIntern's
        plans = [replace(p, template_rate=1.0) if p.template_rate > 0 else p for p in plans]
    return MethodPlan(train=[PromptRule(p.template_rate, p.n_examples) for p in plans], test=QUERY_ONLY)


DISTILL_OPTIONS = {"teacher_max_new_tokens": None, "teacher_batch_size": 8}
BAKE_DEFAULT_TARGETS = "teacher"
BAKE_OPTIONS = {**DISTILL_OPTIONS, "targets": BAKE_DEFAULT_TARGETS, "temperature": 1.0}


def context_distillation(spec: MethodSpec) -> MethodPlan:
    """Context distillation: the base model given the full prompt answers the training queries (greedy); the
    student (LoRA) learns those answers from the query alone. Options: ``teacher_max_new_tokens`` (default: the
    task's generation budget), ``teacher_batch_size`` (default 8)."""
    opts = _options(spec, DISTILL_OPTIONS)
    rule = StageRule(
        0.0,
        0,
        objective="distill",
        teacher_template_rate=1.0,
        teacher_n_examples=spec.k_examples,
        targets="teacher",
        max_new_tokens=opts["teacher_max_new_tokens"],
    )
    return MethodPlan(train=[rule], test=QUERY_ONLY)


def prompt_baking(spec: MethodSpec) -> MethodPlan:
    """Prompt baking (Bhargava et al. 2024, arXiv 2409.13697): minimise KL(p_teacher ‖ p_student) over the
    answer tokens, teacher = base model (adapter disabled) with the full prompt, student = the LoRA adapter with
    the query alone. Options: ``targets`` ("teacher", the default and the paper's choice: the teacher's own
    greedy answers; or "reference": the dataset answers, no generation), ``temperature`` (1.0),
    ``teacher_max_new_tokens``, ``teacher_batch_size``."""
    opts = _options(spec, BAKE_OPTIONS)
    rule = StageRule(
        0.0,
        0,
        objective="bake",
        teacher_template_rate=1.0,
        teacher_n_examples=spec.k_examples,
        targets=opts["targets"],
        temperature=float(opts["temperature"]),
        max_new_tokens=opts["teacher_max_new_tokens"],
    )
    return MethodPlan(train=[rule], test=QUERY_ONLY)


@dataclass(frozen=True)
class MethodInfo:
    """Everything the project knows about one method, registered once in :data:`METHODS`: how it plans, which
    ``methods`` keys and options it reads, whether and how it trains, and how tables and plots show it."""

    name: str
    plan: Callable[[MethodSpec], MethodPlan]
    trained: bool = True  # fine-tunes on a train task (False: evaluates a model as it is)
    uses_rate: bool = False  # takes ``rates`` (the template keep rate of its first stage or of its test prompt)
    scheduled: bool = False  # takes ``schedules``, ``stages`` and ``lam``
    staged: bool = False  # takes ``stages`` without a schedule
    options: dict | None = None  # its options with their defaults (None: it reads none)
    option_names: Callable[[], set[str]] | None = None  # the options, when they are a config class's fields
    unit_kind: str = "stage"  # "stage": a chain of LoRA stage units; else the one unit kind that trains it
    label: Callable[[MethodSpec], str] | None = None  # a label other than name/schedule/rate
    order: int = 99  # its row's position in tables
    color: str = "#17becf"  # plot colour and marker
    marker: str = "o"

    def keys(self) -> set[str]:
        """The keys a ``methods`` entry of this method may have: a key the method would ignore is an error."""
        keys = {"name", "k_examples"}
        if self.uses_rate:
            keys.add("rates")
        if self.scheduled:
            keys |= {"schedules", "stages", "lam"}
        if self.staged:
            keys.add("stages")
        if self.reads_options:
            keys.add("options")
        return keys

    @property
    def reads_options(self) -> bool:
        return self.options is not None or self.option_names is not None

    def option_keys(self) -> set[str] | None:
        """The option keys it accepts (None: it reads no options)."""
        if self.option_names is not None:
            return self.option_names()
        return None if self.options is None else set(self.options)


# MetaTuner registers itself from its own package (promptintern.metatuner.method), imported on first use.
METHODS: Registry[MethodInfo] = Registry("method", field="methods.name", plugins=("promptintern.metatuner.method",))
for _info in (
    MethodInfo("few_shot", few_shot, trained=False, order=0, color="#7f7f7f", marker="s"),
    MethodInfo("compress_at_inference", compress_at_inference, trained=False, uses_rate=True, order=1,
               color="#bcbd22", marker="D"),
    MethodInfo("full_prompt_ft", full_prompt_ft, order=2, color="#1f77b4", marker="o"),
    MethodInfo("query_only_ft", query_only_ft, order=3, color="#d62728", marker="v"),
    MethodInfo("promptintern", promptintern, uses_rate=True, scheduled=True, order=4, color="#2ca02c", marker="^"),
    MethodInfo("full_prompt_ft_compressed", full_prompt_ft_compressed, uses_rate=True),
    MethodInfo("promptintern_template_only", promptintern_template_only, uses_rate=True, scheduled=True),
    MethodInfo("promptintern_examples_only", promptintern_examples_only, scheduled=True),
    MethodInfo("promptintern_no_progression", promptintern_no_progression, uses_rate=True, staged=True),
    MethodInfo("context_distillation", context_distillation, options=DISTILL_OPTIONS),
    MethodInfo("prompt_baking", prompt_baking, options=BAKE_OPTIONS),
    MethodInfo("adapter", adapter, trained=False, options=ADAPTER_OPTIONS),
):
    METHODS.add(_info.name, _info)

# The smallest T of the staged methods: with one stage PromptIntern (and its ablations) is query_only_ft.
MIN_STAGES = 2


def method_info(name: str) -> MethodInfo:
    """The registered method ``name`` (a :class:`ConfigError` naming ``methods.name`` and the methods if none)."""
    if name not in METHODS:
        raise ConfigError("methods.name", f"unknown method {name!r}; allowed: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def ineffective_rates(name: str, rates: list[float], *, schedule: str | None = None, stages: int = 1, k: int = 1,
                      lam: float = DEFAULT_LAMBDA, first_stage: str = "full") -> list[float]:
    """The rates (other than 1) that give exactly the plan of rate 1 — the rate is ignored there (e.g.
    PromptIntern at T = 2 with ``first_stage: full`` trains [full prompt, query only] whatever the rate)."""
    def plan(r):
        p = plan_method(MethodSpec(name=name, schedule=schedule, rate=float(r), stages=stages, lam=lam, k_examples=k,
                                   first_stage=first_stage))
        return p.train, p.test, p.test_compressed

    full = plan(1.0)
    return [float(r) for r in rates if float(r) != 1.0 and plan(r) == full]


def coinciding_schedules(name: str, schedules: list[str], stages: int, k: int, lam: float,
                         rates: list[float], first_stage: str = "full") -> list[tuple[str, str]]:
    """Pairs of the given schedules that give identical stage plans at this T, K, λ and every rate (comparing them
    compares identical runs: e.g. linear, exponential and inverse-exponential all give [1, 0] at T = 2)."""
    plans = {}
    for sched in schedules:
        plans[sched] = [plan_method(MethodSpec(name=name, schedule=sched, rate=float(r), stages=stages, lam=lam,
                                               k_examples=k, first_stage=first_stage)).train for r in rates]
    names = list(plans)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :] if plans[a] == plans[b]]


def plan_method(spec: MethodSpec) -> MethodPlan:
    return method_info(spec.name).plan(spec)
