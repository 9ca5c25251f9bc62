"""The serving benchmark's settings, load generator, vLLM metric definitions and report, against hand-computed
cases and a fake server (the real vLLM server: tests/test_vllm_server.py, integration tier)."""

import json
import math
import threading
import time

import pytest

from promptintern.errors import ConfigError
from promptintern.harness import serving_run
from promptintern.harness.serving import (
    ServingSettings,
    Slo,
    poisson_arrivals,
    run_load,
    summarize,
    synthetic_prompts,
)
from promptintern.harness.serving_report import saturation_ratio, serving_table, write_serving_report
from promptintern.vllm_server import Completion

CONDITIONS = [{"name": "fp", "model": "full_prompt_ft", "prompt": "full"},
              {"name": "pi", "model": "promptintern", "prompt": "query"},
              {"name": "base", "model": "base", "prompt": "full", "cache": False, "repeats": 1}]


def settings(**kw):
    return ServingSettings.from_dict({"conditions": CONDITIONS, "ratio": ["pi", "fp"], **kw}, source="s.yaml")


def test_settings_are_checked_before_any_server_starts():
    s = settings(requests=4, slo={"ttft_s": 1.0})
    assert s.requests == 4 and s.slo.ttft_s == 1.0 and [c.name for c in s.conditions] == ["fp", "pi", "base"]
    assert s.loads() == [("concurrency", 1.0), ("concurrency", 4.0), ("concurrency", 12.0), ("rate", 0.5),
                         ("rate", 2.0)]
    bad = [({"requests": 0}, "s.yaml: requests: must be"), ({"colour": 1}, "colour: unknown key"),
           ({"slo": {"ttft": 1}}, "slo.ttft: unknown key"), ({"ratio": ["pi", "nope"]}, "ratio: must name two"),
           ({"conditions": []}, "conditions: give a list"),
           ({"conditions": [*CONDITIONS, {"name": "fp"}]}, "names must be unique: fp"),
           ({"conditions": [{"name": "m", "model": "base", "merged": True}]}, r"conditions\[0\].merged"),
           ({"conditions": [{"name": "x", "prompt": "long"}]}, r"conditions\[0\].prompt: must be"),
           ({"request_rates": [0]}, "request_rates")]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            ServingSettings.from_dict({"conditions": CONDITIONS, "ratio": ["pi", "fp"], **change}, source="s.yaml")


def test_poisson_arrivals_are_seeded_and_have_the_rate():
    a = poisson_arrivals(2000, 4.0, seed=1)
    assert a == poisson_arrivals(2000, 4.0, seed=1) != poisson_arrivals(2000, 4.0, seed=2)
    assert a[0] == 0 and all(x <= y for x, y in zip(a, a[1:], strict=False))
    assert 1999 / a[-1] == pytest.approx(4.0, rel=0.08)  # mean gap 1/rate
    p = synthetic_prompts(3, prefix_tokens=5, query_tokens=2, with_prefix=True, seed=0, vocab=(10, 20))
    assert [len(x) for x in p] == [7, 7, 7] and p[0][:5] == p[1][:5] == p[2][:5] and p[0][5:] != p[1][5:]
    q = synthetic_prompts(3, prefix_tokens=5, query_tokens=2, with_prefix=False, seed=0, vocab=(10, 20))
    assert [x[5:] for x in p] == q


def test_vllm_metrics_on_a_hand_computed_case():
    # two requests: 4 tokens with TTFT 1 s and E2EL 1.6 s (TPOT 0.2 s); 2 tokens with TTFT 3 s, E2EL 3.5 s
    reqs = [{"ttft_s": 1.0, "tpot_s": 0.2, "e2el_s": 1.6, "itl_s": [0.2, 0.2, 0.2], "prompt_tokens": 10,
             "output_tokens": 4, "cached_tokens": 6},
            {"ttft_s": 3.0, "tpot_s": 0.5, "e2el_s": 3.5, "itl_s": [0.5], "prompt_tokens": 30, "output_tokens": 2,
             "cached_tokens": 0}]
    s = summarize(reqs, 4.0, Slo(ttft_s=2.0, tpot_s=0.3))
    assert s["request_throughput"] == 0.5 and s["output_throughput"] == 1.5 and s["total_token_throughput"] == 11.5
    assert s["goodput"] == 0.25 and s["good_requests"] == 1 and s["cached_input_tokens"] == 6
    assert s["ttft"]["mean"] == 2.0 and s["ttft"]["median"] == 2.0 and s["ttft"]["p99"] == pytest.approx(2.98)
    assert s["itl"]["median"] == 0.2 and s["itl"]["mean"] == pytest.approx(1.1 / 4)
    assert s["tpot"]["p90"] == pytest.approx(0.47)  # numpy's linear percentile: 0.2 + 0.9 * 0.3
    c = Completion(text="abcd", ttft_s=1.0, e2el_s=1.6, token_ids=[1, 2, 3, 4], completion_tokens=4)
    assert c.tpot_s == pytest.approx(0.2)
    assert Completion(text="a", ttft_s=1.0, e2el_s=1.0, completion_tokens=1).tpot_s is None


