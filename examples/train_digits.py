"""Train a spiking network on scikit-learn's handwritten digits (8x8, ships with the package).

    python examples/train_digits.py              # Poisson input, PLIF -> LIF, torch.compile on
    python examples/train_digits.py --no-compile --neuron if --encoder constant
    python examples/train_digits.py --checkpoint out/digits.pt            # save every epoch
    python examples/train_digits.py --checkpoint out/digits.pt --resume --epochs 40

Linear -> PLIF -> Linear -> LIF over T time steps, a spike-count readout and cross-entropy,
Adam. The Linear layers start at 4x PyTorch's default scale (--init-gain), so that both
spiking layers fire from the first batch on and the first epoch already learns. Prints loss
and test accuracy per epoch and saves two PNGs in --out:
digits_training.png (loss and accuracy per epoch) and digits_spikes.png (one test digit: its
input spikes, the hidden layer's spikes, membrane traces of hidden neurons that charge, leak,
fire and reset, and the prediction).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import snnfunc
from snnfunc import surrogate


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's layout and shows every default."""


def digits_split():
    """scikit-learn's digits in [0, 1], a stratified 80/20 split with seed 0:
    x_train [1437, 64], y_train, x_test [360, 64], y_test."""
    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_x(x_tr), torch.tensor(y_tr), as_x(x_te), torch.tensor(y_te)


def accuracy(model, x, y, T, encoder="poisson"):
    """Test accuracy of `model` (spike counts as logits) on images `x`."""
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
    def __init__(self, neuron: str, hidden: int = 256, init_gain: float = 4.0):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, hidden)
        self.fc2 = torch.nn.Linear(hidden, 10)
        # PyTorch's default init (weights within ±1/sqrt(fan_in)) suits activations around 0;
        # these neurons fire at a threshold of 1 from sparse 0/1 inputs, and at that scale
        # (seed 0, the training digits) the hidden layer fires at 0.01 % of its steps and the
        # output layer never: the spike counts are all 0, the loss stays at log(10) = 2.303
        # and the first epoch learns nothing. Scaled by 4, the hidden layer fires at 13 % of
        # its steps and the output layer at 9 %, silent for 1 digit in 1437
        with torch.no_grad():
            for fc in (self.fc1, self.fc2):
                fc.weight.mul_(init_gain)
                fc.bias.mul_(init_gain)
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--epochs", type=int, default=30, help="epochs in all (a resumed run counts the saved ones)")
    ap.add_argument("--T", type=int, default=10, help="time steps per image")
    ap.add_argument("--neuron", choices=["lif", "plif", "if", "rif"], default="plif", help="hidden-layer neuron")
    ap.add_argument("--encoder", choices=["poisson", "constant"], default="poisson",
                    help="Poisson spikes with the pixel intensity as rate, or the intensity as a constant current")
    ap.add_argument("--batch-size", type=int, default=64, help="training batch size")
    ap.add_argument("--init-gain", type=float, default=4.0,
                    help="scale of PyTorch's default Linear init (1: the default, silent at the start)")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate (cosine schedule)")
    ap.add_argument("--no-compile", action="store_true", help="run eagerly")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--out", type=Path, default=Path("out"), help="folder for the figures")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="file to save the model, optimizer and history to after every epoch")
    ap.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    x_tr, y_tr, x_te, y_te = digits_split()

    net = DigitsSNN(args.neuron, init_gain=args.init_gain)
    model = net if args.no_compile else torch.compile(net, dynamic=False)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    history = {"loss": [], "accuracy": []}
    if args.resume:
        history = load_checkpoint(args.checkpoint, net, opt, neuron=args.neuron)
        print(f"resumed from {args.checkpoint} after epoch {len(history['loss'])}")
    start = time.perf_counter()
    for epoch in range(len(history["loss"]) + 1, args.epochs + 1):
        net.train()
        cosine_lr(opt, args.lr, epoch, args.epochs)
        perm = torch.randperm(len(x_tr))
        batches = perm.split(args.batch_size)
        losses = []
        for idx in tqdm(batches, desc=f"epoch {epoch}", leave=False):
            if len(idx) < args.batch_size:  # keep shapes fixed: no recompile for the tail
                continue
            logits = model(encode(x_tr[idx], args.T, args.encoder))
            loss = torch.nn.functional.cross_entropy(logits, y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        net.eval()
        history["loss"].append(sum(losses) / len(losses))
        history["accuracy"].append(accuracy(net, x_te, y_te, args.T, args.encoder))
        print(f"epoch {epoch:2d}  loss {history['loss'][-1]:.3f}  test accuracy {history['accuracy'][-1]:.2%}  "
              f"({time.perf_counter() - start:.0f} s)")
        if args.checkpoint is not None:
            save_checkpoint(args.checkpoint, net, opt, history, neuron=args.neuron)
    acc = history["accuracy"][-1] if history["accuracy"] else 0.0
    print(f"final test accuracy {acc:.2%} in {time.perf_counter() - start:.0f} s")
    plot_history(history, args.out / "digits_training.png", "digits")
    save_figure(net, x_te[0], int(y_te[0]), args, args.out)
    return acc


def cosine_lr(opt, lr, epoch, epochs):
    """The cosine schedule from `lr` down to 0, set for `epoch` (1-based) of `epochs`: a function
    of the epoch alone, so a resumed run with more epochs follows the schedule of the new total."""
    for group in opt.param_groups:
        group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))


