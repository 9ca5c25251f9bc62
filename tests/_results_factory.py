"""Small, schema-faithful result files for the aggregation / cost / report / leaderboard tests.

The records have the exact shape ``harness/eval_unit.py`` and ``harness/stage_unit.py`` write (same keys), with
hand-chosen numbers so the tests can assert values computed by hand. Also a tiny price table with round prices.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.artifacts import ADAPTER_FILES
from harness.store import ResultStore

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
                template_o200k: list[int], gen_seconds: float, latency: list[tuple[float, float]],
                throughput: list[tuple[int, float, float]], seed: int = 0, metric: str = "pass@1",
                model: str = "tiny", hardware: dict | None = None, batch_size: int = 4, compressor_s: float = 0.0,
                adapter_sha: str | None = None) -> dict:
    n = len(scores)
    samples = []
    for i in range(n):
        gen = f"generation {uid} {i}"
        samples.append({
            "id": f"{eval_task}/{i}",
            "prompt": f"prompt {i}",
            "rendered_prompt_tokens": in_tokens[i],
            "generation": gen,
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
    from harness.measure import generations_sha256, summary_stats

    lat_samples = [{"id": f"{eval_task}/{i}", "ttft_s": t, "e2e_s": e, "prompt_tokens": in_tokens[i],
                    "output_tokens": out_tokens[i]} for i, (t, e) in enumerate(latency)]
    points = [{"batch_size": b, "seconds": b * 4 / tok, "prompt_tokens": 100 * b, "output_tokens": 4 * b,
               "tokens_per_s": tok, "samples_per_s": sps} for b, tok, sps in throughput]
    best = max(points, key=lambda p: p["tokens_per_s"])
    return {
        "kind": "eval",
        "status": "ok",
        "config": {"model": model, "seed": seed, "method": method, "train_task": train_task, "eval_task": eval_task,
                   "rule": {"template_rate": 1.0, "n_examples": 1}, "test_compressed": compressor_s > 0,
                   "generation": {"batch_size": batch_size, "max_new_tokens": 16},
                   "prompt": {"k_examples": 1, "retriever": "bm25", "pool_overlap": "drop",
                              "compressor": {"name": "truncate"}, "chat": True},
                   "train_limit": 4, "test_limit": n},
        "adapter": None,
        "task": {"name": eval_task, "primary_metric": metric, "split": "test"},
        "metrics": {metric: sum(scores) / n, "n": float(n)},
        "efficiency": {"n": n, "mean_input_tokens": sum(in_tokens) / n, "mean_output_tokens": sum(out_tokens) / n,
                       "generation_seconds": gen_seconds, "compressor_seconds": compressor_s,
                       "samples_per_second": n / gen_seconds, "seconds_per_query": gen_seconds / n,
                       "generation_batch_size": batch_size, "max_new_tokens": 16},
        "measurements": {
            "settings": {"measure": True, "throughput_batch_sizes": [p["batch_size"] for p in points],
                         "throughput_max_new_tokens": 4, "latency_samples": len(latency)},
            "throughput": {"max_new_tokens": 4, "points": points,
                           "saturating": {"batch_size": best["batch_size"], "tokens_per_s": best["tokens_per_s"],
                                          "samples_per_s": best["samples_per_s"], "saturated": False}},
            "latency": {"batch_size": 1, "source": "batch1_run", "samples": lat_samples,
                        "ttft_s": summary_stats([x["ttft_s"] for x in lat_samples]),
                        "e2e_s": summary_stats([x["e2e_s"] for x in lat_samples])},
            "seconds": 1.0,
        },
        "model_info": {"dtype": "float32", "device": "cpu", "n_params": 1000},
        "adapter_sha256": adapter_sha,
        "generations_sha256": generations_sha256((s["id"], s["generation"]) for s in samples),
        "samples": samples,
        "seconds_total": gen_seconds + 1.0,
        "versions": VERSIONS,
        "git_commit": "0" * 40,
        "hardware": hardware or CPU_HW,
    }


def _tiny_safetensors(path) -> None:
    """A well-formed safetensors file (one 2x2 float32 tensor), without torch."""
    import json
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


def stage_record(store: ResultStore, uid: str, *, method: dict, train_task: str, stage: int, n_stages: int,
                 losses: list[float], seconds: float, template_rate: float, mean_prompt_tokens: float,
                 seed: int = 0, model: str = "tiny", hardware: dict | None = None) -> dict:
    adapter = store.adapter_dir(uid)
    adapter.mkdir(parents=True, exist_ok=True)
    (adapter / ADAPTER_FILES[0]).write_text("{}")
    _tiny_safetensors(adapter / ADAPTER_FILES[1])
    return {
        "kind": "stage", "status": "ok",
        "config": {"model": model, "seed": seed, "method": method, "train_task": train_task, "stage": stage,
                   "n_stages": n_stages, "rule": {"template_rate": template_rate, "n_examples": 1 if template_rate else 0}},
        "adapter_dir": f"adapters/{uid}", "init_adapter": None,
        "train": {"adapter_dir": f"adapters/{uid}", "losses": losses, "steps": len(losses), "train_tokens": 1000,
                  "target_tokens": 400, "seconds": seconds, "tokens_per_second": 1000 / seconds,
                  "truncated_examples": 0, "n_examples": 4, "mean_prompt_tokens": mean_prompt_tokens,
                  "template_rate_requested": template_rate, "template_rate_achieved": template_rate,
                  "examples_per_prompt": 1 if template_rate else 0},
        "seconds_total": seconds + 0.5, "versions": VERSIONS, "git_commit": "0" * 40, "hardware": hardware or CPU_HW,
    }


FULL = _method("full_prompt_ft")
QUERY = _method("query_only_ft")
PI = _method("promptintern", "linear", 2, 0.5)
FEW = _method("few_shot")


def build_store(root: Path, *, cross_domain: bool = True) -> ResultStore:
    """Four systems on mbpp (few_shot, full_prompt_ft, query_only_ft, promptintern) and, optionally, the trained
    ones evaluated on nl2bash too. Numbers are chosen for hand computation (see the tests)."""
    store = ResultStore(root)
    recs = {
        # full prompt FT on mbpp: scores 1,0,1,1 -> 0.75; 2000 model tokens; 1 s/query at 2 cores.
        "eval-full-mbpp": eval_record(
            "eval-full-mbpp", method=FULL, train_task="mbpp", eval_task="mbpp", scores=[1, 0, 1, 1],
            in_tokens=[2000] * 4, out_tokens=[20] * 4, in_o200k=[1000, 2000, 1000, 2000], out_o200k=[10, 30, 10, 30],
            template_o200k=[1100] * 4, gen_seconds=4.0, latency=[(0.10, 0.50), (0.20, 0.70), (0.30, 0.90)],
            throughput=[(1, 50.0, 2.0), (4, 80.0, 3.0)], adapter_sha="a" * 64),
        "eval-query-mbpp": eval_record(
            "eval-query-mbpp", method=QUERY, train_task="mbpp", eval_task="mbpp", scores=[0, 0, 1, 1],
            in_tokens=[100] * 4, out_tokens=[20] * 4, in_o200k=[50] * 4, out_o200k=[20] * 4,
            template_o200k=[0] * 4, gen_seconds=1.0, latency=[(0.05, 0.20), (0.05, 0.25), (0.05, 0.30)],
            throughput=[(1, 100.0, 5.0), (4, 300.0, 12.0)], adapter_sha="b" * 64),
        "eval-pi-mbpp": eval_record(
            "eval-pi-mbpp", method=PI, train_task="mbpp", eval_task="mbpp", scores=[1, 1, 1, 0],
            in_tokens=[100] * 4, out_tokens=[20] * 4, in_o200k=[50] * 4, out_o200k=[20] * 4,
            template_o200k=[0] * 4, gen_seconds=2.0, latency=[(0.05, 0.10), (0.05, 0.20), (0.05, 0.30)],
            throughput=[(1, 100.0, 5.0), (4, 400.0, 16.0)], adapter_sha="c" * 64),
        "eval-few-mbpp": eval_record(
            "eval-few-mbpp", method=FEW, train_task=None, eval_task="mbpp", scores=[0, 0, 0, 1],
            in_tokens=[2000] * 4, out_tokens=[20] * 4, in_o200k=[1500] * 4, out_o200k=[20] * 4,
            template_o200k=[1100] * 4, gen_seconds=4.0, latency=[(0.10, 0.50), (0.20, 0.60), (0.30, 0.70)],
            throughput=[(1, 50.0, 2.0), (4, 80.0, 3.0)]),
    }
    if cross_domain:
        recs.update({
            "eval-full-bash": eval_record(
                "eval-full-bash", method=FULL, train_task="mbpp", eval_task="nl2bash", scores=[40.0, 20.0],
                metric="bleu", in_tokens=[3000] * 2, out_tokens=[10] * 2, in_o200k=[2500] * 2, out_o200k=[8] * 2,
                template_o200k=[2000] * 2, gen_seconds=2.0, latency=[(0.2, 0.4), (0.2, 0.6)],
                throughput=[(1, 40.0, 4.0)], adapter_sha="a" * 64),
            "eval-pi-bash": eval_record(
                "eval-pi-bash", method=PI, train_task="mbpp", eval_task="nl2bash", scores=[10.0, 20.0],
                metric="bleu", in_tokens=[60] * 2, out_tokens=[10] * 2, in_o200k=[30] * 2, out_o200k=[8] * 2,
                template_o200k=[0] * 2, gen_seconds=0.5, latency=[(0.05, 0.1), (0.05, 0.1)],
                throughput=[(1, 200.0, 20.0)], adapter_sha="c" * 64),
            "eval-few-bash": eval_record(
                "eval-few-bash", method=FEW, train_task=None, eval_task="nl2bash", scores=[30.0, 30.0],
                metric="bleu", in_tokens=[3000] * 2, out_tokens=[10] * 2, in_o200k=[2500] * 2, out_o200k=[8] * 2,
                template_o200k=[2000] * 2, gen_seconds=2.0, latency=[(0.2, 0.5), (0.2, 0.5)],
                throughput=[(1, 40.0, 4.0)]),
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
