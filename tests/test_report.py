"""The experiment report: self-contained HTML and markdown, with and without cross-domain data; plots; summarize;
the HTML rendered in headless Chromium and its screenshot not blank."""

import re

import pytest
from _results_factory import build_store, chromium_binary, image_stats, screenshot, write_price_dir

from promptintern import cli
from promptintern.harness.plots import pareto_front
from promptintern.harness.report import build_all
from promptintern.harness.store import ResultStore


@pytest.fixture(scope="module")
def prices(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = write_price_dir(tmp_path_factory.mktemp("prices"))
    mp.setenv("PROMPTINTERN_PRICES_DIR", str(d))
    yield d
    mp.undo()


@pytest.fixture(scope="module")
def built(prices, tmp_path_factory):
    store = build_store(tmp_path_factory.mktemp("results") / "exp")
    return store, build_all(store)


@pytest.fixture(scope="module")
def built_on_task_only(prices, tmp_path_factory):
    store = build_store(tmp_path_factory.mktemp("results") / "ontask", cross_domain=False)
    return store, build_all(store)


def test_pareto_front():
    # (tokens, score): (100, 75) dominates (2000, 75) and (100, 50); (3000, 80) is the best score
    pts = [(2000, 75), (100, 50), (100, 75), (3000, 80), (150, 70)]
    assert pareto_front(pts) == [2, 3]


def test_report_is_self_contained(built):
    store, out = built
    html = out["report"]["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    # no external assets: no scripts, stylesheets or remote images; plots are inline data URIs
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"""src=['"](?!data:)""", html)
    assert len(re.findall(r"src='data:image/png;base64,", html)) == 6  # five plots + the cross-domain one
    # tables inline, with the measured numbers
    assert "promptintern/linear-T2/r0.5" in html and "5.00× (range 5.00–5.00)" in html and "$0.260" in html
    assert "Cross-domain generalization" in html and "No cross-domain evaluations" not in html
    for name in ("accuracy_vs_tokens", "accuracy_by_schedule_rate", "speedup", "cost", "training_loss", "cross_domain"):
        p = out["plots"][name]
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert out["submission"].is_file()


def test_markdown_report(built):
    store, out = built
    md = out["report"]["markdown"].read_text()
    assert md.startswith("# Prompt-internalization report: exp")
    assert "![Score vs input tokens (Pareto frontier marked)](plots/accuracy_vs_tokens.png)" in md
    # cross-domain: PromptIntern trained on mbpp scores BLEU 15 on nl2bash, the base model 30, full-prompt FT 30
    cross = md.split("## Cross-domain generalization")[1]
    line = next(x for x in cross.splitlines() if x.startswith("| tiny | mbpp | nl2bash | promptintern"))
    assert "| 15.0 [0.0, 78.5] | 2 | 30.0 | -15.0 | 30.0 | -15.0 |" in line
    assert "test-prices" in md and "retrieved 2026-01-01" in md
    # files are named relative to the folder the report lies in, not by this machine's paths
    assert "result file(s) in `runs/`" in md and "- tables: `tables`" in md and str(store.root) not in md
    assert str(store.root) not in out["report"]["html"].read_text()
    # the summary restates table values against the baselines, with their intervals (none excludes 0 here: PI
    # [1,1,1,0] vs full [1,0,1,1]), the engine view first against the cached and the uncached full prompt, and
    # timings over 4 queries or 2 batches as ranges, never as confidence intervals
    line = next(x for x in md.splitlines() if x.startswith("- promptintern/linear-T2/r0.5 (train mbpp): 75.0;"))
    for part in ("+0.0 points vs full-prompt FT [95% CI -55.2, +55.2; interval includes 0: no difference shown]",
                 "against the cached full prompt: 2.50× (range 2.50–2.50 over 2; no CI) request throughput at batch 2",
                 "2.00× (range 2.00–2.00 over 4; no CI) faster at batch 1 (same 4 tokens)",
                 "as answered 1.72× (range 1.72–1.72 over 4; no CI)", "60% self-hosted cost saving",
                 "against the uncached full prompt: 5.00× (range 5.00–5.00 over 2; no CI)"):
        assert part in line, part
    assert "95% CI" not in line.split("fewer input tokens")[1]  # no timing is called a CI


def test_report_without_cross_domain_data_says_so(built_on_task_only):
    store, out = built_on_task_only
    html = out["report"]["html"].read_text()
    md = out["report"]["markdown"].read_text()
    for text in (html, md):
        assert "No cross-domain evaluations in this experiment" in text
    assert out["plots"]["cross_domain"].is_file()  # a placeholder that says why it is empty


def test_summarize_via_cli_report(built, capsys):
    store, _ = built
    assert cli.main(["report", str(store.root)]) == 0  # prints summarize(store)
    text = capsys.readouterr().out
    table = text.split("\n\n")[0]
    assert "sat. × cached FP" in table and max(map(len, table.splitlines())) <= 160
    for key in ("report:", "plots:", "tables:", "submission:", "prices:"):
        assert key in text
    assert str(store.root / "report.html") in text and str(store.root / "submission.json") in text
    assert cli.main(["report", str(store.root / "nope")]) == 2


def test_empty_results_folder(prices, tmp_path):
    store = ResultStore(tmp_path / "empty")
    store.runs.mkdir(parents=True)
    out = build_all(store)
    assert "no evaluation results" in out["submission_error"]
    assert "No evaluation results yet." in out["report"]["markdown"].read_text()


@pytest.mark.skipif(chromium_binary() is None,
                    reason="chromium not installed: run `bash scripts/install-chromium.sh` (make setup does)")
@pytest.mark.parametrize("which", ["built", "built_on_task_only"])
def test_report_renders_in_headless_chromium(which, request, tmp_path):
    store, out = request.getfixturevalue(which)
    png = screenshot(out["report"]["html"], tmp_path / "report.png", tmp_path)
    stats = image_stats(png)
    assert stats["shape"][:2] == (900, 1200)
    assert stats["non_white"] > 0.01 and stats["colours"] > 20, stats
