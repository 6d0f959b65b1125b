"""Train an ensemble of spiking networks at once with torch.func: stack_module_state + vmap.

    python examples/ensemble.py --members 8

The members are SpikingFlow-style adapters (`snnfunc.nn.PLIFNode`, `LIFNode`) in a
`torch.nn.Sequential`, each with its own initialisation. `torch.func.stack_module_state`
stacks their parameters along a new first dimension and `torch.func.vmap` over
`functional_call` runs all members in one batched call: one forward, one backward, one Adam
step for the whole ensemble. The adapters keep no state under `functional_call`, so nothing
leaks between members or steps.

It then trains the same members one by one (same initialisation, same batches, same Poisson
input), checks that the first step's gradients are the same, and prints the time of each way,
each member's test accuracy and the ensemble's (average of the members' spike counts).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from snnfunc import nn as snn
from snnfunc import surrogate
from train_digits import HelpFormatter, digits_split, encode


def member(hidden=128):
    return nn.Sequential(
        nn.Linear(64, hidden),
        snn.PLIFNode(2.0, surrogate=surrogate.ATan(), step_mode="m", param_shape=(hidden,)),
        nn.Linear(hidden, 10),
        snn.LIFNode(2.0, surrogate=surrogate.ATan(), step_mode="m"))


def batches(n_train, batch_size, epochs, T, x_tr, seed):
    """The same batches and Poisson input for both ways of training."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        for idx in torch.randperm(n_train, generator=g).split(batch_size):
            if len(idx) == batch_size:
                x = (torch.rand(T, batch_size, 64, generator=g) < x_tr[idx]).float()
                out.append((idx, x))
    return out


def train_stacked(models, data, y_tr, lr):
    params, buffers = stack_module_state(models)  # {name: [K, ...]}, leaves with requires_grad
    base = copy.deepcopy(models[0])

    def one(p, b, x):
        return functional_call(base, (p, b), (x,)).sum(0)  # spike counts [B, 10]

    ensemble = vmap(one, in_dims=(0, 0, None))
    opt = torch.optim.Adam(params.values(), lr=lr)
    first = None
    for step, (idx, x) in enumerate(data):
        logits = ensemble(params, buffers, x)  # [K, B, 10]
        y = y_tr[idx].expand(len(models), -1)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") / len(idx)
        opt.zero_grad()
        loss.backward()  # members are independent: each gets its own mean-loss gradient
        if step == 0:
            first = {k: v.grad.clone() for k, v in params.items()}
        opt.step()
    return params, buffers, ensemble, first


def train_one_by_one(models, data, y_tr, lr):
    firsts = []
    for m in models:
        opt = torch.optim.Adam(m.parameters(), lr=lr)
        for step, (idx, x) in enumerate(data):
            snn.reset_net(m)
            loss = nn.functional.cross_entropy(m(x).sum(0), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            if step == 0:
                firsts.append({k: p.grad.clone() for k, p in m.named_parameters()})
            opt.step()
    return {k: torch.stack([f[k] for f in firsts]) for k in firsts[0]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--members", type=int, default=8, help="networks in the ensemble")
    ap.add_argument("--epochs", type=int, default=10, help="training epochs")
    ap.add_argument("--T", type=int, default=8, help="time steps per image")
    ap.add_argument("--batch-size", type=int, default=64, help="training batch size")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = digits_split()
    models = [member() for _ in range(args.members)]
    copies = copy.deepcopy(models)
    data = batches(len(x_tr), args.batch_size, args.epochs, args.T, x_tr, args.seed)

    start = time.perf_counter()
    params, buffers, ensemble, first = train_stacked(models, data, y_tr, args.lr)
    t_stacked = time.perf_counter() - start
    start = time.perf_counter()
    first_loop = train_one_by_one(copies, data, y_tr, args.lr)
    t_loop = time.perf_counter() - start

    for k in first:
        torch.testing.assert_close(first[k], first_loop[k], rtol=1e-4, atol=1e-6)
    print(f"first-step gradients of all {args.members} members: vmap equals one by one")

    x_test = encode(x_te, args.T, "poisson")
    with torch.no_grad():
        counts_stacked = ensemble(params, buffers, x_test)  # [K, N, 10]
        counts_loop = []
        for m in copies:
            snn.reset_net(m)
            counts_loop.append(m(x_test).sum(0))
        counts_loop = torch.stack(counts_loop)
    acc = lambda c: (c.argmax(-1) == y_te).float().mean().item()  # noqa: E731
    member_stacked = [acc(c) for c in counts_stacked]
    member_loop = [acc(c) for c in counts_loop]
    print("| way         | train time | member accuracies (%)                  | ensemble |")
    print("|-------------|------------|----------------------------------------|----------|")
    for name, t, members, counts in (("vmap", t_stacked, member_stacked, counts_stacked),
                                     ("one by one", t_loop, member_loop, counts_loop)):
        accs = " ".join(f"{100 * a:.1f}" for a in members)
        print(f"| {name:<11} | {t:8.1f} s | {accs:<38} | {acc(counts.mean(0)):7.2%} |")
    print(f"vmap trains the {args.members} members {t_loop / t_stacked:.1f}x faster")
    return member_stacked, member_loop, acc(counts_stacked.mean(0))


if __name__ == "__main__":
    main()
