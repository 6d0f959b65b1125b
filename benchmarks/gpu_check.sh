#!/usr/bin/env bash
# The one prepared run for a lent CUDA machine (one H100 or H200, Python 3.12, torch 2.11,
# triton 3.6, no network): about 8 minutes, one report, each part guarded by its own time
# budget so that a part that fails or runs long leaves the others' results.
#
#   env    versions, nvidia-smi, where snnfunc and SpikingJelly are imported from, a smoke call
#   tests  pytest: the tests of tests/test_triton.py that need a CUDA GPU (every neuron,
#          option and dtype of the generated CUDA kernels against the reference), the sm_90
#          builds and the ops' registration (not the interpreter tests: they run on CPUs)
#   cases  benchmarks/gpu_cases.py: the interpreter case scripts' cases on CUDA tensors
#          (every neuron, option, reset, surrogate, float16/bfloat16/float32/float64, edge
#          values), every IR operation, and the fused op under torch.compile bit for bit
#   bench  benchmarks/gpu_bench.py lif: LIF forward and forward+backward, float32 and
#          bfloat16, N 64k/1M/16M x T 8/64/1024, ms and fraction of a device-to-device copy's
#          bandwidth; SpikingJelly 2.0's Triton LIF and torch.compile of the plain loop beside
#   train  benchmarks/gpu_bench.py train: one training step of the convolutional PLIF network
#          of examples/train_fashion_mnist.py under CUDA bf16 autocast, snnfunc against
#          SpikingJelly 2.0, eager and compiled
#
# Usage:
#   bash benchmarks/gpu_check.sh [--out DIR] [--parts "env tests cases bench train"] [--budget S]
#   bash benchmarks/gpu_check.sh --dry-run     # rehearsal on the CPU: tiny sizes, the Triton
#                                              # kernels under TRITON_INTERPRET=1 (~4 min)
# Writes DIR/gpu_check.md (the report, written part by part) and DIR/gpu_check.log (all
# output); DIR is $OUT when set (the device machine's folder that comes back), else
# out/gpu_check. Exit status 0 when every part passed (a part's own exit status 3 means it
# stopped starting new cells at its time budget, 124 that timeout stopped it).
#
# Nothing is installed: the checkout is imported through PYTHONPATH, and SpikingJelly 2.0.0
# and loguru travel as pure-Python wheels in benchmarks/wheels/ (ignored by git; fetch them
# with `bash tools/fetch_gpu_wheels.sh`), unpacked here into a temporary folder (not
# imported from the zip: SpikingJelly reads its own source files under torch.compile).
#
# The device call (from the session's own checkout, the one a device call sends, after
# `bash tools/fetch_gpu_wheels.sh` there):
#   device.run(command="bash benchmarks/gpu_check.sh", carry=["benchmarks/wheels"], timeout_s=600)
# The parts' budgets add up to 480 s (--budget); 600 s leaves room for the start of the
# processes. To rerun some parts on the same warm machine (its Triton and Inductor caches
# then warm): command="bash benchmarks/gpu_check.sh --parts 'bench train'".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
DRY=0
PARTS="env tests cases bench train"
BUDGET=480
OUTDIR=${OUT:-$ROOT/out/gpu_check}
while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --out) OUTDIR=$2; shift ;;
        --parts) PARTS=$2; shift ;;
        --budget) BUDGET=$2; shift ;;
        -h|--help) sed -n '2,40p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

START=$(date +%s)
DEADLINE=$((START + BUDGET))
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
export SJ_LIF_CUDA_IMPLEMENTATION=triton SJ_PLIF_CUDA_IMPLEMENTATION=triton

