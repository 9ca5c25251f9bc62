"""Expand an experiment into units of work with content-hash ids.

Units:
- ``stage``: one fine-tuning stage of one (model, method grid point, train task, seed) chain; depends on the
  previous stage of its chain.
- ``eval``: one (trained artefact or base model, eval task) evaluation; depends on the chain's last stage.

A unit's id hashes its resolved config and the ids it depends on, so an unchanged unit keeps its id and its
result file, and a changed upstream stage changes every id downstream. The config includes what the unit's
result depends on beyond the experiment file (:func:`task_identities`): ``data``, the fingerprint of the data
files of the task it reads (a stage: its train task; an evaluation: its eval task, whose train split is the
example pool), and, for evaluations, ``scoring``, the task's metric, extractor and stop rule with their code
versions. A changed data file or a fixed metric re-runs exactly the units affected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from promptintern.hashing import content_id as _content_id
from promptintern.methods import (
    RATE_METHODS,
    SCHEDULED_METHODS,
    STAGED_METHODS,
    UNIT_KINDS,
    MethodSpec,
    plan_method,
)

# Keys added to the experiment schema after results were first published: at these values they are left out
# of unit ids, so adding a key does not orphan every stored result (a non-default value still changes the id).
LATE_KEYS: dict[tuple[str, str], object] = {("train", "packing"): False, ("train", "gradient_checkpointing"): False,
                                             ("generation", "engine"): "hf"}


def content_id(obj: dict) -> str:
    """A unit's id: the content hash of its config (and deps), with late-added keys at their default dropped."""
    c = obj.get("c") if isinstance(obj, dict) else None
    if isinstance(c, dict):
        c = dict(c)
        for (section, key), default in LATE_KEYS.items():
            if isinstance(c.get(section), dict) and c[section].get(key, default) == default:
                c[section] = {k: v for k, v in c[section].items() if k != key}
        obj = {**obj, "c": c}
    return _content_id(obj)


@dataclass
class Unit:
    id: str
    kind: str  # "stage" | "eval"
    config: dict
    deps: list[str] = field(default_factory=list)
    resources: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        c = self.config
        if self.kind == "stage":
            return f"{c['method']['label']} {c['train_task']} stage {c['stage'] + 1}/{c['n_stages']}"
        return f"{c['method']['label']} {c['train_task'] or '-'}→{c['eval_task']}"

    def to_dict(self) -> dict:
        return asdict(self)


def method_specs(cfg: dict) -> list[MethodSpec]:
    """Each methods entry expands over its schedules and rates."""
    out = []
    k = cfg["prompt"]["k_examples"]
    for m in cfg["methods"]:
        schedules = (m.get("schedules") or [None]) if m["name"] in SCHEDULED_METHODS else [None]
        rates = (m.get("rates") or [1.0]) if m["name"] in RATE_METHODS else [1.0]
        for sched in schedules:
            for rate in rates:
                out.append(
                    MethodSpec(
                        name=m["name"],
                        schedule=sched,
                        rate=float(rate),
                        stages=int(m.get("stages", 1)) if sched or m["name"] in STAGED_METHODS else 1,
                        lam=float(m.get("lam", 3.0)),
                        k_examples=int(m.get("k_examples", k)),
                        options=dict(m.get("options") or {}),
                    )
                )
    return out


def _own_unit_kind(cfg, kind, model, seed, method, shared, resources, ident) -> list[Unit]:
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
                "generation": cfg["generation"],
                "data": {"train": ident[train_task]["data"], "eval": ident[eval_task]["data"]},
                "scoring": ident[eval_task]["scoring"],
                **shared,
            }
            uid = f"{kind}-" + content_id({"c": c, "prev": anchor})
            out.append(Unit(uid, kind, c, [anchor] if anchor else [], resources))
            anchor = anchor or uid
    return out


def task_identities(cfg: dict, data_dir=None) -> dict[str, dict]:
    """For every task of the grid: ``{"data": fingerprint of its files, "scoring": its scoring identity}``.
    Loads the tasks' train and test splits, so missing or malformed data fails here, before any unit runs."""
    import tasks
    from promptintern.paths import data_dir as resolve_data_dir

    root = resolve_data_dir(data_dir if data_dir is not None else cfg.get("data_dir"))
    names = list(cfg["tasks"]["train"])
    ev = cfg["tasks"]["eval"]
    names += [] if ev == "same" else [t for t in ev if t not in names]
    out = {}
    for name in names:
        task = tasks.get_task(name, data_dir=root)
        out[name] = {"data": task.data_fingerprint(), "scoring": task.scoring_identity()}
    return out


def build_plan(cfg: dict, identities: dict[str, dict] | None = None) -> list[Unit]:
    """The grid's units in dependency order. ``identities``: :func:`task_identities` (computed when None)."""
    ident = identities if identities is not None else task_identities(cfg)
    units: list[Unit] = []
    shared = {
        "prompt": cfg["prompt"],
        "train_limit": cfg["tasks"]["train_limit"],
        "test_limit": cfg["tasks"]["test_limit"],
    }
    resources = dict(cfg["resources"])
    for model in cfg["models"]:
        for seed in cfg["seeds"]:
            for spec in method_specs(cfg):
                plan = plan_method(spec)
                method = {**spec.to_dict(), "label": spec.label}
                # A method that trains exactly like another grid point (MethodPlan.train_spec) shares its stages.
                train_spec = plan.train_spec or spec
                train_method = {**train_spec.to_dict(), "label": train_spec.label}
                train_tasks = cfg["tasks"]["train"]
                if spec.name in UNIT_KINDS:
                    units.extend(_own_unit_kind(cfg, UNIT_KINDS[spec.name], model, seed, method, shared, resources,
                                                ident))
                    continue
                for train_task in train_tasks:
                    prev: str | None = None
                    for t, rule in enumerate(plan.train):
                        c = {
                            "model": model,
                            "seed": seed,
                            "method": train_method,
                            "train_task": train_task,
                            "stage": t,
                            "n_stages": len(plan.train),
                            "rule": asdict(rule),
                            "train": cfg["train"],
                            "data": ident[train_task]["data"],
                            **shared,
                        }
                        uid = "stage-" + content_id({"c": c, "prev": prev})
                        units.append(Unit(uid, "stage", c, [prev] if prev else [], resources))
                        prev = uid
                    ev = cfg["tasks"]["eval"]
                    eval_tasks = [train_task] if ev == "same" else list(ev)
                    for eval_task in eval_tasks:
                        c = {
                            "model": model,
                            "seed": seed,
                            "method": method,
                            "train_task": train_task if plan.train else None,
                            "eval_task": eval_task,
                            "rule": asdict(plan.test),
                            "test_compressed": plan.test_compressed,
                            "generation": cfg["generation"],
                            "data": ident[eval_task]["data"],
                            "scoring": ident[eval_task]["scoring"],
                            **shared,
                        }
                        uid = "eval-" + content_id({"c": c, "prev": prev})
                        units.append(Unit(uid, "eval", c, [prev] if prev else [], resources))
    # Untrained methods evaluate the same base model whatever the train task: keep one unit per id.
    seen, unique = set(), []
    for u in units:
        if u.id not in seen:
            seen.add(u.id)
            unique.append(u)
    return unique
