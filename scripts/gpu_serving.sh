#!/usr/bin/env bash
# The vLLM checks and the serving benchmark on a CUDA GPU, as one run (the CPU run: experiments/serving_cpu.yaml).
#   scripts/gpu_serving.sh [key=value ...]      e.g. scripts/gpu_serving.sh requests=32
# Needs PyPI once (`make setup-vllm` installs vllm 0.32.0, the CUDA build, into .venv-vllm when nvidia-smi sees a
# GPU) and the benchmark's results folder (results/benchmark: its prompts; its adapters where present, else
# adapters of the same shape with random weights, said in every record). Writes results/serving_gpu/.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
make setup setup-vllm
nvidia-smi -L
# the engine's own checks first: adapter applied, prefix cache hit, no reuse across adapters, agreement stored
.venv/bin/python -m pytest -q -m "integration and not gpu" tests/test_vllm_server.py
.venv/bin/python -m promptintern.cli serve-bench experiments/serving_gpu.yaml "$@"
