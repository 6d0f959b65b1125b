"""Data-parallel training of the digits network with torch.distributed (DistributedDataParallel).

One machine, two processes (gloo on CPUs, nccl when every process has a GPU):

    torchrun --standalone --nproc_per_node=2 examples/ddp.py --epochs 10

Several machines: run the same command on each, with the node count, this node's rank and one
reachable address for the rendezvous (the first node's, say):

    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=4 \\
        --rdzv_backend=c10d --rdzv_endpoint=node0.example.org:29500 examples/ddp.py
    torchrun --nnodes=2 --node_rank=1 --nproc_per_node=4 \\
        --rdzv_backend=c10d --rdzv_endpoint=node0.example.org:29500 examples/ddp.py

Every global batch is split evenly between the ranks; DDP averages the gradients, so every rank
holds the same parameters after every step (checked at the end: the parameters are broadcast
from rank 0 and compared). Spiking neurons need nothing special: `snnfunc` functions keep no
state, and the model is an ordinary module. `--out DIR` writes each rank's losses and final
parameters (used by the test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from train_digits import DigitsSNN, HelpFormatter, accuracy, digits_split, encode


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--epochs", type=int, default=10, help="training epochs")
    ap.add_argument("--T", type=int, default=10, help="time steps per image")
    ap.add_argument("--batch-size", type=int, default=64, help="global batch, split between ranks")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: no limit)")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--out", type=Path, default=None, help="folder for each rank's losses and parameters")
    args = ap.parse_args(argv)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        sys.exit("examples/ddp.py runs as several processes started by torchrun, for example\n"
                 "    torchrun --standalone --nproc_per_node=2 examples/ddp.py --epochs 10\n"
                 "(see --help for several machines)")

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)

    torch.manual_seed(args.seed)  # same initial parameters on every rank (DDP also broadcasts)
    x_tr, y_tr, x_te, y_te = digits_split()
    net = DigitsSNN("plif").to(device)
    model = DDP(net)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    per_rank = args.batch_size // world
    order = torch.Generator().manual_seed(args.seed)  # same global order on every rank
    spikes_rng = torch.Generator().manual_seed(args.seed + 1000 * rank)  # own Poisson input
    losses, step, start = [], 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(len(x_tr), generator=order)
        epoch_losses = []
        for batch in perm.split(args.batch_size):
            if len(batch) < args.batch_size:
                continue
            idx = batch[rank * per_rank:(rank + 1) * per_rank]
            x = (torch.rand(args.T, per_rank, 64, generator=spikes_rng) < x_tr[idx]).float()
            loss = torch.nn.functional.cross_entropy(model(x.to(device)), y_tr[idx].to(device))
            opt.zero_grad()
            loss.backward()  # DDP all-reduces (averages) the gradients here
            opt.step()
            epoch_losses.append(loss.item())
            step += 1
            if args.max_steps and step >= args.max_steps:
                break
        losses.append(sum(epoch_losses) / len(epoch_losses))
        mean = torch.tensor(losses[-1])
        dist.all_reduce(mean)
        if rank == 0:
            acc = accuracy(lambda x: net(x.to(device)).cpu(), x_te, y_te, args.T)
            print(f"epoch {epoch:2d}  loss {mean.item() / world:.3f}  test accuracy {acc:.2%}  "
                  f"({time.perf_counter() - start:.0f} s, {world} processes)")
        if args.max_steps and step >= args.max_steps:
            break

    # every rank must hold exactly rank 0's parameters
    same = True
    for p in net.parameters():
        ref = p.detach().clone()
        dist.broadcast(ref, src=0)
        same &= torch.equal(ref, p.detach())
    flag = torch.tensor(float(same))
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    if rank == 0:
        print("parameters identical on all ranks" if flag.item() == 1 else "PARAMETERS DIFFER")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in net.state_dict().items()}, args.out / f"params_rank{rank}.pt")
        (args.out / f"losses_rank{rank}.json").write_text(json.dumps(losses))
    del model, opt  # DDP's reducer goes before its process group (its destructor can hang after)
    dist.destroy_process_group()
    return flag.item() == 1


if __name__ == "__main__":
    main()
