#!/usr/bin/env bash
# One prepared run for a lent CUDA machine: the generated CUDA kernels of every neuron against
# the reference (every dtype, half precision included), then the benchmark table on the GPU. Usage: bash benchmarks/gpu_check.sh > gpu_check.txt
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet -e ".[test]"
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -m pytest -q -p no:cacheprovider tests/test_triton.py tests/test_fused.py tests/test_generated.py -rs
python3 benchmarks/bench_neurons.py --device cuda --sizes 256 1024 --Ts 4 8 64 256 1024 \
    --max-compile-T 8 --repeats 10
