"""Comparisons that hold up: matched budgets, valid methods, seeded shared samples, clean splits, intervals on
every difference, failed grid points shown as failed."""

import json

import pytest
from _results_factory import build_store

from promptintern.errors import ConfigError
from promptintern.harness.config import WARNINGS_KEY, load_experiment
from promptintern.harness.stats import items_for_difference, paired_difference, ratio_interval

# -- statistics by hand -----------------------------------------------------------------------------------------

def test_paired_difference_and_ratio_by_hand():
    a = {"x": 3.0, "y": 5.0, "z": 7.0, "only_a": 100.0}
    b = {"x": 1.0, "y": 4.0, "z": 4.0}
    d = paired_difference(a, b)
    assert d["method"] == "bootstrap"
    assert d["n"] == 3 and d["mean"] == pytest.approx(2.0)  # (2 + 1 + 3) / 3 on the common items only
    assert d["sd"] == pytest.approx(1.0)
    assert 1.0 <= d["lo"] <= 2.0 <= d["hi"] <= 3.0 and d["includes_zero"] is False
    assert paired_difference({"x": 1, "y": 0}, {"x": 0, "y": 1})["includes_zero"] is True
    assert paired_difference(a, b) == paired_difference(a, b)  # seeded
    # base / method on the same queries; two queries: the range of their ratios, never called a CI
    r = ratio_interval({"q1": [4.0], "q2": [8.0]}, {"q1": [1.0], "q2": [2.0]})
    assert r["ratio"] == pytest.approx(4.0) and (r["lo"], r["hi"]) == pytest.approx((4.0, 4.0))
    assert r["method"] == "range" and r["n"] == 2
    # n = ((1.96 + 0.8416) * sd / delta)^2: sd 10, delta 2 -> 196.2 -> 197 items
    assert items_for_difference(10.0, 2.0) == 197
    assert items_for_difference(0.0, 2.0) != items_for_difference(0.0, 2.0)  # NaN: nothing varied


# -- the main table ---------------------------------------------------------------------------------------------

def test_main_table_has_steps_paired_differences_and_speedup_intervals(tmp_path):
    import pandas as pd

    from promptintern.harness.tables import write_tables

    store = build_store(tmp_path / "exp", cross_domain=False)
    paths = write_tables(store)
    df = pd.read_csv(paths["csv"])
    for col in ("train_steps", "delta_full", "delta_full_lo", "delta_full_hi", "delta_query", "delta_query_lo",
                "delta_query_hi", "speedup_full", "speedup_full_lo", "speedup_full_hi", "throughput_full_cached",
                "status"):
        assert col in df.columns, col
    pi = df[df["method"] == "promptintern"].iloc[0]
    # pass@1 per item: PI [1,1,1,0], full [1,0,1,1], query [0,0,1,1] -> differences in points
    assert pi["delta_full"] == pytest.approx(0.0) and pi["delta_query"] == pytest.approx(25.0)
    assert pi["delta_full_lo"] < 0 < pi["delta_full_hi"]
    assert pi["train_steps"] == 4  # the factory's two PI stages record 2 steps each
    assert pi["speedup_full"] == pytest.approx(0.7 / 0.2)
    assert pi["speedup_full_lo"] <= pi["speedup_full"] <= pi["speedup_full_hi"]
    md = paths["markdown"].read_text()
    assert "Δ vs full-prompt FT" in md and "+0.0 [" in md and " ns |" in md


