"""Peak memory and time of one training step with and without gradient checkpointing (prints figures).

    python benchmarks/checkpointing_memory.py [--task nl2bash] [--batch 2] [--model smollm2-135m]

Each setting runs in its own process (peak resident memory is per process): full prompts of the task (template
+ 1 retrieved example + query + answer), LoRA all-linear r=8, fp32 on CPU / bf16 on CUDA.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(args) -> dict:
    import resource
    import tempfile
    import time

    sys.path.insert(0, str(ROOT))
    from promptintern import tasks
    from promptintern.harness.bench_gpu import training_records
    from promptintern.models import load_model
    from promptintern.trainer import TrainConfig, attach_adapter, train_stage

    model, tok = load_model(args.model)
    task = tasks.get_task(args.task)
    records = training_records(tok, task, args.batch, 4096)
    cfg = TrainConfig.from_dict({"batch_size": args.batch, "progress": False, "max_length": 4096,
                                 "gradient_checkpointing": args.checkpointing == "on",
                                 "lora": {"r": 8, "alpha": 16, "dropout": 0.0}})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_stage(attach_adapter(model, cfg, None), tok, records, cfg, tmp)
    return {"checkpointing": args.checkpointing, "tokens": sum(len(r["input_ids"]) for r in records),
            "seconds": time.perf_counter() - t0, "peak_rss_gib_before": before / 2**20,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="nl2bash")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--checkpointing", choices=["on", "off"])
    args = p.parse_args()
    if args.checkpointing:
        print(json.dumps(one(args)))
        return
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, __file__, "--task", args.task, "--batch", str(args.batch), "--model",
                              args.model, "--checkpointing", mode], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"checkpointing {mode:3}: {r['tokens']} tokens, one step {r['seconds']:.1f} s, "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB (after loading: {r['peak_rss_gib_before']:.2f} GiB)")


if __name__ == "__main__":
    main()
