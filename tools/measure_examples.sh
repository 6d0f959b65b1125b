#!/usr/bin/env bash
# The runs behind the numbers in docs/examples.md: each small example with its defaults,
# REPEATS times (default 3), the first with fresh caches (torch.compile's and the fused
# kernel's, as on a new machine), and the digits demo over seeds 0-4 (SEEDS). Prints the CPU
# (model and vector instruction sets: results differ between CPUs), the lines the docs quote
# and the wall time of each run.
#
#     bash tools/measure_examples.sh 2>&1 | tee measure.log
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
REPEATS="${REPEATS:-3}"
SEEDS="${SEEDS:-1 2 3 4}"  # the digits demo's seeds besides 0
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$PY" -c "import os, torch; print(f'torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads')"
"$PY" -c "import torch; print('torch CPU capability:', torch.backends.cpu.get_cpu_capability())"
if command -v lscpu >/dev/null; then
    lscpu | grep -E "^Model name" || true
    echo "vector extensions: $(lscpu | grep -oE '\b(avx|avx2|avx512[a-z_0-9]*|amx[a-z_0-9]*)\b' | sort -u | tr '\n' ' ')"
fi

timed() {  # label, command...: the command's key lines and its wall time
    local label="$1"; shift
    local start=$SECONDS
    "$@" 2>/dev/null | grep -E "epoch +1 |final test accuracy|vmap equals|vmap is|DP-SGD|\| (vmap|one by one|Python loop)|faster|epoch 10|identical|DIFFER" || true
    echo "[$label] wall time $((SECONDS - start)) s"
}

for i in $(seq "$REPEATS"); do
    if [ "$i" = 1 ]; then  # cold: fresh compile and kernel caches
        export TORCHINDUCTOR_CACHE_DIR="$OUT/inductor" SNNFUNC_CACHE="$OUT/snnfunc"
        label=cold
    else
        label=warm
    fi
    timed "train_digits.py, seed 0, $label" "$PY" examples/train_digits.py --out "$OUT"
done
for seed in $SEEDS; do
    timed "train_digits.py, seed $seed" "$PY" examples/train_digits.py --seed "$seed" --out "$OUT"
done
for i in $(seq "$REPEATS"); do
    timed "per_sample_gradients.py, run $i" "$PY" examples/per_sample_gradients.py
done
for i in $(seq "$REPEATS"); do
    timed "ensemble.py, run $i" "$PY" examples/ensemble.py
done
for i in $(seq "$REPEATS"); do
    timed "ddp.py, 2 processes, run $i" "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 examples/ddp.py --epochs 10
done
