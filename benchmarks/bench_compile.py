"""Cold torch.compile time of Linear -> LIF -> Linear -> PLIF (forward + backward) by T, with
the fused neurons and with the plain unrolled loop, and recompiles when T changes.

    python benchmarks/bench_compile.py
    python benchmarks/bench_compile.py --Ts 8 1024 --loop-Ts 8 64

Each cell runs in a fresh process with Inductor's caches off, so it is a cold compile
(compiler start-up included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
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


def run(impl, T, dynamic):
    out = subprocess.run([sys.executable, "-c", CHILD, impl, str(T), "1" if dynamic else "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--Ts", type=int, nargs="+", default=[8, 64, 1024])
    ap.add_argument("--loop-Ts", type=int, nargs="+", default=[8, 64])
    args = ap.parse_args()
    rows = []
    for T in args.Ts:
        r = run("auto", T, dynamic=False)
        rows.append(("snnfunc fused", T, r["cold"], "-"))
    r = run("auto", args.Ts[0], dynamic=True)
    rows.append(("snnfunc fused, dynamic=True", args.Ts[0], r["cold"],
                 f"{r['graphs']} graph(s) for T={args.Ts[0]}, {args.Ts[0] + 1}, {2 * args.Ts[0] + 3}"))
    for T in args.loop_Ts:
        r = run("reference", T, dynamic=False)
        rows.append(("plain loop", T, r["cold"], "-"))
    print("\nCold torch.compile of Linear -> LIF -> Linear -> PLIF, forward + backward\n")
    print("| method | T | cold compile (s) | graphs when T changes |")
    print("|---|---|---|---|")
    for name, T, cold, graphs in rows:
        print(f"| {name} | {T} | {cold:.1f} | {graphs} |")


if __name__ == "__main__":
    main()
