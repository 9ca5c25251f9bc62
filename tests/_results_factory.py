"""Small, schema-faithful result files for the aggregation / cost / report / leaderboard tests.

The records have the exact shape ``harness/eval_unit.py`` and ``harness/stage_unit.py`` write (same keys), with
hand-chosen numbers so the tests can assert values computed by hand. Also a tiny price table with round prices.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from promptintern.harness.artifacts import ADAPTER_FILES
from promptintern.harness.store import ResultStore

CPU_HW = {"cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "gpu": None, "gpu_count": 0, "device": "cpu"}
GPU_HW = {"cpu": "Test CPU", "cpu_count": 16, "torch_threads": 1, "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 1,
          "device": "cuda"}
VERSIONS = {"python": "3.11.7", "promptintern": "0.1.0", "torch": "2.13.0+cpu"}

TEST_TABLE = {
    "id": "test-prices",
    "title": "round test prices",
    "default": True,
    "currency": "USD",
    "retrieved": "2026-01-01",
    "api": {
        "unit": "USD per 1M tokens",
        "source": "https://example.invalid/pricing",
        "headline_model": "api-o200k",
        "caching": {"min_prefix_tokens": 1024, "step_tokens": 128, "write_multiplier": 1.0,
                    "source": "https://example.invalid/prompt-caching",
                    "rule": "Cached on a shared prefix of 1,024 tokens or more, in steps of 128.", "unverified": False},
        "models": {
            "api-o200k": {"encoding": "o200k_base",
                          "base": {"input": 1.0, "cached_input": 0.5, "output": 4.0},
                          "fine_tuned": {"input": 2.0, "cached_input": 1.0, "output": 8.0, "training": 10.0}},
            "api-cl100k": {"encoding": "cl100k_base",
                           "base": {"input": 3.0, "cached_input": None, "output": 6.0}},
        },
    },
    "hardware": {
        "source": "https://example.invalid/gpu-pricing",
        "entries": [
            {"key": "h100", "device": "cuda", "match": ["H100"], "per": "gpu", "usd_per_hour": 3.6},
            {"key": "cpu-core", "device": "cpu", "match": [], "per": "core", "usd_per_second": 0.00001},
        ],
    },
}


def write_price_dir(directory: Path, tables: list[dict] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for t in tables or [TEST_TABLE]:
        (directory / f"{t['id']}.yaml").write_text(yaml.safe_dump(t, sort_keys=False))
    return directory


def _method(name, schedule=None, stages=1, rate=1.0):
    label = name + (f"/{schedule}-T{stages}" if schedule else "") + (f"/r{rate:g}" if name in ("promptintern", "compress_at_inference") else "")
    return {"name": name, "schedule": schedule, "rate": rate, "stages": stages, "lam": 3.0, "k_examples": 1,
            "options": {}, "label": label}


def eval_record(uid: str, *, method: dict, train_task: str | None, eval_task: str, scores: list[float],
                in_tokens: list[int], out_tokens: list[int], in_o200k: list[int], out_o200k: list[int],
                template_o200k: list[int], gen_seconds: float, latency: list[tuple[float, float]] | None = None,
                seed: int = 0, metric: str = "pass@1", model: str = "tiny", hardware: dict | None = None,
                batch_size: int = 4, compressor_s: float = 0.0, adapter_sha: str | None = None,
                prefix_cache: bool = False, cached_tokens: int = 0, **_ignored) -> dict:
    """An evaluation record built by the harness's own builder. ``latency`` (per query: TTFT, E2E): the
    evaluation's own batch-1 timings (an older record, or generation.measure); none: timed by an engine record."""
    from promptintern.harness.measure import summary_stats
    from promptintern.harness.records import efficiency_summary
    from promptintern.harness.records import eval_record as build

    n = len(scores)
    samples = []
    for i in range(n):
        samples.append({
            "id": f"{eval_task}/{i}",
            "prompt": f"prompt {i}",
            "rendered_prompt_tokens": in_tokens[i],
            **({"cached_tokens": cached_tokens, "prefill_tokens": in_tokens[i] - cached_tokens}
               if cached_tokens else {}),
            "generation": f"generation {uid} {i}",
            "reference": f"reference {i}",
            "demo_ids": [],
            "tokens": {"model": in_tokens[i], "cl100k_base": in_o200k[i] + 1, "o200k_base": in_o200k[i]},
            "parts": {"template": 0, "examples": 0, "query": in_tokens[i], "total": in_tokens[i], "overhead": 0},
            "output_tokens": out_tokens[i],
            "ttft_s": 0.01,
            "e2e_s": gen_seconds / max(1, -(-n // batch_size)),
            "batch_size": min(batch_size, n),
            "batch_index": i // batch_size,
            "compressor_s": compressor_s / n,
            "compressor_input_tokens": 0,
            "template_rate_achieved": None,
            "score": {metric: scores[i], "status": "ok", "id": f"{eval_task}/{i}"},
            "output_tokens_tiktoken": {"cl100k_base": out_o200k[i] + 1, "o200k_base": out_o200k[i]},
            "parts_tiktoken": {"cl100k_base": {"template": template_o200k[i], "examples": 0, "query": 5},
                               "o200k_base": {"template": template_o200k[i], "examples": 0, "query": 5}},
        })
    measurements = None
    if latency:
        lat = [{"id": f"{eval_task}/{i}", "ttft_s": t, "e2e_s": e, "prompt_tokens": in_tokens[i],
                "output_tokens": out_tokens[i]} for i, (t, e) in enumerate(latency)]
        measurements = {"latency": {"batch_size": 1, "source": "batch1_run", "samples": lat,
                                    "ttft_s": summary_stats([x["ttft_s"] for x in lat]),
                                    "e2e_s": summary_stats([x["e2e_s"] for x in lat])}}
    rec = build(
        config={"model": model, "seed": seed, "method": method, "train_task": train_task, "eval_task": eval_task,
                "rule": {"template_rate": 1.0, "n_examples": 1}, "test_compressed": compressor_s > 0,
                **({"prefix_cache": True} if prefix_cache else {}),
                "generation": {"batch_size": batch_size, "max_new_tokens": 16},
                "prompt": {"k_examples": 1, "retriever": "bm25", "pool_overlap": "drop",
                           "compressor": {"name": "truncate"}, "chat": True},
                "train_limit": 4, "test_limit": n},
        task={"name": eval_task, "primary_metric": metric, "split": "test"},
        metrics={metric: sum(scores) / n, "n": float(n)}, samples=samples,
        efficiency=efficiency_summary(samples, generation_seconds=gen_seconds, batch_size=batch_size,
                                      max_new_tokens=16, **({"prefix_cache": {"tokens": cached_tokens,
                                                                              "encode_seconds": 0.3}}
                                                            if cached_tokens else {})),
        adapter_sha256=adapter_sha, model_info={"dtype": "float32", "device": "cpu", "n_params": 1000},
        measurements=measurements, seconds_total=gen_seconds + 1.0,
        meta={"versions": VERSIONS, "git_commit": "0" * 40, "hardware": hardware or CPU_HW})
    return rec


L = 4  # the factory's engine decode length


def engine_condition(eval_id: str, ids: list[str], *, cached: bool = False, ttft: float, step: float,
                     answer_tokens: int = 20, batch_ttft: float, batch_e2e: float, batch_size: int = 2,
                     prompt_tokens: int = 100, cached_tokens: int = 0, compressor_s: float = 0.0) -> dict:
    """One condition of an engine record with hand-chosen timings: every batch-1 request emits token k at
    ttft + k x step (so E2EL of L tokens = ttft + (L - 1) x step; as answered = ttft + (answer - 1) x step), and every
    batch of ``batch_size`` takes ``batch_e2e`` seconds."""
    n = max(L, answer_tokens)
    requests = [{"id": q, "index": i, "repeat": 0, "tokens": n, "prompt_tokens": prompt_tokens,
                 "prefill_tokens": prompt_tokens - cached_tokens, "ttft_s": ttft, "e2e_s": ttft + (n - 1) * step,
                 "token_times": [ttft + k * step for k in range(n)]} for i, q in enumerate(ids)]
    batches = [{"batch_size": batch_size, "index": j, "repeat": 0, "ids": ids[j * batch_size:(j + 1) * batch_size],
                "prompt_tokens": prompt_tokens * batch_size,
                "prefill_tokens": (prompt_tokens - cached_tokens) * batch_size, "ttft_s": batch_ttft,
                "e2e_s": batch_e2e} for j in range(len(ids) // batch_size)]
    return {"eval": eval_id, "label": eval_id, "prefix_cache": cached, "ids": ids,
            "answer_tokens": {q: answer_tokens for q in ids}, "compressor_s": {q: compressor_s for q in ids},
            "requests": requests, "batches": batches}


def engine_record(conditions: list[dict], *, model: str = "tiny", eval_task: str = "mbpp", seed: int = 0,
                  hardware: dict | None = None, slo: dict | None = None) -> dict:
    from promptintern.harness.records import engine_record as build

    settings = {"measure": True, "max_new_tokens": L, "queries": 4, "repeats": 1, "batch_sizes": [2],
                "sweep_requests": 4, "answered_max_tokens": None, "slo": slo or {"ttft_s": 0.3, "tpot_s": 0.1},
                "correct_at": None, "exclusive": True, "num_cpus": 2}
    return build(config={"model": model, "eval_task": eval_task, "seed": seed, "engine": "hf", "chat": True,
                         "timing": settings, "conditions": [{"eval": c["eval"], "prefix_cache": c["prefix_cache"]}
                                                            for c in conditions]},
                 settings=settings, conditions=conditions,
                 meta={"versions": VERSIONS, "git_commit": "0" * 40, "hardware": hardware or CPU_HW})


def _tiny_safetensors(path) -> None:
    """A well-formed safetensors file (one 2x2 float32 tensor), without torch."""
    import json
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


def stage_record(store: ResultStore, uid: str, *, method: dict, train_task: str, stage: int, n_stages: int,
                 losses: list[float], seconds: float, template_rate: float, mean_prompt_tokens: float,
                 seed: int = 0, model: str = "tiny", hardware: dict | None = None, work_seconds: float | None = None
                 ) -> dict:
    from promptintern.harness.records import stage_record as build

    adapter = store.adapter_dir(uid)
    adapter.mkdir(parents=True, exist_ok=True)
    (adapter / ADAPTER_FILES[0]).write_text("{}")
    _tiny_safetensors(adapter / ADAPTER_FILES[1])
    work = seconds if work_seconds is None else work_seconds
    return build(
        config={"model": model, "seed": seed, "method": method, "train_task": train_task, "stage": stage,
                "n_stages": n_stages, "rule": {"template_rate": template_rate, "n_examples": 1 if template_rate else 0}},
        adapter_dir=f"adapters/{uid}", adapter_sha256=None, init_adapter=None,
        train={"adapter_dir": f"adapters/{uid}", "losses": losses, "steps": len(losses), "train_tokens": 1000,
               "target_tokens": 400, "seconds": seconds, "tokens_per_second": 1000 / seconds,
               "truncated_examples": 0, "n_examples": 4, "mean_prompt_tokens": mean_prompt_tokens,
               "template_rate_requested": template_rate, "template_rate_achieved": template_rate,
               "examples_per_prompt": 1 if template_rate else 0},
        work_seconds={"prompts": 0.0, "teacher": 0.0, "training": seconds, "other": work - seconds, "total": work},
        seconds_total=work + 0.5, meta={"versions": VERSIONS, "git_commit": "0" * 40, "hardware": hardware or CPU_HW})


FULL = _method("full_prompt_ft")
QUERY = _method("query_only_ft")
PI = _method("promptintern", "linear", 2, 0.5)
FEW = _method("few_shot")


def build_store(root: Path, *, cross_domain: bool = True) -> ResultStore:
    """Four systems on mbpp (few_shot, full_prompt_ft served uncached and with its prefix cached, query_only_ft,
    promptintern), timed by one engine record; optionally the trained ones evaluated on nl2bash too, timed by their
    own evaluations (older records). Numbers are chosen for hand computation (see the tests):

    engine, L = 4, queries mbpp/0..3, one repeat; batch-1 request i emits token k at ttft + k x step; batches of 2:

    ============ ===== ===== =============== ============= ============== ===========================
    condition    ttft  step  E2EL (4 tokens) as answered   batch of 2 (s)  req/s at batch 2
    ============ ===== ===== =============== ============= ============== ===========================
    few_shot     0.40  0.10  0.70            2.30          2.0 (TTFT 0.8)  1.0
    full         0.40  0.10  0.70            2.30          2.0 (TTFT 0.8)  1.0
    full cached  0.10  0.10  0.40            2.00          1.0 (TTFT 0.2)  2.0
    query        0.05  0.05  0.20            1.00          0.5 (TTFT 0.1)  4.0
    promptintern 0.02  0.06  0.20            1.16          0.4 (TTFT 0.1)  5.0
    ============ ===== ===== =============== ============= ============== ===========================
    """
    store = ResultStore(root)
    recs = {
        # full prompt FT on mbpp: scores 1,0,1,1 -> 0.75; 2000 model tokens, 1000 of them a cached prefix
        "eval-full-mbpp": eval_record(
            "eval-full-mbpp", method=FULL, train_task="mbpp", eval_task="mbpp", scores=[1, 0, 1, 1],
            in_tokens=[2000] * 4, out_tokens=[20] * 4, in_o200k=[1000, 2000, 1000, 2000], out_o200k=[10, 30, 10, 30],
            template_o200k=[1100] * 4, gen_seconds=4.0, adapter_sha="a" * 64, prefix_cache=True,
            cached_tokens=1000),
        "eval-query-mbpp": eval_record(
            "eval-query-mbpp", method=QUERY, train_task="mbpp", eval_task="mbpp", scores=[0, 0, 1, 1],
            in_tokens=[100] * 4, out_tokens=[20] * 4, in_o200k=[50] * 4, out_o200k=[20] * 4,
            template_o200k=[0] * 4, gen_seconds=1.0, adapter_sha="b" * 64),
        "eval-pi-mbpp": eval_record(
            "eval-pi-mbpp", method=PI, train_task="mbpp", eval_task="mbpp", scores=[1, 1, 1, 0],
            in_tokens=[100] * 4, out_tokens=[20] * 4, in_o200k=[50] * 4, out_o200k=[20] * 4,
            template_o200k=[0] * 4, gen_seconds=2.0, adapter_sha="c" * 64),
        "eval-few-mbpp": eval_record(
            "eval-few-mbpp", method=FEW, train_task=None, eval_task="mbpp", scores=[0, 0, 0, 1],
            in_tokens=[2000] * 4, out_tokens=[20] * 4, in_o200k=[1500] * 4, out_o200k=[20] * 4,
            template_o200k=[1100] * 4, gen_seconds=4.0),
    }
    ids = [f"mbpp/{i}" for i in range(4)]
    engine = engine_record([
        engine_condition("eval-few-mbpp", ids, ttft=0.4, step=0.1, batch_ttft=0.8, batch_e2e=2.0, prompt_tokens=2000),
        engine_condition("eval-full-mbpp", ids, ttft=0.4, step=0.1, batch_ttft=0.8, batch_e2e=2.0, prompt_tokens=2000),
        engine_condition("eval-full-mbpp", ids, cached=True, ttft=0.1, step=0.1, batch_ttft=0.2, batch_e2e=1.0,
                         prompt_tokens=2000, cached_tokens=1000),
        engine_condition("eval-query-mbpp", ids, ttft=0.05, step=0.05, batch_ttft=0.1, batch_e2e=0.5),
        engine_condition("eval-pi-mbpp", ids, ttft=0.02, step=0.06, batch_ttft=0.1, batch_e2e=0.4)])
    if cross_domain:
        recs.update({
            "eval-full-bash": eval_record(
                "eval-full-bash", method=FULL, train_task="mbpp", eval_task="nl2bash", scores=[40.0, 20.0],
                metric="bleu", in_tokens=[3000] * 2, out_tokens=[10] * 2, in_o200k=[2500] * 2, out_o200k=[8] * 2,
                template_o200k=[2000] * 2, gen_seconds=2.0, latency=[(0.2, 0.4), (0.2, 0.6)], adapter_sha="a" * 64),
            "eval-pi-bash": eval_record(
                "eval-pi-bash", method=PI, train_task="mbpp", eval_task="nl2bash", scores=[10.0, 20.0],
                metric="bleu", in_tokens=[60] * 2, out_tokens=[10] * 2, in_o200k=[30] * 2, out_o200k=[8] * 2,
                template_o200k=[0] * 2, gen_seconds=0.5, latency=[(0.05, 0.1), (0.05, 0.1)], adapter_sha="c" * 64),
            "eval-few-bash": eval_record(
                "eval-few-bash", method=FEW, train_task=None, eval_task="nl2bash", scores=[30.0, 30.0],
                metric="bleu", in_tokens=[3000] * 2, out_tokens=[10] * 2, in_o200k=[2500] * 2, out_o200k=[8] * 2,
                template_o200k=[2000] * 2, gen_seconds=2.0, latency=[(0.2, 0.5), (0.2, 0.5)]),
        })
    stages = {
        "stage-full-1": dict(method=FULL, stage=0, n_stages=1, losses=[3.0, 2.0, 1.5], seconds=36.0,
                             template_rate=1.0, mean_prompt_tokens=1900.0),
        "stage-query-1": dict(method=QUERY, stage=0, n_stages=1, losses=[3.0, 2.5], seconds=18.0,
                              template_rate=0.0, mean_prompt_tokens=90.0),
        "stage-pi-1": dict(method=PI, stage=0, n_stages=2, losses=[3.0, 2.2], seconds=30.0, template_rate=0.5,
                           mean_prompt_tokens=1000.0),
        "stage-pi-2": dict(method=PI, stage=1, n_stages=2, losses=[2.1, 1.2], seconds=6.0, template_rate=0.0,
                           mean_prompt_tokens=90.0),
    }
    for uid, rec in recs.items():
        store.write(uid, rec)
    store.write("engine-mbpp", engine)
    for uid, kw in stages.items():
        store.write(uid, stage_record(store, uid, train_task="mbpp", **kw))
    return store


# -- headless Chromium -----------------------------------------------------------------------------------------

def chromium_binary() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: Path, png_path: Path, tmp_dir: Path, size: str = "1200,900") -> Path:
    """Render a local HTML file in headless Chromium (no network, no profile) and save a PNG screenshot."""
    import subprocess

    binary = chromium_binary()
    profile = tmp_dir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--screenshot={png_path}",
           f"--window-size={size}", Path(html_path).resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert png_path.is_file(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return png_path


def image_stats(png_path: Path) -> dict:
    """Fraction of non-white pixels and number of distinct colours of a PNG."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(str(png_path))[..., :3]
    non_white = float((img.min(axis=2) < 0.95).mean())
    colours = len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    return {"non_white": non_white, "colours": colours, "shape": img.shape}
