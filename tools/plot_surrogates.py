"""Plot g'(x) of every built-in surrogate (default parameters) for docs/surrogates.md.

    python tools/plot_surrogates.py [docs/img/surrogates.png]

Each curve is the gradient that autograd gets through ``snnfunc.surrogate.spike`` (not the
formula typed again), so the figure shows what training uses.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from snnfunc import surrogate as S  # noqa: E402


def builtins():
    """The built-in surrogate classes (aliases once)."""
    seen, out = set(), []
    for name in S.__all__:
        cls = getattr(S, name)
        if isinstance(cls, type) and issubclass(cls, S.Surrogate) and cls is not S.Surrogate \
                and cls not in seen:
            seen.add(cls)
            out.append(cls)
    return out


def main(path="docs/img/surrogates.png"):
    classes = builtins()
    x = torch.linspace(-2, 2, 801, requires_grad=True)
    cols = 4
    rows = -(-len(classes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows), sharex=True)
    for ax, cls in zip(axes.flat, classes):
        sg = cls()
        (g,) = torch.autograd.grad(S.spike(x, sg).sum(), x)
        ax.plot(x.detach(), g, color="C0")
        ax.plot(x.detach(), S.spike(x.detach(), sg), color="gray", lw=0.8, ls="--")
        ax.set_title(repr(sg), fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(classes):]:
        ax.axis("off")
    fig.suptitle("surrogate g'(x) (blue) and the spike Θ(x) it stands in for (dashed)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"saved {path} ({len(classes)} surrogates)")
    return [cls.__name__ for cls in classes]


if __name__ == "__main__":
    main(*sys.argv[1:])
