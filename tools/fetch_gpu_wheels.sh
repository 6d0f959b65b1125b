#!/usr/bin/env bash
# Downloads the pure-Python wheels that benchmarks/gpu_check.sh needs on a lent GPU machine,
# which has no network: SpikingJelly 2.0.0 and loguru (SpikingJelly imports it at import time;
# its other imports, torch, triton, numpy and tqdm, are on that machine). They go to
# benchmarks/wheels/ (ignored by git), which the device call carries:
#   bash tools/fetch_gpu_wheels.sh && git check-ignore -q benchmarks/wheels && ls benchmarks/wheels
set -euo pipefail
cd "$(dirname "$0")/.."
dest=benchmarks/wheels
mkdir -p "$dest"
PY=${PYTHON:-python3}
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest" \
    spikingjelly==2.0.0 loguru==0.7.3
for w in "$dest"/spikingjelly-2.0.0-py3-none-any.whl "$dest"/loguru-0.7.3-py3-none-any.whl; do
    [ -f "$w" ] || { echo "missing $w" >&2; exit 1; }
    "$PY" -m zipfile -t "$w" >/dev/null  # a whole zip, not a half-written one
done
git check-ignore -q "$dest" || echo "warning: $dest is not ignored by git; do not commit the wheels" >&2
ls -l "$dest"
