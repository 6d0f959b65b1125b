"""The fused CPU kernels at the memory floor: every neuron x every surrogate, in passes; and
the small layers, where the cost around the kernels shows.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \\
    MALLOC_CONF=oversize_threshold:1,background_thread:true,dirty_decay_ms:-1,muzzy_decay_ms:-1 \\
        python benchmarks/bench_cpu.py                      # both tables
    python benchmarks/bench_cpu.py --tables surrogates --Ts 8 64 --neurons lif alif
    python benchmarks/bench_cpu.py --tables surrogates --threads 1 --clock cpu --surrogates Sigmoid ATan
    python benchmarks/bench_cpu.py --tables small --threads 1

``surrogates``: each built-in neuron (``snnfunc.functional.neurons`` and ``defined``, their
default options, a parameter without a default a learnable scalar) fused, forward alone
(no grad) and forward+backward (``torch.autograd.grad`` of the spikes for the input and the
learnable parameters), with every built-in surrogate (the classes of ``snnfunc.surrogate``,
their default widths), on ``--mib`` MiB of float32 input at every ``--Ts``. The unit is a
*pass*: the time of ``torch.add(x, 1, out=y)`` on the same tensor (one read and one write),
timed in the same alternating rounds as the neuron (a busy moment of a shared machine falls
on both). The floor is about 2 passes forward (read x, write the spikes) and about 3-4 for
forward+backward. The forward is one row per neuron (the surrogate is not used there).

``small``: LIF (Sigmoid) forward+backward at B x N = ``--small-neurons`` and T = 8, float32,
the fused kernel against the plain loop (``impl="reference"``, eager) and ``torch.compile``
of the plain loop (``fullgraph=True``, compiled once before timing), in microseconds: at this
size the Python, autograd and allocation around the kernels is the cost.

Outputs are allocated fresh at every call, as a user's training step does: run with jemalloc
(above) so that the glibc allocator's page faults on fresh large blocks are not what is
measured; the allocator in use is printed with the CPU. Every cell is the median over at
least ``--repeats`` calls and 0.2 s. ``--clock cpu`` (with ``--threads 1``) times the calling
thread's CPU time instead of wall time: on a machine shared with other work, the time the
thread waited for a core is left out (what the others do to the caches and memory is not).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import torch

import snnfunc
from snnfunc import surrogate as S

warnings.filterwarnings("ignore")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def allocator() -> str:
    pre = os.environ.get("LD_PRELOAD", "")
    return "jemalloc" if "jemalloc" in pre else "glibc (page faults on fresh blocks included)"


CLOCK = [time.perf_counter]  # or time.thread_time (--clock cpu)


def medians(fns: dict, repeats: int, min_time: float = 0.2) -> dict:
    """Median seconds of each function, timed in rounds alternating between them."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    clock = CLOCK[0]
    start = time.perf_counter()
    while (min(map(len, times.values())) < repeats
           or (time.perf_counter() - start < min_time * len(fns)
               and min(map(len, times.values())) < 200)):
        for k, fn in fns.items():
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def neurons() -> dict:
    from snnfunc.functional import defined
    from snnfunc.functional import neurons as classic

    return {**classic.DEFINITIONS, **defined.DEFINITIONS}


def surrogates() -> dict:
    out = {}
    for name in sorted(dir(S)):
        cls = getattr(S, name)
        if isinstance(cls, type) and issubclass(cls, S.Surrogate) and cls is not S.Surrogate:
            out[name] = cls()
    return out


def params_of(nrn):
    return {n: torch.nn.Parameter(torch.tensor(0.5)) for n, d in nrn.parameters.items()
            if d is None}


