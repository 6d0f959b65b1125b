"""The C kernels' host side: a configuration's kernel built once (and kept at hand), its job
filled with the call's pointers and sizes, and run on OpenMP threads."""

from __future__ import annotations

import array
import ctypes
import functools

import torch

from snnfunc._backends.c import build, skeleton
from snnfunc._kernel import ops
from snnfunc._kernel.call import DTYPES, shared
from snnfunc._kernel.surrogates import derivative_rule_for

KERNELS_IN_MEMORY = 1024  # built kernels a process keeps at hand (least recently used go)
PARALLEL_FROM = 16384  # values (T * N) from which a call runs on torch's threads, else on one


def threads_for(values: int) -> int:
    """The threads a kernel call over `values` neuron-steps runs on: torch's from
    `PARALLEL_FROM` on, else one (the kernel gives each thread a block at least)."""
    return torch.get_num_threads() if values >= PARALLEL_FROM else 1


def _stride(t):
    return 0 if t.numel() == 1 else 1


def _layout(k, m):
    """Where each field of the kernel's `job_t` (skeleton.py) is in the int64 array `_job`
    fills, for k states and m parameters: {name: index of its first entry}, and the length."""
    at, i = {}, 0
    for name, n in (("T", 1), ("N", 1), ("block", 1), ("sxt", 1), ("sxr", 1), ("xc", 1),
                    ("sc", 1), ("x", 1), ("th", 1), ("gs", 1), ("gh", 1), ("sg", 1), ("st", k),
                    ("par", max(m, 1)), ("gst", k), ("tr", k), ("gtr", k), ("sst", k),
                    ("spar", max(m, 1)), ("sth", 1), ("s", 1), ("h", 1), ("gx", 1), ("gth", 1),
                    ("st_out", k), ("gst0", k), ("gpar", max(m, 1))):
        at[name] = i
        i += n
    return at, i


def _job(k, m, T, N, x_strides, scalars, first, strides, last):
    """The kernel's `job_t` (skeleton.py) for k states and m parameters, every field 8 bytes
    in its order, as one int64 array (`array.array`: made from a list several times faster
    than a ctypes array): T, N, the block (the kernel's), x's strides, the
    scalars' pointer, then the tensors `first` (x, th, gs, gh, sg, st[k], par[m], gst[k],
    tr[k], gtr[k]), the step strides (sst[k], spar[m], sth) and the tensors `last` (s, h,
    gx, gth, st_out[k], gst0[k], gpar[m]); a tensor None or empty is NULL; the lists of m
    padded to one entry at least."""
    vals = [T, N, 0, *x_strides, scalars.data_ptr(),
            *[0 if t is None or t.numel() == 0 else t.data_ptr() for t in first], *strides,
            *[0 if t is None or t.numel() == 0 else t.data_ptr() for t in last]]
    if len(vals) != _fields(k, m):
        raise AssertionError("a list of the kernel's job does not have its length")
    return array.array("q", vals)


@functools.lru_cache(maxsize=None)
def _fields(k, m):
    return _layout(k, m)[1]


def _run(lib, job, backward: bool):
    rc = lib.snn_run(job.buffer_info()[0], int(backward), threads_for(job[0] * job[1]))
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


def _forward_lib(c: ops.ForwardCall):
    return forward_lib(c.neuron, c.options, c.hard, c.want_h, c.want_states, c.x.dtype,
                       shared(c.params, c.th))


def _forward_job(c: ops.ForwardCall):
    x, states, params = c.x, c.states, c.params
    k, m = len(states), len(params)
    none_k, pad = [None] * k, [None] * (m == 0)
    return _job(k, m, x.shape[0], x[0].numel() if x.shape[0] else c.out[0].numel(),
                c.x_strides, c.scalars,
                [x, c.th, None, None, None, *states, *params, *pad, *none_k, *c.tr, *none_k],
                [*map(_stride, states), *map(_stride, params), *[0] * (m == 0), _stride(c.th)],
                [c.s, c.h if c.want_h else None, None, None, *c.out, *none_k,
                 *[None] * max(m, 1)])


def forward_kernel(c: ops.ForwardCall) -> None:
    _run(_forward_lib(c), _forward_job(c), backward=False)


def _backward_lib(c: ops.BackwardCall):
    return backward_lib(c.neuron, c.options, c.hard, c.detach,
                        None if c.sg is not None else c.surrogate, c.gs is not None,
                        c.gh is not None, c.sg is not None,
                        tuple(t is not None for t in c.gstates), c.need, c.x.dtype,
                        tuple(t is not None for t in c.gtraces), shared(c.params, c.th))


def _backward_job(c: ops.BackwardCall):
    x, states, params = c.x, c.states, c.params
    k, m = len(states), len(params)
    pad = [None] * (m == 0)
    return _job(k, m, x.shape[0], x.shape[1:].numel(), c.x_strides, c.scalars,
                [x, c.th, c.gs, c.gh, c.sg, *states, *params, *pad, *c.gstates, *[None] * k,
                 *c.gtraces],
                [*map(_stride, states), *map(_stride, params), *[0] * (m == 0), _stride(c.th)],
                [None, None, c.gx, c.gth, *[None] * k, *c.gst0, *c.gpar, *pad])