def test_a_failed_grid_point_shows_as_failed_in_the_tables_and_the_report(tmp_path):
    from promptintern.harness.report import build_all
    from promptintern.harness.store import PLAN_FILE

    store = build_store(tmp_path / "exp", cross_domain=False)
    units = [{"id": r["unit_id"], "kind": "eval", "label": r["config"]["method"]["label"]} for r in store.records("eval")]
    units.append({"id": "eval-broken", "kind": "eval", "label": "promptintern/exponential-T3/r0.5", "model": "tiny",
                  "seed": 0, "method": "promptintern", "method_label": "promptintern/exponential-T3/r0.5",
                  "schedule": "exponential", "stages": 3, "rate": 0.5, "train_task": "mbpp", "eval_task": "mbpp"})
    units.append({"id": "eval-never", "kind": "eval", "label": "query_only_ft", "model": "tiny", "seed": 0,
                  "method": "few_shot", "method_label": "few_shot/k3", "train_task": None, "eval_task": "mbpp"})
    (store.root / PLAN_FILE).write_text(json.dumps({"units": units}))
    store.path("eval-broken").write_text(json.dumps({"unit_id": "eval-broken", "kind": "eval", "status": "failed",
                                                     "error": "CUDA out of memory"}))
    out = build_all(store)
    main_md = (store.root / "tables" / "main.md").read_text()
    assert "FAILED: CUDA out of memory" in main_md and "MISSING" in main_md
    report = out["report"]["markdown"].read_text()
    assert "FAILED: promptintern/exponential-T3/r0.5 mbpp→mbpp — CUDA out of memory" in report
    assert "MISSING: few_shot/k3" in report


# -- config validity --------------------------------------------------------------------------------------------

def test_promptintern_needs_two_stages_and_ignored_method_keys_are_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"methods\[0\]\.stages.*stages >= 2"):
        load_experiment(None, ["methods=[{name: promptintern, schedules: [linear], stages: 1}]"])
    with pytest.raises(ConfigError, match=r"methods\[0\]\.stages"):
        load_experiment(None, ["methods=[{name: promptintern, schedules: [linear]}]"])  # no T: not T = 1
    with pytest.raises(ConfigError, match=r"methods\[0\]\.stages.*stages >= 2"):
        load_experiment(None, ["methods=[{name: promptintern, schedules: [linear], stages: true}]"])
    for key, value in (("stages", 3), ("rates", "[0.5]"), ("schedules", "[linear]"), ("options", "{a: 1}")):
        with pytest.raises(ConfigError, match=rf"methods\[0\]\.{key}: full_prompt_ft does not use"):
            load_experiment(None, [f"methods=[{{name: full_prompt_ft, {key}: {value}}}]"])
    # the command line names the field too, before anything runs
    from promptintern.cli import main

    exp = tmp_path / "bad.yaml"
    exp.write_text("methods:\n  - {name: promptintern, schedules: [linear], stages: 1}\n")
    assert main(["plan", str(exp)]) == 2
    assert "methods[0].stages" in capsys.readouterr().err


def test_schedules_that_coincide_at_the_chosen_stages_are_warned_about():
    two = load_experiment(None, ["methods=[{name: promptintern, schedules: [linear, exponential], stages: 2}]"])
    assert any("linear and exponential give identical stage plans" in w for w in two[WARNINGS_KEY])
    three = load_experiment(None, ["methods=[{name: promptintern, schedules: [linear, exponential], stages: 3}]"])
    assert WARNINGS_KEY not in three
    # at T = 2 with the full first stage no template is ever compressed: the rate is ignored
    idle = load_experiment(None, ["methods=[{name: promptintern, schedules: [linear], stages: 2, rates: [0.5]}]"])
    assert any("methods[0].rates: 0.5 change nothing" in w for w in idle[WARNINGS_KEY])
    assert WARNINGS_KEY not in load_experiment(None, ["methods=[{name: promptintern, schedules: [linear], "
                                                      "stages: 3, rates: [0.5]}]"])


def test_first_stage_full_sees_the_whole_template():
    from promptintern.methods import MethodSpec, plan_method

    full = plan_method(MethodSpec("promptintern", "linear", 0.5, 3, k_examples=2))
    assert [(r.template_rate, r.n_examples) for r in full.train] == [(1.0, 2), (0.25, 1), (0.0, 0)]
    rate = plan_method(MethodSpec("promptintern", "linear", 0.5, 3, k_examples=2, first_stage="rate"))
    assert [(r.template_rate, r.n_examples) for r in rate.train] == [(0.5, 2), (0.25, 1), (0.0, 0)]


