"""A recurrent spiking network reads scikit-learn's digits (8x8) row by row: a sequence task.

    python examples/train_sequence.py                     # 8 steps of 8 pixels, 20 epochs
    python examples/train_sequence.py --epochs 5 --hidden 64
    python examples/train_sequence.py --compile           # the time loop is one node in the graph

Each image is a sequence of T = 8 steps, one row of 8 pixel intensities per step, so the
network has to remember what it saw in earlier rows. Network: Linear(8, hidden) -> a recurrent
LIF layer (`snnfunc.recurrent.Recurrent`: its spikes fed back through a learned weight) ->
Linear(hidden, 10), whose outputs averaged over the 8 steps are the logits; cross-entropy,
Adam, cosine schedule. Prints loss and test accuracy per epoch, the final accuracy and time.
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from snnfunc import surrogate
from snnfunc.recurrent import Recurrent
from train_digits import HelpFormatter, cosine_lr, digits_split


def rows(images: torch.Tensor) -> torch.Tensor:
    """[B, 64] images -> [8, B, 8]: time-major, one row of pixels per step."""
    return images.reshape(-1, 8, 8).transpose(0, 1)


class SequenceSNN(torch.nn.Module):
    def __init__(self, hidden: int = 128, tau: float = 2.0):
        super().__init__()
        self.fc_in = torch.nn.Linear(8, hidden)
        self.rec = Recurrent(hidden, tau=tau, surrogate=surrogate.ATan())
        self.fc_out = torch.nn.Linear(hidden, 10)

    def forward(self, x_seq):  # [T, B, 8]
        self.rec.reset()  # every image starts at rest
        spikes = self.rec(3.0 * self.fc_in(x_seq))
        return self.fc_out(spikes).mean(0)  # [B, 10]


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(rows(x)).argmax(-1) == y).float().mean().item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--epochs", type=int, default=20, help="training epochs")
    ap.add_argument("--hidden", type=int, default=128, help="recurrent neurons")
    ap.add_argument("--batch-size", type=int, default=64, help="training batch size")
    ap.add_argument("--lr", type=float, default=5e-3, help="Adam's learning rate (cosine schedule)")
    ap.add_argument("--compile", action="store_true", help="train with torch.compile(fullgraph=True)")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = digits_split()
    net = SequenceSNN(args.hidden)
    model = torch.compile(net, fullgraph=True) if args.compile else net
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    start = time.perf_counter()
    acc = 0.0
    for epoch in range(1, args.epochs + 1):
        net.train()
        cosine_lr(opt, args.lr, epoch, args.epochs)
        losses = []
        for idx in tqdm(torch.randperm(len(x_tr)).split(args.batch_size), desc=f"epoch {epoch}",
                        leave=False):
            if len(idx) < args.batch_size:  # fixed shapes: no recompile for the tail
                continue
            loss = torch.nn.functional.cross_entropy(model(rows(x_tr[idx])), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        net.eval()
        acc = accuracy(net, x_te, y_te)
        print(f"epoch {epoch:2d}  loss {sum(losses) / len(losses):.3f}  test accuracy {acc:.2%}  "
              f"({time.perf_counter() - start:.0f} s)")
    print(f"final test accuracy {acc:.2%} in {time.perf_counter() - start:.0f} s")
    return acc


if __name__ == "__main__":
    main()