def save_checkpoint(path: Path, net, opt, history, **meta):
    """Model, optimizer, history and the random state: a resumed run continues exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "history": history,
                "rng": torch.get_rng_state(), **meta}, path)


def load_checkpoint(path, net, opt, **meta):
    """Restores what `save_checkpoint` saved and returns the history; `meta` must match."""
    if path is None or not Path(path).is_file():
        raise SystemExit(f"--resume needs --checkpoint FILE from an earlier run (got {path})")
    ckpt = torch.load(path)
    for key, value in meta.items():
        if ckpt.get(key) != value:
            raise SystemExit(f"{path} was saved with {key}={ckpt.get(key)!r}, not {value!r}")
    net.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"])
    return ckpt["history"]


def plot_history(history, path: Path, name: str):
    """Loss and test accuracy per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = range(1, len(history["loss"]) + 1)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax0.plot(epochs, history["loss"], marker="o")
    ax0.set(xlabel="epoch", ylabel="training loss (mean over the epoch)", title=f"{name}: loss")
    ax1.plot(epochs, [100 * a for a in history["accuracy"]], marker="o", color="C1")
    ax1.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{name}: test accuracy")
    for ax in (ax0, ax1):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"saved {path}")


def save_figure(net, image, label, args, out: Path):
    """One test digit through the trained network: input, hidden spikes, membrane traces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    x_seq = encode(image[None], args.T, args.encoder)  # [T, 1, 64]
    with torch.no_grad():
        rec = net.hidden(x_seq)
        counts = net(x_seq)[0]
    pred = int(counts.argmax())
    spikes, h = rec.spikes[:, 0].numpy(), rec.h[:, 0].numpy()
    v = h * (1 - spikes)  # after the (hard, to 0) reset
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), gridspec_kw={"width_ratios": [1, 2.2, 2.2, 3.2]})
    axes[0].imshow(image.reshape(8, 8).numpy(), cmap="gray_r")
    axes[0].set_title(f"test digit (label {label})")
    axes[0].axis("off")
    t_in, n_in = np.nonzero(x_seq[:, 0].numpy())
    if args.encoder == "poisson":
        axes[1].scatter(t_in, n_in, marker="|", s=30, color="C0")
        axes[1].set(ylabel="input pixel", title="input spikes (Poisson, rate = intensity)")
    else:
        axes[1].imshow(x_seq[:, 0].numpy().T, aspect="auto", cmap="gray_r", origin="lower")
        axes[1].set(ylabel="input pixel", title="input current (constant)")
    t_idx, n_idx = np.nonzero(spikes)
    axes[2].scatter(t_idx, n_idx, marker="|", s=30, color="k")
    axes[2].set(ylabel="hidden neuron", title=f"hidden-layer spikes ({int(spikes.sum())} in all)")
    for ax in axes[1:3]:
        ax.set(xlabel="time step", xlim=(-0.5, args.T - 0.5))
    # neurons that fire now and then and leak (fall without a spike) in between: below the
    # threshold most steps, so charge, leak, fire and reset all show
    fired = spikes.sum(0)
    v_before = np.vstack([np.zeros_like(v[:1]), v[:-1]])
    leaks = ((h < v_before) & (spikes == 0)).sum(0)
    score = np.where((fired > 0) & (fired <= max(1, args.T // 2)), 100 * leaks + fired, -1)
    shown = np.argsort(-score, kind="stable")[:2]
    steps = np.arange(args.T)
    for i, n in enumerate(shown):
        # V before the step, H after the charge, V after the reset: a sawtooth per neuron
        ts = np.repeat(steps, 2) + np.tile([0.0, 0.35], args.T)
        vs = np.column_stack([h[:, n], v[:, n]]).ravel()
        line, = axes[3].plot(np.concatenate([[-0.65], ts]), np.concatenate([[0.0], vs]),
                             label=f"neuron {n} ({int(fired[n])} spikes)")
        axes[3].plot(steps[spikes[:, n] > 0], h[spikes[:, n] > 0, n], "*", ms=11, color=line.get_color())
    axes[3].axhline(1.0, ls="--", color="gray", lw=1, label="threshold")
    axes[3].set(xlabel="time step (charge, then reset after a spike *)", ylabel="membrane potential",
                title="membrane traces of two hidden neurons", xlim=(-0.7, args.T - 0.3))
    axes[3].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    verdict = "right" if pred == label else "wrong"
    fig.suptitle(f"digit {label}, predicted {pred} ({verdict}): output spike counts "
                 f"{' '.join(str(int(c)) for c in counts)} over {args.T} steps")
    fig.tight_layout()
    path = out / "digits_spikes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    plural = lambda n, word: f"{n} {word}" + ("s" if n != 1 else "")  # noqa: E731
    traces = ", ".join(f"neuron {n} ({plural(int(fired[n]), 'spike')}, {plural(int(leaks[n]), 'step')} leaking)"
                       for n in shown)
    print(f"saved {path}: digit {label} predicted {pred}; membrane traces of {traces}")


if __name__ == "__main__":
    main()
