"""Argument checks and vmap batching helpers shared by the generated ops (CPU and CUDA).

The ops are public (`torch.ops.snnfunc.*`): they check every argument before a kernel reads
a byte, so no call can read out of bounds or reinterpret memory. Sequence tensors are
`[T, *S]`; step tensors (states, parameters, the threshold) are `[*S]` or hold a single value
shared by every neuron (then nothing per neuron is materialised).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor


def _device_ok(t: Tensor, device_type: str) -> bool:
    if device_type == "cuda":  # Triton's interpreter runs the CUDA kernels on CPU tensors
        return t.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    return t.device.type == device_type


def _check_seq(name, t, x, *, dtype=None):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    dtype = x.dtype if dtype is None else dtype
    if t.dtype != dtype or t.device != x.device or t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense {dtype} tensor on {x.device} like x, got "
                         f"{t.dtype} on {t.device} ({t.layout})")
    if t.shape != x.shape:
        raise ValueError(f"{name} must have x's shape {tuple(x.shape)}, got {tuple(t.shape)}")


def _check_step(name, t, x, *, shared_ok=True, dtype=None):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    dtype = x.dtype if dtype is None else dtype
    if t.dtype != dtype or t.device != x.device or t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense {dtype} tensor on {x.device}, got "
                         f"{t.dtype} on {t.device} ({t.layout})")
    step = x.shape[1:]
    if t.shape != step and not (shared_ok and t.numel() == 1):
        raise ValueError(f"{name} must have shape {tuple(step)} (one step of x)"
                         f"{' or hold one value' if shared_ok else ''}, got {tuple(t.shape)}")


# --------------------------------------------------------------------------- vmap batching
# A vmapped batch dimension becomes one more neuron dimension: sequences put it at 1,
# step tensors at 0. An unbatched sequence is expanded to the batch; an unbatched single
# value stays shared; any other step tensor is expanded to [B, *S].


def _batched_seq(t, bdim, size):
    if t is None:
        return None
    if bdim is None:
        return t.unsqueeze(1).expand(t.shape[0], size, *t.shape[1:])
    return t.movedim(bdim, 1)


def _batched_step(t, bdim, shape):
    """`shape` is [B, *S], the batched step shape."""
    if t is None:
        return None
    if bdim is None:
        return t if t.numel() == 1 else t.expand(shape)
    t = t.movedim(bdim, 0)
    if t.dim() == 1 and len(shape) > 1:  # one value per sample
        t = t.reshape(shape[0], *[1] * (len(shape) - 1))
    return t.expand(shape)


def _forward_vmap(op):
    def rule(info, in_dims, x, v0, p, th, scalars, *config):
        x = _batched_seq(x, in_dims[0], info.batch_size)
        v0, p, th = (_batched_step(t, d, x.shape[1:]) for t, d in zip((v0, p, th), in_dims[1:4]))
        s, v, h = op(x, v0, p, th, _unbatched(scalars, in_dims[4]), *config)
        return (s, v, h), (1, 0, 1 if h.dim() else None)

    return rule


def _backward_vmap(op):
    def rule(info, in_dims, x, v0, p, th, gs, gv, gh, sg, scalars, *config):
        B = info.batch_size
        x, gs, gh, sg = (_batched_seq(t, in_dims[i], B) for t, i in zip((x, gs, gh, sg), (0, 4, 6, 7)))
        step = x.shape[1:]
        v0, p, th, gv = (_batched_step(t, in_dims[i], step)
                         for t, i in zip((v0, p, th, gv), (1, 2, 3, 5)))
        gx, gv0, gp, gth = op(x, v0, p, th, gs, gv, gh, sg, _unbatched(scalars, in_dims[8]),
                              *config)
        return (gx, gv0, gp, gth), (1, 0, 0 if gp.dim() else None, 0 if gth.dim() else None)

    return rule


def _unbatched(scalars, bdim):
    if bdim is not None:
        raise ValueError("the neuron's v_reset and surrogate parameters cannot be vmapped")
    return scalars
