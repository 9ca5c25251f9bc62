"""Method plans: every baseline's training stages and test-time prompt, exactly as documented."""

from dataclasses import asdict
from pathlib import Path

import pytest

from promptintern.errors import ConfigError
from promptintern.methods import (
    METHODS,
    MethodSpec,
    PromptRule,
    StageRule,
    objective_of,
    plan_method,
    rule_from_dict,
)

K = 2
QUERY_ONLY = PromptRule(0.0, 0)
FULL = PromptRule(1.0, K)
ROOT = Path(__file__).resolve().parent.parent


def spec(name, **kw):
    kw.setdefault("k_examples", K)
    info = METHODS[name]
    if info.scheduled:
        kw.setdefault("schedule", "linear")
    if info.scheduled or info.staged:
        kw.setdefault("stages", 3)
    if info.uses_rate:
        kw.setdefault("rate", 0.5)
    return MethodSpec(name=name, **kw)


def test_full_prompt_ft_trains_and_tests_on_template_examples_and_query():
    p = plan_method(spec("full_prompt_ft"))
    assert p.train == [FULL] and p.test == FULL and not p.test_compressed and p.train_spec is None


def test_query_only_few_shot_and_compression_at_inference():
    q = plan_method(spec("query_only_ft"))
    assert q.train == [QUERY_ONLY] and q.test == QUERY_ONLY
    f = plan_method(spec("few_shot"))
    assert f.train == [] and f.test == FULL and not f.test_compressed
    c = plan_method(spec("compress_at_inference", rate=0.3))
    assert c.train == [] and c.test == PromptRule(0.3, K) and c.test_compressed
    assert not plan_method(spec("compress_at_inference", rate=1.0)).test_compressed


def test_full_prompt_ft_compressed_trains_like_full_prompt_ft_and_tests_compressed():
    from promptintern.harness.plan import method_specs

    p = plan_method(spec("full_prompt_ft_compressed", rate=0.3))
    assert p.train == plan_method(spec("full_prompt_ft")).train
    assert p.test == PromptRule(0.3, K) and p.test_compressed
    # train_spec is exactly the grid point the plan makes for `- name: full_prompt_ft` with the same K.
    cfg = {"prompt": {"k_examples": K}, "methods": [{"name": "full_prompt_ft"}]}
    (full_spec,) = method_specs(cfg)
    assert p.train_spec.to_dict() == full_spec.to_dict() and p.train_spec.label == full_spec.label


def test_full_prompt_ft_compressed_shares_the_full_prompt_ft_chain():
    from promptintern.harness import plan as plan_mod

    cfg = _cfg([{"name": "full_prompt_ft"}, {"name": "full_prompt_ft_compressed", "rates": [0.3, 0.5]}])
    units = plan_mod.build_plan(cfg)
    stages = [u for u in units if u.kind == "stage"]
    assert len(stages) == 1  # one chain, three evaluations
    evals = [u for u in units if u.kind == "eval"]
    assert len(evals) == 3 and all(u.deps == [stages[0].id] for u in evals)


def test_promptintern_unchanged():
    # prompt.first_stage: full (the default) — stage 0 sees the whole template, later stages rate·S_t
    p = plan_method(spec("promptintern"))
    assert p.train == [PromptRule(1.0, 2), PromptRule(0.25, 1), QUERY_ONLY] and p.test == QUERY_ONLY
    # first_stage: rate — the earlier plans, stage 0 already compressed to the rate
    r = plan_method(spec("promptintern", first_stage="rate"))
    assert r.train == [PromptRule(0.5, 2), PromptRule(0.25, 1), QUERY_ONLY]
    assert spec("promptintern", first_stage="rate").label.endswith("/first-rate")


def test_template_only_keeps_examples_everywhere_and_schedules_the_template():
    p = plan_method(spec("promptintern_template_only"))
    pi = plan_method(spec("promptintern"))
    assert [r.template_rate for r in p.train] == [r.template_rate for r in pi.train] == [1.0, 0.25, 0.0]
    assert [r.n_examples for r in p.train] == [K, K, K]
    assert p.test == PromptRule(0.0, K) and not p.test_compressed


def test_examples_only_keeps_the_full_template_and_absorbs_examples():
    p = plan_method(spec("promptintern_examples_only"))
    pi = plan_method(spec("promptintern"))
    assert [r.template_rate for r in p.train] == [1.0, 1.0, 1.0]
    assert [r.n_examples for r in p.train] == [r.n_examples for r in pi.train] == [2, 1, 0]
    assert p.test == PromptRule(1.0, 0)


