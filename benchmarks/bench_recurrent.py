"""Forward+backward of a recurrent LIF layer: snnfunc's `rnn` (the time loop as one operator:
per step one matmul and one call of the neuron's generated kernel, and a hand-written BPTT
loop of one-step VJPs) against the plain Python loop of snnfunc step functions and snnTorch's
`RLeaky`.

    python benchmarks/bench_recurrent.py                       # B=32, N=256, T = 8, 64, 256
    python benchmarks/bench_recurrent.py --Ts 8 64 --repeats 5

Every method runs the same layer on the same input `x` `[T, B, N]` (float32) with the same
recurrent weight `W` `[N, N]` and bias, takes the sum of the spikes as the loss and
backpropagates to `x`, `W` and the bias; each cell is the median over repeats.

Matching snnTorch's `RLeaky(beta=0.5, all_to_all=True, linear_features=N)` (its defaults:
subtractive reset, `ATan` surrogate, a `Linear(N, N)` with bias on the previous spikes):
snnfunc runs `lif` with `tau=2.0, decay_input=False` (so $H_t = 0.5\\,V_{t-1} + I_t$, snnTorch's
`beta=0.5`), `v_reset=None` (subtractive reset), `surrogate=ATan()` and the same `W`, `b`.
One difference remains: snnTorch subtracts the threshold at the step after a spike, scaled by
nothing, from `beta * mem`; snnfunc subtracts it at the spike, before the decay (the reset is
then scaled by `beta`). The work per step is the same: one matmul of `[B, N]` by `[N, N]`,
an add, the neuron update and the spike.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch.nn import functional as F

import snnfunc
from snnfunc import surrogate as S
from snnfunc.recurrent import rnn

warnings.filterwarnings("ignore")

OPTIONS = dict(tau=2.0, decay_input=False, v_reset=None, surrogate=S.ATan())


def median_ms(fn, repeats, min_time=0.3):
    fn()  # warm
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_time and len(times) < 30):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def snnfunc_rnn(x, w, b):
    return rnn(x, weight=w, bias=b, **OPTIONS).spikes


def plain_loop(x, w, b):
    s = v = None
    out = []
    for x_t in x:
        i = x_t + b if s is None else x_t + F.linear(s, w, b)
        s, v = snnfunc.lif_step(i, v, **OPTIONS)
        out.append(s)
    return torch.stack(out)


def snntorch_rleaky(w, b):
    import snntorch

    layer = snntorch.RLeaky(beta=0.5, all_to_all=True, linear_features=w.shape[0])
    with torch.no_grad():  # the same recurrent weight and bias (gradients go to its own copy)
        layer.recurrent.weight.copy_(w)
        layer.recurrent.bias.copy_(b)

    def f(x, _w, _b):
        spk, mem = layer.init_rleaky()
        out = []
        for x_t in x:
            spk, mem = layer(x_t, spk, mem)
            out.append(spk)
        return torch.stack(out)

    return f


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--Ts", type=int, nargs="+", default=[8, 64, 256], help="sequence lengths")
    ap.add_argument("--batch", type=int, default=32, help="batch size B")
    ap.add_argument("--neurons", type=int, default=256, help="neurons N")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per cell (median)")
    args = ap.parse_args(argv)
    B, N = args.batch, args.neurons
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={B}, N={N}, float32")
    torch.manual_seed(0)
    w = torch.randn(N, N) * (0.5 / N**0.5)
    b = torch.zeros(N)
    methods = {"snnfunc rnn (one op)": snnfunc_rnn, "plain loop of lif_step": plain_loop}
    try:
        methods["snnTorch RLeaky"] = snntorch_rleaky(w, b)
    except ImportError:
        print("snnTorch not installed: its row is left out")
    rows = {name: {} for name in methods}
    for T in args.Ts:
        x = 1.2 * torch.rand(T, B, N)
        for name, f in methods.items():
            xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))

            def step():
                out = f(xg, wg, bg)
                out.sum().backward()
                return out

            rate = float(step().mean())
            rows[name][T] = (median_ms(step, args.repeats), rate)
            print(f"  T={T:<4} {name:24} {rows[name][T][0]:9.2f} ms  (firing rate {rate:.3f})",
                  flush=True)
    base = "snnfunc rnn (one op)"
    header = ["method"] + [f"T={T}" for T in args.Ts]
    body = []
    for name in methods:
        cells = []
        for T in args.Ts:
            ms = rows[name][T][0]
            ratio = ms / rows[base][T][0]
            cells.append(f"{ms:.1f} ms" + ("" if name == base else f" ({ratio:.1f}x)"))
        body.append([name] + cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(wd) for c, wd in zip(r, widths)) + " |"  # noqa: E731
    print(f"\nRecurrent LIF layer, forward+backward, B={B}, N={N}, float32 "
          f"(median ms; in brackets, time relative to snnfunc rnn)\n")
    print(line(header))
    print("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for r in body:
        print(line(r))
    return rows


if __name__ == "__main__":
    main()
