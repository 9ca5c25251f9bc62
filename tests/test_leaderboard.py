"""Submissions: built from result files, validated (good one accepted; malformed, inconsistent, tampered and
unknown-price-table ones rejected with the reason), ranked into a leaderboard rendered in headless Chromium."""

import copy
import json

import pytest
from _results_factory import build_store, chromium_binary, image_stats, screenshot, write_price_dir

from promptintern import cli
from promptintern.harness.leaderboard import build_leaderboard
from promptintern.harness.records import generations_sha256
from promptintern.harness.submission import build_submission, validate_submission, write_submission


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
    # the main table's figures of the row (tests/test_aggregate.py computes them by hand)
    assert eff["token_reduction_full_pct"] == pytest.approx(95.0)
    assert eff["speedup_full"] == pytest.approx(3.5) and eff["speedup_full_method"] == "range"
    assert eff["throughput_full"] == pytest.approx(5.0) and eff["throughput_full_cached"] == pytest.approx(2.5)
    assert eff["e2el_s"] == pytest.approx(0.2) and eff["answered_e2el_s"] == pytest.approx(1.16)
    assert eff["self_hosted_usd_per_1k"] == pytest.approx(0.004) and eff["break_even_base"] == pytest.approx(45.0)
    assert eff["cost_per_1k_queries"]["api-o200k"]["usd"] == pytest.approx(0.26)
    assert eff["price_table"] == "test-prices"
    recs = pi["records"]["mbpp"]["samples"]
    assert [s["id"] for s in recs] == ["mbpp/0", "mbpp/1", "mbpp/2", "mbpp/3"]
    assert {"generation", "score", "tokens", "output_tokens"} <= set(recs[0])
    assert len(pi["records"]["mbpp"]["engine"]["requests"]) == 4  # the timings the figures come from
    # one entry per serving condition: full-prompt FT uncached and with its prefix cached
    labels = {e["method"]["label"] for e in sub["entries"] if e["method"]["name"] == "full_prompt_ft"}
    assert labels == {"full_prompt_ft", "full_prompt_ft+prefix-cache"}
    # no engine baseline for the untrained nl2bash few-shot system (nothing was fine-tuned on nl2bash)
    assert _entry(sub, "few_shot")["efficiency"]["nl2bash"]["speedup_full"] is None


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
        _entry(s, "promptintern")["efficiency"]["mbpp"]["e2el_s"] = 0.1
    assert any("efficiency.e2el_s" in e for e in _bad(sub, latency))

    def speedup(s):  # a faster baseline silently changes the speedup claim: caught through the records
        for x in _entry(s, "full_prompt_ft")["records"]["mbpp"]["engine"]["requests"]:
            x["token_times"] = [t / 2 for t in x["token_times"]]
    errors = _bad(sub, speedup)
    assert any("promptintern" in e and "speedup_full" in e for e in errors), errors

    def cost(s):
        _entry(s, "promptintern")["efficiency"]["mbpp"]["cost_per_1k_queries"]["api-o200k"]["usd"] = 0.01
    assert any("cost_per_1k_queries.api-o200k.usd" in e for e in _bad(sub, cost))

    def tokens(s):  # the claimed mean no longer matches the per-sample counts
        _entry(s, "promptintern")["records"]["mbpp"]["samples"][0]["tokens"]["model"] = 10
    assert any("efficiency.input_tokens" in e for e in _bad(sub, tokens))


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
    assert any("sha256 changed" in e for e in errors) and any("self_hosted_usd_per_1k" in e for e in errors)


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
    # ranked by pass@1: full-prompt FT (both serving conditions) and PromptIntern tie at 75 (fewer tokens first),
    # query-only 50, few-shot 25
    assert [r.split(" | ")[2] for r in rows] == ["promptintern/linear-T2/r0.5", "full_prompt_ft+prefix-cache",
                                                 "full_prompt_ft", "query_only_ft", "few_shot"]
    assert [r.split(" | ")[0] for r in rows] == ["| 1", "| 1", "| 1", "| 4", "| 5"]
    assert "95.0%" in rows[0] and "5.00× (range 5.00–5.00)" in rows[0] and "$0.00400" in rows[0]
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


# -- `leaderboard validate --rescore`: every generation scored again with its task's own metric -----------------
# Records with real test items (mbpp through the sandbox, nl2bash BLEU, a task from a user folder), real
# generations and their true scores; tampering changes the per-sample scores and the aggregates together (and
# re-hashes what can be re-hashed), so only a re-score can catch it.

