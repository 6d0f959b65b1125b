"""Speed, memory and compile time of multi-step LIF and PLIF: snnfunc's fused kernel against
the plain loop, torch.compile, SpikingJelly, snnTorch and Norse, side by side in one run.

    python benchmarks/bench_neurons.py                  # 16 MiB and 64 MiB, T = 4 ... 1024
    python benchmarks/bench_neurons.py --quick          # 16 MiB, fewer repeats
    python benchmarks/bench_neurons.py --sizes 16 --Ts 8 64 --no-peers

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
import gc
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
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64], help="MiB of x_seq")
    ap.add_argument("--Ts", type=int, nargs="+", default=[4, 8, 64, 256, 1024])
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
    args.max_peer_T = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {DEVICE}")
    if DEVICE.type == "cuda":
        print(torch.cuda.get_device_name())
    for mib in args.sizes:
        rows, extra = run_shape(mib, args.Ts, args)
        report(mib, args.Ts, rows, extra)


if __name__ == "__main__":
    main()
