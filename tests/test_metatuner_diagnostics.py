"""MetaTuner diagnostics: degenerate prompts, prompt variety, the spread of the per-query LoRAs, D2 / loss
summaries, the unit's ``diagnostics`` and the report's "MetaTuner diagnostics" section. Values computed by hand."""

import math

import pytest
import torch
from _results_factory import build_store, eval_record, write_price_dir

from promptintern.harness.metatuner_unit import diagnostics
from promptintern.harness.report import build_all, metatuner_diagnostics_frame
from promptintern.metatuner.diagnostics import (
    degenerate_reason,
    delta_w_spread,
    prompt_diagnostics,
    training_diagnostics,
)


@pytest.mark.parametrize("prompt, reason", [
    ("You are a helpful assistant. Solve the math problem step by step.", None),
    ("Steps:\nRead the question carefully.\nAnswer:", None),  # lines ending with ':' are prose
    ("return the sum of the list", None),  # 'return' followed by prose
    ("Let x be the apples Tom has.\ny = 2 * x", None),  # one assignment line of two: not > 30 % twice
    ("Be brief and exact.\n\n  Be brief and exact.  ", "repeated line"),  # stripped, blank lines ignored
    ("Write it\nWrite it\nimport os", "repeated line"),  # the first rule that applies
    ("```bash\nls -la /tmp\n```", "code"),
    ("Respond with exactly one Markdown code block that starts with ```python and ends with ```.", None),
    ("def add(a, b):\n    return a + b", "code"),
    ("import numpy as np", "code"),
    ("from os import path and more words", "code"),
    ("for x in items:\n    print(x)", "code"),
    ("Print the result now;", "code"),  # a ;-ended line
    ("x = 1\ny += 2\nThen add them together now", "code"),  # 2 of 3 lines are assignments
    ("Compute total cost", "under 4 words"),
    ("", "under 4 words"),
    ("Return the sum.", "under 4 words"),  # capitalised: prose, but short
])
def test_degenerate_reason(prompt, reason):
    assert degenerate_reason(prompt) == reason


class _Counter:
    """A promptintern.tokens-style counter: one token per word."""

    def count(self, text: str) -> int:
        return len(text.split())


def _hf_tok(text, add_special_tokens=False):
    """An HF-style tokenizer: one token per character."""
    return {"input_ids": list(text)}


def test_prompt_diagnostics_by_hand():
    prompts = ["Solve the problem step by step.", " Solve the problem step by step. ",
               "def f(x):\n    return x", "Answer:", "Line one here ok\nLine one here ok"]
    d = prompt_diagnostics(prompts, _Counter())
    assert d["n"] == 5 and d["distinct"] == 4 and d["distinct_fraction"] == pytest.approx(0.8)
    assert d["most_common_share"] == pytest.approx(0.4) and d["most_common"] == "Solve the problem step by step."
    assert d["degenerate"] == 3 and d["degenerate_fraction"] == pytest.approx(0.6)
    assert d["degenerate_counts"] == {"repeated line": 1, "code": 1, "under 4 words": 1}
    # words: 6, 6, 4 (def, f(x):, return, x), 1, 8 -> mean 25 / 5
    assert d["words"] == {"mean": 5.0, "min": 1.0, "max": 8.0}
    assert d["tokens"] == d["words"]
    t = prompt_diagnostics(["abc", "de"], _hf_tok)["tokens"]
    assert t == {"mean": 2.5, "min": 2.0, "max": 3.0}
    assert "tokens" not in prompt_diagnostics(["abc"])
    empty = prompt_diagnostics([])
    assert empty["n"] == 0 and empty["distinct_fraction"] is None and empty["most_common_share"] is None
    assert empty["words"]["mean"] is None


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_delta_w_spread_identical_factors_is_zero():
    A = torch.randn(1, 2, 5).expand(3, -1, -1)
    B = torch.randn(1, 4, 2).expand(3, -1, -1)
    d = delta_w_spread({"q": (A, B)}, scale=0.5)
    assert d["n"] == 3 and d["layers"] == 1
    assert d["spread"] == pytest.approx(0.0, abs=1e-6) and d["abs_spread"] == pytest.approx(0.0, abs=1e-6)
    assert d["mean_norm"] == pytest.approx(float(torch.linalg.matrix_norm(0.5 * B[0] @ A[0])), rel=1e-5)
    # all-zero factors (F's W_u^b starts at zero): spread 0, not 0 / 0
    z = delta_w_spread({"q": (torch.zeros(2, 1, 3), torch.zeros(2, 3, 1))})
    assert z["spread"] == 0.0 and z["mean_norm"] == 0.0