N_MBPP, N_BASH = 4, 2


def _draw_ids(task, n):
    from promptintern.harness.selection import draw

    return draw(task.load(task.test_split), n, 0, f"{task.name}/{task.test_split}")


def _real_record(task, uid, *, method, train_task, ids, generations, n_test=None):
    """A factory record (eval_record) rewritten onto real test items, with the true scores of ``generations``."""
    from _results_factory import eval_record

    from promptintern.harness.selection import TaskSelection

    by_id = {ex.id: ex for ex in task.load(task.test_split)}
    scores = task.score(generations, [by_id[i] for i in ids])
    primary = task.primary_metric
    n = len(ids)
    rec = eval_record(uid, method=method, train_task=train_task, eval_task=task.name, metric=primary,
                      scores=[float(s[primary]) for s in scores], in_tokens=[100] * n, out_tokens=[20] * n,
                      in_o200k=[50] * n, out_o200k=[20] * n, template_o200k=[0] * n, gen_seconds=1.0,
                      latency=[(0.05, 0.2)] * n, throughput=[(1, 100.0, 5.0)], adapter_sha="d" * 64)
    for s, i, g, sc in zip(rec["samples"], ids, generations, scores, strict=True):
        s.update(id=i, generation=g, score={k: v for k, v in sc.items() if k not in ("answer", "prediction",
                                                                                     "reference")})
    for x, i in zip(rec["measurements"]["latency"]["samples"], ids, strict=True):
        x["id"] = i
    sel = TaskSelection(task=task.name, test_ids=list(ids))
    rec["config"].update(
        scoring=task.scoring_identity(), data={**task.data_fingerprint(), "task_definition": task.definition_id()},
        items={k: v for k, v in sel.identity().items() if k in ("test", "removed", "n_test", "n_removed", "pool")})
    if n_test is not None:
        rec["config"]["items"]["n_test"] = n_test
    rec["metrics"] = task.aggregate(scores)
    rec["generations_sha256"] = generations_sha256((s["id"], s["generation"]) for s in rec["samples"])
    return rec


def _mbpp_generations(examples):
    """Right programs (the references) for the even items, a wrong one (defines the function, returns None) for
    the odd ones."""
    out = []
    for k, ex in enumerate(examples):
        if k % 2 == 0:
            out.append(f"```python\n{ex.reference}\n```")
        else:
            out.append(f"```python\ndef {ex.meta['entry_point']}(*args):\n    return None\n```")
    return out


def _write_real_store(root, extra_records=(), task_paths=None):
    from _results_factory import FEW, FULL

    from promptintern import tasks as tasks_mod
    from promptintern.harness.store import ResultStore, atomic_write_json

    store = ResultStore(root)
    mbpp, bash = tasks_mod.get_task("mbpp"), tasks_mod.get_task("nl2bash")
    m_ids, b_ids = _draw_ids(mbpp, N_MBPP), _draw_ids(bash, N_BASH)
    m_by, b_by = {e.id: e for e in mbpp.load("test")}, {e.id: e for e in bash.load("test")}
    m_gens = _mbpp_generations([m_by[i] for i in m_ids])
    recs = [
        _real_record(mbpp, "eval-full-mbpp", method=FULL, train_task="mbpp", ids=m_ids, generations=m_gens),
        _real_record(mbpp, "eval-few-mbpp", method=FEW, train_task=None, ids=m_ids,
                     generations=[m_gens[1], m_gens[0], m_gens[3], m_gens[2]]),
        _real_record(bash, "eval-full-bash", method=FULL, train_task="mbpp", ids=b_ids,
                     generations=[b_by[b_ids[0]].reference, "ls -la /tmp"]),
        *extra_records,
    ]
    for r in recs:
        store.write(r["unit_id"] if "unit_id" in r else _uid(r), r)
    atomic_write_json(store.root / "experiment.json",
                      {"name": root.name, "tasks": {"train": ["mbpp"], "eval": ["mbpp", "nl2bash"], "sample_seed": 0,
                                                    "test_limit": {"mbpp": N_MBPP, "nl2bash": N_BASH,
                                                                   "adder": N_ADDER}},
                       "task_paths": task_paths or []})
    return store


def _uid(rec):
    c = rec["config"]
    return f"eval-{c['method']['name']}-{c['eval_task']}"


