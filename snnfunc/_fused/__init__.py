"""Fused multi-step kernels behind the neuron functions (an implementation detail).

Every neuron is a definition (`snnfunc.definition`); its kernels are generated from it: C for
the CPU (`_codegen`, built with the system C compiler on first use, `_cpu`) and Triton for
CUDA (`_triton_codegen`, where Triton is installed), forward and BPTT backward, registered as
`torch.library` ops in `_generated` and `_generated_triton`. `_generated.run` returns the
fused result, or `None` where the fused path does not apply (then the caller runs the
reference loop):

- the kernels take float16, bfloat16 (computed in float32), float32 and float64, on the CPU
  or on CUDA;
- forward-mode AD (`torch.func.jvp`, `jacfwd`, `torch.autograd.forward_ad`) has no rule
  through the fused op;
- a surrogate whose derivative is not elementwise torch code cannot be compiled in;
- `T = 0` needs no kernel.

`impl="fused"` raises a `ValueError` saying which of these fails instead of falling back.
"""

from __future__ import annotations

import collections
import logging

import torch

from snnfunc._fused import _cpu, _generated, _ops  # registers the CPU ops (kernels build lazily)

try:  # registers the CUDA ops wherever Triton is installed, so saved graphs load anywhere
    from snnfunc._fused import _generated_triton
except ImportError as exc:
    _generated_triton = None
    _TRITON_MISSING = f"the CUDA kernels need Triton ({exc})"

__all__ = ["available", "fallbacks"]
_log = logging.getLogger("snnfunc")


@torch.compiler.assume_constant_result
def _cpu_error():
    """Why the CPU kernels cannot be built here, or None; a constant to torch.compile."""
    return _cpu.error()


@torch.compiler.assume_constant_result
def _cuda_error():
    """Why the CUDA kernels cannot run here, or None; a constant to torch.compile."""
    if not torch.cuda.is_available():
        built = torch.version.cuda is not None
        return ("no CUDA device is visible" if built else
                f"this torch is a CPU-only build ({torch.__version__})")
    if _generated_triton is None:
        return _TRITON_MISSING
    return None


def available(device="cpu") -> bool:
    """Whether fused kernels can run on `device` here."""
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_error() is None
    return device.type == "cpu" and _cpu_error() is None


def _forward_ad_active() -> bool:
    from torch._C._functorch import TransformType, get_interpreter_stack

    if any(i.key() == TransformType.Jvp for i in get_interpreter_stack() or ()):
        return True
    return torch.autograd.forward_ad._current_level >= 0


fallbacks: collections.Counter = collections.Counter()
"""Why `impl="auto"` calls ran the reference loop in this process (eager calls only);
`snnfunc.info()` shows it."""


def _fell_back(reason: str) -> None:
    if torch.compiler.is_compiling():
        return
    if reason not in fallbacks:
        _log.debug("snnfunc: impl='auto' runs the reference loop: %s", reason)
    fallbacks[reason] += 1
