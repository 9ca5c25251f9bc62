"""Expand an experiment into units of work with content-hash ids.

Units:
- ``stage``: one fine-tuning stage of one (model, method grid point, train task, seed) chain; depends on the
  previous stage of its chain.
- ``eval``: one (trained artefact or base model, eval task) evaluation; depends on the chain's last stage. A
  method that sends a fixed template generates with its prefix KV cache reused when ``generation.prefix_cache``
  is on (the same tokens as uncached: tests), so it is evaluated once for both serving conditions.
- ``engine``: the equal-length engine measurement of one (model, eval task, seed) group (:mod:`promptintern.harness.engine_unit`):
  every evaluation of the group served uncached and, where it has a fixed prefix, cached; depends on the
  evaluations and their stages (whose adapters it serves). Planned when ``timing.measure`` is on.

A unit's id hashes its resolved config and the ids it depends on, so an unchanged unit keeps its id and its
result file, and a changed upstream stage changes every id downstream. The config includes what the unit's
result depends on beyond the experiment file (:func:`prepare_tasks`): ``data``, the fingerprint of the data
files of the task it reads and a hash of the task's YAML definition (a stage: its train task; an evaluation: its eval task, whose train split is the
example pool), and, for evaluations, ``scoring``, the task's metric, extractor and stop rule with their code
versions; ``items``, the hashes of the grid's item selection the unit uses (:mod:`promptintern.harness.selection`: seeded
subsets shared by every method, near-duplicates of test items removed); ``budget``, the training-budget policy
(``train.budget``: with ``matched``, every stage's ``train.max_steps`` makes each fine-tuning chain of a (model,
train task, seed) take as many optimizer steps as the longest one). A changed data file, a fixed metric or another
selection re-runs exactly the units affected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from promptintern import tasks
from promptintern.errors import ConfigError
from promptintern.hashing import content_id as _content_id
from promptintern.methods import (
    METHODS,
    MethodSpec,
    plan_method,
)
from promptintern.paths import data_dir as resolve_data_dir
from promptintern.tasks.check import check_splits
from promptintern.trainer import TrainConfig, planned_steps

from .artifacts import adapter_problem, weights_sha256
from .selection import select
from .settings import TimingSettings
from .store import PLAN_FILE, atomic_write_json

# Keys added to the experiment schema after results were first published: at these values they are left out
# of unit ids, so adding a key does not orphan every stored result (a non-default value still changes the id).
LATE_KEYS: dict[tuple[str, str], object] = {("train", "packing"): False, ("generation", "engine"): "hf",
                                             # stages trained before the switch computed in fp32
                                             ("train", "precision"): "fp32",
                                             ("prompt", "template_role"): "auto", ("generation", "prefix_cache"): False}
# Keys that change how a unit is executed, not what it computes, are never part of its id (like ``resources``):
# gradient checkpointing recomputes activations with the RNG state kept, so the adapter is the same
# (tests/test_packing_flops.py) and a stored record answers the config either way; its record says which ran.
EXECUTION_KEYS: tuple[tuple[str, str], ...] = (("train", "gradient_checkpointing"), ("timing", "exclusive"),
                                               ("timing", "num_cpus"), ("timing", "measure"))


CACHED_SUFFIX = "+prefix-cache"  # the label of an evaluation under the cached-prefix condition


VLLM_KEYS = ("vllm_dtype", "vllm_agreement_threshold")  # read by the vllm engine only: in its units' ids only


def unit_generation(cfg: dict) -> dict:
    """A unit's generation settings: the experiment's, without its grid switch ``prefix_cache`` (an evaluation in
    the cached-prefix condition says so itself, in its config's ``prefix_cache``) and, on another engine, without
    the vllm engine's own keys."""
    g = cfg["generation"]
    return {k: v for k, v in g.items() if k != "prefix_cache" and (g.get("engine") == "vllm" or k not in VLLM_KEYS)}


def eval_label(c: dict) -> str:
    """The method label of an evaluation's config, with the cached-prefix condition marked."""
    return c["method"]["label"] + (CACHED_SUFFIX if c.get("prefix_cache") else "")


def has_fixed_prefix(plan) -> bool:
    """Whether a method's test-time prompts share a fixed template (the part a prefix cache can reuse): a template is
    sent and it is not compressed per query at inference."""
    return plan.test.template_rate > 0 and not plan.test_compressed


LAYOUT_KEYS = ("fewshot_layout", "answer_cue")


def layout_matters(c: dict) -> bool:
    """Whether a unit's prompts depend on ``prompt.fewshot_layout`` / ``answer_cue``: its rule sends
    demonstrations (not compressed into the context), or the model is prompted without chat (the answer cue).
    The single-message layout is the one every result before these keys ran with: it never enters an id."""
    p, rule = c.get("prompt") or {}, c.get("rule")
    if p.get("fewshot_layout", "single") == "single" or not isinstance(rule, dict):
        return False
    compressed = bool(c.get("test_compressed")) and 0 < float(rule.get("template_rate", 0)) < 1
    demos = (int(rule.get("n_examples") or 0) > 0 and not compressed) or int(rule.get("teacher_n_examples") or 0) > 0
    return demos or not p.get("chat", True)


def content_id(obj: dict) -> str:
    """A unit's id: the content hash of its config (and deps), with late-added keys at their default and execution
    keys dropped."""
    c = obj.get("c") if isinstance(obj, dict) else None
    if isinstance(c, dict):
        c = dict(c)
        for (section, key), default in LATE_KEYS.items():
            if isinstance(c.get(section), dict) and c[section].get(key, default) == default:
                c[section] = {k: v for k, v in c[section].items() if k != key}
        for section, key in EXECUTION_KEYS:
            if isinstance(c.get(section), dict) and key in c[section]:
                c[section] = {k: v for k, v in c[section].items() if k != key}
        if isinstance(c.get("prompt"), dict) and not layout_matters(c):
            c["prompt"] = {k: v for k, v in c["prompt"].items() if k not in LAYOUT_KEYS}
        obj = {**obj, "c": c}
    return _content_id(obj)


@dataclass
class Unit:
    id: str
    kind: str  # "stage" | "eval" | "metatuner" | "engine"
    config: dict
    deps: list[str] = field(default_factory=list)
    resources: dict = field(default_factory=dict)
    # The item ids per task the unit reads (promptintern.harness.selection); not part of the id: ``config["items"]`` has hashes
    inputs: dict = field(default_factory=dict)
    # The folders of the user's task YAMLs (``task_paths``), so a worker finds them; not part of the id (the task's
    # definition and data are, in ``config["data"]``)
    task_paths: list = field(default_factory=list)
    allow_task_shadowing: bool = False

    @property
    def label(self) -> str:
        c = self.config
        if self.kind == "stage":
            return f"{c['method']['label']} {c['train_task']} stage {c['stage'] + 1}/{c['n_stages']}"
        if self.kind == "engine":
            return f"engine timing {c['model']} {c['eval_task']} ({len(c['conditions'])} conditions)"
        return f"{eval_label(c)} {c['train_task'] or '-'}→{c['eval_task']}"

    def to_dict(self) -> dict:
        return asdict(self)


def method_specs(cfg: dict) -> list[MethodSpec]:
    """Each methods entry expands over its schedules and rates."""
    out = []
    k = cfg["prompt"]["k_examples"]
    for m in cfg["methods"]:
        info = METHODS[m["name"]]
        schedules = (m.get("schedules") or [None]) if info.scheduled else [None]
        rates = (m.get("rates") or [1.0]) if info.uses_rate else [1.0]
        for sched in schedules:
            for rate in rates:
                out.append(
                    MethodSpec(
                        name=m["name"],
                        schedule=sched,
                        rate=float(rate),
                        stages=int(m.get("stages", 1)) if sched or info.staged else 1,
                        lam=float(m.get("lam", 3.0)),
                        k_examples=int(m.get("k_examples", k)),
                        options=dict(m.get("options") or {}),
                        first_stage=cfg["prompt"].get("first_stage", "full"),
                    )
                )
    return out


def _own_unit_kind(cfg, kind, model, seed, method, shared, resources, prep) -> list[Unit]:
    """Methods that train and evaluate in one unit (MetaTuner): one unit per (train task, eval task). A
    cross-task unit depends on the train task's own unit and loads its artefacts instead of retraining."""
    out = []
    for train_task in cfg["tasks"]["train"]:
        ev = cfg["tasks"]["eval"]
        eval_tasks = [train_task] + [t for t in ([] if ev == "same" else ev) if t != train_task]
        anchor = None
        for eval_task in eval_tasks:
            c = {
                "model": model,
                "seed": seed,
                "method": method,
                "train_task": train_task,
                "eval_task": eval_task,
                "generation": unit_generation(cfg),
                "data": {"train": prep[train_task]["data"], "eval": prep[eval_task]["data"]},
                "scoring": unit_scoring(cfg, prep, eval_task),
                "items": {"train": _train_items(prep, train_task), "eval": _eval_items(prep, eval_task)},
                "budget": {"policy": "own", "note": "MetaTuner's phases have their own step counts"},
                **shared,
            }
            uid = f"{kind}-" + content_id({"c": c, "prev": anchor})
            out.append(Unit(uid, kind, c, [anchor] if anchor else [], resources,
                            _inputs(prep, train_task, eval_task)))
            anchor = anchor or uid
    return out


def unit_scoring(cfg: dict, prep: dict, task: str) -> dict:
    """An evaluation's scoring: the task's scoring identity, plus ``max_infra_failures`` when the experiment lets
    it leave out samples that failed for a reason of the harness (tasks/infra.py; 0, the default, is not in ids)."""
    n = int((cfg.get("scoring") or {}).get("max_infra_failures") or 0)
    return {**prep[task]["scoring"], **({"max_infra_failures": n} if n else {})}


def _train_items(prep: dict, task: str) -> dict:
    """What a training chain depends on of the selection: its items and the pool its prompts retrieve from."""
    i = prep[task]["selection"].identity()
    return {k: i[k] for k in ("train", "removed", "n_train", "n_removed", "pool")}


def _eval_items(prep: dict, task: str) -> dict:
    i = prep[task]["selection"].identity()
    return {k: i[k] for k in ("test", "removed", "n_test", "n_removed", "pool")}


def _inputs(prep: dict, *names: str) -> dict:
    return {n: prep[n]["selection"].inputs() for n in dict.fromkeys(n for n in names if n)}


def prepare_tasks(cfg: dict, data_dir=None) -> dict[str, dict]:
    """For every task of the grid: ``data`` (fingerprint of its files), ``scoring`` (its scoring identity) and
    ``selection`` (:mod:`promptintern.harness.selection`: the items every method trains and tests on). Loads the tasks' data,
    so missing or malformed data fails here, before any unit runs."""
    root = resolve_data_dir(data_dir if data_dir is not None else cfg.get("data_dir"))
    names = list(cfg["tasks"]["train"])
    ev = cfg["tasks"]["eval"]
    names += [] if ev == "same" else [t for t in ev if t not in names]
    loaded = {name: tasks.get_task(name, data_dir=root, include=cfg.get("task_paths") or [],
                                   allow_shadowing=cfg.get("allow_task_shadowing", False)) for name in names}
    for task in loaded.values():
        check_splits(task, [task.train_split, task.test_split])
    selection = select(cfg, loaded)
    for name in cfg["tasks"]["train"]:
        if not selection[name].train_ids:
            task = loaded[name]
            why = ("it has no training split (evaluation only: put it in tasks.eval)" if not task.train_split else
                   f"its training split has {selection[name].pool_size} items left after removing "
                   f"{len(selection[name].removed)} near-duplicates of test items")
            raise ConfigError("tasks.train", f"task {name!r} has no training items: {why}")
    return {name: {"data": {**task.data_fingerprint(), "task_definition": task.definition_id()},
                   "scoring": task.scoring_identity(), "selection": selection[name]}
            for name, task in loaded.items()}


def external_adapter(spec: MethodSpec) -> dict | None:
    """Method ``adapter``: the PEFT folder it evaluates and the sha256 of its files (checked here, before Ray)."""
    if spec.name != "adapter":
        return None

    path = Path(spec.options["path"]).expanduser().resolve()
    if not (path / "adapter_config.json").is_file():
        raise ConfigError("methods.adapter.options.path", f"{path} is not a PEFT adapter folder (no "
                          "adapter_config.json)")
    problem = adapter_problem(path)
    if problem:
        raise ConfigError("methods.adapter.options.path", f"{path}: {problem}")
    return {"path": str(path), "sha256": weights_sha256(path)}


def chain_budget(cfg: dict, specs: list[MethodSpec], n_train: int) -> int:
    """Total optimizer steps of the longest fine-tuning chain of the grid on ``n_train`` items (``train.budget:
    matched`` gives every chain this many)."""
    per_stage = planned_steps(n_train, TrainConfig.from_dict({**cfg["train"], "max_steps": None}))
    stages = [len(plan_method(s).train) for s in specs if METHODS[s.name].unit_kind == "stage"]
    return per_stage * max([n for n in stages if n] or [0])


def stage_steps(total: int, n_stages: int) -> list[int]:
    """``total`` optimizer steps split over ``n_stages`` stages as evenly as possible (earlier stages first)."""
    base, extra = divmod(total, n_stages)
    return [base + (1 if t < extra else 0) for t in range(n_stages)]


def build_plan(cfg: dict, prepared: dict[str, dict] | None = None) -> list[Unit]:
    """The grid's units in dependency order. ``prepared``: :func:`prepare_tasks` (computed when None)."""
    prep = prepared if prepared is not None else prepare_tasks(cfg)
    units: list[Unit] = []
    shared = {"prompt": cfg["prompt"]}
    resources = dict(cfg["resources"])
    specs = method_specs(cfg)
    policy = cfg["train"].get("budget", "matched")
    for model in cfg["models"]:
        for seed in cfg["seeds"]:
            for spec in specs:
                plan = plan_method(spec)
                method = {**spec.to_dict(), "label": spec.label}
                # A method that trains exactly like another grid point (MethodPlan.train_spec) shares its stages.
                train_spec = plan.train_spec or spec
                train_method = {**train_spec.to_dict(), "label": train_spec.label}
                if METHODS[spec.name].unit_kind != "stage":
                    units.extend(_own_unit_kind(cfg, METHODS[spec.name].unit_kind, model, seed, method, shared, resources,
                                                prep))
                    continue
                # an evaluation-only experiment (no train task) still evaluates the untrained methods
                for train_task in cfg["tasks"]["train"] or ([None] if not plan.train else []):
                    prev: str | None = None
                    n_train = len(prep[train_task]["selection"].train_ids) if train_task else 0
                    total = chain_budget(cfg, specs, n_train) if train_task else 0
                    steps = stage_steps(total, len(plan.train)) if plan.train and policy == "matched" else None
                    budget = {"policy": policy, "chain_steps": total if policy == "matched" else None}
                    for t, rule in enumerate(plan.train):
                        c = {
                            "model": model,
                            "seed": seed,
                            "method": train_method,
                            "train_task": train_task,
                            "stage": t,
                            "n_stages": len(plan.train),
                            "rule": asdict(rule),
                            "train": {**cfg["train"], **({"max_steps": steps[t]} if steps else {})},
                            "budget": budget,
                            "data": prep[train_task]["data"],
                            "items": _train_items(prep, train_task),
                            **shared,
                        }
                        uid = "stage-" + content_id({"c": c, "prev": prev})
                        units.append(Unit(uid, "stage", c, [prev] if prev else [], resources,
                                          _inputs(prep, train_task)))
                        prev = uid
                    ev = cfg["tasks"]["eval"]
                    eval_tasks = [train_task] if ev == "same" else list(ev)
                    adapter = external_adapter(spec)
                    # the cached-prefix condition: the recurring prefix's KV cache reused. The evaluation generates
                    # with it (identical tokens) and the engine unit times both conditions; on vLLM each condition
                    # is its own evaluation (cached, and uncached: a fresh cache salt per request)
                    fixed = cfg["generation"].get("prefix_cache") and has_fixed_prefix(plan)
                    conditions = [False] if not fixed else [False, True] if cfg["generation"].get("engine") == \
                        "vllm" else [True]
                    for eval_task, cached in ((t, x) for t in eval_tasks for x in conditions):
                        c = {
                            "model": model,
                            "seed": seed,
                            "method": method,
                            "train_task": train_task if plan.train else None,
                            "train_label": train_method["label"] if plan.train else None,
                            "eval_task": eval_task,
                            "rule": asdict(plan.test),
                            "test_compressed": plan.test_compressed,
                            # the experiment's switch is not part of an evaluation's id: the condition is
                            "generation": unit_generation(cfg),
                            **({"prefix_cache": True} if cached else {}),
                            "data": prep[eval_task]["data"],
                            "scoring": unit_scoring(cfg, prep, eval_task),
                            "items": _eval_items(prep, eval_task),
                            "budget": budget if plan.train else {"policy": "untrained"},
                            **shared,
                            # an existing adapter (method `adapter`): its content is part of the id
                            **({"adapter_sha256": adapter["sha256"]} if adapter else {}),
                        }
                        uid = "eval-" + content_id({"c": c, "prev": prev})
                        units.append(Unit(uid, "eval", c, [prev] if prev else [], resources,
                                          _inputs(prep, eval_task)))
    # Untrained methods evaluate the same base model whatever the train task: keep one unit per id.
    seen, unique = set(), []
    for u in units:
        if u.id not in seen:
            seen.add(u.id)
            unique.append(u)
    unique += engine_units(cfg, unique, prep)
    for u in unique:
        u.task_paths = list(cfg.get("task_paths") or [])
        u.allow_task_shadowing = bool(cfg.get("allow_task_shadowing", False))
    return unique


def engine_units(cfg: dict, units: list[Unit], prep: dict) -> list[Unit]:
    """One engine unit per (model, eval task, seed) with evaluations to time (``timing.measure``; not on vLLM,
    whose evaluations time themselves): every evaluation served uncached, and cached where it generated with its
    prefix cache. It depends on the evaluations and on the stages whose adapters it serves."""
    timing = TimingSettings.from_dict(cfg.get("timing"))
    if not timing.measure or cfg["generation"].get("engine") == "vllm":
        return []
    groups: dict[tuple, list[Unit]] = {}
    for u in units:
        if u.kind == "eval":
            groups.setdefault((u.config["model"], u.config["eval_task"], u.config["seed"]), []).append(u)
    out = []
    resources = {**cfg["resources"], "num_cpus": timing.num_cpus or cfg["resources"]["num_cpus"]}
    for (model, eval_task, seed), evals in groups.items():
        conditions = []
        for u in evals:
            conditions.append({"eval": u.id, "prefix_cache": False})
            if u.config.get("prefix_cache"):
                conditions.append({"eval": u.id, "prefix_cache": True})
        c = {"model": model, "seed": seed, "eval_task": eval_task, "engine": cfg["generation"].get("engine", "hf"),
             "chat": cfg["prompt"]["chat"], "timing": timing.to_dict(),
             "conditions": conditions, "items": _eval_items(prep, eval_task), "data": prep[eval_task]["data"]}
        deps = list(dict.fromkeys(d for u in evals for d in (u.id, *u.deps)))
        uid = "engine-" + content_id({"c": c, "deps": deps})
        out.append(Unit(uid, "engine", c, deps, resources, _inputs(prep, eval_task)))
    return out


SELECTION_FILE = "selection.json"


def unit_summary(u: Unit) -> dict:
    """What a table needs to show a unit that has no valid result (failed or missing)."""
    c = u.config
    m = c.get("method") or {}
    return {"id": u.id, "kind": u.kind, "label": u.label, "model": c.get("model"), "seed": c.get("seed"),
            "method": m.get("name"), "method_label": eval_label(c) if m else None, "schedule": m.get("schedule"),
            "stages": m.get("stages"), "rate": m.get("rate"), "train_task": c.get("train_task"),
            "eval_task": c.get("eval_task"), "deps": list(u.deps), "prefix_cache": bool(c.get("prefix_cache"))}


def write_plan(root, units: list[Unit], prepared: dict[str, dict]) -> None:
    """``plan.json`` (every unit of the grid, so tables can show the ones without a result) and
    ``selection.json`` (every item id used and every near-duplicate removed) beside the results."""
    root = Path(root)
    atomic_write_json(root / PLAN_FILE, {"units": [unit_summary(u) for u in units]})
    atomic_write_json(root / SELECTION_FILE, {name: p["selection"].to_dict() for name, p in prepared.items()})