def _rehash(sub):
    """Recompute every hash a tamperer can recompute (per task, whole submission)."""
    from promptintern.harness.submission import submission_generations_sha256

    for e in sub["entries"]:
        for rec in e["records"].values():
            rec["generations_sha256"] = generations_sha256((s["id"], s["generation"]) for s in rec["samples"])
    sub["generations_sha256"] = submission_generations_sha256(sub["entries"])


def _refresh(sub):
    """Recompute everything a tamperer can recompute from the records: results, efficiency, costs, hashes."""
    from promptintern.harness.cost import load_price_table
    from promptintern.harness.submission import _efficiency, _pseudo_eval, _results, recomputed_rows

    table = load_price_table(sub["price_table"]["id"])
    for e in sub["entries"]:
        for t, rec in e["records"].items():
            e["results"][t] = {"metric": rec["metric"], **_results(rec)}
    rows = recomputed_rows(sub, table)
    for e in sub["entries"]:
        for t, rec in e["records"].items():
            e["efficiency"][t] = _efficiency(rows[(e["name"], t)], table, _pseudo_eval(rec, e, t))
    _rehash(sub)


def _set_score(entry, task, k, value):
    """Change one per-sample score and the aggregates consistently: validation without a re-score accepts it."""
    from promptintern.harness.submission import _results

    s = entry["records"][task]["samples"][k]
    s["score"] = value
    s["scores"][entry["records"][task]["metric"]] = value
    entry["results"][task] = {"metric": entry["records"][task]["metric"], **_results(entry["records"][task])}
    return s["id"]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PROMPTINTERN_PRICES_DIR", str(write_price_dir(tmp_path_factory.mktemp("prices2"))))
    store = _write_real_store(tmp_path_factory.mktemp("real") / "exp")
    sub = build_submission(store)
    yield store, sub
    mp.undo()


def _where(sub, method, task):
    i, e = next((i, e) for i, e in enumerate(sub["entries"]) if e["method"]["name"] == method)
    return i, e, f"entries[{i}] ({e['name']}).{task}"


def test_rescore_accepts_the_untampered_submission(real):
    _, sub = real
    assert sub["selection"]["mbpp"] == {"test_limit": N_MBPP, "sample_seed": 0, "stratify": None}
    assert sub["entries"][0]["records"]["mbpp"]["scoring"]["metric"] == "mbpp_pass_at_1"
    assert validate_submission(sub) == []
    assert validate_submission(sub, rescore=True) == []


def test_rescore_rejects_a_wrong_program_marked_passed_with_consistent_aggregates(real):
    _, sub = real
    s = copy.deepcopy(sub)
    i, e, where = _where(s, "full_prompt_ft", "mbpp")
    assert e["records"]["mbpp"]["samples"][1]["score"] == 0.0  # the wrong program, failed by the sandbox
    sid = _set_score(e, "mbpp", 1, 1.0)
    assert e["results"]["mbpp"]["score"] == 0.75
    _rehash(s)
    assert validate_submission(s) == []  # consistent: only a re-score can tell
    errors = validate_submission(s, rescore=True)
    assert (f"inconsistent: {where}: sample {sid}: recorded pass@1 1.0, re-scored 0.0 (assertion_error)"
            in errors), errors
    assert f"inconsistent: {where}: results.score is 0.75 but the re-scored samples give 0.5" in errors, errors
    assert all(where in x for x in errors), errors


def test_rescore_rejects_a_changed_generation_rehashed_and_rescored_consistently(real):
    _, sub = real
    s = copy.deepcopy(sub)
    i, e, where = _where(s, "few_shot", "mbpp")
    rec = e["records"]["mbpp"]
    k = next(k for k, x in enumerate(rec["samples"]) if x["score"] == 0.0)
    rec["samples"][k]["generation"] += "\n# reviewed: passes"
    sid = _set_score(e, "mbpp", k, 1.0)
    _rehash(s)
    assert validate_submission(s) == []
    errors = validate_submission(s, rescore=True)
    assert any(x.startswith(f"inconsistent: {where}: sample {sid}: recorded pass@1 1.0, re-scored 0.0")
               for x in errors), errors
    assert any(x.startswith(f"inconsistent: {where}: results.score is") for x in errors), errors


