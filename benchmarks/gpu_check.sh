#!/usr/bin/env bash
# The one prepared run for a lent CUDA machine (one H100 or H200, Python 3.12, torch 2.11,
# triton 3.6, no network): about 8 minutes, one report, each part within its share of the
# time budget, so that a part that fails or runs long leaves the others' results.
#
#   env    benchmarks/gpu_env.py: versions, nvidia-smi, where snnfunc and SpikingJelly are
#          imported from, one fused LIF call against the reference
#   tests  pytest: the tests of tests/test_triton.py that need a CUDA GPU (every neuron,
#          option and dtype of the generated CUDA kernels against the reference), the sm_90
#          builds and the ops' registration (not the interpreter tests: they run on CPUs)
#   cases  benchmarks/gpu_cases.py: the interpreter case scripts' cases on CUDA tensors
#          (every neuron, option, reset, surrogate, float16/bfloat16/float32/float64, edge
#          values), every IR operation, and the fused op under torch.compile bit for bit
#   bench  benchmarks/gpu_bench.py: LIF forward and forward+backward, float32 and bfloat16,
#          N 64k/1M/16M x T 8/64/1024, ms and fraction of a device-to-device copy's
#          bandwidth; SpikingJelly 2.0's Triton LIF and torch.compile of the plain loop beside
#   train  benchmarks/gpu_train.py: one training step of the convolutional PLIF network of
#          examples/train_fashion_mnist.py under CUDA bf16 autocast, snnfunc against
#          SpikingJelly 2.0, eager and compiled
#
# Usage:
#   bash benchmarks/gpu_check.sh [--out DIR] [--parts "env tests cases bench train"] [--budget S]
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --dry-run
#       the rehearsal on the CPU: tiny sizes, the Triton kernels under TRITON_INTERPRET=1,
#       torch.compile with backend aot_eager; about 5 minutes on 2 cores (budget 900 s)
# Writes DIR/gpu_check.md (the report, written part by part) and DIR/gpu_check.log (all
# output); DIR is $OUT when set (the device machine's folder that comes back), else
# out/gpu_check. Exit status 0 when every part passed (a part's own exit status 3 means it
# stopped starting new cells at its time budget, 124 that timeout stopped it). The budget
# (480 s on the GPU) is shared by the parts asked for in proportion to their shares below;
# a part that ends early leaves its time to the next.
#
# Nothing is installed: the checkout is imported through PYTHONPATH, and SpikingJelly 2.0.0
# and loguru travel as pure-Python wheels in benchmarks/wheels/ (ignored by git; fetched by
# `bash tools/fetch_gpu_wheels.sh`), unpacked into a temporary folder (not imported from
# the zip: SpikingJelly reads its own source files under torch.compile).
#
# The device call: benchmarks/README.md, "The GPU check".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
DRY=0
PARTS="env tests cases bench train"
BUDGET=""
OUTDIR=${OUT:-$ROOT/out/gpu_check}
while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --out) OUTDIR=$2; shift ;;
        --parts) PARTS=$2; shift ;;
        --budget) BUDGET=$2; shift ;;
        -h|--help) sed -n '2,37p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

START=$(date +%s)
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
REPORT=$OUTDIR/gpu_check.md
LOG=$OUTDIR/gpu_check.log
: > "$LOG"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
# compiled kernels stay where a rerun on the same machine finds them; the rest goes with $WORK
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/torchinductor_$(id -un)}
export TMPDIR=$WORK

say() { echo "$*" | tee -a "$LOG"; }

