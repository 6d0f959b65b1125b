"""The C kernels' host side: a configuration's kernel built once (and kept at hand), its job
filled with the call's pointers and sizes, and run on OpenMP threads."""

from __future__ import annotations

import ctypes
import functools

import torch

from snnfunc._backends.c import build, skeleton
from snnfunc._kernel import ops
from snnfunc._kernel.call import DTYPES, shared
from snnfunc._kernel.surrogates import derivative_rule_for

KERNELS_IN_MEMORY = 1024  # built kernels a process keeps at hand (least recently used go)


def _stride(t):
    return 0 if t.numel() == 1 else 1


def _job(k, m, T, N, x_strides, scalars, first, strides, last):
    """The kernel's `job_t` (skeleton.py) for k states and m parameters, every field 8 bytes
    in its order, as one int64 array: T, N, the block (the kernel's), x's strides, the
    scalars' pointer, then the tensors `first` (x, th, gs, gh, sg, st[k], par[m], gst[k],
    tr[k], gtr[k]), the step strides (sst[k], spar[m], sth) and the tensors `last` (s, h,
    gx, gth, st_out[k], gst0[k], gpar[m]); a tensor None or empty is NULL; the lists of m
    padded to one entry at least."""
    vals = [T, N, 0, *x_strides, scalars.data_ptr(),
            *[0 if t is None or t.numel() == 0 else t.data_ptr() for t in first], *strides,
            *[0 if t is None or t.numel() == 0 else t.data_ptr() for t in last]]
    if len(vals) != _fields(k, m):
        raise AssertionError("a list of the kernel's job does not have its length")
    return (ctypes.c_int64 * len(vals))(*vals)


def _fields(k, m):
    return 17 + 7 * k + 3 * max(m, 1)


def _run(lib, job, backward: bool):
    rc = lib.snn_run(ctypes.addressof(job), int(backward), torch.get_num_threads())
    if rc:
        raise MemoryError("the generated neuron kernel could not allocate its buffer")


def _checked(lib, neuron):
    """`lib`, once its `job_t` is the size `_job` fills (a header and this file disagreeing
    would have the kernel read past the array)."""
    n = _fields(len(neuron.states), len(neuron.parameters))
    sizes = (ctypes.c_int64 * 3)()
    lib.snn_sizes(ctypes.byref(sizes))
    if sizes[0] != 8 * n:
        raise RuntimeError(f"the kernel's job_t takes {sizes[0]} bytes, the host fills {8 * n}")
    return lib


@functools.lru_cache(maxsize=KERNELS_IN_MEMORY)
def forward_lib(neuron, opts_text, hard, want_h, want_states, dtype, shared):
    from snnfunc._kernel.call import parse_options

    src = skeleton.forward_source(neuron, parse_options(neuron, opts_text), hard=hard,
                                  want_h=want_h, dtype=DTYPES[dtype], want_trace=want_states,
                                  shared=shared)
    return _checked(build.build(src), neuron)


@functools.lru_cache(maxsize=KERNELS_IN_MEMORY)
def backward_lib(neuron, opts_text, hard, detach, token, has_gs, has_gh, has_sg, has_gv, need,
                 dtype, has_gtr, shared):
    from snnfunc._kernel.call import parse_options

    src = skeleton.backward_source(
        neuron, parse_options(neuron, opts_text), hard=hard, detach=detach,
        surrogate_derivative=derivative_rule_for(token, has_sg), has_gs=has_gs, has_gh=has_gh,
        has_gv=has_gv, need=need, dtype=DTYPES[dtype], has_gtr=has_gtr, shared=shared)
    return _checked(build.build(src), neuron)


def forward_kernel(c: ops.ForwardCall) -> None:
    x, nrn, states, params = c.x, c.neuron, c.states, c.params
    lib = forward_lib(nrn, c.options, c.hard, c.want_h, c.want_states, x.dtype,
                      shared(params, c.th))
    k, m = len(states), len(params)
    none_k, pad = [None] * k, [None] * (m == 0)
    job = _job(k, m, x.shape[0], x[0].numel() if x.shape[0] else c.out[0].numel(),
               c.x_strides, c.scalars,
               [x, c.th, None, None, None, *states, *params, *pad, *none_k, *c.tr, *none_k],
               [*map(_stride, states), *map(_stride, params), *[0] * (m == 0), _stride(c.th)],
               [c.s, c.h if c.want_h else None, None, None, *c.out, *none_k, *[None] * max(m, 1)])
    _run(lib, job, backward=False)


def backward_kernel(c: ops.BackwardCall) -> None:
    x, nrn, states, params = c.x, c.neuron, c.states, c.params
    lib = backward_lib(nrn, c.options, c.hard, c.detach,
                       None if c.sg is not None else c.surrogate, c.gs is not None,
                       c.gh is not None, c.sg is not None, tuple(t is not None for t in c.gstates),
                       c.need, x.dtype, tuple(t is not None for t in c.gtraces),
                       shared(params, c.th))
    k, m = len(states), len(params)
    pad = [None] * (m == 0)
    job = _job(k, m, x.shape[0], x.shape[1:].numel(), c.x_strides, c.scalars,
               [x, c.th, c.gs, c.gh, c.sg, *states, *params, *pad, *c.gstates, *[None] * k,
                *c.gtraces],
               [*map(_stride, states), *map(_stride, params), *[0] * (m == 0), _stride(c.th)],
               [None, None, c.gx, c.gth, *[None] * k, *c.gst0, *c.gpar, *pad])
    _run(lib, job, backward=True)


defined_forward, defined_backward, forward_fn, backward_fn = ops.define(
    "", forward_kernel, backward_kernel, device_type="cpu")
