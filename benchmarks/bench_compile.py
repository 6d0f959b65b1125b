"""Cold torch.compile time of Linear -> LIF -> Linear -> PLIF (forward + backward) by T, with
the fused neurons and with the plain unrolled loop, and recompiles when T changes.

    python benchmarks/bench_compile.py
    python benchmarks/bench_compile.py --Ts 8 1024 --loop-Ts 8 64 --repeats 1

Each cell runs in a fresh process with an empty Inductor cache (its own TORCHINDUCTOR_CACHE_DIR,
FX graph cache off), so it is a cold compile, compiler start-up included; cells are repeated
and reported as min-max. The fused CPU kernel is built once per run into an empty SNNFUNC_CACHE
first, as on a new machine, and its build time printed; the compile cells then load it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time
import torch
torch._inductor.config.fx_graph_cache = False
torch._inductor.config.autotune_local_cache = False
import snnfunc
impl, T, dynamic = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
torch.manual_seed(0)
fc1, fc2 = torch.nn.Linear(64, 128), torch.nn.Linear(128, 10)
w = torch.nn.Parameter(torch.full((10,), 0.5))
def net(x):
    s = snnfunc.lif(fc1(x), tau=2.0, impl=impl).spikes
    return snnfunc.plif(fc2(s), w=w, impl=impl).spikes
compiled = torch.compile(net, fullgraph=True, dynamic=dynamic or None)
x = torch.rand(T, 32, 64)
t0 = time.perf_counter()
compiled(x).sum().backward()
cold = time.perf_counter() - t0
frames = None
if dynamic:
    from torch._dynamo.utils import counters
    for T2 in (T + 1, 2 * T + 3):
        compiled(torch.rand(T2, 32, 64)).sum().backward()
    frames = counters["stats"]["unique_graphs"]
print(json.dumps({"cold": cold, "graphs": frames}))
"""


BUILD = r"""
import json, time
t0 = time.perf_counter()
from snnfunc._kernel import dispatch
ok = dispatch.available()
print(json.dumps({"build": time.perf_counter() - t0, "ok": ok}))
"""


def run(code, *argv, env):
    with tempfile.TemporaryDirectory() as inductor:  # an empty compile cache for every cell
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True,
                             env=dict(env, TORCHINDUCTOR_CACHE_DIR=inductor))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=type(
        "Formatter", (argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter), {}))
    ap.add_argument("--Ts", type=int, nargs="+", default=[8, 64, 1024], help="sequence lengths, fused")
    ap.add_argument("--loop-Ts", type=int, nargs="+", default=[8, 64], help="sequence lengths, plain loop")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per cell")
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as kernels:
        env = dict(os.environ, SNNFUNC_CACHE=kernels)
        built = run(BUILD, env=env)
        print(f"fused CPU kernel built into an empty SNNFUNC_CACHE in {built['build']:.1f} s "
              f"(available: {built['ok']})")
        cells = [("snnfunc fused", "auto", T, False) for T in args.Ts]
        cells.append(("snnfunc fused, dynamic=True", "auto", args.Ts[0], True))
        cells += [("plain loop", "reference", T, False) for T in args.loop_Ts]
        rows = []
        for name, impl, T, dynamic in cells:
            runs = [run(CHILD, impl, str(T), "1" if dynamic else "0", env=env) for _ in range(args.repeats)]
            cold = sorted(r["cold"] for r in runs)
            graphs = (f"{runs[0]['graphs']} graph(s) for T={T}, {T + 1}, {2 * T + 3}" if dynamic else "-")
            rows.append((name, T, f"{cold[0]:.1f}" + (f"-{cold[-1]:.1f}" if len(cold) > 1 else ""), graphs))
            print(f"  {name} T={T}: {rows[-1][2]} s", flush=True)
    print(f"\nCold torch.compile of Linear -> LIF -> Linear -> PLIF, forward + backward "
          f"({args.repeats} fresh processes per cell, min-max)\n")
    print("| method | T | cold compile (s) | graphs when T changes |")
    print("|---|---|---|---|")
    for name, T, cold, graphs in rows:
        print(f"| {name} | {T} | {cold} | {graphs} |")


if __name__ == "__main__":
    main()