@pytest.mark.parametrize("chunk", [1, 16])
def test_delta_w_spread_by_hand(chunk):
    # layer a (1x1, r=1): ΔW = 1, 3 -> mean 2, deviations 1, 1 -> spread 1/2, mean norm 2
    a = (_t([[[1.0]], [[1.0]]]), _t([[[1.0]], [[3.0]]]))
    # layer b (2x2, r=1): ΔW_1 = e1 e1^T, ΔW_2 = e2 e2^T -> mean diag(.5, .5), ||mean|| = sqrt(.5),
    # ||ΔW_i - mean|| = sqrt(.5) -> spread 1, mean norm 1
    b = (_t([[[1.0, 0.0]], [[0.0, 1.0]]]), _t([[[1.0], [0.0]], [[0.0], [1.0]]]))
    d = delta_w_spread({"a": a, "b": b}, chunk=chunk)
    pa, pb = d["per_layer"]["a"], d["per_layer"]["b"]
    assert pa["spread"] == pytest.approx(0.5) and pa["abs_spread"] == pytest.approx(1.0)
    assert pa["mean_norm"] == pytest.approx(2.0) and pa["norm_of_mean"] == pytest.approx(2.0)
    assert pb["spread"] == pytest.approx(1.0) and pb["abs_spread"] == pytest.approx(math.sqrt(0.5))
    assert pb["mean_norm"] == pytest.approx(1.0) and pb["norm_of_mean"] == pytest.approx(math.sqrt(0.5))
    assert d["spread"] == pytest.approx(0.75) and d["mean_norm"] == pytest.approx(1.5)
    # λ scales every norm, not the relative spread
    s = delta_w_spread({"a": a, "b": b}, scale=2.0, chunk=chunk)
    assert s["spread"] == pytest.approx(0.75) and s["mean_norm"] == pytest.approx(3.0)
    assert s["abs_spread"] == pytest.approx((2.0 + 2 * math.sqrt(0.5)) / 2)


OLD_TRAIN = {  # the shape of a committed record's metatuner.train (no d2_mean_reward / d2_fallback)
    "steps": [{"step": 0, "epoch": 0, "task_loss": 2.0, "reg_loss": None},
              {"step": 1, "epoch": 0, "task_loss": 1.5, "reg_loss": 0.9},
              {"step": 2, "epoch": 1, "task_loss": 1.0, "reg_loss": 0.7}],
    "rollouts": [{"epoch": 0, "step": 0, "d2_size": 0, "mean_score": 0.0},
                 {"epoch": 1, "step": 2, "d2_size": 3, "mean_score": 0.5, "d2_mean_reward": 1.0,
                  "d2_fallback": False},
                 {"epoch": 2, "step": 4, "d2_size": 2, "mean_score": 0.25, "d2_mean_reward": 0.5,
                  "d2_fallback": True}],
    "syncs": [0, 2, 4],
}


def test_training_diagnostics():
    d = training_diagnostics(OLD_TRAIN)
    assert d["rebuilds"] == 3 and d["d2_sizes"] == [0, 3, 2] and d["d2_empty"] == 1 and d["d2_fallbacks"] == 1
    assert d["d2_mean_rewards"] == [None, 1.0, 0.5] and d["rollout_mean_scores"] == [0.0, 0.5, 0.25]
    assert d["rollout_steps"] == [0, 2, 4] and d["steps"] == 3 and d["syncs"] == 3
    assert d["task_loss"] == {"steps": 3, "first": 2.0, "last": 1.0, "mean": 1.5}
    assert d["reg_loss"] == {"steps": 2, "first": 0.9, "last": 0.7, "mean": pytest.approx(0.8)}
    e = training_diagnostics(None)
    assert e["rebuilds"] == 0 and e["task_loss"]["first"] is None


