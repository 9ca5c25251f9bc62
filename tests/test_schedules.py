"""Schedules: formulas, edge cases, stage plans."""

from __future__ import annotations

import math

import pytest

from promptintern.errors import ConfigError
from promptintern.schedules import (
    DEFAULT_LAMBDA,
    SCHEDULES,
    StagePlan,
    exponential_value,
    format_plan_table,
    get_schedule,
    inverse_exponential_value,
    keep_fractions,
    n_examples,
    plan_stages,
    plan_table,
)

SMOOTH = ["linear", "exponential", "inverse_exponential"]


@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize("T", [2, 3, 5, 8])
@pytest.mark.parametrize("lam", [0.5, DEFAULT_LAMBDA, 10.0])
def test_endpoints_and_monotone(name, T, lam):
    v = keep_fractions(name, T, lam=lam)
    assert len(v) == T and v[0] == pytest.approx(1.0) and v[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(v, v[1:], strict=False))
    assert all(0.0 <= x <= 1.0 for x in v)


@pytest.mark.parametrize("lam", [0.5, 1.0, 3.0, 7.0])
def test_exact_formulas_at_half(lam):
    v = keep_fractions("exponential", 3, lam=lam)
    assert v[1] == pytest.approx((math.exp(-lam / 2) - math.exp(-lam)) / (1 - math.exp(-lam)), rel=1e-12)
    w = keep_fractions("inverse_exponential", 3, lam=lam)
    assert w[1] == pytest.approx(1 - (math.exp(lam / 2) - 1) / (math.exp(lam) - 1), rel=1e-12)
    assert keep_fractions("linear", 3)[1] == 0.5
    # exponential drops fast first, inverse-exponential slowly first
    assert v[1] < 0.5 < w[1]


def test_formula_at_other_points():
    lam, T = 2.0, 5
    for t, s in enumerate(keep_fractions("exponential", T, lam=lam)):
        u = t / (T - 1)
        assert s == pytest.approx((math.exp(-lam * u) - math.exp(-lam)) / (1 - math.exp(-lam)), abs=1e-12)
    for t, s in enumerate(keep_fractions("inverse_exponential", T, lam=lam)):
        u = t / (T - 1)
        assert s == pytest.approx(1 - (math.exp(lam * u) - 1) / (math.exp(lam) - 1), abs=1e-12)


@pytest.mark.parametrize("lam", [0.0, 1e-15, -1e-15, 1e-7])
def test_lambda_to_zero_is_linear(lam):
    for u in (0.0, 0.25, 0.5, 1.0):
        assert exponential_value(u, lam) == pytest.approx(1 - u, abs=1e-6)
        assert inverse_exponential_value(u, lam) == pytest.approx(1 - u, abs=1e-6)


def test_extreme_lambdas_are_finite():
    for lam in (800.0, -800.0, 1e6):
        for f in (exponential_value, inverse_exponential_value):
            vals = [f(u, lam) for u in (0.0, 0.3, 1.0)]
            assert all(math.isfinite(x) and 0 <= x <= 1 for x in vals)
            assert vals[0] == pytest.approx(1.0) and vals[-1] == pytest.approx(0.0)


def test_single_stage_is_final_value():
    for name in SMOOTH:
        assert keep_fractions(name, 1) == [0.0]
    assert keep_fractions("constant", 1, value=0.4) == [0.4]
    assert keep_fractions("step", 1, steps=[(0, 0.5)]) == [0.5]
    [p] = plan_stages("linear", 1, K=4)
    assert p == StagePlan(0, 0.0, 0.0, 0) and p.query_only


def test_step_and_constant():
    assert keep_fractions("step", 5, steps=[(0, 1.0), (2, 0.5), (4, 0.0)]) == [1.0, 1.0, 0.5, 0.5, 0.0]
    assert keep_fractions("step", 4, steps={1: 0.5}) == [1.0, 0.5, 0.5, 0.5]
    assert keep_fractions("constant", 3, value=0.25) == [0.25] * 3
    assert keep_fractions("constant", 2, c=0.5, lam=3.0) == [0.5, 0.5]
    with pytest.raises(ConfigError):
        keep_fractions("step", 3, steps=[(5, 0.5)])
    with pytest.raises(ConfigError):
        get_schedule("step", steps=[(0, 1.5)])
    with pytest.raises(ConfigError):
        get_schedule("constant", value=2)


def test_registry_and_errors():
    assert set(SCHEDULES) >= {"linear", "exponential", "inverse_exponential", "step", "constant"}
    assert keep_fractions("inverse-exponential", 3, lam=1.0) == keep_fractions(
        "inverse_exponential", 3, lam=1.0
    )
    assert keep_fractions("exp", 3, lam=1.0) == keep_fractions("exponential", 3, lam=1.0)
    with pytest.raises(ConfigError):
        get_schedule("cosine")
    with pytest.raises(ConfigError):
        get_schedule("linear", steps=[(0, 1)])
    with pytest.raises(ConfigError):
        keep_fractions("linear", 0)


def test_n_examples_floor():
    assert n_examples(10, 0.3) == 3  # 10 * 0.3 = 2.9999999999999996 in floats
    assert n_examples(5, 0.99) == 4
    assert n_examples(4, 1.0) == 4 and n_examples(4, 0.0) == 0
    plans = plan_stages("linear", 5, K=4)
    assert (
        [p.n_examples for p in plans]
        == [math.floor(4 * s + 1e-9) for s in (1, 0.75, 0.5, 0.25, 0)]
        == [4, 3, 2, 1, 0]
    )
    assert [p.template_rate for p in plans] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert plans[-1].query_only and not plans[0].query_only


def test_template_rate_mapping():
    plans = plan_stages("linear", 3, K=2, template_ceiling=0.6)
    assert [p.template_rate for p in plans] == pytest.approx([0.6, 0.3, 0.0])
    plans = plan_stages("linear", 5, K=2, template_floor=0.2)
    assert [p.template_rate for p in plans] == pytest.approx(
        [1.0, 0.8, 0.6, 0.4, 0.0]
    )  # last stage: query only
    with pytest.raises(ConfigError):
        plan_stages("linear", 3, K=2, template_floor=0.8, template_ceiling=0.5)


def test_plan_table():
    plans = plan_stages("exponential", 4, K=5, lam=3.0)
    rows = plan_table(plans, prompt_tokens=[812.0, 300.25, 120.0, 40.0])
    assert [r["stage"] for r in rows] == [0, 1, 2, 3]
    assert set(rows[0]) == {
        "stage",
        "keep",
        "template_rate",
        "n_examples",
        "query_only",
        "mean_prompt_tokens",
    }
    assert rows[-1]["query_only"] and rows[1]["mean_prompt_tokens"] == 300.2
    assert "mean_prompt_tokens" not in plan_table(plans)[0]
    text = format_plan_table(rows)
    assert text.count("\n") == 5 and "template_rate" in text
    with pytest.raises(ValueError):
        plan_table(plans, prompt_tokens=[1.0])
