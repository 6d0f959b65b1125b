"""Max-pooling of spikes (kernel = stride = 2): `snnfunc.memory.MaxPool2d`'s ops against ATen's
(`torch.nn.functional.max_pool2d` with its indices, what `torch.nn.MaxPool2d` runs when a
backward pass follows), forward and backward, contiguous and channels-last, at the two
max-pools of the convolutional PLIF network of examples/train_fashion_mnist.py (32 channels,
batch 32, T = 8: [256, 32, 28, 28] and [256, 32, 14, 14] spikes).

Each case is timed in rounds that alternate the implementations (median ms over the rounds,
min-max in brackets); the outputs are checked against ATen's before timing.

    python benchmarks/bench_pool.py --threads 1 --repeats 21
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from snnfunc import memory  # noqa: F401  (registers the ops; the C kernels where a compiler is)

SHAPES = [(256, 32, 28, 28), (256, 32, 14, 14)]
LAYOUTS = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last}


def cases(x, k=2):
    """{name: (forward, backward)} for one input: each a callable."""
    ops = torch.ops.snnfunc
    H, W = x.shape[2:]
    out, idx = torch.ops.aten.max_pool2d_with_indices(x, [k, k], [k, k])
    ours, off = ops.window_max_pool2d(x, k, 64)
    if not torch.equal(out, ours) or out.stride() != ours.stride():
        raise AssertionError("snnfunc's max-pool does not give ATen's output")
    g = torch.randn(out.shape).contiguous(memory_format=torch.channels_last
                                          if not x.is_contiguous() else torch.contiguous_format)
    want = torch.ops.aten.max_pool2d_with_indices_backward(g, x, [k, k], [k, k], [0, 0], [1, 1],
                                                           False, idx)
    if not torch.equal(want, ops.window_max_pool2d_backward(g, off, H, W, k, 64)):
        raise AssertionError("snnfunc's max-pool backward does not give ATen's gradient")
    return {
        "ATen": (lambda: torch.ops.aten.max_pool2d_with_indices(x, [k, k], [k, k]),
                 lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                     g, x, [k, k], [k, k], [0, 0], [1, 1], False, idx)),
        "snnfunc": (lambda: ops.window_max_pool2d(x, k, 64),
                    lambda: ops.window_max_pool2d_backward(g, off, H, W, k, 64)),
    }


def timed(fns: dict, repeats: int) -> dict:
    """{name: [seconds]} over `repeats` rounds, each round every function once in turn."""
    for f in fns.values():
        f()
    times = {n: [] for n in fns}
    for _ in range(repeats):
        for n, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[n].append(time.perf_counter() - t0)
    return times


def cell(ts):
    return f"{1e3 * statistics.median(ts):.2f} ({1e3 * min(ts):.2f}-{1e3 * max(ts):.2f})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), LD_PRELOAD={os.environ.get('LD_PRELOAD', '-')}")
    rows = []
    for shape in SHAPES:
        spikes = (torch.rand(shape) > 0.8).float()
        for layout, fmt in LAYOUTS.items():
            x = spikes.contiguous(memory_format=fmt)
            c = cases(x)
            fns = {f"{name} {part}": fn for name, pair in c.items()
                   for part, fn in zip(("forward", "backward"), pair)}
            t = timed(fns, args.repeats)
            for part in ("forward", "backward"):
                a, s = t[f"ATen {part}"], t[f"snnfunc {part}"]
                rows.append([str(list(shape)), layout, part, cell(a), cell(s),
                             f"{statistics.median(a) / statistics.median(s):.2f}x"])
    header = ["spikes", "layout", "pass", "ATen ms", "snnfunc ms", "snnfunc's speed-up"]
    print("\nMax-pool 2x2 of float32 spikes: median ms over the rounds (min-max)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