class SlowServer:
    """Answers after ``delay`` seconds; counts the requests in flight and keeps what each was sent."""

    def __init__(self, delay=0.05):
        self.delay, self.in_flight, self.most, self.sent = delay, 0, 0, []
        self.lock = threading.Lock()
        self.args = ["python", "-m", "fake"]
        self.adapters, self.resets = {}, 0

    def complete(self, model, prompt_ids, max_tokens, *, ignore_eos=True, stop=None, stop_token_ids=None,
                 cache_salt=None):
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.sent.append((model, tuple(prompt_ids), max_tokens, cache_salt, time.perf_counter()))
        time.sleep(self.delay)
        with self.lock:
            self.in_flight -= 1
        return Completion(text="x" * max_tokens, ttft_s=self.delay / 2, e2el_s=self.delay,
                          itl_s=[self.delay / 2 / (max_tokens - 1)] * (max_tokens - 1),
                          token_ids=[1] * max_tokens, prompt_tokens=len(prompt_ids), completion_tokens=max_tokens,
                          cached_tokens=0 if cache_salt else len(prompt_ids) // 2)

    def load_adapter(self, name, path):
        self.adapters[name] = path

    def reset_prefix_cache(self):
        self.resets += 1

    def start(self):
        return self

    def stop(self):
        pass

    def version(self):
        return "0.0-fake"


def test_run_load_keeps_the_concurrency_cap_and_the_arrival_times():
    server = SlowServer()
    prompts = [[i] * 3 for i in range(8)]
    reqs, duration = run_load(server, "m", prompts, mode="concurrency", level=2, output_tokens=4, cache=True)
    assert server.most == 2 and len(reqs) == 8 and all(r["output_tokens"] == 4 for r in reqs)
    assert duration == pytest.approx(4 * 0.05, abs=0.06)  # 8 requests, 2 at a time, 0.05 s each
    assert [s[1] for s in sorted(server.sent, key=lambda s: s[1])] == [tuple(p) for p in prompts]
    server = SlowServer(delay=0.01)
    arrivals = [0.0, 0.1, 0.3]
    reqs, _ = run_load(server, "m", prompts[:3], mode="rate", level=10, output_tokens=2, cache=False, arrivals=arrivals)
    sent = [r["sent_s"] for r in reqs]
    assert all(abs(s - a) < 0.03 for s, a in zip(sent, arrivals, strict=True))
    salts = [s[3] for s in server.sent]
    assert all(salts) and len(set(salts)) == 3 and all(r["cached_tokens"] == 0 for r in reqs)


def _record(name, mode, level, repeat, out_tok_s, e2el, ttft):
    s = {"completed": 4, "total_input_tokens": 400, "total_output_tokens": 64, "cached_input_tokens": 100,
         "request_throughput": out_tok_s / 16, "output_throughput": out_tok_s, "total_token_throughput": 1.0,
         "goodput": 0.1, "ttft": {"median": ttft, "p99": ttft}, "tpot": {"median": 0.1},
         "itl": {"median": 0.1}, "e2el": {"mean": e2el, "median": e2el, "p99": e2el}}
    return {"condition": {"name": name, "model": name, "prompt": "full", "cache": True, "merged": False},
            "mode": mode, "level": level, "repeat": repeat, "summary": s,
            "settings": {"conditions": [{"name": "fp"}, {"name": "pi"}]}}


def test_the_saturation_ratio_is_a_t_interval_over_paired_repeats():
    runs = [_record("fp", "concurrency", 12, r, 10.0, 2.0, 1.0) for r in range(3)]
    runs += [_record("pi", "concurrency", 12, r, x, 1.0, 0.5) for r, x in enumerate((20.0, 40.0, 20.0))]
    runs += [_record("pi", "concurrency", 1, 0, 99.0, 9.0, 9.0), _record("fp", "rate", 2.0, 0, 1.0, 1.0, 1.0)]
    ratio = saturation_ratio(runs, "pi", "fp")
    assert ratio["level"] == 12 and ratio["n_repeats"] == 3
    tp = ratio["figures"]["output_throughput"]
    logs = [math.log(2), math.log(4), math.log(2)]  # per repeat: pi / fp
    m = sum(logs) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / 2)
    h = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2)
    assert tp["ratio"] == pytest.approx(math.exp(m)) and tp["n"] == 3
    assert (tp["lo"], tp["hi"]) == (pytest.approx(math.exp(m - h)), pytest.approx(math.exp(m + h)))
    e2el = ratio["figures"]["e2el_mean"]  # fp / pi: every repeat 2.0, the interval is the point itself
    assert e2el["ratio"] == pytest.approx(2.0) and e2el["lo"] == pytest.approx(2.0) == e2el["hi"]
    one = saturation_ratio([r for r in runs if r["repeat"] == 0], "pi", "fp")
    assert one["figures"]["output_throughput"]["lo"] is None  # one repeat: no interval
    table = serving_table(runs)
    row = table[(table["condition"] == "pi") & (table["level"] == 12)].iloc[0]
    assert row["repeats"] == 3 and row["output_throughput"] == pytest.approx(80 / 3)