# --- imports: the checkout, then the carried wheels (unpacked), then whatever was set
SITE=$WORK/site
mkdir -p "$SITE"
WHEELS=""
for w in benchmarks/wheels/*.whl; do
    [ -e "$w" ] || continue
    "$PY" -m zipfile -e "$w" "$SITE" && WHEELS="$WHEELS $(basename "$w")"
done
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# SpikingJelly's LIF: its Triton kernels; its PLIF chooses (named, it refuses autocast's
# bfloat16 voltage, which needs its torch loop: see benchmarks/gpu_train.py)
export SJ_LIF_CUDA_IMPLEMENTATION=triton
unset SJ_PLIF_CUDA_IMPLEMENTATION

if ((DRY)); then
    DEVICE=cpu
    INTERP=(env TRITON_INTERPRET=1)
    PYTEST_ARGS=(-n 2 -k "not interpreter and not (sm90 and not float32)")
    CASES_ARGS=(--every 40 --workers 2 --max-compiled 2 --compile-backend aot_eager)
    BENCH_ARGS=(--dry-run --compile-backend aot_eager)
    SHARES=(env=60 tests=120 cases=240 bench=240 train=240)
    BUDGET=${BUDGET:-900}
    MODE="dry run on the CPU (tiny sizes; Triton kernels under TRITON_INTERPRET=1; torch.compile with backend aot_eager)"
else
    DEVICE=cuda
    INTERP=(env)
    PYTEST_ARGS=(-n 12 -k "not interpreter")
    CASES_ARGS=(--workers 14)
    BENCH_ARGS=()
    SHARES=(env=40 tests=90 cases=110 bench=130 train=110)
    BUDGET=${BUDGET:-480}
    MODE="GPU"
fi
# Each part ends at its place in a schedule of the parts asked for, their shares scaled to the
# budget: a part that ends early leaves its time to the next ones, none can take a later one's.
share_of() { local kv; for kv in "${SHARES[@]}"; do [ "${kv%%=*}" = "$1" ] && echo "${kv#*=}"; done; }
SHARE_TOTAL=0
for kv in "${SHARES[@]}"; do
    [[ " $PARTS " == *" ${kv%%=*} "* ]] && SHARE_TOTAL=$((SHARE_TOTAL + ${kv#*=}))
done
((SHARE_TOTAL > 0)) || { echo "no known part in --parts '$PARTS'" >&2; exit 2; }
SHARE_DONE=0

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "unknown (no .git here)")
DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | head -c1)
{
    echo "# snnfunc GPU check"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -n), $MODE; commit $COMMIT${DIRTY:+ (with local changes)};"
    echo "budget ${BUDGET} s; wheels unpacked:${WHEELS:- none (SpikingJelly must come from elsewhere)}."
} > "$REPORT"

# --- the parts
SUMMARY=()
FAILED=0
part() {  # part NAME TITLE COMMAND... : runs COMMAND within the part's budget
    local name=$1 title=$2
    shift 2
    [[ " $PARTS " == *" $name "* ]] || return 0
    local budget now
    SHARE_DONE=$((SHARE_DONE + $(share_of "$name")))
    now=$(date +%s)
    budget=$((START + BUDGET * SHARE_DONE / SHARE_TOTAL - now))
    printf '\n## %s\n\n' "$title" >> "$REPORT"
    if ((budget < 20)); then
        echo "Not run: the check's time budget is spent." >> "$REPORT"
        SUMMARY+=("| $name | not run (time budget spent) | 0 s |")
        FAILED=1
        return 0
    fi
    export PART_MD=$WORK/$name.md PART_DEADLINE=$((now + budget - 8))
    : > "$PART_MD"
    say ""
    say "=== $name (budget ${budget} s): $*"
    timeout -k 10 -s INT "$budget" "$@" 2>&1 | tee -a "$LOG" > "$WORK/$name.out"
    local rc=${PIPESTATUS[0]} took=$(($(date +%s) - now))
    if declare -F "post_$name" > /dev/null; then "post_$name" "$rc"; fi
    cat "$PART_MD" >> "$REPORT"
    local status="ok"
    if ((rc == 124 || rc == 137)); then
        status="STOPPED at its time budget (${budget} s)"
    elif ((rc == 3)); then
        status="INCOMPLETE: its time budget (${budget} s) ran out before every case or cell ran"
    elif ((rc != 0)); then
        status="FAILED (exit status $rc)"
    fi
    ((rc != 0)) && FAILED=1
    if ((rc != 0 && rc != 3)); then  # (an incomplete part's tables say what did not run)
        { printf '\nLast lines of its output:\n\n```\n'; tail -n 30 "$WORK/$name.out" | cut -c1-300; printf '```\n'; } >> "$REPORT"
    fi
    [ -n "${PART_NOTE:-}" ] && status="$status; $PART_NOTE"
    PART_NOTE=""
    echo "" >> "$REPORT"
    echo "Part $name: $status, ${took} s." >> "$REPORT"
    SUMMARY+=("| $name | $status | ${took} s |")
    say "=== $name: $status, ${took} s"
}

export ROOT SITE DEVICE

post_tests() {  # the pytest summary, failures and skips into the report
    local out=$WORK/tests.out
    {
        echo '```'
        grep -E '^(FAILED|ERROR|SKIPPED|XFAIL)' "$out" | cut -c1-300 | head -n 40
        grep -E '(passed|failed|error|skipped|no tests ran).* in [0-9.]+s' "$out" | tail -n 1
        echo '```'
    } > "$PART_MD"
    if ((!DRY)) && grep -Eq '[0-9]+ skipped' "$out"; then
        PART_NOTE="tests were SKIPPED on the GPU machine (reasons above)"
        FAILED=1
    fi
    if ((DRY)) && grep -Eq '[0-9]+ passed' "$out" && grep -q 'needs a CUDA GPU' "$out"; then
        PART_NOTE="the CUDA tests skip here (no GPU), as expected in a dry run"
    fi
}

part env "Environment" "${INTERP[@]}" "$PY" benchmarks/gpu_env.py
part tests "CUDA tests (pytest tests/test_triton.py ${PYTEST_ARGS[*]})" \
    "$PY" -m pytest -q -p no:cacheprovider -rfEs "${PYTEST_ARGS[@]}" tests/test_triton.py
part cases "Kernels against the reference on $DEVICE: the case scripts, IR operations, torch.compile" \
    "${INTERP[@]}" "$PY" benchmarks/gpu_cases.py --device "$DEVICE" "${CASES_ARGS[@]}"
part bench "LIF bandwidth: snnfunc, SpikingJelly 2.0's Triton LIF, torch.compile of the plain loop" \
    "${INTERP[@]}" "$PY" benchmarks/gpu_bench.py --device "$DEVICE" "${BENCH_ARGS[@]}"
part train "Training step of the convolutional PLIF network, bf16 autocast" \
    "${INTERP[@]}" "$PY" benchmarks/gpu_train.py --device "$DEVICE" "${BENCH_ARGS[@]}"

TOTAL=$(($(date +%s) - START))
{
    printf '\n## Summary\n\n| part | status | time |\n|---|---|---|\n'
    printf '%s\n' "${SUMMARY[@]}"
    printf '\n%s in %d s; report %s, full output %s.\n' \
        "$( ((FAILED)) && echo "Not every part passed" || echo "Every part passed")" "$TOTAL" "$REPORT" "$LOG"
} >> "$REPORT"
say ""
say "=== summary ($MODE, $TOTAL s)"
printf '%s\n' "${SUMMARY[@]}" | tee -a "$LOG"
say "report: $REPORT; log: $LOG"
rm -rf "$WORK"
exit "$FAILED"
