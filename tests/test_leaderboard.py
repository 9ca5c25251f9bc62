"""Submissions: built from result files, validated (good one accepted; malformed, inconsistent, tampered and
unknown-price-table ones rejected with the reason), ranked into a leaderboard rendered in headless Chromium."""

import copy
import json

import pytest
from _results_factory import build_store, chromium_binary, image_stats, screenshot, write_price_dir

from harness import cli
from harness.leaderboard import build_leaderboard, build_submission, validate_submission, write_submission
from harness.measure import generations_sha256


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    prices = write_price_dir(tmp_path_factory.mktemp("prices"))
    mp.setenv("PROMPTINTERN_PRICES_DIR", str(prices))
    store = build_store(tmp_path_factory.mktemp("results") / "exp")
    sub = build_submission(store)
    yield store, sub, tmp_path_factory.mktemp("subs")
    mp.undo()


def _entry(sub, method):
    return next(e for e in sub["entries"] if e["method"]["name"] == method)


def test_good_submission_is_valid_and_complete(env):
    store, sub, _ = env
    assert validate_submission(sub) == []
    assert sub["price_table"]["id"] == "test-prices" and len(sub["generations_sha256"]) == 64
    pi = _entry(sub, "promptintern")
    assert pi["config"] == {"model": "tiny+promptintern/linear-T2/r0.5@mbpp", "base_model": "tiny",
                            "adapter_sha256": "c" * 64, "precision": "float32", "n_params": 1000}
    assert pi["method"]["schedule"] == "linear" and pi["method"]["stage_template_rates"] == [0.5, 0.0]
    assert pi["method"]["compressor"] == {"name": "truncate"} and pi["meta"]["seed"] == 0
    assert pi["results"]["mbpp"] == {"metric": "pass@1", "score": 0.75, "score_se": pytest.approx(0.25), "n": 4}
    eff = pi["efficiency"]["mbpp"]
    assert eff["token_reduction_vs_full_prompt_pct"] == pytest.approx(95.0)
    assert eff["speedup_vs_full_prompt"] == pytest.approx(3.5)
    assert eff["latency_p50_s"] == pytest.approx(0.2) and eff["latency_p90_s"] == pytest.approx(0.28)
    assert eff["throughput_tokens_per_s"] == 400.0 and eff["throughput_batch_size"] == 4
    assert eff["cost_per_1k_queries"]["self_hosted_usd"] == pytest.approx(0.01)
    assert eff["cost_per_1k_queries"]["api_usd"]["api-o200k"] == pytest.approx(0.26)
    assert eff["price_table"] == "test-prices"
    recs = pi["records"]["mbpp"]["samples"]
    assert [s["id"] for s in recs] == ["mbpp/0", "mbpp/1", "mbpp/2", "mbpp/3"]
    assert {"generation", "score", "tokens", "output_tokens", "ttft_s", "e2e_s"} <= set(recs[0])
    # no baseline for the untrained nl2bash few-shot system (nothing was fine-tuned on nl2bash)
    assert _entry(sub, "few_shot")["efficiency"]["nl2bash"]["speedup_vs_full_prompt"] is None


def _bad(sub, mutate):
    s = copy.deepcopy(sub)
    mutate(s)
    return validate_submission(s)


def test_rejects_missing_field(env):
    _, sub, _ = env
    errors = _bad(sub, lambda s: _entry(s, "promptintern")["config"].pop("precision"))
    assert any(e.startswith("malformed: missing field") and e.endswith(".config.precision") for e in errors), errors


def test_rejects_wrong_type(env):
    _, sub, _ = env

    def mutate(s):
        _entry(s, "promptintern")["results"]["mbpp"]["n"] = "4"
    errors = _bad(sub, mutate)
    assert any("malformed" in e and "results.mbpp.n must be int" in e for e in errors), errors
    errors = _bad(sub, lambda s: s.update(entries={"not": "a list"}))
    assert errors == ["malformed: $.entries must be an array, got dict"]


def test_rejects_metric_that_does_not_match_records(env):
    _, sub, _ = env

    def score(s):
        _entry(s, "promptintern")["results"]["mbpp"]["score"] = 0.9
    errors = _bad(sub, score)
    assert any(e.startswith("inconsistent") and "results.score is 0.9 but the records give 0.75" in e for e in errors)

    def latency(s):
        _entry(s, "promptintern")["efficiency"]["mbpp"]["latency_p50_s"] = 0.1
    assert any("efficiency.latency_p50_s" in e for e in _bad(sub, latency))

    def speedup(s):  # a faster baseline silently changes the speedup claim: caught through the records
        for x in _entry(s, "full_prompt_ft")["records"]["mbpp"]["latency"]:
            x["e2e_s"] /= 2
    errors = _bad(sub, speedup)
    assert any("promptintern" in e and "speedup_vs_full_prompt" in e for e in errors), errors

    def cost(s):
        _entry(s, "promptintern")["efficiency"]["mbpp"]["cost_per_1k_queries"]["api_usd"]["api-o200k"] = 0.01
    assert any("cost_per_1k_queries.api_usd.api-o200k" in e for e in _bad(sub, cost))

    def tokens(s):  # the claimed mean no longer matches the per-sample counts
        _entry(s, "promptintern")["records"]["mbpp"]["samples"][0]["tokens"]["model"] = 10
    assert any("mean_input_tokens.model" in e for e in _bad(sub, tokens))