def table(title, header, rows):
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def run_surrogates(args):
    reg, sgs = neurons(), surrogates()
    if args.surrogates:
        unknown = sorted(set(args.surrogates) - set(sgs))
        if unknown:
            raise SystemExit(f"--surrogates: unknown {unknown}; built-in: {sorted(sgs)}")
        sgs = {k: v for k, v in sgs.items() if k in args.surrogates}
    names = args.neurons or list(reg)
    unknown = sorted(set(names) - set(reg))
    if unknown:
        raise SystemExit(f"--neurons: unknown {unknown}; built-in: {sorted(reg)}")
    fwd, both = {}, {}
    for T in args.Ts:
        N = args.mib * 2**20 // 4 // T
        x = torch.rand(T, N) * 1.5
        y = torch.empty_like(x)
        xg = x.clone().requires_grad_(True)
        ones = torch.ones_like(x)

        def one_pass():
            torch.add(x, 1, out=y)

        for name in names:
            nrn = reg[name]
            params = params_of(nrn)

            def f(nrn=nrn, params=params):
                with torch.no_grad():
                    nrn(x, impl="fused", **params)

            m = medians({"pass": one_pass, "f": f}, args.repeats)
            fwd[name, T] = m["f"] / m["pass"]
            for sname, sg in sgs.items():
                def fb(nrn=nrn, params=params, sg=sg):
                    out = nrn(xg, impl="fused", surrogate=sg, **params).spikes
                    torch.autograd.grad(out, (xg, *params.values()), ones)

                m = medians({"pass": one_pass, "fb": fb}, args.repeats)
                both[name, sname, T] = m["fb"] / m["pass"]
            worst = max(both[name, s, T] for s in sgs)
            print(f"  T={T:<5} {name:9} forward {fwd[name, T]:5.2f} passes, fwd+bwd worst "
                  f"{worst:5.2f}", flush=True)
        del x, y, xg, ones
    ts = args.Ts
    table(f"Forward (no grad), float32, {args.mib} MiB: passes (time over one "
          "torch.add(x, 1, out=y) of the same tensor)", ["neuron", *(f"T={T}" for T in ts)],
          [[n, *(f"{fwd[n, T]:.2f}" for T in ts)] for n in names])
    for name in names:
        table(f"{name}: forward+backward, float32, {args.mib} MiB, passes",
              ["surrogate", *(f"T={T}" for T in ts)],
              [[s, *(f"{both[name, s, T]:.2f}" for T in ts)] for s in sgs])
    rows = []
    for s in sgs:
        vals = [both[n, s, T] for n in names for T in ts]
        worst = max(((both[n, s, T], n, T) for n in names for T in ts))
        rows.append([s, f"{statistics.median(vals):.2f}", f"{worst[0]:.2f} ({worst[1]}, T={worst[2]})"])
    table("Every surrogate over every neuron and T above: forward+backward passes",
          ["surrogate", "median", "worst (neuron, T)"], rows)
    over = [(v, k) for k, v in both.items() if v > 5.0] + [(v, k) for k, v in fwd.items() if v > 2.0]
    print(f"\ncells over the floor (fwd+bwd > 5 or forward > 2 passes): {len(over)}"
          + "".join(f"\n  {k}: {v:.2f}" for v, k in sorted(over, reverse=True)))


def run_small(args):
    n, T = args.small_neurons, 8
    x = torch.rand(T, n) * 1.5
    xg = x.clone().requires_grad_(True)
    ones = torch.ones_like(x)

    def loop(x):
        return snnfunc.lif(x, tau=2.0, impl="reference").spikes

    compiled = torch.compile(loop, fullgraph=True)

    def step(fn):
        def go():
            torch.autograd.grad(fn(xg), xg, ones)
        return go

    fused = step(lambda x: snnfunc.lif(x, tau=2.0, impl="fused").spikes)
    fns = {"fused": fused, "plain loop": step(loop), "torch.compile(loop)": step(compiled)}
    fns["torch.compile(loop)"]()  # compiled before timing
    m = medians(fns, max(args.repeats, 50), min_time=1.0)
    f = m["fused"]
    table(f"Small layer: LIF (Sigmoid) forward+backward, float32, B x N = {n}, T = {T} "
          "(median microseconds; in brackets, how many times the fused call's time)",
          ["method", "us", "vs fused"],
          [[k, f"{1e6 * v:.0f}", f"{v / f:.2f}x"] for k, v in m.items()])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", nargs="+", default=["surrogates", "small"],
                    choices=["surrogates", "small"])
    ap.add_argument("--Ts", type=int, nargs="+", default=[8, 64, 256, 1024])
    ap.add_argument("--mib", type=int, default=16, help="MiB of float32 input")
    ap.add_argument("--neurons", nargs="+", default=None, help="default: every built-in")
    ap.add_argument("--surrogates", nargs="+", default=None,
                    help="surrogate class names; default: every built-in")
    ap.add_argument("--small-neurons", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the calling thread's CPU time (with --threads 1 every kernel runs "
                    "on it), steadier on a shared machine than wall time")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if torch.get_num_threads() != 1:
            ap.error("--clock cpu needs --threads 1 (other threads' time would be missed)")
        CLOCK[0] = time.thread_time
    import io

    info = snnfunc.info(file=io.StringIO())
    isa = next((line.strip() for line in info.splitlines() if "instruction set" in line), "")
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads; allocator: {allocator()}; "
          f"torch {torch.__version__}; {isa}; clock: {args.clock}; load average at the start: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if "surrogates" in args.tables:
        run_surrogates(args)
    if "small" in args.tables:
        run_small(args)


if __name__ == "__main__":
    main()