def test_rescore_rejects_a_raised_bleu(real):
    _, sub = real
    s = copy.deepcopy(sub)
    i, e, where = _where(s, "full_prompt_ft", "nl2bash")
    sid = _set_score(e, "nl2bash", 1, 100.0)
    _rehash(s)
    assert validate_submission(s) == []
    errors = validate_submission(s, rescore=True)
    assert any(x.startswith(f"inconsistent: {where}: sample {sid}: recorded bleu 100.0, re-scored ")
               for x in errors), errors
    assert any(x.startswith(f"inconsistent: {where}: results.score is ") for x in errors), errors


def test_rescore_flags_foreign_ids_and_missing_test_items(real):
    from promptintern import tasks as tasks_mod

    _, sub = real
    train_id = tasks_mod.get_task("mbpp").load("train")[0].id
    # a sample swapped for a training item (scored as passed), aggregates and hashes fixed up
    s = copy.deepcopy(sub)
    i, e, where = _where(s, "full_prompt_ft", "mbpp")
    rec = e["records"]["mbpp"]
    dropped = rec["samples"][1]["id"]
    rec["samples"][1]["id"] = train_id
    rec["latency"][1]["id"] = train_id
    _set_score(e, "mbpp", 1, 1.0)
    _refresh(s)
    assert validate_submission(s) == []
    errors = validate_submission(s, rescore=True)
    assert f"inconsistent: {where}: sample {train_id} is not an item of the task's 'test' split" in errors, errors
    assert f"incomplete: {where}: test item {dropped} of the grid has no sample" in errors, errors
    # a failed item left out altogether (results recomputed, hashes fixed up)
    s = copy.deepcopy(sub)
    i, e, where = _where(s, "full_prompt_ft", "mbpp")
    rec = e["records"]["mbpp"]
    gone = rec["samples"].pop(1)["id"]
    rec["latency"] = [x for x in rec["latency"] if x["id"] != gone]
    _refresh(s)
    assert validate_submission(s) == []
    errors = validate_submission(s, rescore=True)
    assert f"incomplete: {where}: test item {gone} of the grid has no sample" in errors, errors
    assert f"incomplete: {where}: {N_MBPP - 1} sample(s) but the grid planned {N_MBPP} test items" in errors
    # without the selection record, the planned count and hash still tell
    s2 = copy.deepcopy(s)
    s2.pop("selection")
    errors = validate_submission(s2, rescore=True)
    assert f"incomplete: {where}: {N_MBPP - 1} sample(s) but the grid planned {N_MBPP} test items" in errors


def test_rescore_reports_a_crashing_sample_by_name(real, monkeypatch):
    from promptintern.tasks.yaml_task import YamlTask

    _, sub = real
    s = copy.deepcopy(sub)
    i, e, where = _where(s, "full_prompt_ft", "mbpp")
    rec = e["records"]["mbpp"]
    rec["samples"][2]["generation"] += "\n# BOOM"
    _rehash(s)
    orig = YamlTask.score

    def score(self, gens, exs):
        if any("BOOM" in g for g in gens):
            raise RuntimeError("sandbox exploded")
        return orig(self, gens, exs)

    monkeypatch.setattr(YamlTask, "score", score)
    errors = validate_submission(s, rescore=True)
    sid = rec["samples"][2]["id"]
    assert errors == [f"unscorable: {where}: sample {sid}: re-scoring raised RuntimeError: sandbox exploded"], errors


def test_rescore_rejects_a_changed_metric_or_scoring(real):
    _, sub = real
    s = copy.deepcopy(sub)
    i, e, where = _where(s, "full_prompt_ft", "mbpp")
    e["records"]["mbpp"]["scoring"]["metric_args"]["timeout_s"] = 99.0
    errors = validate_submission(s, rescore=True)
    assert errors == [f"unscorable: {where}: the local task scores differently from the submission's (differs in "
                      "metric_args); cannot re-score"], errors


# a task from a user folder: found through the submission's own task_folders or --include-path
N_ADDER = 3
ADDER = {
    "name": "adder",
    "loader": {"name": "records", "args": {"file": "data/qa.jsonl", "fractions": {"train": 0.5, "test": 0.5},
                                           "seed": 0, "fields": {"id": "qid", "query": "{question}",
                                                                 "reference": "answer"}}},
    "splits": ["train", "test"], "train_split": "train", "test_split": "test",
    "template": "Reply with the sum only.", "metric": {"name": "normalized_exact_match"},
    "primary_metric": "exact_match", "generation": {"max_new_tokens": 6, "stop": ["\n"]},
}