if ((DRY)); then
    DEVICE=cpu
    INTERP=(env TRITON_INTERPRET=1)
    PYTEST_ARGS=(-n 2 -k "not interpreter and not (sm90 and not float32)")
    CASES_ARGS=(--every 40 --workers 2 --max-compiled 2 --compile-backend aot_eager)
    BENCH_ARGS=(--dry-run --compile-backend aot_eager)
    BUDGETS=(env=60 tests=240 cases=240 bench=240 train=240)
    MODE="dry run on the CPU (tiny sizes; Triton kernels under TRITON_INTERPRET=1; torch.compile with backend aot_eager)"
    ((BUDGET == 480)) && DEADLINE=$((START + 900))
else
    DEVICE=cuda
    INTERP=(env)
    PYTEST_ARGS=(-n 12 -k "not interpreter")
    CASES_ARGS=(--workers 14)
    BENCH_ARGS=()
    BUDGETS=(env=30 tests=90 cases=120 bench=130 train=110)
    MODE="GPU"
fi
budget_of() { local kv; for kv in "${BUDGETS[@]}"; do [ "${kv%%=*}" = "$1" ] && echo "${kv#*=}"; done; }

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
    local budget left now
    budget=$(budget_of "$name")
    now=$(date +%s)
    left=$((DEADLINE - now))
    printf '\n## %s\n\n' "$title" >> "$REPORT"
    if ((left < 20)); then
        echo "Not run: the check's time budget is spent." >> "$REPORT"
        SUMMARY+=("| $name | not run (time budget spent) | 0 s |")
        FAILED=1
        return 0
    fi
    ((budget > left - 5)) && budget=$((left - 5))
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
    if ((rc != 0)); then
        FAILED=1
        { printf '\nLast lines of its output:\n\n```\n'; tail -n 30 "$WORK/$name.out" | cut -c1-300; printf '```\n'; } >> "$REPORT"
    fi
    [ -n "${PART_NOTE:-}" ] && status="$status; $PART_NOTE"
    PART_NOTE=""
    echo "" >> "$REPORT"
    echo "Part $name: $status, ${took} s." >> "$REPORT"
    SUMMARY+=("| $name | $status | ${took} s |")
    say "=== $name: $status, ${took} s"
}

read -r -d '' ENV_PY <<'EOF'
import os, platform, shutil, subprocess, sys, time
from pathlib import Path
md = open(os.environ["PART_MD"], "w")
def w(s=""):
    md.write(s + "\n"); md.flush(); print(s, flush=True)
root, site, device = Path(os.environ["ROOT"]), Path(os.environ["SITE"]), os.environ["DEVICE"]
problems = []
if shutil.which("nvidia-smi"):
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,memory.used,driver_version,"
                        "clocks.sm,clocks.max.sm,temperature.gpu,power.draw", "--format=csv"],
                       capture_output=True, text=True, timeout=30)
    w("```\n" + (q.stdout + q.stderr).strip() + "\n```\n")
else:
    w("nvidia-smi: not on the PATH.\n")
    if device == "cuda":
        problems.append("no nvidia-smi")
import torch, triton, numpy
w(f"- Python {platform.python_version()} ({sys.executable}), torch {torch.__version__} "
  f"(CUDA {torch.version.cuda}), triton {triton.__version__}, numpy {numpy.__version__}")
for want, have in (("3.12", platform.python_version()), ("2.11", torch.__version__), ("3.6", triton.__version__)):
    if device == "cuda" and not have.startswith(want):
        w(f"  - expected {want}.x here, found {have}")
for mod in ("pytest", "xdist", "hypothesis"):
    try:
        m = __import__(mod)
        w(f"- {mod} {getattr(m, '__version__', '?')}")
    except ImportError as e:
        w(f"- {mod}: not importable ({e})"); problems.append(f"no {mod}")
import snnfunc
where = Path(snnfunc.__file__).resolve()
w(f"- snnfunc {snnfunc.__version__} from {where.parent}")
if root not in where.parents:
    problems.append(f"snnfunc imported from {where}, not from the checkout {root}")