def backward_kernel(c: ops.BackwardCall) -> None:
    _run(_backward_lib(c), _backward_job(c), backward=True)


# --------------------------------------------------------------------------- steppers


def _ptr(t):
    return 0 if t is None or t.numel() == 0 else t.data_ptr()


def _same(got, like) -> None:
    """Each of `got` present where `like`'s is, with its shape, dtype and device, and its
    strides (or both contiguous: the strides of dimensions of size 1 are never read)."""
    for i, (t, ref) in enumerate(zip(got, like, strict=True)):
        if ref is None and t is None:
            continue
        if (ref is None or type(t) is not torch.Tensor or t.shape != ref.shape
                or t.dtype != ref.dtype or t.device != ref.device
                or t.stride() != ref.stride() and not (t.is_contiguous() and ref.is_contiguous())):
            want = "None" if ref is None else f"{tuple(ref.shape)} {ref.dtype} {ref.stride()}"
            got_ = (f"{tuple(t.shape)} {t.dtype} {t.stride()}" if isinstance(t, torch.Tensor)
                    else repr(t))
            raise ValueError(f"a step must have the tensors of the call it was made from: "
                             f"{want}, got {got_} (argument {i})")


def forward_runner(c: ops.ForwardCall):
    """`run(x, states, params, th, s, out)`: the checked call `c`'s kernel run again on new
    tensors in the places of `c.x`, `c.states`, `c.params`, `c.th`, `c.s` and `c.out`, which
    the caller guarantees have their shapes, dtypes and strides (`forward_stepper` checks
    them; the cached eager call keys on them): the kernel found and the job filled once, the
    pointers set a call on a copy of it (calls on several threads). Holds the scalars
    (`run.holds`) and none of those tensors."""
    lib, template = _forward_lib(c), _forward_job(c)
    K, M = len(c.neuron.states), len(c.neuron.parameters)
    at, _ = _layout(K, M)
    i_x, i_s, i_th = at["x"], at["s"], at["th"]
    i_st, i_par, i_out = at["st"], at["par"], at["st_out"]

    def run(x, states, params, th, s, out):
        job = array.array("q", template)
        job[i_x], job[i_s], job[i_th] = _ptr(x), _ptr(s), _ptr(th)
        for k in range(K):
            job[i_st + k], job[i_out + k] = _ptr(states[k]), _ptr(out[k])
        for k in range(M):
            job[i_par + k] = _ptr(params[k])
        _run(lib, job, False)
    run.holds = c.scalars
    return run


def backward_runner(c: ops.BackwardCall):
    """`run(x, states, params, th, gs, gstates, gx, gst0, gpar, gth)`: the checked call `c`'s
    kernel run again on new tensors in the places of the same fields of `c`, each present
    where it is present in `c` and of the same shape, dtype and strides, which the caller
    guarantees (`backward_stepper` checks them); a gradient not asked for may be None. Holds
    the scalars (`run.holds`)."""
    lib, template = _backward_lib(c), _backward_job(c)
    K, M = len(c.neuron.states), len(c.neuron.parameters)
    at, _ = _layout(K, M)
    i_x, i_gs, i_th, i_gx, i_gth = at["x"], at["gs"], at["th"], at["gx"], at["gth"]
    i_st, i_gst, i_gst0, i_par, i_gpar = at["st"], at["gst"], at["gst0"], at["par"], at["gpar"]

    def run(x, states, params, th, gs, gstates, gx, gst0, gpar, gth):
        job = array.array("q", template)
        job[i_x], job[i_gs], job[i_th] = _ptr(x), _ptr(gs), _ptr(th)
        job[i_gx], job[i_gth] = _ptr(gx), _ptr(gth)
        for k in range(K):
            job[i_st + k], job[i_gst + k] = _ptr(states[k]), _ptr(gstates[k])
            job[i_gst0 + k] = _ptr(gst0[k])
        for k in range(M):
            job[i_par + k], job[i_gpar + k] = _ptr(params[k]), _ptr(gpar[k])
        _run(lib, job, True)
    run.holds = c.scalars
    return run


def forward_stepper(c: ops.ForwardCall):
    """`step(x, states, s, out)`: `forward_runner` on `c`'s parameters and threshold, each
    tensor checked against `c`'s."""
    run = forward_runner(c)
    like = [c.x, c.s, *c.states, *c.out]

    def step(x, states, s, out):
        _same([x, s, *states, *out], like)
        run(x, states, c.params, c.th, s, out)
    step.call = c
    return step


def backward_stepper(c: ops.BackwardCall):
    """`step(x, states, gs, gstates, gx, gst0, gpar, gth)`: `backward_runner` on `c`'s
    parameters and threshold, each tensor checked against `c`'s."""
    run = backward_runner(c)
    like = [c.x, c.gs, *c.states, *c.gstates, c.gx, *c.gst0, *c.gpar, c.gth]

    def step(x, states, gs, gstates, gx, gst0, gpar, gth):
        _same([x, gs, *states, *gstates, gx, *gst0, *gpar, gth], like)
        run(x, states, c.params, c.th, gs, gstates, gx, gst0, gpar, gth)
    step.call = c
    return step


defined_forward, defined_backward, forward_fn, backward_fn = ops.define(
    "", forward_kernel, backward_kernel, device_type="cpu")
