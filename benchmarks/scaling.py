"""Scaling benchmark: the same 8-unit grid with 1 and with N Ray workers; prints wall times and efficiency.

    python benchmarks/scaling.py                       # CPU: 1 vs 2 workers (tiny model)
    python benchmarks/scaling.py --workers 1 4 --gpu   # one GPU shared by 1 vs 4 fractional workers

Each setting runs in a fresh results folder and a fresh Ray instance, so nothing is skipped. Figures are
printed, not asserted: run it on the machine you want to know about.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GRID = {
    "name": "scaling",
    "models": ["tiny"],
    "tasks": {"train": ["mbpp"], "eval": "same", "train_limit": 8, "test_limit": 4},
    # 4 single-stage methods x (1 stage + 1 eval) = 8 units; 4 independent chains.
    "methods": [{"name": "full_prompt_ft"}, {"name": "query_only_ft"}],
    "seeds": [0, 1],
    "prompt": {"compressor": {"name": "truncate", "tokenizer": "tiny"}},
    "train": {"batch_size": 4, "max_length": 768, "epochs": 2},
    "generation": {"batch_size": 4, "max_new_tokens": 32},
}


def run_once(workers: int, gpu: bool, model: str) -> tuple[float, int]:
    import ray

    from promptintern.harness.config import deep_merge, load_experiment
    from promptintern.harness.executor import run_plan
    from promptintern.harness.plan import build_plan
    from promptintern.harness.store import ResultStore

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_experiment(None)
        cfg = deep_merge(cfg, {**GRID, "models": [model], "results_dir": tmp})
        cfg["methods"] = GRID["methods"]
        if gpu:
            cfg["resources"] = {"num_cpus": 1, "num_gpus": 1.0 / workers}
        units = build_plan(cfg)
        store = ResultStore(Path(tmp) / cfg["name"])
        if gpu:
            ray.init(num_cpus=workers, num_gpus=1, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, num_gpus=0, include_dashboard=False, log_to_driver=False)
        try:
            start = time.perf_counter()
            summary = run_plan(units, store, data_dir=os.environ.get("PROMPTINTERN_DATA_DIR"), progress=False)
            wall = time.perf_counter() - start
        finally:
            ray.shutdown()
        if not summary.ok:
            raise SystemExit(f"grid failed: {summary.failed}")
        return wall, len(units)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--gpu", action="store_true", help="fractional GPU workers on one GPU")
    p.add_argument("--model", default="tiny")
    args = p.parse_args()
    from promptintern.harness.env_info import hardware

    hw = hardware()
    print(f"hardware: {hw['gpu'] or hw['cpu']} ({hw['cpu_count']} CPU cores)")
    rows = []
    for w in args.workers:
        wall, n = run_once(w, args.gpu, args.model)
        rows.append((w, wall, n))
        print(f"workers={w}: {n} units in {wall:.1f} s")
    base = rows[0][1] * rows[0][0]
    print("\n| workers | units | wall s | speedup | efficiency |\n|---|---|---|---|---|")
    for w, wall, n in rows:
        speedup = rows[0][1] / wall
        print(f"| {w} | {n} | {wall:.1f} | {speedup:.2f}x | {100 * base / (wall * w):.0f}% |")


if __name__ == "__main__":
    main()
