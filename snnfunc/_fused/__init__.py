"""Fused multi-step kernels behind :mod:`snnfunc.functional` (an implementation detail).

`run` returns the fused result, or `None` where the fused path does not apply (then the
caller runs the reference loop):

- the kernels take float32 or float64, on the CPU (the C kernel in `neuron.c`, built with
  the system C compiler on first use) or on CUDA (the Triton kernels in `_triton.py`,
  where Triton is installed);
- forward-mode AD (`torch.func.jvp`, `jacfwd`, `torch.autograd.forward_ad`) has no rule
  through the fused op;
- `T = 0` needs no kernel.

`impl="fused"` raises a `ValueError` saying which of these fails instead of falling back.
"""

from __future__ import annotations

import collections
import logging

import torch

from snnfunc._fused import _cpu, _generated, _ops  # registers the CPU ops (libraries build lazily)

try:  # registers the CUDA ops wherever Triton is installed, so saved graphs load anywhere
    from snnfunc._fused import _generated_triton, _triton
except ImportError as exc:
    _triton = None
    _TRITON_MISSING = f"the CUDA kernels need Triton ({exc})"

__all__ = ["available", "fallbacks", "run", "why_not"]
_log = logging.getLogger("snnfunc")


@torch.compiler.assume_constant_result
def _cpu_error():
    """Builds and loads the CPU kernel on first use; a constant to torch.compile."""
    return _cpu.error()


@torch.compiler.assume_constant_result
def _cuda_error():
    """Why the CUDA kernels cannot run here, or None; a constant to torch.compile."""
    if _triton is None:
        return _TRITON_MISSING
    return _triton.error()


def available(device="cpu") -> bool:
    """Whether a fused kernel can run on `device` here."""
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_error() is None
    return device.type == "cpu" and _cpu_error() is None


def _forward_ad_active() -> bool:
    from torch._C._functorch import TransformType, get_interpreter_stack

    if any(i.key() == TransformType.Jvp for i in get_interpreter_stack() or ()):
        return True
    return torch.autograd.forward_ad._current_level >= 0


def why_not(x_seq) -> str | None:
    """Why the fused path cannot take `x_seq` here, or None when it can."""
    if x_seq.dtype not in (torch.float32, torch.float64):
        return f"the fused kernels take float32 and float64, not {x_seq.dtype}"
    if x_seq.device.type == "cuda":
        if _cuda_error() is not None:
            return _cuda_error()
    elif x_seq.device.type != "cpu":
        return f"no fused kernel for device {x_seq.device.type}"
    elif _cpu_error() is not None:
        return _cpu_error()
    if x_seq.shape[0] == 0:
        return "T = 0"
    if not torch.compiler.is_compiling() and _forward_ad_active():
        return "forward-mode AD (jvp, jacfwd) has no rule through the fused op"
    return None


fallbacks: collections.Counter = collections.Counter()
"""Why `impl="auto"` calls ran the reference loop in this process (eager calls only);
`snnfunc.info()` shows it."""


def _fell_back(reason: str) -> None:
    if torch.compiler.is_compiling():
        return
    if reason not in fallbacks:
        _log.debug("snnfunc: impl='auto' runs the reference loop: %s", reason)
    fallbacks[reason] += 1


def run(kind, x_seq, v, p, *, v_threshold, v_reset, surrogate, detach_reset, decay_input,
        return_h, force):
    """The fused multi-step neuron, or None where it does not apply (see the module doc)."""
    reason = why_not(x_seq)
    if reason is not None:
        if force:
            raise ValueError(f"impl='fused' is not available: {reason}; use impl='auto'")
        _fell_back(reason)
        return None
    from snnfunc.functional.neurons import NeuronOutput, NeuronOutputWithH

    shape = x_seq.shape[1:]

    def step_tensor(value):
        """One value shared by all neurons stays one value; anything else is [*S]."""
        if not isinstance(value, torch.Tensor):
            return x_seq.new_full((), value)
        return value.reshape(()) if value.numel() == 1 else value.expand(shape)

    decay = decay_input if kind in ("lif", "plif") else True
    cfg = _ops.Config(_ops.KINDS[kind], decay, v_reset is not None, detach_reset, return_h,
                      surrogate)
    scalars = _ops.scalars(0.0 if v_reset is None else v_reset, surrogate, x_seq.device)
    p = None if kind == "if" else step_tensor(p)
    s, v, h = _ops.FusedNeuron.apply(x_seq, step_tensor(v), p, step_tensor(v_threshold),
                                     scalars, cfg)
    return NeuronOutputWithH(s, v, h) if return_h else NeuronOutput(s, v)
