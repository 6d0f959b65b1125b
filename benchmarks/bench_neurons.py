"""Speed, memory and compile time of the multi-step neurons: snnfunc's fused kernels against
the plain loop, torch.compile, SpikingJelly, snnTorch and Norse, side by side in one run.

    python benchmarks/bench_neurons.py                  # every table (about 10 minutes)
    python benchmarks/bench_neurons.py --tables peers --sizes 16 64   # LIF/PLIF against peers
    python benchmarks/bench_neurons.py --tables neurons --neurons lif alif --neuron-Ts 64
    python benchmarks/bench_neurons.py --tables half --dtypes bfloat16
    python benchmarks/bench_neurons.py --quick          # 16 MiB only, fewer repeats
    python benchmarks/bench_neurons.py --sizes 16 --Ts 8 64 --no-peers

Four groups of tables (``--tables``):

- ``bytes``: the bytes per neuron-step each generated kernel of a training call reads and
  writes, counted from its source, beside the floor (the GPU's speed model while none is at
  hand; no timing);
- ``peers``: LIF and PLIF, every contender below, by shape (``--sizes``, ``--Ts``);
- ``neurons``: every neuron of the library's registries (``snnfunc.functional.neurons`` and
  ``snnfunc.functional.defined``; ``--neurons`` picks some), the fused kernel against the
  reference loop (``impl="reference"``), forward and forward+backward, their ratio, and the
  bytes saved for backward per neuron-step (``--neuron-sizes``, ``--neuron-Ts``);
- ``half``: the same neurons in float16 and bfloat16 (``--dtypes``), fused and reference,
  against float32 fused, with the same number of neurons (``--half-mib`` MiB of float32).

In ``neurons`` and ``half`` parameters keep their defaults (numbers); a parameter without a
default (PLIF's and RIF's ``w``) is a learnable scalar ``nn.Parameter(0.5)``; the
gradients are taken with ``torch.autograd.grad`` for the input and those parameters.

Unit: one *pass* is the time of one read and write of ``x_seq`` into a preallocated tensor
(``torch.add(x, 1, out=y)``); forward+backward of a neuron needs about 3 (read x, write the
spikes and one saved tensor; read the gradient and the saved tensor, write the input gradient).
Every cell is the median over repeats. Peer libraries are used where installed (extra
``bench``): SpikingJelly 2.0 ``LIFNode``/``ParametricLIFNode`` (step_mode="m"),
snnTorch ``Leaky`` and Norse ``LIFBoxCell`` driven by the ``x[t]`` loop of their docs.
Compiling the plain loop grows with T, so it is timed up to ``--max-compile-T`` only.
"""

from __future__ import annotations

import argparse
import re
import gc
import os
import statistics
import time
import warnings

import torch

import snnfunc

warnings.filterwarnings("ignore")


DEVICE = torch.device("cpu")


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, repeats, min_time=0.3):
    fn()  # warm
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_time and len(times) < 50):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def peak_mib(fn):
    """Peak of the bytes allocated by fn (CPU: from the profiler's memory events)."""
    gc.collect()
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        _sync()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:  # each allocation and free counted once, where it happened
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2**20


def saved_bytes(make_out, numel):
    """Bytes saved for backward per neuron-step (tensors the graph keeps that were not inputs)."""
    seen = {}

    def pack(t):
        seen[id(t)] = t.numel() * t.element_size() if t.dim() else 0
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = make_out()
    del out
    return sum(seen.values()) / numel


# --------------------------------------------------------------------------- the contenders


def snnfunc_call(neuron, impl):
    w = torch.nn.Parameter(torch.tensor(0.5, device=DEVICE))

    def f(x):
        if neuron == "lif":
            return snnfunc.lif(x, tau=2.0, impl=impl).spikes
        return snnfunc.plif(x, w=w, impl=impl).spikes

    return f, [w] if neuron == "plif" else []


def spikingjelly_call(neuron):
    from spikingjelly.activation_based import functional as sjf
    from spikingjelly.activation_based import neuron as sjn

    node = (sjn.LIFNode(tau=2.0, step_mode="m") if neuron == "lif"
            else sjn.ParametricLIFNode(init_tau=2.0, step_mode="m"))

    node.to(DEVICE)

    def f(x):
        sjf.reset_net(node)
        return node(x)

    return f, list(node.parameters())