def test_rejects_altered_generations(env):
    _, sub, _ = env

    def alter(s):
        _entry(s, "promptintern")["records"]["mbpp"]["samples"][1]["generation"] = "def f(): return 42"
    errors = _bad(sub, alter)
    assert any(e.startswith("tampered:") and "do not match their sha256" in e for e in errors), errors

    def alter_and_rehash_task(s):  # the per-task hash is fixed up but not the submission's
        rec = _entry(s, "promptintern")["records"]["mbpp"]
        rec["samples"][1]["generation"] = "def f(): return 42"
        rec["generations_sha256"] = generations_sha256((x["id"], x["generation"]) for x in rec["samples"])
    errors = _bad(sub, alter_and_rehash_task)
    assert errors and errors[-1].startswith("tampered: the submission's generations do not match"), errors


def test_rejects_unknown_price_table(env):
    _, sub, _ = env
    errors = _bad(sub, lambda s: s["price_table"].update(id="cheap-gpus-2099"))
    assert len(errors) == 1 and errors[0].startswith("unknown price table") and "test-prices" in errors[0]


def test_rejects_changed_price_table(env, tmp_path, monkeypatch):
    _, sub, _ = env
    from _results_factory import TEST_TABLE

    t = copy.deepcopy(TEST_TABLE)
    t["hardware"]["entries"][1]["usd_per_second"] = 0.00002
    monkeypatch.setenv("PROMPTINTERN_PRICES_DIR", str(write_price_dir(tmp_path, [t])))
    errors = validate_submission(sub)
    assert any("sha256 changed" in e for e in errors) and any("self_hosted_usd" in e for e in errors)


def test_cli_submit_validate_build(env, capsys):
    store, sub, subs = env
    good = subs / "good.json"
    assert cli.main(["submit", str(store.root), "-o", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    assert cli.main(["leaderboard", "validate", str(good)]) == 0
    bad = copy.deepcopy(json.loads(good.read_text()))
    bad["entries"][0]["records"]["mbpp"]["samples"][0]["generation"] += " # edited"
    (subs / "tampered.json").write_text(json.dumps(bad))
    assert cli.main(["leaderboard", "validate", str(subs / "tampered.json")]) == 1
    out = capsys.readouterr().out
    assert "REJECTED" in out and "tampered" in out
    assert cli.main(["submit", str(store.root), "--price-table", "nope", "-o", str(subs / "x.json")]) == 2
    assert "unknown price table 'nope'" in capsys.readouterr().err
    (subs / "broken.json").write_text("{not json")
    assert cli.main(["leaderboard", "validate", str(subs / "broken.json")]) == 1
    assert cli.main(["leaderboard", "build", str(subs), "-o", str(subs / "site")]) == 0
    md = (subs / "site" / "leaderboard.md").read_text()
    assert "## mbpp (pass@1)" in md and "## nl2bash (bleu)" in md
    rows = [x for x in md.split("## nl2bash")[0].splitlines() if x.startswith("| ") and "rank" not in x]
    # ranked by pass@1: full-prompt FT and PromptIntern tie at 75 (fewer tokens first), query-only 50, few-shot 25
    assert [r.split(" | ")[2] for r in rows] == ["promptintern/linear-T2/r0.5", "full_prompt_ft", "query_only_ft",
                                                 "few_shot"]
    assert [r.split(" | ")[0] for r in rows] == ["| 1", "| 1", "| 3", "| 4"]
    assert "95.0%" in rows[0] and "3.50x" in rows[0] and "$0.0100" in rows[0]
    assert "## Rejected submissions" in md and "tampered.json" in md and "broken.json" in md


@pytest.mark.skipif(chromium_binary() is None,
                    reason="chromium not installed: run `bash scripts/install-chromium.sh` (make setup does)")
def test_leaderboard_renders_in_headless_chromium(env, tmp_path):
    store, _, _ = env
    d = tmp_path / "subs"
    write_submission(store, d / "a.json")
    paths = build_leaderboard(d)
    html = paths["html"].read_text()
    assert "<script" not in html and "<link" not in html and "http" not in html.split("<body>")[0]
    png = screenshot(paths["html"], tmp_path / "leaderboard.png", tmp_path)
    stats = image_stats(png)
    assert stats["non_white"] > 0.01 and stats["colours"] > 20, stats