# -- samples and contamination ----------------------------------------------------------------------------------

def test_draws_are_seeded_in_file_order_and_stratified():
    from promptintern.harness.selection import draw
    from promptintern.task_types import Example

    exs = [Example(f"e{i}", "q", "r", {"u": ["find"] if i < 6 else ["ls"]}) for i in range(10)]
    a = draw(exs, 5, 0, "t/train", "u")
    assert a == draw(exs, 5, 0, "t/train", "u") and a == sorted(a, key=lambda i: int(i[1:]))
    assert sum(int(i[1:]) < 6 for i in a) == 3  # 6 of 10 are "find": 3 of the 5 drawn
    assert draw(exs, 5, 1, "t/train", "u") != a or draw(exs, 5, 2, "t/train", "u") != a  # the seed matters
    assert draw(exs, None, 0, "t/train") == [e.id for e in exs]


def test_mbpp_near_duplicates_of_test_items_are_never_trained_on_or_retrieved(data):
    from promptintern import tasks
    from promptintern.harness.selection import select, unit_items
    from promptintern.harness.unit_common import prompt_builder
    from promptintern.methods import PromptRule

    cfg = load_experiment(None, ["tasks.train=[mbpp]", "tasks.train_limit=null", "tasks.test_limit=null",
                                 "prompt.retriever=bm25", "prompt.compressor={name: truncate}"])
    task = tasks.get_task("mbpp", data)
    sel = select(cfg, {"mbpp": task})["mbpp"]
    removed = {r["id"]: r for r in sel.removed}
    assert removed["mbpp/704"]["test_id"] == "mbpp/248" and removed["mbpp/704"]["similarity"] == 1.0
    assert {"mbpp/872", "mbpp/602"} <= set(removed)  # identical problem texts of test 216 and 217
    assert "mbpp/704" not in sel.train_ids and len(sel.train_ids) == sel.pool_size == 374 - len(removed)
    items = unit_items(task, sel.inputs())
    assert "mbpp/704" not in {ex.id for ex in items.pool}
    builder = prompt_builder({**cfg, "method": {"k_examples": 5}}, task, items.pool, items.test_split)
    t248 = next(ex for ex in items.test if ex.id == "mbpp/248")
    demos = builder.build(t248, PromptRule(1.0, 5), with_answer=False).demo_ids
    assert len(demos) == 5 and "mbpp/704" not in demos
    # with the guard off, 704 is the first demonstration retrieved for 248: the guard is what keeps it out
    off = select({**cfg, "tasks": {**cfg["tasks"], "near_duplicate_threshold": None}}, {"mbpp": task})["mbpp"]
    raw = unit_items(task, off.inputs())
    b2 = prompt_builder({**cfg, "method": {"k_examples": 1}}, task, raw.pool, raw.test_split)
    assert b2.build(t248, PromptRule(1.0, 1), with_answer=False).demo_ids == ["mbpp/704"]


# -- matched budgets, end to end on the tiny model --------------------------------------------------------------