def test_rescore_a_user_folder_task_via_the_cli(tmp_path, monkeypatch, capsys):
    import yaml
    from _results_factory import FEW

    from promptintern import tasks as tasks_mod

    monkeypatch.setenv("PROMPTINTERN_PRICES_DIR", str(write_price_dir(tmp_path / "prices")))
    folder = tmp_path / "mytasks"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "qa.jsonl").write_text("".join(
        json.dumps({"qid": f"q{i}", "question": f"What is {i} plus {i + 3}?", "answer": str(2 * i + 3)}) + "\n"
        for i in range(12)))
    (folder / "adder.yaml").write_text(yaml.safe_dump(ADDER, sort_keys=False))
    task = tasks_mod.get_task("adder", include=[folder])
    ids = _draw_ids(task, N_ADDER)
    by = {ex.id: ex for ex in task.load("test")}
    rec = _real_record(task, "eval-few-adder", method=FEW, train_task=None, ids=ids,
                       generations=[by[ids[0]].reference, "41", by[ids[2]].reference])
    root = tmp_path / "results" / "exp"
    store = _write_real_store(root, [rec], task_paths=["../../mytasks"])
    path = write_submission(store)
    sub = json.loads(path.read_text())
    assert sub["task_folders"] == {"paths": ["../../mytasks"], "allow_shadowing": False}
    assert cli.main(["leaderboard", "validate", str(path), "--rescore"]) == 0, capsys.readouterr().out
    assert "valid" in capsys.readouterr().out
    # tampered consistently: the wrong sum marked right
    i, e, where = _where(sub, "few_shot", "adder")
    sid = _set_score(e, "adder", 1, 1.0)
    _rehash(sub)
    bad = tmp_path / "elsewhere" / "tampered.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(sub))
    assert cli.main(["leaderboard", "validate", str(bad)]) == 0  # consistent without a re-score
    capsys.readouterr()
    # elsewhere, the submission's own folder path does not resolve: the task cannot be re-scored, said so
    assert cli.main(["leaderboard", "validate", str(bad), "--rescore"]) == 1
    out = capsys.readouterr().out
    assert f"unscorable: {where}: cannot load the task" in out and "--include-path" in out, out
    assert cli.main(["leaderboard", "validate", str(bad), "--rescore", "--include-path", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "REJECTED" in out and f"{where}: sample {sid}: recorded exact_match 1.0, re-scored 0.0" in out, out
    assert "results.score is" in out


def test_cli_validate_rescore_names_entry_task_and_sample(real, tmp_path, capsys):
    _, sub = real
    s = copy.deepcopy(sub)
    i, e, where = _where(s, "few_shot", "mbpp")
    k = next(k for k, x in enumerate(e["records"]["mbpp"]["samples"]) if x["score"] == 0.0)
    sid = _set_score(e, "mbpp", k, 1.0)
    _rehash(s)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(sub))
    bad.write_text(json.dumps(s))
    assert cli.main(["leaderboard", "validate", str(good), "--rescore", "--data-dir", "/work/shared/data"]) == 0
    assert cli.main(["leaderboard", "validate", str(bad)]) == 0
    capsys.readouterr()
    assert cli.main(["leaderboard", "validate", str(bad), "--rescore"]) == 1
    out = capsys.readouterr().out
    assert "REJECTED" in out and f"{where}: sample {sid}: recorded pass@1 1.0, re-scored 0.0" in out, out


def test_the_committed_metatuner_submission_rescores(data):
    """A MetaTuner unit records its train and eval tasks' data side by side: --rescore compares the eval task's
    (it refused every MetaTuner entry as "the local data differ" before)."""
    from pathlib import Path

    from promptintern.harness.cost import PRICES_DIR
    from promptintern.harness.submission import validate_file

    path = Path(__file__).resolve().parents[1] / "results" / "metatuner-cpu" / "submission.json"
    sub = json.loads(path.read_text())
    if not any("metatuner" in e["name"] for e in sub["entries"]) or "selection" not in sub:
        pytest.skip("the committed submission predates the MetaTuner rescore fields")
    # the repository's price tables (other tests point $PROMPTINTERN_PRICES_DIR at their own)
    assert validate_file(path, rescore=True, data_dir=str(data), directory=PRICES_DIR) == []
