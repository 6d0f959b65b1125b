"""The Triton backend: kernels for CUDA GPUs, generated as Triton programs (`skeleton`, in
its spelling `spelling`) and launched from ops that `torch.compile` sees into (`host`).
Registered for the device type "cuda". Its ops (`snnfunc::defined_forward_cuda`, ...) are
registered at import where a GPU is visible or Triton's interpreter is on, else when first
used: registering them imports parts of Inductor (about a second). Triton itself is imported
when a kernel is built."""

import importlib.util
import os

import torch

from snnfunc._kernel import backends


def _ops():
    from snnfunc._backends.triton import host

    return host.defined_forward_cuda, host.defined_backward_cuda, host.forward_fn, host.backward_fn


def error() -> str | None:
    """Why the CUDA kernels cannot run here, or None (under Triton's interpreter,
    `TRITON_INTERPRET=1`, they run on CPU tensors)."""
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return ("no CUDA device is visible" if torch.version.cuda is not None else
                f"this torch is a CPU-only build ({torch.__version__})")
    if importlib.util.find_spec("triton") is None:
        return "the CUDA kernels need Triton (pip install triton)"
    return None


_BACKEND = backends.Backend("triton", _ops, error, keeps=True)  # memory traffic is its cost
backends.register("cuda", _BACKEND)
if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
    _BACKEND.forward  # noqa: B018  (the ops registered now: a saved graph names them)