def test_promptintern_and_its_baselines_take_equal_optimizer_steps(tmp_path, data, ray_local):
    import pandas as pd

    from promptintern.harness.executor import run_plan
    from promptintern.harness.plan import build_plan
    from promptintern.harness.store import ResultStore
    from promptintern.harness.tables import write_tables

    over = ["name=budget", "models=[tiny]", "tasks.train=[mbpp]", "tasks.train_limit=4", "tasks.test_limit=2",
            "methods=[{name: full_prompt_ft}, {name: query_only_ft}, "
            "{name: promptintern, schedules: [linear], stages: 3, rates: [0.5]}]",
            "prompt.compressor={name: truncate, tokenizer: tiny}", "train.batch_size=2", "train.max_length=384",
            "generation.batch_size=2", "generation.max_new_tokens=4", "generation.measure=false",
            f"results_dir={tmp_path}"]
    cfg = load_experiment(None, over)
    units = build_plan(cfg)
    steps = {}
    for u in units:
        if u.kind == "stage":
            steps.setdefault(u.config["method"]["label"], []).append(u.config["train"]["max_steps"])
    # 4 items, batch 2, 1 epoch: 2 steps per stage; the longest chain (T = 3) takes 6
    assert steps == {"full_prompt_ft": [6], "query_only_ft": [6], "promptintern/linear-T3/r0.5": [2, 2, 2]}
    store = ResultStore(tmp_path / "budget")
    assert run_plan(units, store, data_dir=str(data), progress=False).ok
    main = pd.read_csv(write_tables(store)["csv"])
    assert sorted(main["train_steps"]) == [6, 6, 6] and set(main["budget"]) == {"matched"}
    per_stage = build_plan(load_experiment(None, [*over, "train.budget=per_stage"]))
    assert all("max_steps" not in u.config["train"] for u in per_stage if u.kind == "stage")


def test_metatuner_rows_pay_for_the_generator_call(tmp_path):
    from _results_factory import TEST_TABLE, _method, eval_record

    from promptintern.harness.aggregate import eval_frame
    from promptintern.harness.cost import parse_table, record_costs
    from promptintern.harness.store import ResultStore

    rec = eval_record("eval-mt", method={**_method("metatuner"), "label": "metatuner-J"}, train_task="mbpp",
                      eval_task="mbpp", scores=[1, 0], in_tokens=[120, 120], out_tokens=[20, 20], in_o200k=[50, 70],
                      out_o200k=[10, 30], template_o200k=[0, 0], gen_seconds=2.0, latency=[(0.1, 0.5), (0.1, 0.5)])
    for s in rec["samples"]:
        s["generator_tokens"] = {"model": 300, "output": 24, "o200k_base": 200, "cl100k_base": 210,
                                 "output_tiktoken": {"o200k_base": 20, "cl100k_base": 22}}
    rec["efficiency"].update(mean_total_input_tokens=420.0, mean_total_output_tokens=44.0)
    table = parse_table(TEST_TABLE, "test-prices")
    api = record_costs(rec, table)["api"]["api-o200k"]
    # fine-tuned rates: input 2.0, output 8.0 per 1M; actor (50 | 70 in, 10 | 30 out) + generator (200 in, 20 out)
    per_query = [((50 + 200) * 2.0 + (10 + 20) * 8.0) / 1e6, ((70 + 200) * 2.0 + (30 + 20) * 8.0) / 1e6]
    assert api["usd_per_1k"] == pytest.approx(1000 * sum(per_query) / 2)
    assert api["input_tokens"] == pytest.approx(260.0) and api["output_tokens"] == pytest.approx(40.0)
    store = ResultStore(tmp_path / "exp")
    store.write("eval-mt", rec)
    row = eval_frame(store).iloc[0]
    assert row["input_tokens"] == 420.0 and row["output_tokens"] == 44.0 and row["includes_generator"]
    assert row["input_tokens_o200k"] == pytest.approx(260.0)


def test_interval_bounds_never_round_to_a_signless_zero():
    from promptintern.harness.format import bound, delta

    assert bound(0.04) == "+0.04" and bound(-0.004) == "-0.00" and bound(0.0) == "+0.0"
    assert bound(2.6) == "+2.6" and bound(-0.05) == "-0.1"
    row = {"d_query": 2.6, "d_query_lo": 0.04, "d_query_hi": 6.1, "d_query_ns": False}
    assert delta("d_query")(row) == "+2.6 [+0.04, +6.1]"
