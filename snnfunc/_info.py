"""`snnfunc.info()` and `python -m snnfunc`: what this installation can do, and why not."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

import torch

from snnfunc._backends.c import build
from snnfunc._kernel import backends, cache, cached, dispatch


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def info(file=None) -> str:
    """Prints (to `file`, default standard output) and returns a report of this installation.

    It gives the versions of Python, torch, Triton and snnfunc; which fused kernels are
    available here and, where one is not, why (no C compiler, no Triton, no GPU); and how often
    calls with `impl="auto"` ran the reference loop instead in this process, with the reason,
    and how many eager calls ran from a kept entry (`snnfunc._kernel.cached`).
    The first call may build the C kernel (up to a minute or two, once per machine).

    Args:
      file: a text stream to print to; `None` prints to `sys.stdout`.

    Returns:
      The report, as printed.
    """
    import snnfunc

    cpu, cuda = backends.error("cpu"), backends.error("cuda")
    lines = [
        f"snnfunc {snnfunc.__version__}",
        f"python  {platform.python_version()} ({sys.platform}, {platform.machine()})",
        f"torch   {torch.__version__} (CUDA {'available' if torch.cuda.is_available() else 'not available'})",
        f"triton  {_version('triton')}",
        f"C compiler: {build.compiler() or 'none found'}",
        "fused kernels (impl='auto' uses them where they apply):",
        f"  cpu:  {'available' if cpu is None else 'not available: ' + cpu}"
        + (f" ({build.path()})" if cpu is None else ""),
        f"  cpu instruction set: {build.isa() or '-'} on {build.cpu_name()}",
        f"  cuda: {'available' if cuda is None else 'not available: ' + cuda}",
        "  dtypes: float16, bfloat16 (computed in float32), float32, float64",
    ]
    files = cache.cache_files()
    size = sum(n for _, n in files)
    lines.append(f"kernel cache: {len(files)} kernels, {size / (1 << 20):.1f} MiB (bound: "
                 f"{cache.MAX_FILES} kernels a backend, {cache.max_bytes() / (1 << 20):.0f} MiB; "
                 f"least recently used go first)")
    lines.append(f"repeated eager calls run from a kept entry in this process: "
                 f"{cached.stats['hits']} (entries made: {cached.stats['made']})")
    if dispatch.fallbacks:
        lines.append("calls that ran the reference loop in this process (impl='auto'):")
        lines += [f"  {n:>6} x {reason}" for reason, n in dispatch.fallbacks.most_common()]
    else:
        lines.append("calls that ran the reference loop in this process: none")
    text = "\n".join(lines)
    print(text, file=file if file is not None else sys.stdout)
    return text