try:
    import spikingjelly, loguru
    sj = Path(spikingjelly.__file__).resolve()
    w(f"- spikingjelly from {sj.parent}, loguru {loguru.__version__}")
    if site.resolve() not in sj.parents:
        w(f"  - not the carried wheel (unpacked in {site})")
except Exception as e:
    w(f"- spikingjelly: not importable ({type(e).__name__}: {e})"); problems.append("no spikingjelly")
if device == "cuda":
    if not torch.cuda.is_available():
        problems.append("torch sees no CUDA device")
    else:
        p = torch.cuda.get_device_properties(0)
        w(f"- {p.name}: compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.1f} GiB, L2 {getattr(p, 'L2_cache_size', 0) / 2**20:.0f} MiB")
w(f"- caches: Triton {os.environ.get('TRITON_CACHE_DIR', '~/.triton/cache')} "
  f"({'exists' if Path(os.environ.get('TRITON_CACHE_DIR', Path.home() / '.triton/cache')).exists() else 'empty'} at start)")
w("\n`snnfunc.info()`:\n\n```")
w(snnfunc.info(file=open(os.devnull, "w")).rstrip())
w("```\n")
# smoke: one fused LIF call on the device against the reference loop
if device == "cpu":
    from snnfunc._kernel import backends
    backends.BACKENDS["cpu"] = backends.BACKENDS["cuda"]  # the Triton kernels, interpreted
t = time.time()
try:
    x = (2.0 * torch.rand(16, 3, 1000)).to(device).requires_grad_(True)
    a = snnfunc.lif(x, tau=2.0, impl="fused", return_h=True)
    b = snnfunc.lif(x, tau=2.0, impl="reference", return_h=True)
    ga = torch.autograd.grad(a.spikes.sum() + a.v.sum(), x)[0]
    gb = torch.autograd.grad(b.spikes.sum() + b.v.sum(), x)[0]
    same = torch.equal(a.spikes, b.spikes) and torch.equal(a.h, b.h) and torch.equal(a.v, b.v)
    close = torch.allclose(ga, gb, rtol=1e-4, atol=1e-6)
    w(f"Smoke: fused LIF on {x.device} (grad_fn {type(a.spikes.grad_fn).__name__}): spikes, h, v "
      f"{'bit-equal' if same else 'DIFFER'} to the reference, x's gradient {'close' if close else 'NOT close'}; "
      f"{time.time() - t:.1f} s with the kernels' build.")
    if not (same and close):
        problems.append("the smoke call differs from the reference")
except Exception as e:
    w(f"Smoke: fused LIF on {device} FAILED: {type(e).__name__}: {e}"); problems.append("the smoke call failed")
    import traceback; traceback.print_exc()
if problems:
    w("\nProblems: " + "; ".join(problems) + ".")
sys.exit(1 if problems else 0)
EOF
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

part env "Environment" "${INTERP[@]}" "$PY" -c "$ENV_PY"
part tests "CUDA tests (pytest tests/test_triton.py ${PYTEST_ARGS[*]})" \
    "$PY" -m pytest -q -p no:cacheprovider -rfEs "${PYTEST_ARGS[@]}" tests/test_triton.py
part cases "Kernels against the reference on $DEVICE: the case scripts, IR operations, torch.compile" \
    "${INTERP[@]}" "$PY" benchmarks/gpu_cases.py --device "$DEVICE" "${CASES_ARGS[@]}"
part bench "LIF bandwidth: snnfunc, SpikingJelly 2.0's Triton LIF, torch.compile of the plain loop" \
    "${INTERP[@]}" "$PY" benchmarks/gpu_bench.py lif --device "$DEVICE" "${BENCH_ARGS[@]}"
part train "Training step of the convolutional PLIF network, bf16 autocast" \
    "${INTERP[@]}" "$PY" benchmarks/gpu_bench.py train --device "$DEVICE" "${BENCH_ARGS[@]}"

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
