"""Train a spiking network on scikit-learn's handwritten digits (8x8, ships with the package).

    python examples/train_digits.py              # Poisson input, PLIF -> LIF, torch.compile on
    python examples/train_digits.py --no-compile --neuron if --encoder constant

Linear -> PLIF -> Linear -> LIF over T time steps, a spike-count readout and cross-entropy,
Adam. Prints test accuracy per epoch and saves a PNG with a spike raster of the hidden layer
and membrane traces of a few hidden neurons for one test digit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import snnfunc
from snnfunc import surrogate


def digits_split():
    """scikit-learn's digits in [0, 1], a stratified 80/20 split with seed 0:
    x_train [1437, 64], y_train, x_test [360, 64], y_test."""
    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_x(x_tr), torch.tensor(y_tr), as_x(x_te), torch.tensor(y_te)


def accuracy(model, x, y, T, encoder="poisson"):
    """Test accuracy of ``model`` (spike counts as logits) on images ``x``."""
    with torch.no_grad():
        correct = sum((model(encode(x[i], T, encoder)).argmax(-1) == y[i]).sum().item()
                      for i in torch.arange(len(x)).split(256))
    return correct / len(x)


def encode(images: torch.Tensor, T: int, encoder: str) -> torch.Tensor:
    """[B, 64] intensities in [0, 1] -> [T, B, 64] input currents."""
    if encoder == "poisson":
        return (torch.rand(T, *images.shape) < images).to(images.dtype)
    return images.expand(T, *images.shape)  # constant (direct) input


class DigitsSNN(torch.nn.Module):
    def __init__(self, neuron: str, hidden: int = 256):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, hidden)
        self.fc2 = torch.nn.Linear(hidden, 10)
        self.neuron = neuron
        self.w = torch.nn.Parameter(torch.full((hidden,), 0.5))  # PLIF: 1/tau, RIF: self-weight
        if neuron == "rif":
            self.w.data.fill_(-1e-3)
        self.sg = surrogate.ATan()

    def hidden(self, x_seq):
        x = self.fc1(x_seq)
        if self.neuron == "plif":
            return snnfunc.plif(x, w=self.w, surrogate=self.sg, return_h=True)
        if self.neuron == "rif":
            return snnfunc.rif(x, w=self.w, surrogate=self.sg, return_h=True)
        if self.neuron == "if":
            return snnfunc.if_(x, surrogate=self.sg, return_h=True)
        return snnfunc.lif(x, tau=2.0, surrogate=self.sg, return_h=True)

    def forward(self, x_seq):
        s1 = self.hidden(x_seq).spikes
        s2 = snnfunc.lif(self.fc2(s1), tau=2.0, surrogate=self.sg).spikes
        return s2.sum(0)  # spike counts, used as logits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--T", type=int, default=10, help="time steps per image")
    ap.add_argument("--neuron", choices=["lif", "plif", "if", "rif"], default="plif")
    ap.add_argument("--encoder", choices=["poisson", "constant"], default="poisson")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--no-compile", action="store_true", help="run eagerly")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out", help="folder for the figure")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    x_tr, y_tr, x_te, y_te = digits_split()

    net = DigitsSNN(args.neuron)
    model = net if args.no_compile else torch.compile(net, dynamic=False)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    start = time.perf_counter()
    acc = 0.0
    for epoch in range(1, args.epochs + 1):
        net.train()
        perm = torch.randperm(len(x_tr))
        batches = perm.split(args.batch_size)
        for idx in tqdm(batches, desc=f"epoch {epoch}", leave=False):
            if len(idx) < args.batch_size:  # keep shapes fixed: no recompile for the tail
                continue
            logits = model(encode(x_tr[idx], args.T, args.encoder))
            loss = torch.nn.functional.cross_entropy(logits, y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
        net.eval()
        acc = accuracy(net, x_te, y_te, args.T, args.encoder)
        print(f"epoch {epoch:2d}  loss {loss.item():.3f}  test accuracy {acc:.2%}  "
              f"({time.perf_counter() - start:.0f} s)")
    print(f"final test accuracy {acc:.2%} in {time.perf_counter() - start:.0f} s")
    save_figure(net, x_te[0], int(y_te[0]), args, Path(args.out))
    return acc


def save_figure(net, image, label, args, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        rec = net.hidden(encode(image[None], args.T, args.encoder))
    spikes, h = rec.spikes[:, 0].numpy(), rec.h[:, 0].numpy()
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 3, 3]})
    ax0.imshow(image.reshape(8, 8).numpy(), cmap="gray_r")
    ax0.set_title(f"test digit ({label})")
    ax0.axis("off")
    t_idx, n_idx = np.nonzero(spikes)
    ax1.scatter(t_idx, n_idx, marker="|", s=40, color="k")
    ax1.set(xlabel="time step", ylabel="hidden neuron", title="hidden-layer spikes",
            xlim=(-0.5, args.T - 0.5))
    for n in np.argsort(-spikes.sum(0))[:4]:
        ax2.plot(h[:, n], marker="o", label=f"neuron {n}")
    ax2.axhline(1.0, ls="--", color="gray", lw=1, label="threshold")
    ax2.set(xlabel="time step", ylabel="H (before reset)", title="membrane traces")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = out / "digits_spikes.png"
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
