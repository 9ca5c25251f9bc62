"""What a result was produced with: library versions, git commit, hardware."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("promptintern", "torch", "transformers", "peft", "ray", "lm-eval", "tiktoken", "sacrebleu", "numpy")


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        # the code's state: result files being rewritten under results/ (tracked, committed runs) are not a change
        # of the code that produced them
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The workers' memory allocator (glibc malloc): large blocks kept and reused rather than mapped and unmapped on
# every allocation. With glibc's defaults each tensor over 32 MiB is a fresh mmap: a batch-4 prefill of
# 2,100-token prompts on SmolLM2-135M takes ~456,000 page faults and 26 s instead of none and 23 s on the 2-core
# machine of results/benchmark, and what those faults cost moves between runs. A serving engine reuses its memory
# (vLLM's CPU backend asks for tcmalloc), so timings here do too. A value set in the driver's environment wins.
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(16 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(16 << 30),
    "MALLOC_TOP_PAD_": str(1 << 30),
}


def hardware() -> dict:
    import torch

    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
        "gpu_count": 0,
        "device": "cpu",
        "allocator": {k: os.environ[k] for k in ALLOCATOR_ENV if k in os.environ},
    }
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(), device="cuda")
    return info


def describe_hardware(hw: dict) -> str:
    if hw.get("gpu"):
        return f"{hw['gpu_count']}x {hw['gpu']}"
    return f"{hw.get('cpu')} ({hw.get('cpu_count')} cores, {hw.get('torch_threads')} torch threads/unit)"
