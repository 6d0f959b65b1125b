"""The generated kernels against the hand-written one they replace, and against Inductor.

    python benchmarks/bench_generated.py                    # both parts, both allocators
    python benchmarks/bench_generated.py --parts inductor --allocators jemalloc
    python benchmarks/bench_generated.py --Ts 8 64 --repeats 3
    python benchmarks/bench_generated.py --compare before1.json before2.json -- after1.json after2.json

``--compare`` reads the ``--save`` files of runs of two checkouts (each run with its own
checkout's script, the hand-written kernel the same) and prints, per cell, each run's
generated / hand-written time and the generated kernel's time after / before (means over the
runs of each side): whether a change of the generator moved the kernels' speed.

(a) **Before and after.** The hand-written CPU kernel of revision 52b5b2f
(``snnfunc/_fused/neuron.c`` and ``neuron_impl.h``, read with ``git show``, written into a
temporary directory and built with that revision's compiler flags, the ``.so`` cached under
``$SNNFUNC_CACHE``) is called through ctypes with that revision's argument lists
(``snn_forward``, ``snn_backward``), against today's generated kernels called the way today's
autograd Function calls them (the custom ops ``snnfunc::defined_forward`` and
``defined_backward``, whose argument checks cost tens of microseconds a call),
for if/lif/plif/rif with their default options (hard reset, Sigmoid surrogate, parameters
shared by all neurons), forward and forward+backward, at 16 MiB of float32 input. The third
row is today's public call (``snnfunc.lif(x, impl="fused")`` under autograd), what a user
measures. The script asserts that both kernels give identical spikes (and prints the largest
difference of the input gradients).

(b) **Against Inductor.** LIF forward+backward: ``torch.compile`` of the plain loop
(``snnfunc.lif(..., impl="reference")`` on chunks of 8 steps, one compiled chunk function
reused, the state carried from chunk to chunk, the spikes concatenated) against the fused
kernel (eager), in ms and in *passes* (the time of one read and write of ``x_seq`` into a
preallocated tensor, timed in the same rounds as the methods it divides). Timed two ways:
*interleaved*, one call of each method in turn (every call finds the caches full of the
other method's tensors, dirty ones to write back first: the cold case), and *in blocks*,
each method called back to back with itself as ``torch.utils.benchmark`` does (the steady
state of a loop that runs only this), the blocks alternating. Passes divide both by the
interleaved one-pass time (a pass from memory: in blocks a pass would run from the cache).

Each part runs in a child process per allocator: glibc's default, glibc tuned
(``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967295``), and jemalloc
(``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2`` with ``MALLOC_CONF=oversize_threshold:1,
background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,muzzy_decay_ms:-1``). Every cell is
the median over repeats (at least ``--repeats`` and 0.3 s per method), timed in rounds that
alternate between the methods of a cell (a busy moment of a shared machine falls on all of
them alike); gradients are taken with
``torch.autograd.grad`` (nothing accumulates into ``.grad``).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

REVISION = "52b5b2f"
ROOT = Path(__file__).resolve().parents[1]
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
MALLOC_CONF = ("oversize_threshold:1,background_thread:true,metadata_thp:auto,"
               "dirty_decay_ms:-1,muzzy_decay_ms:-1")
# glibc kept from handing freed memory back to the system (docs/fused.md, "Tuning the allocator")
GLIBC_TUNED = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "4294967295"}
# that revision's _cpu.py: _FLAGS, then -march=native ... -lmvec -lm (a plain build without)
OLD_FLAGS = ["-O3", "--param=vect-epilogues-nomask=0", "-fno-math-errno", "-ffp-contract=off",
             "-fopenmp", "-fPIC", "-shared"]
OLD_KINDS = {"if": 0, "lif": 1, "plif": 2, "rif": 3}  # that revision's _ops.KINDS
# the parameter p of the old kernel for each kind, and today's parameters: the same values
PARAMS = {"if": {}, "lif": {"tau": 2.0}, "plif": {"w": 0.5}, "rif": {"w": -0.5}}
CLASSIC = ("if", "lif", "plif", "rif")


def median_ms(fn, repeats, min_time=0.3):
    fn()  # warm
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def medians_ms(fns: dict, repeats, min_time=0.3):
    """Median ms of each function, timed in rounds that alternate between them (so that a
    busy moment of the shared machine falls on all of them alike)."""
    for fn in fns.values():
        fn()  # warm
    times = {k: [] for k in fns}
    start = time.perf_counter()
    while (min(map(len, times.values())) < repeats
           or (time.perf_counter() - start < min_time * len(fns)
               and min(map(len, times.values())) < 50)):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def blocks_ms(fns: dict, repeats, min_block=0.03):
    """Median ms of each function called in blocks, back to back with itself (the steady
    state, as torch.utils.benchmark times: a call finds the caches as its previous call left
    them), the blocks of the functions alternating over `repeats` rounds."""
    sizes = {}
    for k, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        sizes[k] = max(2, int(min_block / max(time.perf_counter() - t0, 1e-6)) + 1)
    per = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(sizes[k]):
                fn()
            per[k].append((time.perf_counter() - t0) / sizes[k])
    return {k: 1e3 * statistics.median(v) for k, v in per.items()}


def table(title, header, body):
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(f"\n{title}\n")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in body:
        print(line(r))


# --------------------------------------------------------------------------- the old kernel


def _cache_dir() -> Path:
    root = os.environ.get("SNNFUNC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "snnfunc")
    return Path(root)


def build_old() -> tuple[Path, float]:
    """The hand-written kernel of REVISION built as that revision built it; (path, seconds)."""
    sources = {}
    for name in ("neuron.c", "neuron_impl.h"):
        sources[name] = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{REVISION}:snnfunc/_fused/{name}"],
            check=True, capture_output=True).stdout
    cc = (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
          or shutil.which("clang"))
    key = hashlib.sha256(b"".join(sources.values()))
    key.update(subprocess.run([cc, "--version"], capture_output=True).stdout)
    key.update(" ".join(OLD_FLAGS).encode())
    out = _cache_dir() / f"bench_handwritten_{REVISION}_{key.hexdigest()[:16]}.so"
    if out.exists():
        return out, float("nan")
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"building the hand-written kernel of {REVISION} with {cc} (about a minute or more)",
          flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in sources.items():
            Path(tmp, name).write_bytes(text)
        so = os.path.join(tmp, "neuron.so")
        cmd = [cc, *OLD_FLAGS, "-march=native", "-o", so, os.path.join(tmp, "neuron.c"),
               "-lmvec", "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:  # as that revision: a plain build without -march/libmvec
            cmd = [cc, *OLD_FLAGS, "-o", so, os.path.join(tmp, "neuron.c"), "-lm"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        shutil.copy(so, str(out) + ".tmp")
        os.replace(str(out) + ".tmp", out)
    return out, time.perf_counter() - t0


def load_old(path):
    lib = ctypes.CDLL(str(path))
    i64, i32, f64, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
    lib.snn_forward.argtypes = [i32, i64, i64, i32, i32, i32, f64] + [ptr] * 7 + [i64] * 3 + [i32]
    lib.snn_backward.argtypes = ([i32, i64, i64, i32, i32, i32, i32, f64, i32, f64, f64, f64]
                                 + [ptr] * 12 + [i64] * 3 + [i32])
    lib.snn_forward.restype = lib.snn_backward.restype = i32
    return lib


def _p(t):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


class Old:
    """One neuron through the old kernel, as that revision's ops called it (v0, p and the
    threshold one shared value each, stride 0; hard reset at 0; Sigmoid(alpha=4), id 0)."""

    def __init__(self, lib, kind, x):
        self.lib, self.kind, self.x = lib, OLD_KINDS[kind], x
        self.v0 = x.new_zeros(())
        vals = list(PARAMS[kind].values())
        self.p = x.new_full((), vals[0]) if vals else None
        self.th = x.new_ones(())
        self.gs = torch.ones_like(x)
        self.T, self.N = x.shape[0], x[0].numel()

    def forward(self):
        x = self.x
        s, v = x.new_empty(x.shape), x.new_empty(x.shape[1:])
        rc = self.lib.snn_forward(0, self.T, self.N, self.kind, 1, 1, 0.0, _p(x), _p(self.v0),
                                  _p(self.p), _p(self.th), _p(s), None, _p(v), 0, 0, 0,
                                  torch.get_num_threads())
        assert rc == 0, rc
        return s, v

    def backward(self):
        x = self.x
        gx, gv0 = x.new_empty(x.shape), x.new_empty(x.shape[1:])
        rc = self.lib.snn_backward(0, self.T, self.N, self.kind, 1, 1, 0, 0.0, 0, 4.0, 0.0, 0.0,
                                   _p(x), _p(self.v0), _p(self.p), _p(self.th), _p(self.gs),
                                   None, None, None, _p(gx), _p(gv0), None, None, 0, 0, 0,
                                   torch.get_num_threads())
        assert rc == 0, rc
        return gx, gv0

    def fwd_bwd(self):
        s, _ = self.forward()
        return s, self.backward()[0]


class New:
    """The same neuron through today's generated kernels: the ops `snnfunc::defined_forward`
    and `defined_backward` (their argument checks included), called as the autograd Function
    calls them, with the same shared values and the same absent gradients as `Old`."""

    def __init__(self, kind, x):
        from snnfunc._kernel import call, surrogates
        from snnfunc.functional.neurons import DEFINITIONS
        from snnfunc.surrogate import Sigmoid

        nrn, self.x = DEFINITIONS[kind], x
        self.fwd_op = torch.ops.snnfunc.defined_forward.default
        self.bwd_op = torch.ops.snnfunc.defined_backward.default
        k = len(nrn.states)
        common = dict(x=x, states=[x.new_zeros(()) for _ in range(k)],
                      params=[x.new_full((), PARAMS[kind][n]) for n in nrn.parameters],
                      th=x.new_ones(()), scalars=torch.zeros(1, dtype=torch.float64),
                      neuron=nrn.name, options=call.options_string(dict(nrn.options)), hard=True)
        self.fkw = dict(common, want_h=False)
        self.bkw = dict(common, gs=torch.ones_like(x), gh=None, sg=None, gstates=[None] * k,
                        surrogate=surrogates.surrogate_token(Sigmoid()), detach=False,
                        # no parameter's gradient; the initial states', as the old kernel
                        # always computed them
                        need=[False] * (len(nrn.parameters) + 1) + [True] * k)
        self.bkw["gtraces"] = [None] * k
        self.bkw["scalars"] = torch.tensor([0.0, Sigmoid().alpha], dtype=torch.float64)
        self.k = k

    def forward(self):
        out = self.fwd_op(**self.fkw)
        return out[0], out[2:]

    def backward(self):
        out = self.bwd_op(**self.bkw)
        return out[0], out[1:1 + self.k]

    def fwd_bwd(self):
        s, _ = self.forward()
        return s, self.backward()[0]


def public(kind, x):
    """Today's public call, under autograd: what a user's forward+backward costs."""
    from snnfunc.functional.neurons import DEFINITIONS

    nrn, params, gout = DEFINITIONS[kind], PARAMS[kind], torch.ones_like(x)
    xg = x.clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            return nrn(x, impl="fused", **params).spikes

    def fwd_bwd():
        s = nrn(xg, impl="fused", **params).spikes
        return s, torch.autograd.grad(s, xg, gout)[0]

    return fwd, fwd_bwd


def before_after(args):
    lib = load_old(args.old_lib)
    numel = args.mib * 2**20 // 4
    cells = {}  # "kind|mode|method|T" -> ms
    checks = {}
    for T in args.Ts:
        N = numel // T
        torch.manual_seed(0)
        x = torch.rand(T, N) * 1.5
        y = torch.empty_like(x)
        for kind in CLASSIC:
            old, new = Old(lib, kind, x), New(kind, x)
            fwd, fwd_bwd = public(kind, x)
            s_old, gx_old = old.fwd_bwd()
            s_new, gx_new = new.fwd_bwd()
            s_pub, gx_pub = fwd_bwd()
            assert torch.equal(s_old, s_new), f"{kind} T={T}: spikes differ (kernel)"
            assert torch.equal(s_old, s_pub.detach()), f"{kind} T={T}: spikes differ (public)"
            checks[f"{kind}|{T}"] = [float(s_old.mean()),
                                     float((gx_old - gx_new).abs().max()),
                                     float((gx_old - gx_pub).abs().max())]
            methods = {"hand-written (52b5b2f)": (old.forward, old.fwd_bwd),
                       "generated": (new.forward, new.fwd_bwd),
                       "generated, public call": (fwd, fwd_bwd)}
            for i, mode in enumerate(("forward", "fwd+bwd")):
                ms = medians_ms({"one pass": lambda: torch.add(x, 1, out=y),
                                 **{m: fns[i] for m, fns in methods.items()}}, args.repeats)
                for method, value in ms.items():
                    cells[f"{kind}|{mode}|{method}|{T}"] = value
            print(f"  T={T:<5} {kind:4} fwd+bwd: hand-written "
                  f"{cells[f'{kind}|fwd+bwd|hand-written (52b5b2f)|{T}']:.2f} ms, generated "
                  f"{cells[f'{kind}|fwd+bwd|generated|{T}']:.2f} ms", flush=True)
            del old, new, fwd, fwd_bwd
        del x, y
    return {"cells": cells, "checks": checks}


# --------------------------------------------------------------------------- against Inductor


def inductor(args):
    import snnfunc

    numel = args.mib * 2**20 // 4
    cells = {}
    for T in args.Ts:
        N = numel // T
        torch.manual_seed(0)
        x = torch.rand(T, N) * 1.5
        y = torch.empty_like(x)
        gout = torch.ones_like(x)
        xg = x.clone().requires_grad_(True)

        def fused():
            s = snnfunc.lif(xg, tau=2.0, impl="fused").spikes
            return s, torch.autograd.grad(s, xg, gout)[0]

        torch._dynamo.reset()
        C = min(args.chunk, T)

        @torch.compile(dynamic=False, fullgraph=True)
        def chunk(xc, v):
            out = snnfunc.lif(xc, v, tau=2.0, impl="reference")
            return out.spikes, out.v

        v0 = x.new_zeros(N)

        def chunked():
            v, outs = v0, []
            for c in range(0, T, C):
                s, v = chunk(xg[c:c + C], v)
                outs.append(s)
            s = torch.cat(outs) if len(outs) > 1 else outs[0]
            return s, torch.autograd.grad(s, xg, gout)[0]

        t0 = time.perf_counter()
        s_c, g_c = chunked()
        compile_s = time.perf_counter() - t0
        s_f, g_f = fused()
        assert torch.equal(s_c, s_f), f"T={T}: compiled and fused spikes differ"
        cells[f"compile s|{T}"] = compile_s
        cells[f"max|dx| diff|{T}"] = float((g_c - g_f).abs().max())
        ms = medians_ms({"one pass": lambda: torch.add(x, 1, out=y), "fused": fused,
                         "compiled chunks": chunked}, args.repeats)
        for k, value in ms.items():
            cells[f"{k}|{T}"] = value
        for k, value in blocks_ms({"fused": fused, "compiled chunks": chunked},
                                  args.repeats).items():
            cells[f"blocks|{k}|{T}"] = value
        print(f"  T={T:<5} fused {cells[f'fused|{T}']:.2f} ms, compiled chunks of {C} "
              f"{cells[f'compiled chunks|{T}']:.2f} ms interleaved; in blocks "
              f"{cells[f'blocks|fused|{T}']:.2f} and {cells[f'blocks|compiled chunks|{T}']:.2f}"
              f" ms (compiled in {compile_s:.1f} s)", flush=True)
        del x, y, gout, xg
    return {"cells": cells}


# --------------------------------------------------------------------------- the driver


def child(args):
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    tuned = "MALLOC_MMAP_THRESHOLD_" in os.environ
    out = {"allocator": "jemalloc" if "jemalloc" in maps else "glibc-tuned" if tuned else "glibc",
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    if "before-after" in args.parts:
        out["before-after"] = before_after(args)
    if "inductor" in args.parts:
        out["inductor"] = inductor(args)
    Path(args.json).write_text(json.dumps(out))


def env_for(allocator):
    env = dict(os.environ)
    for name in ("LD_PRELOAD", "MALLOC_CONF", *GLIBC_TUNED):
        env.pop(name, None)
    if allocator == "jemalloc":
        env["LD_PRELOAD"] = JEMALLOC
        env["MALLOC_CONF"] = MALLOC_CONF
    if allocator == "glibc-tuned":
        env.update(GLIBC_TUNED)
    return env


def report_before_after(full, Ts, mib):
    res = full["before-after"]
    cells, checks = res["cells"], res["checks"]
    header = ["neuron", "method"] + [f"T={T}" for T in Ts]
    for mode in ("forward", "fwd+bwd"):
        body = []
        for kind in CLASSIC:
            for method in ("hand-written (52b5b2f)", "generated", "generated, public call"):
                row = [kind, method]
                for T in Ts:
                    ms = cells[f"{kind}|{mode}|{method}|{T}"]
                    ref = cells[f"{kind}|{mode}|hand-written (52b5b2f)|{T}"]
                    one = cells[f"{kind}|{mode}|one pass|{T}"]
                    cell = f"{ms:.2f} ms ({ms / one:.1f} p)"
                    if not method.startswith("hand"):
                        cell += f", {ms / ref:.2f}x"
                    row.append(cell)
                body.append(row)
        table(f"{mode}, x_seq of {mib} MiB float32, {full['allocator']} (median ms, passes p; "
              f"x: time relative to the hand-written kernel, < 1 is faster)", header, body)
    print("\nspikes identical (asserted) for every cell; firing rate / max |dx| difference, "
          "generated kernel and public call against the hand-written kernel:")
    for kind in CLASSIC:
        print(f"  {kind:4} " + "  ".join(
            f"T={T}: {checks[f'{kind}|{T}'][0]:.3f} / {checks[f'{kind}|{T}'][1]:.1e}, "
            f"{checks[f'{kind}|{T}'][2]:.1e}" for T in Ts))


TIMINGS = {"": "interleaved", "blocks|": "in blocks"}


def report_inductor(results, Ts, mib, chunk):
    header = ["allocator", "timing", "method"] + [f"T={T}" for T in Ts]
    body = []
    for res in results:
        cells, alloc = res["inductor"]["cells"], res["allocator"]
        body.append([alloc, "interleaved", "floor: one pass"] + [
            f"{cells[f'one pass|{T}']:.2f} ms (1.0 p)" for T in Ts])
        for pre, timing in TIMINGS.items():
            for method in ("fused", "compiled chunks"):
                name = ("snnfunc fused" if method == "fused"
                        else f"torch.compile, chunks of {chunk}")
                body.append([alloc, timing, name] + [
                    f"{cells[f'{pre}{method}|{T}']:.2f} ms "
                    f"({cells[f'{pre}{method}|{T}'] / cells[f'one pass|{T}']:.1f} p)"
                    for T in Ts])
            body.append([alloc, timing, "speed-up of fused"] + [
                f"{cells[f'{pre}compiled chunks|{T}'] / cells[f'{pre}fused|{T}']:.2f}x"
                for T in Ts])
    table(f"LIF fwd+bwd, x_seq of {mib} MiB float32: fused kernel against torch.compile of the "
          f"plain loop in chunks of {chunk} (median ms; passes p: the time over one read and "
          f"write of x_seq from memory, the interleaved one-pass row)", header, body)
    print()
    for res in results:
        cells = res["inductor"]["cells"]
        print(f"  {res['allocator']}: compile of the chunk function (first call, s): " + ", ".join(
            f"T={T}: {cells[f'compile s|{T}']:.1f}" for T in Ts) + "; max |dx| difference: "
            + ", ".join(f"{cells[f'max|dx| diff|{T}']:.1e}" for T in Ts))
    for res in results:
        cells = res["inductor"]["cells"]
        for pre, timing in TIMINGS.items():
            ratios = [cells[f"{pre}compiled chunks|{T}"] / cells[f"{pre}fused|{T}"] for T in Ts]
            passes = [cells[f"{pre}fused|{T}"] / cells[f"one pass|{T}"] for T in Ts]
            met = all(r >= 1.5 for r in ratios) and all(p <= 5 for p in passes)
            print(f"  target (fused >= 1.5x faster than the chunked compiled loop at every T, "
                  f"<= 5 passes) under {res['allocator']}, timed {timing}: "
                  f"{'met' if met else 'NOT met'} (speed-up {min(ratios):.2f}x-"
                  f"{max(ratios):.2f}x, {min(passes):.1f}-{max(passes):.1f} passes)")


def compare(before: list, after: list) -> None:
    """The before/after table of two groups of `--save` files (see the module docstring)."""
    def cells(paths):
        out = []
        for path in paths:
            for res in json.loads(Path(path).read_text()):
                if "before-after" in res:
                    out.append(res["before-after"]["cells"])
        if not out:
            sys.exit(f"no before-after results in {paths}")
        return out

    b, a = cells(before), cells(after)
    keys = [k for k in b[0] if k.split("|")[2] == "generated" and all(k in c for c in b + a)]
    hand = "hand-written (52b5b2f)"
    print(f"\ngenerated / hand-written time per run, and the generated kernel's time after / "
          f"before (mean ms of the runs); before: {' '.join(before)}; after: {' '.join(after)}\n")
    print("| neuron | part | T | before, generated / hand-written | after | after / before |")
    print("|---|---|---|---|---|---|")
    for key in sorted(keys, key=lambda k: (k.split("|")[1], int(k.split("|")[3]))):
        neuron, part, _, T = key.split("|")
        ref = f"{neuron}|{part}|{hand}|{T}"
        ratio = lambda runs: " / ".join(f"{c[key] / c[ref]:.2f}" for c in runs)  # noqa: E731
        mb, ma = statistics.mean(c[key] for c in b), statistics.mean(c[key] for c in a)
        print(f"| {neuron} | {part} | {T} | {ratio(b)} | {ratio(a)} | {ma / mb:.2f} "
              f"({mb:.2f} -> {ma:.2f} ms) |")


def main():
    if "--compare" in sys.argv:
        rest = sys.argv[sys.argv.index("--compare") + 1:]
        if "--" not in rest:
            sys.exit("usage: --compare BEFORE.json ... -- AFTER.json ...")
        i = rest.index("--")
        return compare(rest[:i], rest[i + 1:])
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["before-after", "inductor"],
                    choices=["before-after", "inductor"])
    ap.add_argument("--allocators", nargs="+", default=["glibc", "glibc-tuned", "jemalloc"],
                    choices=["glibc", "glibc-tuned", "jemalloc"])
    ap.add_argument("--Ts", type=int, nargs="+", default=[4, 8, 64, 256, 1024])
    ap.add_argument("--mib", type=int, default=16, help="MiB of x_seq (float32)")
    ap.add_argument("--chunk", type=int, default=8, help="steps per compiled chunk")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--save", help="also write the raw medians to this JSON file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--old-lib", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if "jemalloc" in args.allocators and not os.path.exists(JEMALLOC):
        sys.exit(f"{JEMALLOC} not found (Debian: apt-get install libjemalloc2)")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} "
          f"CPUs ({cpu}); x_seq of {args.mib} MiB float32; load average at the start "
          f"{os.getloadavg()[0]:.1f}")
    old_lib = None
    if "before-after" in args.parts:
        old_lib, secs = build_old()
        print(f"hand-written kernel of {REVISION}: {old_lib}"
              + ("" if secs != secs else f" (built in {secs:.0f} s)"))
    results = []
    for alloc in args.allocators:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = f.name
        cmd = [sys.executable, __file__, "--child", "--json", out, "--parts", *args.parts,
               "--Ts", *map(str, args.Ts), "--mib", str(args.mib), "--chunk", str(args.chunk),
               "--repeats", str(args.repeats)]
        if old_lib:
            cmd += ["--old-lib", str(old_lib)]
        print(f"\n== allocator {alloc}" + (
            f": LD_PRELOAD={JEMALLOC} MALLOC_CONF={MALLOC_CONF}" if alloc == "jemalloc" else
            ": " + " ".join(f"{k}={v}" for k, v in GLIBC_TUNED.items())
            if alloc == "glibc-tuned" else ": glibc's default"),
              flush=True)
        subprocess.run(cmd, env=env_for(alloc), check=True)
        res = json.loads(Path(out).read_text())
        os.unlink(out)
        if res["allocator"] != alloc:
            sys.exit(f"asked for {alloc}, the child process ran {res['allocator']}")
        results.append(res)
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=1))
    for res in results:
        if "before-after" in res:
            report_before_after(res, args.Ts, args.mib)
    if "inductor" in args.parts:
        report_inductor(results, args.Ts, args.mib, args.chunk)


if __name__ == "__main__":
    main()
