"""The environment part of benchmarks/gpu_check.sh: versions, nvidia-smi, where snnfunc and
SpikingJelly are imported from, `snnfunc.info()`, and one fused LIF call on the device against
the reference loop (in the dry run, on the CPU, the Triton kernels under the interpreter).

    ROOT=. SITE=/tmp/site DEVICE=cuda PART_MD=env.md python benchmarks/gpu_env.py

Exit status 1 when something the other parts need is missing or the smoke call is wrong."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

PROBLEMS: list[str] = []
_MD = open(os.environ["PART_MD"], "w") if os.environ.get("PART_MD") else None


def w(text=""):
    if _MD is not None:
        _MD.write(text + "\n")
        _MD.flush()
    print(text, flush=True)


def versions(device):
    import numpy
    import torch
    import triton

    w(f"- Python {platform.python_version()} ({sys.executable}), torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}), triton {triton.__version__}, numpy {numpy.__version__}")
    if device == "cuda":  # the versions the check was written for
        for want, have in (("3.12", platform.python_version()), ("2.11", torch.__version__),
                           ("3.6", triton.__version__)):
            if not have.startswith(want):
                w(f"  - expected {want}.x here, found {have}")
    for name in ("pytest", "xdist", "hypothesis"):
        try:
            module = __import__(name)
            w(f"- {name} {getattr(module, '__version__', '?')}")
        except ImportError as exc:
            w(f"- {name}: not importable ({exc})")
            PROBLEMS.append(f"no {name}")


def imports(root, site):
    import snnfunc

    where = Path(snnfunc.__file__).resolve()
    w(f"- snnfunc {snnfunc.__version__} from {where.parent}")
    if root.resolve() not in where.parents:
        PROBLEMS.append(f"snnfunc imported from {where}, not from the checkout {root}")
    try:
        import loguru
        import spikingjelly
        from spikingjelly.activation_based import functional, neuron  # noqa: F401

        sj = Path(spikingjelly.__file__).resolve()
        w(f"- spikingjelly from {sj.parent}, loguru {loguru.__version__}")
        if site.resolve() not in sj.parents:
            w(f"  - not the carried wheel (unpacked in {site})")
    except Exception as exc:  # noqa: BLE001  (say why, the other parts still run)
        w(f"- spikingjelly: not importable ({type(exc).__name__}: {exc})")
        PROBLEMS.append("no spikingjelly")


def gpu():
    import torch

    if not torch.cuda.is_available():
        PROBLEMS.append("torch sees no CUDA device")
        return
    p = torch.cuda.get_device_properties(0)
    w(f"- {p.name}: compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
      f"{p.total_memory / 2**30:.1f} GiB, L2 {getattr(p, 'L2_cache_size', 0) / 2**20:.0f} MiB")


def smoke(device):
    """One fused LIF call, forward and backward, against the reference loop."""
    import torch

    import snnfunc

    if device == "cpu":
        from snnfunc._kernel import backends

        backends.BACKENDS["cpu"] = backends.BACKENDS["cuda"]  # the Triton kernels, interpreted
    start = time.time()
    try:
        x = (2.0 * torch.rand(16, 3, 1000)).to(device).requires_grad_(True)
        a = snnfunc.lif(x, tau=2.0, impl="fused", return_h=True)
        b = snnfunc.lif(x, tau=2.0, impl="reference", return_h=True)
        ga = torch.autograd.grad(a.spikes.sum() + a.v.sum(), x)[0]
        gb = torch.autograd.grad(b.spikes.sum() + b.v.sum(), x)[0]
        same = torch.equal(a.spikes, b.spikes) and torch.equal(a.h, b.h) and torch.equal(a.v, b.v)
        close = torch.allclose(ga, gb, rtol=1e-4, atol=1e-6)
        w(f"Smoke: fused LIF on {x.device} (grad_fn {type(a.spikes.grad_fn).__name__}): spikes, h, v "
          f"{'bit-equal' if same else 'DIFFER'} to the reference, x's gradient "
          f"{'close' if close else 'NOT close'}; {time.time() - start:.1f} s with the kernels' build.")
        if not (same and close):
            PROBLEMS.append("the smoke call differs from the reference")
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        w(f"Smoke: fused LIF on {device} FAILED: {type(exc).__name__}: {exc}")
        PROBLEMS.append("the smoke call failed")


def main():
    root, site = Path(os.environ.get("ROOT", ".")), Path(os.environ.get("SITE", "."))
    device = os.environ.get("DEVICE", "cuda")
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,memory.used,driver_version,"
                            "clocks.sm,clocks.max.sm,temperature.gpu,power.draw", "--format=csv"],
                           capture_output=True, text=True, timeout=30)
        w("```\n" + (q.stdout + q.stderr).strip() + "\n```\n")
    else:
        w("nvidia-smi: not on the PATH.\n")
        if device == "cuda":
            PROBLEMS.append("no nvidia-smi")
    versions(device)
    imports(root, site)
    if device == "cuda":
        gpu()
    cache = Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")
    w(f"- caches: Triton {cache} ({'exists' if cache.exists() else 'empty'} at start), "
      f"Inductor {os.environ.get('TORCHINDUCTOR_CACHE_DIR', 'default')}")
    import snnfunc

    w("\n`snnfunc.info()`:\n\n```")
    with open(os.devnull, "w") as devnull:
        w(snnfunc.info(file=devnull).rstrip())
    w("```\n")
    smoke(device)
    if PROBLEMS:
        w("\nProblems: " + "; ".join(PROBLEMS) + ".")
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
