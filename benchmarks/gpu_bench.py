"""The LIF table of benchmarks/gpu_check.sh, and what its training-step part (gpu_train.py)
shares with it (the report, the clock, the copy's bandwidth, the command line):

    python benchmarks/gpu_bench.py --device cuda --md lif.md [--deadline EPOCH]
    TRITON_INTERPRET=1 python benchmarks/gpu_bench.py --device cpu --dry-run   # rehearsal

LIF forward, and forward+backward, in float32 and bfloat16, at N = 64k, 1M and 16M
neurons and T = 8, 64 and 1024 steps, side by side in the same process:
- snnfunc: `snnfunc.lif(x, tau=2.0, impl="fused")` (the generated Triton kernels);
- SpikingJelly 2.0: `functional.lif_multi_step` with its Triton LIF
  (`SJ_LIF_CUDA_IMPLEMENTATION=triton`, set here before SpikingJelly is imported), the
  initial voltage in float32 (its fast path needs that);
- torch.compile: `torch.compile(fullgraph=True)` of the plain loop (`snnfunc.lif(...,
  impl="reference")`) on chunks of 8 steps, the voltage carried between chunks (a whole
  T = 1024 loop does not compile in reasonable time); N marked dynamic, so one graph per
  dtype and mode.
The same LIF everywhere: tau 2, threshold 1, hard reset to 0, input decayed, sigmoid surrogate
(alpha 4), no detach; input uniform in [0, 2). Times are medians of CUDA-event timed calls
(L2 flushed before each call, after two warm-up calls); fractions are achieved bandwidth over
the bandwidth of a device-to-device copy measured in the same run (bytes read + written). Bytes
per neuron-step, b the dtype's size: the forward must read x and write the spikes (2b);
forward+backward must also read the spikes' cotangent, write x's, and have h at every step
(recomputed from x, one more read): 5b. The fractions use those counts for every method; what
each actually moves: snnfunc 2b forward, 6b + 8 forward+backward (the backward recomputes the
float32 voltage into a buffer, writes and reads it); SpikingJelly also writes h in float32 in
the forward (2b + 4) and reads it back in the backward (4b + 8 in all). A cell is skipped when
its tensors would not fit the free memory, and says so. The check column compares spikes
(forward) or x's gradient (forward+backward) of SpikingJelly and the compiled loop to
snnfunc's.

`--dry-run` (on the CPU) runs every path at tiny sizes: snnfunc's Triton kernels under the
interpreter (TRITON_INTERPRET=1) where eager, its C kernels under torch.compile (Inductor does
not build Triton kernels for CPU tensors), SpikingJelly on its CPU implementation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

# SpikingJelly's LIF on CUDA: its Triton kernels, not its own choice (its PLIF chooses, see
# gpu_train.py); read when SpikingJelly is imported
os.environ.setdefault("SJ_LIF_CUDA_IMPLEMENTATION", "triton")

import torch  # noqa: E402

import snnfunc  # noqa: E402
from snnfunc._kernel import backends  # noqa: E402

TALLY = {"failed": 0, "not run": 0}  # cells: the exit status says whether any failed or was left
_C_BACKEND = backends.BACKENDS.get("cpu")


def triton_on_cpu(on: bool) -> None:
    """Dry run: route CPU tensors to the Triton ops (run by the interpreter), or back to C."""
    if on and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the dry run runs the Triton kernels under the interpreter: set TRITON_INTERPRET=1")
    backends.BACKENDS["cpu"] = backends.BACKENDS["cuda"] if on else _C_BACKEND


def sj_refusals_as_on_cuda() -> None:
    """Dry run: SpikingJelly refuses a call that needs its torch reference loop while
    SJ_*_CUDA_IMPLEMENTATION names another implementation, on CUDA tensors only; here it
    refuses on CPU tensors too, so that the rehearsal fails where the GPU run would."""
    from spikingjelly._ops import selection

    original = selection._require_automatic_torch

    def require(sel, device, reason):
        if sel._requested != "auto":
            raise RuntimeError(f"{sel._environment_variable}={sel._requested!r} cannot run this "
                               f"execution profile: {reason} (refused on CUDA; the dry run "
                               f"refuses it on {device})")
        return original(sel, device, reason)

    selection._require_automatic_torch = require


class Report:
    """Markdown written as it comes (a part stopped at its time budget keeps what it wrote)."""

    def __init__(self, path):
        self.f = open(path, "w") if path else sys.stdout

    def __call__(self, text=""):
        self.f.write(text + "\n")
        self.f.flush()
        if self.f is not sys.stdout:
            print(text, flush=True)


class Clock:
    """Median milliseconds of a call: CUDA events around each call, L2 flushed before it
    (a 256 MiB write); on the CPU, the wall clock."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.device = device
        if self.cuda:
            self.flush = torch.empty(256 << 20, dtype=torch.int8, device=device)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def median_ms(self, fn, reps, max_s):
        results, events = [], []
        start = time.perf_counter()
        for _ in range(reps):
            if self.cuda:
                self.flush.zero_()
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                events.append((a, b))
            else:
                t = time.perf_counter()
                fn()
                results.append((time.perf_counter() - t) * 1e3)
            if time.perf_counter() - start > max_s:
                break
        self.sync()
        results += [a.elapsed_time(b) for a, b in events]
        return statistics.median(results), len(results)