def test_run_serving_writes_one_record_per_condition_load_and_repeat(tmp_path, monkeypatch):
    servers = []

    def fake_server(settings, model_dir, ready, out, *, lora, tag):
        servers.append((tag, model_dir, lora))
        return SlowServer(delay=0.01)

    prompts = {"full": [[1] * 50 for _ in range(4)], "query": [[2] * 5 for _ in range(4)]}
    ready = {"source": str(tmp_path / "src"), "model": "smollm2-135m", "model_dir": "/m", "chat": True,
             "lora": {"r": 8}, "prompts": prompts, "max_model_len": 128,
             "adapters": {"full_prompt_ft": {"path": "/a/fp", "weights": "trained", "sha256": "x"},
                          "promptintern": {"path": "/a/pi", "weights": "trained", "sha256": "y",
                                           "merged": "/merged/pi"}}}
    monkeypatch.setattr(serving_run, "prepare", lambda settings, out: ready)
    monkeypatch.setattr(serving_run, "_server", fake_server)
    conds = [*CONDITIONS, {"name": "pim", "model": "promptintern", "prompt": "query", "merged": True, "repeats": 1}]
    s = ServingSettings.from_dict({"conditions": conds, "ratio": ["pi", "fp"], "results_dir": str(tmp_path),
                                   "name": "srv", "requests": 3, "warmup": 1, "output_tokens": 4,
                                   "concurrency": [1, 3], "request_rates": [50.0], "repeats": 2})
    folder = serving_run.run_serving(s, log=lambda *_: None)
    runs = sorted(p.stem for p in (folder / "runs").glob("*.json"))
    # fp and pi twice, base and pim once, at 3 loads each
    assert len(runs) == 3 * (2 + 2 + 1 + 1) and "pi-c3-r1" in runs and "pim-rate50-r0" in runs
    assert "base-c1-r1" not in runs
    assert servers == [("lora", "/m", True), ("pim", "/merged/pi", False)]  # one after the other
    rec = json.loads((folder / "runs" / "base-c3-r0.json").read_text())
    assert rec["summary"]["completed"] == 3 and rec["summary"]["cached_input_tokens"] == 0  # uncached: salted
    assert rec["settings"]["requests"] == 3 and rec["versions"]["vllm"] == "0.0-fake"
    out = write_serving_report(folder)
    report = out["report"].read_text()
    assert "pi vs fp" in report and "n = 2 repeats" in report and "TTFT p50" in report
    assert out["ratio"]["figures"]["output_throughput"]["n"] == 2
    before = (folder / "runs" / "pi-c3-r1.json").read_text()
    serving_run.run_serving(s, log=lambda *_: None)  # resumes: nothing re-run
    assert (folder / "runs" / "pi-c3-r1.json").read_text() == before


def test_the_source_report_finds_the_serving_runs_beside_it(tmp_path):
    from promptintern.harness.serving_report import serving_for, serving_section

    source = tmp_path / "benchmark"
    (source / "runs").mkdir(parents=True)
    for name, named in (("serving_cpu", "results/benchmark"), ("other", "results/elsewhere"), ("empty", "benchmark")):
        (tmp_path / name / "runs").mkdir(parents=True)
        (tmp_path / name / "experiment.json").write_text(json.dumps({"serving": {"source": named}}))
    for folder in ("serving_cpu", "other"):
        for r in range(2):
            rec = {**_record("pi", "concurrency", 4, r, 20.0, 1.0, 0.5), "settings": {
                "conditions": [{"name": "fp"}, {"name": "pi"}], "ratio": ["pi", "fp"]}}
            (tmp_path / folder / "runs" / f"pi-c4-r{r}.json").write_text(json.dumps(rec))
    assert serving_for(source) == [tmp_path / "serving_cpu"]  # names this folder and holds records
    table, line = serving_section(tmp_path / "serving_cpu")
    assert len(table) == 1 and line == "No run of both pi and fp at concurrency 4: no ratio."