def test_no_progression_jumps_from_the_first_prompt_to_query_only():
    p = plan_method(spec("promptintern_no_progression", stages=4, rate=0.7))
    assert p.train == [PromptRule(1.0, K)] * 3 + [QUERY_ONLY] and p.test == QUERY_ONLY  # first_stage: full
    p = plan_method(spec("promptintern_no_progression", stages=4, rate=0.7, first_stage="rate"))
    assert p.train == [PromptRule(0.7, K)] * 3 + [QUERY_ONLY]
    # T = 2 has no intermediate stage, so it equals PromptIntern's linear T = 2.
    two = plan_method(spec("promptintern_no_progression", stages=2))
    assert two.train == plan_method(spec("promptintern", stages=2)).train
    with pytest.raises(ConfigError, match="stages >= 2"):
        plan_method(spec("promptintern_no_progression", stages=1))
    assert spec("promptintern_no_progression", stages=4, rate=0.7).label == "promptintern_no_progression/jump-T4/r0.7"


def test_distillation_and_baking_stage_rules():
    d = plan_method(spec("context_distillation", options={"teacher_max_new_tokens": 64}))
    (rule,) = d.train
    assert isinstance(rule, StageRule) and objective_of(rule) == "distill" and rule.targets == "teacher"
    assert rule.student == QUERY_ONLY and rule.teacher == FULL and rule.max_new_tokens == 64
    assert d.test == QUERY_ONLY
    b = plan_method(spec("prompt_baking"))
    (rule,) = b.train
    assert objective_of(rule) == "bake" and rule.targets == "teacher" and rule.temperature == 1.0
    assert rule.student == QUERY_ONLY and rule.teacher == FULL and b.test == QUERY_ONLY
    r = plan_method(spec("prompt_baking", options={"targets": "reference", "temperature": 2})).train[0]
    assert r.targets == "reference" and r.temperature == 2.0
    assert spec("prompt_baking", options={"targets": "reference"}).label == "prompt_baking/reference-targets"
    with pytest.raises(ConfigError, match="unknown option"):
        plan_method(spec("prompt_baking", options={"tagrets": "reference"}))
    with pytest.raises(ConfigError, match="targets"):
        plan_method(spec("prompt_baking", options={"targets": "gold"}))
    with pytest.raises(ConfigError):
        StageRule(0.0, 0, objective="distill", targets="reference")


def test_rules_serialize_backwards_compatibly():
    """plan.py stores asdict(rule); eval_unit reads PromptRule(**d); stage_unit reads rule_from_dict(d)."""
    assert asdict(PromptRule(0.5, 2)) == {"template_rate": 0.5, "n_examples": 2}
    for name in METHODS:
        p = plan_method(spec(name, **({"options": {"path": "/some/adapter"}} if name == "adapter" else {})))
        assert type(p.test) is PromptRule and PromptRule(**asdict(p.test)) == p.test
        for rule in p.train:
            back = rule_from_dict(asdict(rule))
            assert back == rule and type(back) is type(rule)
            if objective_of(rule) == "sft":
                assert type(rule) is PromptRule  # SFT stages keep their two-key form (and their unit ids)


def test_labels_are_unique_over_a_grid():
    specs = [spec(n) for n in METHODS] + [
        spec("prompt_baking", options={"targets": "reference"}),
        spec("promptintern", rate=1.0),
        spec("compress_at_inference", rate=0.3),
    ]
    labels = [s.label for s in specs]
    assert len(labels) == len(set(labels))


def _cfg(methods):
    from promptintern.harness.config import DEFAULTS, deep_merge, validate

    cfg = deep_merge(DEFAULTS, {"models": ["tiny"]})
    cfg["methods"] = methods
    validate(cfg)
    return cfg


def test_full_yaml_has_every_method_and_validates():
    from promptintern.harness.config import load_experiment

    cfg = load_experiment(ROOT / "experiments" / "full.yaml")
    from promptintern.harness import plan as plan_mod
    # MetaTuner (its own unit kind) has its own experiment files (experiments/metatuner_*.yaml); `adapter` evaluates
    # an adapter trained elsewhere (evaluation-only experiments, tests/test_task_folders.py).
    assert {m["name"] for m in cfg["methods"]} == {n for n, m in METHODS.items() if m.unit_kind == "stage"} - {"adapter"}
    labels = {u.config["method"]["label"] for u in plan_mod.build_plan(cfg) if u.kind != "engine"}
    assert "promptintern_no_progression/jump-T3/r0.5" in labels


def test_method_specs_keep_stages_for_staged_methods_once_plan_supports_it():
    from promptintern.harness import plan as plan_mod

    cfg = {"prompt": {"k_examples": K}, "methods": [{"name": "promptintern_no_progression", "stages": 3}]}
    (s,) = plan_mod.method_specs(cfg)
    assert s == spec("promptintern_no_progression", stages=3, rate=1.0)