def copy_bandwidth(clock, nbytes):
    """GB/s of a device-to-device copy, counting bytes read and written."""
    src = torch.rand(nbytes // 4, device=clock.device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    ms, _ = clock.median_ms(lambda: dst.copy_(src), 20, 2.0)
    assert torch.equal(dst, src)
    del src, dst
    return 2 * nbytes / ms / 1e6, ms


def environment(device):
    lines = [f"torch {torch.__version__}, snnfunc from {Path(snnfunc.__file__).parent}, "
             f"torch.compile backend {COMPILE_BACKEND}"]
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        lines.append(f"{p.name}, {p.multi_processor_count} SMs, "
                     f"{p.total_memory / 2**30:.1f} GiB, L2 {getattr(p, 'L2_cache_size', 0) / 2**20:.0f} MiB, "
                     f"compute capability {p.major}.{p.minor}")
    return "; ".join(lines)


# --------------------------------------------------------------------------- LIF table


def _sj_functional():
    from spikingjelly.activation_based import functional as sjf
    from spikingjelly.activation_based import surrogate as sjs

    return sjf.lif_multi_step, sjs.Sigmoid()


def sj_lif_implementation(device):
    """Which implementation SpikingJelly selected for its LIF on this device."""
    from spikingjelly._ops import lif as sj_ops

    sel = sj_ops._selection
    if device.type != "cuda":
        return f"its CPU implementation (requested on CUDA: {sel._requested})"
    chosen = [v.name for v in sel._selections.values() if v is not None]
    fallbacks = [k[1] for k, v in sel._selections.items() if v is None and isinstance(k, tuple)]
    return ", ".join(chosen + [f"torch reference ({r})" for r in fallbacks]) or "none yet"


def lif_methods(device, dtype, N, grad):
    """name -> (call, result) for one cell: call() runs the method once."""
    lif_multi_step, sj_sigmoid = _sj_functional()
    v0 = torch.zeros(N, device=device)  # SpikingJelly's fast path takes a float32 voltage

    def snn(x):
        return snnfunc.lif(x, tau=2.0, impl="fused").spikes

    def sj(x):
        return lif_multi_step(x, v0, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                              surrogate_function=sj_sigmoid, detach_reset=False,
                              store_v_seq=False)[0]

    chunk = _compiled_chunk()

    def compiled(x):
        # the carried voltage requires grad after the first chunk: so does the first one's
        # (one graph per dtype and mode, not two)
        v, out = torch.zeros(N, device=device, requires_grad=grad), []
        for xc in x.split(8):
            torch._dynamo.mark_dynamic(xc, 1)
            torch._dynamo.mark_dynamic(v, 0)
            s, v = chunk(xc, v)
            out.append(s)
        return out

    return {"snnfunc": snn, "SpikingJelly 2.0": sj, "torch.compile": compiled}


_CHUNK = None
COMPILE_BACKEND = "inductor"  # the dry run passes aot_eager: Inductor's C++ builds take minutes there


def _compiled_chunk():
    global _CHUNK
    if _CHUNK is None:
        def chunk(x, v):
            out = snnfunc.lif(x, v, tau=2.0, impl="reference")
            return out.spikes, out.v

        _CHUNK = torch.compile(chunk, fullgraph=True, backend=COMPILE_BACKEND)
    return _CHUNK


def _fits(device, need):
    if device.type != "cuda":
        return True, ""
    free, _ = torch.cuda.mem_get_info(device)
    return need < 0.85 * free, f"needs about {need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"


def lif_part(args, out):
    device = torch.device(args.device)
    clock = Clock(device)
    dry = args.dry_run
    Ns = [512] if dry else [1 << 16, 1 << 20, 1 << 24]
    Ts = [8, 16] if dry else [8, 64, 1024]
    reps, max_s = (2, 1.0) if dry else (15, 1.5)
    if dry:
        triton_on_cpu(True)
        sj_refusals_as_on_cuda()
    out(environment(device) + ".")
    bw, ms = copy_bandwidth(clock, (16 if dry else 1024) << 20)
    out(f"Device-to-device copy of {(16 if dry else 1024)} MiB: {ms:.3f} ms, {bw:.0f} GB/s "
        f"(read + written); the fractions below are of this.")
    out()
    torch.manual_seed(0)
    notes = []
    for grad, dtype in [(False, torch.float32), (False, torch.bfloat16), (True, torch.float32),
                        (True, torch.bfloat16)]:
        b = dtype.itemsize
        essential = 5 * b if grad else 2 * b
        mode = "forward+backward" if grad else "forward"
        out(f"LIF {mode}, {str(dtype)[6:]}: median ms, and fraction of the copy's bandwidth at "
            f"{essential} B per neuron-step (snnfunc's own traffic, {6 * b + 8 if grad else 2 * b} B, in brackets)")
        out()
        out("| N | T | snnfunc | SpikingJelly 2.0 | torch.compile, chunks of 8 | check |")
        out("|---|---|---|---|---|---|")
        for N in Ns:
            for T in Ts:
                if args.deadline and time.time() > args.deadline - 5:
                    out(f"| {N} | {T} | not run: the part's time budget is spent | | | |")
                    TALLY["not run"] += 1
                    continue
                need = T * N * ((5 * b + 12) if grad else (3 * b + 4)) + 3 * T * N * b
                ok, why = _fits(device, need)
                if not ok:
                    out(f"| {N} | {T} | skipped: {why} | | | |")
                    continue
                out(_lif_row(clock, device, dtype, N, T, grad, reps, max_s, bw, essential,
                             (6 * b + 8) if grad else 2 * b, notes))
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        out()
    out(f"SpikingJelly's LIF ran as: {sj_lif_implementation(device)}.")
    for n in dict.fromkeys(notes):
        out(f"- {n}")
    if dry:
        triton_on_cpu(False)


def _lif_row(clock, device, dtype, N, T, grad, reps, max_s, bw, essential, own, notes):
    x = (2.0 * torch.rand(T, N, device=device)).to(dtype)
    g = torch.rand_like(x) if grad else None
    if grad:
        x.requires_grad_(True)
    cells, results = [], {}
    for name, method in lif_methods(device, dtype, N, grad).items():
        try:
            if grad:
                gs = list(g.split(8)) if name == "torch.compile" else g

                def call(method=method, gs=gs):
                    return torch.autograd.grad(method(x), x, gs)[0]
            else:
                def call(method=method):
                    with torch.no_grad():
                        return method(x)
            t0 = time.perf_counter()
            call()
            clock.sync()
            first = time.perf_counter() - t0
            results[name] = call()
            ms, n = clock.median_ms(call, reps, max_s)
            frac = essential * T * N / ms / 1e6 / bw
            text = f"{ms:.3f} ms, {frac:.0%}"
            if name == "snnfunc":
                text += f" ({own * T * N / ms / 1e6 / bw:.0%})"
            cells.append(text)
            if first > 2.0:
                notes.append(f"{name}, {str(dtype)[6:]}, {'fwd+bwd' if grad else 'fwd'}: first call "
                             f"at N={N}, T={T} took {first:.1f} s (compiling included)")
        except Exception as exc:  # noqa: BLE001  (the other methods still run)
            traceback.print_exc()
            TALLY["failed"] += 1
            msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
            cells.append(f"failed: {type(exc).__name__}: {msg}")
    check = []
    ref = results.get("snnfunc")
    for name in ("SpikingJelly 2.0", "torch.compile"):
        got = results.get(name)
        if ref is None or got is None:
            continue
        got = torch.cat(got) if isinstance(got, list) else got
        short = "SJ" if name.startswith("Spiking") else "compiled"
        if grad:
            err = ((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30)).item()
            check.append(f"{short} gx {err:.1e}")
        else:
            n = int((got != ref).sum())
            check.append(f"{short} {'=' if n == 0 else f'{n} spikes differ'}")
    if ref is not None and not grad:
        check.append(f"rate {ref.float().mean().item():.3f}")
    return f"| {N} | {T} | " + " | ".join(cells) + " | " + ", ".join(check) + " |"


def run(part, argv=None):
    """The command line of both parts: runs part(args, out); the exit status 1 when a cell
    failed, 3 when the deadline left some not run, 124 when stopped by SIGINT."""
    ap = argparse.ArgumentParser(description=(sys.modules[part.__module__].__doc__ or "").split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--md", type=Path, default=os.environ.get("PART_MD") or None,
                    help="markdown section to write (default: $PART_MD, else stdout)")
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("PART_DEADLINE") or 0), help="epoch seconds: start nothing new after it")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, on the CPU")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile's backend")
    args = ap.parse_args(argv)
    global COMPILE_BACKEND
    COMPILE_BACKEND = args.compile_backend
    out = Report(args.md)
    try:
        part(args, out)
    except KeyboardInterrupt:
        out("\n(stopped at the part's time budget)")
        return 124
    return 1 if TALLY["failed"] else 3 if TALLY["not run"] else 0


if __name__ == "__main__":
    sys.exit(run(lif_part))
