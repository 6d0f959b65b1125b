"""The kernels' ops under `vmap`: a vmapped batch dimension becomes one more neuron dimension.

Sequences put it at 1, step tensors at 0, the kept values [NK, T, *S] at 2. An unbatched sequence is expanded to the batch; an
unbatched single value stays shared; any other step tensor is expanded to [B, *S]. The
scalars (v_rest, the surrogate's numbers) cannot be vmapped.
"""

from __future__ import annotations

import torch


def _batched_seq(t, bdim, size):
    if t is None:
        return None
    if bdim is None:
        return t.unsqueeze(1).expand(t.shape[0], size, *t.shape[1:])
    return t.movedim(bdim, 1)


def _batched_kept(t, bdim, size):
    if t is None:
        return None
    if bdim is None:
        return t.unsqueeze(2).expand(*t.shape[:2], size, *t.shape[2:])
    return t.movedim(bdim, 2)


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


def _unbatched(scalars, bdim):
    if bdim is not None:
        raise ValueError("the neuron's v_reset and surrogate parameters cannot be vmapped")
    return scalars


def _dims(d, n):
    return list(d) if isinstance(d, (list, tuple)) else [d] * n


def _forward_vmap(op):
    def rule(info, in_dims, x, states, params, th, scalars, *config):
        x = _batched_seq(x, in_dims[0], info.batch_size)
        step = x.shape[1:]
        states = [_batched_step(t, d, step) for t, d in zip(states, _dims(in_dims[1], len(states)))]
        params = [_batched_step(t, d, step) for t, d in zip(params, _dims(in_dims[2], len(params)))]
        th = _batched_step(th, in_dims[3], step)
        out = op(x, states, params, th, _unbatched(scalars, in_dims[4]), *config)
        k = len(states)
        return out, [1, 1 if out[1].dim() else None, *[0] * k,
                     *[1 if t.dim() > 1 else None for t in out[2 + k:2 + 2 * k]],
                     2 if out[-1].dim() > 1 else None]
    return rule


def _backward_vmap(op):
    def rule(info, in_dims, x, states, params, th, gs, gh, sg, gstates, scalars, neuron,
             options, surrogate, hard, detach, need, gtraces, kept=None):
        B = info.batch_size
        x = _batched_seq(x, in_dims[0], B)
        gs, gh, sg = (_batched_seq(t, in_dims[i], B) for t, i in ((gs, 4), (gh, 5), (sg, 6)))
        step = x.shape[1:]
        states = [_batched_step(t, d, step) for t, d in zip(states, _dims(in_dims[1], len(states)))]
        params = [_batched_step(t, d, step) for t, d in zip(params, _dims(in_dims[2], len(params)))]
        th = _batched_step(th, in_dims[3], step)
        gstates = [None if t is None else _batched_step(t, d, step)
                   for t, d in zip(gstates, _dims(in_dims[7], len(gstates)))]
        if gtraces is not None:
            gtraces = [_batched_seq(t, d, B) if t is not None else None
                       for t, d in zip(gtraces, _dims(in_dims[15], len(gtraces)))]
        kept = _batched_kept(kept, in_dims[16] if len(in_dims) > 16 else None, B)
        out = op(x, states, params, th, gs, gh, sg, gstates,
                 _unbatched(scalars, in_dims[8]), neuron, options, surrogate, hard, detach,
                 need, gtraces, kept)
        return out, [1, *[0 if t.dim() else None for t in out[1:]]]
    return rule


def register(forward_op, backward_op):
    """The batching rules of a backend's pair of ops."""
    torch.library.register_vmap(forward_op, _forward_vmap(forward_op))
    torch.library.register_vmap(backward_op, _backward_vmap(backward_op))
