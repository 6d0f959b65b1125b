"""Differentially-private style training (DP-SGD) of the digits network with per-sample gradients.

    python examples/per_sample_gradients.py
    python examples/per_sample_gradients.py --noise 0.5 --clip 1.0 --epochs 20

Each step takes the gradient of every sample's loss separately, as
`torch.func.vmap(torch.func.grad(loss_of_one_sample))` over the batch of the functional network
(`torch.func.functional_call` on the digits model of `train_digits.py`), clips each one to
norm `--clip`, sums them, adds Gaussian noise of standard deviation `noise * clip` and divides
by the batch size; SGD with momentum applies it (Adam would rescale the noise of every
coordinate into a full step). The spiking neurons' surrogate gradients and fused kernels work under
`vmap(grad)` unchanged. It first checks that the vmapped per-sample gradients equal a Python
loop over the samples, and prints how much faster vmap is.

No privacy accounting is done here (the epsilon of a run needs an accountant, e.g. Opacus'
RDP accountant, fed the sampling rate, noise multiplier and steps).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.func import functional_call, grad, vmap

from train_digits import DigitsSNN, HelpFormatter, accuracy, digits_split, encode


def make_loss(net):
    def loss_one(params, x, y):  # one sample: x [T, 64], y []
        logits = functional_call(net, params, (x.unsqueeze(1),))  # [1, 10]
        return torch.nn.functional.cross_entropy(logits, y.unsqueeze(0))

    return loss_one


def per_sample_loop(loss_one, params, x_seq, y):
    grads = [grad(loss_one)(params, x_seq[:, i], y[i]) for i in range(len(y))]
    return {k: torch.stack([g[k] for g in grads]) for k in params}


def check_and_time(loss_one, params, x_seq, y, repeats=5):
    per_sample = vmap(grad(loss_one), in_dims=(None, 1, 0))
    fast, slow = per_sample(params, x_seq, y), per_sample_loop(loss_one, params, x_seq, y)
    for k in params:
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-5, atol=1e-6)
    worst = max(((fast[k] - slow[k]).abs().max() / slow[k].abs().max().clamp_min(1e-12)).item()
                for k in params)

    def median_ms(fn):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * sorted(times)[len(times) // 2]

    t_vmap = median_ms(lambda: per_sample(params, x_seq, y))
    t_loop = median_ms(lambda: per_sample_loop(loss_one, params, x_seq, y))
    print(f"per-sample gradients of {len(y)} samples: vmap equals the loop "
          f"(largest difference {worst:.1e} of the largest gradient)")
    print("| method      | median ms |\n|-------------|-----------|")
    print(f"| Python loop | {t_loop:9.1f} |\n| vmap(grad)  | {t_vmap:9.1f} |")
    print(f"vmap is {t_loop / t_vmap:.1f}x faster than the loop")
    return t_loop / t_vmap


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--epochs", type=int, default=15, help="training epochs")
    ap.add_argument("--T", type=int, default=10, help="time steps per image")
    ap.add_argument("--batch-size", type=int, default=128, help="training batch size (and the timed batch)")
    ap.add_argument("--lr", type=float, default=1.0, help="SGD's learning rate (momentum 0.9)")
    ap.add_argument("--clip", type=float, default=1.0, help="per-sample gradient norm bound C")
    ap.add_argument("--noise", type=float, default=1.0, help="noise multiplier: std = noise * C")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = digits_split()
    net = DigitsSNN("plif")
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    loss_one = make_loss(net)
    per_sample = vmap(grad(loss_one), in_dims=(None, 1, 0))

    x0 = encode(x_tr[:args.batch_size], args.T, "poisson")
    speedup = check_and_time(loss_one, params, x0, y_tr[:args.batch_size])

    opt = torch.optim.SGD(params.values(), lr=args.lr, momentum=0.9)
    start, acc = time.perf_counter(), 0.0
    for epoch in range(1, args.epochs + 1):
        for idx in torch.randperm(len(x_tr)).split(args.batch_size):
            if len(idx) < args.batch_size:
                continue
            g = per_sample(params, encode(x_tr[idx], args.T, "poisson"), y_tr[idx])
            norms = torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in g.values()))  # [B]
            scale = (args.clip / (norms + 1e-6)).clamp(max=1.0)
            for k, p in params.items():
                clipped = (g[k] * scale.view(-1, *[1] * (g[k].dim() - 1))).sum(0)
                noise = torch.randn_like(clipped) * args.noise * args.clip
                p.grad = (clipped + noise) / len(idx)
            opt.step()
        with torch.no_grad():
            acc = accuracy(lambda x: functional_call(net, params, (x,)), x_te, y_te, args.T)
        print(f"epoch {epoch:2d}  test accuracy {acc:.2%}  ({time.perf_counter() - start:.0f} s)")
    print(f"DP-SGD (clip {args.clip}, noise {args.noise}): test accuracy {acc:.2%}")
    return acc, speedup


if __name__ == "__main__":
    main()
