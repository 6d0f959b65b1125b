"""`snnfunc.nn.SpikeLinear` against `torch.nn.Linear`, by the share of non-zero inputs: the
forward product `x @ W.T` and the weight's gradient `g.T @ x` (what the layer's backward adds
to the dense `g @ W` only when the input needs a gradient), median ms over `--repeats`, the
two layers timed in alternating rounds, and the time relative to `torch.nn.Linear`'s.

The input is spikes (0 or 1) at each density, `[rows, in]` float32 (by default SHD's shape in
`benchmarks/bench_networks.py`'s ALIF network: T = 250 x batch 64 rows of 700 inputs, to 256).
Above a fifth of non-zeros SpikeLinear hands the product to ATen (its rows say "dense").

    python benchmarks/bench_sparse.py
    python benchmarks/bench_sparse.py --densities 0.01 0.05 --threads 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def table(title, header, rows):
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=250 * 64)
    ap.add_argument("--inputs", type=int, default=700)
    ap.add_argument("--outputs", type=int, default=256)
    ap.add_argument("--densities", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.2, 0.25])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)

    from snnfunc.nn import SpikeLinear
    from snnfunc.sparse import KERNELS

    torch.manual_seed(0)
    ours = SpikeLinear(args.inputs, args.outputs, bias=False)
    ref = torch.nn.Linear(args.inputs, args.outputs, bias=False)
    ref.load_state_dict(ours.state_dict())
    w = ours.weight.detach()
    g = torch.randn(args.rows, args.outputs)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for p in args.densities:
            x = (torch.rand(args.rows, args.inputs) < p).float()
            dense = KERNELS["cpu"][1](x, w, None) is None
            cases = {
                "forward": (lambda: ref(x), lambda: ours(x)),
                "weight gradient": (lambda: g.t() @ x,
                                    lambda: torch.ops.snnfunc.spike_linear_weight_grad(x, g)),
            }
            for what, (a, b) in cases.items():
                times = {"Linear": [], "SpikeLinear": []}
                for _ in range(2):  # warm-up (kernels built, caches)
                    a(), b()
                for _ in range(args.repeats):
                    for name, f in (("Linear", a), ("SpikeLinear", b)):
                        t0 = time.perf_counter()
                        f()
                        times[name].append(time.perf_counter() - t0)
                lin, sp = (1e3 * statistics.median(times[k]) for k in ("Linear", "SpikeLinear"))
                rows.append([str(threads), f"{100 * p:g}%", what, f"{lin:.1f}", f"{sp:.1f}",
                             f"{sp / lin:.2f}x" + (" (dense)" if dense else "")])
    table(f"x [{args.rows}, {args.inputs}] float32 spikes, W [{args.outputs}, {args.inputs}]: median ms "
          f"over {args.repeats} repeats, torch {torch.__version__}",
          ["threads", "non-zeros", "product", "torch.nn.Linear", "SpikeLinear", "time / Linear's"], rows)


if __name__ == "__main__":
    main()