class _FakeMT:
    """What :func:`promptintern.harness.metatuner_unit.diagnostics` uses of a MetaTuner: g_text, factors, F, tok."""

    def __init__(self, with_f: bool):
        self.F = object() if with_f else None
        self.tok = _Counter()
        self.calls = []

    def g_text(self, seed, query):
        return f"{seed}|{query}"

    def factors(self, g_texts):
        self.calls.append(list(g_texts))
        assert not torch.is_grad_enabled()
        b = torch.tensor([[[float(t.split("|")[1])]] for t in g_texts])  # ΔW_i = the query's number
        return {"q": (torch.ones(len(g_texts), 1, 1), b)}


class _Task:
    def format_query(self, ex):
        return ex


class _Cfg:
    prompt_branch, lora_scale = True, 1.0


def test_unit_diagnostics_with_and_without_parameter_branch():
    mt = _FakeMT(with_f=True)
    d = diagnostics(mt, _Cfg(), _Task(), ["1", "3"], "seed", ["one two three four", "one two"], OLD_TRAIN,
                    batch_size=1)
    assert mt.calls == [["seed|1"], ["seed|3"]]  # the test queries' G inputs, in batches
    assert d["param_branch"] and d["prompt_branch"]
    assert d["prompts"]["degenerate_counts"]["under 4 words"] == 1 and d["prompts"]["tokens"]["mean"] == 3.0
    assert d["delta_w"]["n"] == 2 and d["delta_w"]["spread"] == pytest.approx(0.5)  # ΔW = 1, 3 as above
    assert d["training"]["d2_sizes"] == [0, 3, 2]
    no_f = diagnostics(_FakeMT(with_f=False), _Cfg(), _Task(), ["1"], "seed", ["a b c d"], {}, batch_size=4)
    assert no_f["delta_w"] is None and not no_f["param_branch"] and no_f["training"]["rebuilds"] == 0


def _metatuner_record(uid: str, label: str, prompts: list[str], train: dict, diag: dict | None = None) -> dict:
    n = len(prompts)
    method = {"name": "metatuner", "schedule": None, "rate": 1.0, "stages": 1, "lam": 3.0, "k_examples": 1,
              "options": {"variant": "J"}, "label": label}
    rec = eval_record(uid, method=method, train_task="mbpp", eval_task="mbpp", scores=[1.0] * n,
                      in_tokens=[100] * n, out_tokens=[10] * n, in_o200k=[50] * n, out_o200k=[10] * n,
                      template_o200k=[0] * n, gen_seconds=1.0, latency=[(0.1, 0.2)], throughput=[(1, 10.0, 1.0)])
    for s, p in zip(rec["samples"], prompts, strict=True):
        s["generated_prompt"] = p
    rec["metatuner"] = {"train_key": uid, "variant": "J", "ablation": None, "train": train}
    if diag is not None:
        rec["diagnostics"] = diag
    return rec


def test_report_has_metatuner_diagnostics_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTINTERN_PRICES_DIR", str(write_price_dir(tmp_path / "prices")))
    store = build_store(tmp_path / "exp", cross_domain=False)
    assert metatuner_diagnostics_frame(store).empty  # no MetaTuner records: no section
    # a record written before the diagnostics: recomputed from the samples' prompts and the training summary
    old = _metatuner_record("metatuner-old", "metatuner-J", ["Solve the problem step by step."] * 3 + ["x"],
                            OLD_TRAIN)
    store.write("metatuner-old", old)
    # a record with diagnostics: those are shown (ΔW spread included)
    new_diag = {"prompts": prompt_diagnostics(["a b c d", "e f g h"]), "delta_w": {"spread": 0.125},
                "training": training_diagnostics({"steps": [{"task_loss": 1.0, "reg_loss": 2.0}],
                                                  "rollouts": [{"d2_size": 4}]})}
    store.write("metatuner-new", _metatuner_record("metatuner-new", "metatuner-I", ["a b c d", "e f g h"],
                                                   {"steps": [{"task_loss": 1.0, "reg_loss": 2.0}],
                                                    "rollouts": [{"d2_size": 4}]}, new_diag))
    df = metatuner_diagnostics_frame(store)
    assert list(df["label"]) == ["metatuner-I", "metatuner-J"]
    out = build_all(store, submission=False)
    md = out["report"]["markdown"].read_text()
    assert "## MetaTuner diagnostics" in md
    section = md[md.index("## MetaTuner diagnostics"):].split("\n## ")[0]
    rows = {line.split(" | ")[3]: line for line in section.splitlines() if line.startswith("| tiny | mbpp | mbpp |")}
    # distinct / n, most common, degenerate, mean words, ΔW spread, D2 sizes (* = fallback), steps task / reg
    assert rows["metatuner-J"].endswith("| 2 / 4 | 75.0% | 25.0% (1 under 4 words) | 4.8 | – | 0, 3, 2* | 3 / 2 |")
    assert rows["metatuner-I"].endswith("| 2 / 2 | 50.0% | 0.0% | 4.0 | 0.125 | 4 | 1 / 1 |")
    html = out["report"]["html"].read_text()
    assert "<h2>MetaTuner diagnostics</h2>" in html and "0, 3, 2*" in html
    # the other sections are still there, in order
    assert md.index("## Answers") < md.index("## MetaTuner diagnostics") < md.index("## Training stages")
    # against PromptIntern (scores 1, 1, 1, 0 on mbpp/0-3) on the same items: J (1, 1, 1, 1) +25 points, I (two
    # items, both 1) +0; J against full-prompt FT (1, 0, 1, 1): +25
    versus = md[md.index("## MetaTuner against full-prompt FT and PromptIntern"):].split("\n## ")[0]
    cells = {line.split(" | ")[1]: line.split(" | ") for line in versus.splitlines() if line.startswith("| mbpp |")}
    assert cells["metatuner-J"][3].startswith("+25.0") and cells["metatuner-J"][6].startswith("+25.0")
    assert cells["metatuner-I"][6].startswith("+0.0") and cells["metatuner-I"][4].startswith("promptintern")
    assert md.index("## MetaTuner against") < md.index("## MetaTuner diagnostics")