def snntorch_call(neuron):
    import snntorch

    node = snntorch.Leaky(beta=0.5, learn_beta=neuron == "plif", reset_mechanism="zero").to(DEVICE)

    def f(x):
        mem = node.init_leaky()
        out = []
        for t in range(x.shape[0]):
            spk, mem = node(x[t], mem)
            out.append(spk)
        return torch.stack(out)

    return f, list(node.parameters())


def norse_call(neuron):
    if neuron != "lif":
        return None
    import norse.torch as nt

    cell = nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=torch.tensor(500.0)), dt=1e-3)

    def f(x):
        state, out = None, []
        for t in range(x.shape[0]):
            z, state = cell(x[t], state)
            out.append(z)
        return torch.stack(out)

    return f, []


def contenders(neuron, T, args):
    out = {}
    out["snnfunc fused"] = (*snnfunc_call(neuron, "fused"), False)
    out["snnfunc compiled"] = (*snnfunc_call(neuron, "auto"), True)
    out["plain loop"] = (*snnfunc_call(neuron, "reference"), False)
    if T <= args.max_compile_T:
        out["compiled loop"] = (*snnfunc_call(neuron, "reference"), True)
    if not args.no_peers:
        for name, make in (("SpikingJelly", spikingjelly_call), ("snnTorch", snntorch_call),
                           ("Norse", norse_call)):
            try:
                made = make(neuron)
            except ImportError:
                continue
            if made is not None and T <= args.max_peer_T.get(name, 10**9):
                out[name] = (*made, False)
    return out


# --------------------------------------------------------------------------- every neuron


def registry():
    """Every neuron the library defines, by name: the registries, not a list kept here."""
    from snnfunc.functional import defined, neurons

    return {**neurons.DEFINITIONS, **defined.DEFINITIONS}


def neuron_call(nrn, impl):
    """`(fn, learnable parameters)`: defaults as numbers, required parameters learnable."""
    params = {n: torch.nn.Parameter(torch.tensor(0.5, device=DEVICE))
              for n, default in nrn.parameters.items() if default is None}

    def f(x):
        return nrn(x, impl=impl, **params).spikes

    return f, list(params.values())