def test_unit_record_has_diagnostics(tmp_path, data_dir):
    """The real unit on the tiny model: the record's diagnostics, and the unit id's config left as it was."""
    from test_metatuner_unit import _unit

    from promptintern.harness.metatuner_unit import run_metatuner

    torch.set_num_threads(1)
    unit = _unit("mt-diag", "nl2bash", batch_size=2)
    cfg_before = {k: v for k, v in unit["config"].items() if k != "method"}
    rec = run_metatuner(unit, str(tmp_path), None, str(data_dir))
    d = rec["diagnostics"]
    assert d["prompt_branch"] and d["param_branch"]
    assert d["prompts"]["n"] == len(rec["samples"]) == 5
    assert d["prompts"]["distinct"] == len({s["generated_prompt"].strip() for s in rec["samples"]})
    assert d["prompts"]["tokens"]["mean"] is not None
    dw = d["delta_w"]
    targets = rec["metatuner"]["options"]["lora_targets"]
    assert dw["n"] == 5 and dw["layers"] == len(dw["per_layer"]) > 0
    assert all(name.rsplit(".", 1)[-1] in targets for name in dw["per_layer"])
    assert dw["mean_norm"] > 0 and dw["spread"] >= 0  # F's W_u^b moved off zero in training
    tr = d["training"]
    assert tr["steps"] == len(rec["metatuner"]["train"]["steps"]) and tr["rebuilds"] >= 1
    assert tr["d2_sizes"] == [r["d2_size"] for r in rec["metatuner"]["train"]["rollouts"]]
    assert {k: v for k, v in unit["config"].items() if k != "method"} == cfg_before


def test_delta_w_spread_matches_the_dense_matrices():
    """The Gram-matrix form against ΔW_i formed densely and measured with torch.linalg (independent arithmetic)."""
    torch.manual_seed(0)
    A, B = torch.randn(7, 3, 11), torch.randn(7, 13, 3)
    dw = 0.7 * torch.bmm(B, A).double()
    mean = dw.mean(0)
    dists = torch.linalg.matrix_norm(dw - mean)
    d = delta_w_spread({"q": (A, B)}, scale=0.7, chunk=3)["per_layer"]["q"]
    assert d["abs_spread"] == pytest.approx(float(dists.mean()), rel=1e-5)
    assert d["norm_of_mean"] == pytest.approx(float(torch.linalg.matrix_norm(mean)), rel=1e-5)
    assert d["mean_norm"] == pytest.approx(float(torch.linalg.matrix_norm(dw).mean()), rel=1e-5)
    assert d["spread"] == pytest.approx(float(dists.mean() / torch.linalg.matrix_norm(mean)), rel=1e-5)