def medians_ms(fns: dict, repeats, min_time=0.3):
    """Median ms of each function, timed in rounds that alternate between them (a busy
    moment of a shared machine falls on all of them alike)."""
    for fn in fns.values():
        fn()  # warm
    times = {k: [] for k in fns}
    start = time.perf_counter()
    while (min(map(len, times.values())) < repeats
           or (time.perf_counter() - start < min_time * len(fns)
               and min(map(len, times.values())) < 50)):
        for k, fn in fns.items():
            _sync()
            t0 = time.perf_counter()
            fn()
            _sync()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def time_neuron(nrn, x, repeats):
    """{impl: (forward ms, fwd+bwd ms, bytes saved per neuron-step)} of one neuron on x,
    fused and reference timed in alternating rounds."""
    fns, saved = {}, {}
    for impl in ("fused", "reference"):
        fn, params = neuron_call(nrn, impl)
        xg = x.clone().requires_grad_(True)
        gout = torch.ones_like(x)

        def fwd(fn=fn):
            with torch.no_grad():
                fn(x)

        def fwd_bwd(fn=fn, xg=xg, gout=gout, inputs=(xg, *params)):
            torch.autograd.grad(fn(xg), inputs, gout)

        fns[impl, 0], fns[impl, 1] = fwd, fwd_bwd
        saved[impl] = saved_bytes(lambda: fn(xg), x.numel())
    rep = repeats if x.shape[0] < 512 else max(2, repeats // 2)
    out = {}
    for k in (0, 1):
        ms = medians_ms({impl: fns[impl, k] for impl in saved}, rep)
        for impl, value in ms.items():
            out.setdefault(impl, []).append(value)
    return {impl: (*out[impl], saved[impl]) for impl in saved}


def run_neurons(args):
    """{(name, mib, T, impl): (fwd ms, fwd+bwd ms, saved B)} for every selected neuron."""
    reg, cells = registry(), {}
    for mib in args.neuron_sizes:
        for T in args.neuron_Ts:
            N = mib * 2**20 // 4 // T
            x = torch.rand(T, N, device=DEVICE) * 1.5
            for name in args.neurons:
                for impl, value in time_neuron(reg[name], x, args.repeats).items():
                    cells[name, mib, T, impl] = value
                f, r = cells[name, mib, T, "fused"], cells[name, mib, T, "reference"]
                print(f"  {mib} MiB T={T:<5} {name:8} fwd+bwd fused {f[1]:8.2f} ms, reference "
                      f"{r[1]:8.2f} ms ({r[1] / f[1]:.1f}x)", flush=True)
            del x
    return cells


def report_neurons(args, cells):
    cols = [(mib, T) for mib in args.neuron_sizes for T in args.neuron_Ts]
    header = ["neuron"] + [f"{mib} MiB, T={T}" for mib, T in cols]
    for k, mode in ((0, "forward"), (1, "fwd+bwd")):
        body = []
        for name in args.neurons:
            row = [name]
            for mib, T in cols:
                f, r = cells[name, mib, T, "fused"][k], cells[name, mib, T, "reference"][k]
                row.append(f"{f:.2f} / {r:.2f} ms ({r / f:.1f}x)")
            body.append(row)
        table(f"Every neuron, {mode}, float32: fused / reference loop (median ms; in brackets "
              f"reference / fused, how many times faster the fused kernel is)", header, body)
    body = []
    for name in args.neurons:
        f = {cells[name, mib, T, "fused"][2] for mib, T in cols}
        r = {cells[name, mib, T, "reference"][2] for mib, T in cols}
        span = lambda v: (f"{min(v):.1f}" if max(v) - min(v) < 0.05  # noqa: E731
                          else f"{min(v):.1f}-{max(v):.1f}")
        body.append([name, span(f), span(r)])
    table("Every neuron, float32: bytes saved for backward per neuron-step (over the shapes "
          "above)", ["neuron", "fused", "reference loop"], body)


def run_half(args):
    """{(name, T, dtype, impl): (fwd ms, fwd+bwd ms, saved B)}; the same number of neurons
    for every dtype (that of --half-mib MiB of float32)."""
    reg, cells = registry(), {}
    for T in args.half_Ts:
        N = args.half_mib * 2**20 // 4 // T
        x32 = torch.rand(T, N, device=DEVICE) * 1.5
        for dtype in ["float32", *args.dtypes]:
            x = x32.to(getattr(torch, dtype))
            for name in args.neurons:
                for impl, value in time_neuron(reg[name], x, args.repeats).items():
                    cells[name, T, dtype, impl] = value
                f, r = cells[name, T, dtype, "fused"], cells[name, T, dtype, "reference"]
                print(f"  half T={T:<5} {dtype:8} {name:8} fwd+bwd fused {f[1]:8.2f} ms, "
                      f"reference {r[1]:8.2f} ms", flush=True)
            del x
        del x32
    return cells


def report_half(args, cells):
    header = ["neuron", "dtype", "fused fwd", "reference fwd", "fused fwd+bwd",
              "reference fwd+bwd", "reference / fused (fwd+bwd)", "fused / float32 fused "
              "(fwd+bwd)", "saved B/neuron-step fused / reference"]
    for T in args.half_Ts:
        body = []
        for name in args.neurons:
            for dtype in ["float32", *args.dtypes]:
                f, r = cells[name, T, dtype, "fused"], cells[name, T, dtype, "reference"]
                f32 = cells[name, T, "float32", "fused"]
                body.append([name, dtype, f"{f[0]:.2f} ms", f"{r[0]:.2f} ms", f"{f[1]:.2f} ms",
                             f"{r[1]:.2f} ms", f"{r[1] / f[1]:.1f}x", f"{f[1] / f32[1]:.2f}x", f"{f[2]:.1f} / {r[2]:.1f}"])
        n = args.half_mib * 2**20 // 4 // T
        table(f"Half precision, T={T}, {n} neurons per step ({args.half_mib} MiB in float32, "
              f"half that in float16/bfloat16): median ms", header, body)


# --------------------------------------------------------------------------- the run


def run_shape(mib, Ts, args):
    numel = mib * 2**20 // 4
    rows = {}  # (neuron, mode, name) -> {T: (ms, passes)}
    extra = {}  # (neuron, name) -> {T: (compile s, peak MiB, saved B)}
    for T in Ts:
        N = numel // T
        x = torch.rand(T, N, device=DEVICE) * 1.5
        y = torch.empty_like(x)
        one_pass = median_ms(lambda: torch.add(x, 1, out=y), args.repeats)
        clone = median_ms(lambda: x.clone(), args.repeats)
        for name, ms in (("floor: one pass", one_pass), ("floor: clone", clone)):
            for neuron in ("lif", "plif"):
                for mode in ("forward", "fwd+bwd"):
                    rows.setdefault((neuron, mode, name), {})[T] = (ms, ms / one_pass)
        for neuron in ("lif", "plif"):
            for name, (fn, params, compiled) in contenders(neuron, T, args).items():
                compile_s = float("nan")
                if compiled:
                    torch._dynamo.reset()
                    fn = torch.compile(fn, dynamic=False)
                    xg = x.clone().requires_grad_(True)
                    t0 = time.perf_counter()
                    fn(xg).sum().backward()
                    compile_s = time.perf_counter() - t0
                xg = x.clone().requires_grad_(True)
                gout = torch.ones_like(x)

                def fwd():
                    with torch.no_grad():
                        fn(x)

                def fwd_bwd():
                    out = fn(xg)
                    torch.autograd.backward(out, gout)

                rep = max(1, args.repeats if T < 512 or name.startswith("snnfunc") else 2)
                f_ms = median_ms(fwd, rep)
                b_ms = median_ms(fwd_bwd, rep)
                rows.setdefault((neuron, "forward", name), {})[T] = (f_ms, f_ms / one_pass)
                rows.setdefault((neuron, "fwd+bwd", name), {})[T] = (b_ms, b_ms / one_pass)
                peak = peak_mib(fwd_bwd)
                saved = saved_bytes(lambda: fn(xg), T * N)
                extra.setdefault((neuron, name), {})[T] = (compile_s, peak, saved)
                print(f"  {mib} MiB T={T:<5} {neuron:4} {name:18} fwd {f_ms:9.2f} ms  "
                      f"fwd+bwd {b_ms:9.2f} ms", flush=True)
        del x, y
    return rows, extra


def table(title, header, body):
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(f"\n{title}\n")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in body:
        print(line(r))


def kernel_sources(nrn, dtype):
    """{backend: (forward source, backward source)} of a training call: default options, hard
    reset, Sigmoid surrogate, only the spikes' gradient in, every gradient out."""
    from snnfunc import surrogate as S
    from snnfunc._backends.c import skeleton as c
    from snnfunc._core.definition import option_values
    from snnfunc._kernel.surrogates import derivative_rule_for, surrogate_token

    opts = next(iter(option_values(nrn.options)))
    K, M = len(nrn.states), len(nrn.parameters)
    bw = dict(hard=True, detach=False, has_gs=True, has_gh=False, has_gv=(False,) * K,
              need=(True,) * (M + 1 + K), dtype=dtype,
              surrogate_derivative=derivative_rule_for(surrogate_token(S.Sigmoid()), False))
    from snnfunc._backends.triton import skeleton as triton

    keep = (False,) * M + (False,) + (False,) * K  # x's gradient only (float parameters)
    return {"C": (c.forward_source(nrn, opts, hard=True, want_h=False, dtype=dtype),
                  c.backward_source(nrn, opts, **bw)),
            "Triton": (triton.forward_source(nrn, opts, hard=True, want_h=False, dtype=dtype,
                                             keep=keep),
                       triton.backward_source(nrn, opts, **dict(bw, need=keep)))}


def run_bytes(args):
    """The bytes per neuron-step each generated kernel of a training call moves, counted from
    its source, beside the floor (C, which recomputes the forward in cache-sized blocks:
    forward read x, write s; backward read x and the spikes' gradient, write the input's;
    Triton, whose backward reads what its forward kept: forward read x, write s and the kept
    values; backward read them and the spikes' gradient, write the input's)."""
    from snnfunc._backends.c import traffic as c
    from snnfunc._backends.triton import traffic as triton

    counters = {"C": c, "Triton": triton}
    reg, body = registry(), []
    for name in args.neurons:
        for dtype, io in (("float32", 4), ("bfloat16", 2)):
            for backend, (fwd, bwd) in kernel_sources(reg[name], dtype).items():
                row = [name, dtype, backend]
                kept = 0
                if backend == "Triton":  # the kept values, in float32 for half precision
                    kept = len(re.findall(r"tl\.store\(kept_ptr", fwd)) * (8 if io == 8 else 4)
                for src, floor in ((fwd, 2 * io + kept), (bwd, 2 * io + kept if kept else 3 * io)):
                    st = counters[backend].streams(src, dtype)
                    parts = " + ".join(f"{k} {v}" for k, v in st["read"].items()) + " -> " + \
                        " + ".join(f"{k} {v}" for k, v in st["write"].items())
                    row.append(f"{parts} = {counters[backend].total(st)} B (floor {floor})")
                body.append(row)
    table("Bytes each generated kernel of a training call reads -> writes per neuron-step, "
          "counted from its source (default options, Sigmoid surrogate, the spikes' gradient, "
          "x's gradient wanted; Triton's kept values in float32)",
          ["neuron", "dtype", "backend", "forward", "backward"], body)


def report(mib, Ts, rows, extra):
    header = ["method"] + [f"T={T}" for T in Ts]
    for neuron in ("lif", "plif"):
        for mode in ("forward", "fwd+bwd"):
            body = []
            for (n, m, name), cells in rows.items():
                if n == neuron and m == mode:
                    body.append([name] + [f"{cells[T][0]:.2f} ms ({cells[T][1]:.1f} p)"
                                          if T in cells else "-" for T in Ts])
            table(f"{neuron.upper()} {mode}, x_seq of {mib} MiB float32 "
                  f"(median ms, and passes p)", header, body)
        body = []
        for (n, name), cells in extra.items():
            if n == neuron:
                body.append([name] + [
                    (f"{cells[T][0]:.1f} s / " if cells[T][0] == cells[T][0] else "")
                    + f"{cells[T][1]:.0f} MiB / {cells[T][2]:.1f} B" if T in cells else "-"
                    for T in Ts])
        table(f"{neuron.upper()} {mib} MiB: cold compile time / peak memory of fwd+bwd / "
              f"bytes saved for backward per neuron-step", header, body)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", nargs="+", default=["bytes", "neurons", "half", "peers"],
                    choices=["bytes", "peers", "neurons", "half"], help="which groups of tables")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16],
                    help="MiB of x_seq (peers tables)")
    ap.add_argument("--Ts", type=int, nargs="+", default=[4, 8, 64, 256, 1024],
                    help="T of the peers tables")
    ap.add_argument("--neurons", nargs="+", default=None,
                    help="neurons of the neurons and half tables (default: every registered one)")
    ap.add_argument("--neuron-sizes", type=int, nargs="+", default=[1, 16, 64],
                    help="MiB of x_seq (neurons tables)")
    ap.add_argument("--neuron-Ts", type=int, nargs="+", default=[64],
                    help="T of the neurons tables")
    ap.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"],
                    choices=["float16", "bfloat16"], help="half precisions of the half table")
    ap.add_argument("--half-Ts", type=int, nargs="+", default=[64])
    ap.add_argument("--half-mib", type=int, default=16,
                    help="neurons of the half table: those of this many MiB of float32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-compile-T", type=int, default=64,
                    help="largest T for torch.compile of the plain loop (its compile time grows with T)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.quick:
        args.sizes, args.repeats, args.max_compile_T = [16], 3, 8
        args.neuron_sizes = [16]
    args.max_peer_T = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {DEVICE}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if DEVICE.type == "cuda":
        print(torch.cuda.get_device_name())
    if args.neurons is None:
        args.neurons = list(registry())
    unknown = set(args.neurons) - set(registry())
    if unknown:
        ap.error(f"unknown neurons {sorted(unknown)}; the registries hold {list(registry())}")
    if "bytes" in args.tables:
        run_bytes(args)
    if "neurons" in args.tables:
        report_neurons(args, run_neurons(args))
    if "half" in args.tables:
        report_half(args, run_half(args))
    if "peers" in args.tables:
        for mib in args.sizes:
            rows, extra = run_shape(mib, args.Ts, args)
            report(mib, args.Ts, rows, extra)
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
