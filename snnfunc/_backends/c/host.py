"""The C kernels' host side: a configuration's kernel built once (and kept at hand), its job
filled with the call's pointers and sizes, and run on OpenMP threads."""

from __future__ import annotations

import ctypes
import functools

import torch

from snnfunc._backends.c import build, skeleton
from snnfunc._kernel import ops
from snnfunc._kernel.call import DTYPES, options_string, shared
from snnfunc._kernel.surrogates import derivative_rule_for

KERNELS_IN_MEMORY = 1024  # built kernels a process keeps at hand (least recently used go)


@functools.lru_cache(maxsize=None)
def _job_type(k: int, m: int):
    P, I = ctypes.c_void_p, ctypes.c_int64
    m = max(m, 1)

    class Job(ctypes.Structure):
        _fields_ = [("T", I), ("N", I), ("block", I), ("sxt", I), ("sxr", I), ("xc", I),
                    ("sc", P), ("x", P),
                    ("th", P), ("gs", P), ("gh", P), ("sg", P), ("st", P * k), ("par", P * m),
                    ("gst", P * k), ("tr", P * k), ("gtr", P * k), ("sst", I * k),
                    ("spar", I * m), ("sth", I), ("s", P), ("h", P), ("gx", P), ("gth", P),
                    ("st_out", P * k), ("gst0", P * k), ("gpar", P * m)]

    return Job


def _ptr(t):
    return None if t is None or t.numel() == 0 else t.data_ptr()


def _stride(t):
    return 0 if t.numel() == 1 else 1


def _job(neuron, job_fields: dict):
    K, M = len(neuron.states), len(neuron.parameters)
    job = _job_type(K, M)()
    for name, value in job_fields.items():
        if isinstance(value, list):
            arr = getattr(job, name)
            for i, v in enumerate(value):
                arr[i] = v
        else:
            setattr(job, name, value)
    return job


def _launch(lib, job, backward: bool):
    rc = lib.snn_run(ctypes.addressof(job), int(backward), torch.get_num_threads())
    if rc:
        raise MemoryError("the generated neuron kernel could not allocate its buffer")


def _run(lib, neuron, job_fields: dict, backward: bool):
    _launch(lib, _job(neuron, job_fields), backward)


@functools.lru_cache(maxsize=KERNELS_IN_MEMORY)
def forward_lib(neuron, opts_text, hard, want_h, want_states, dtype, shared):
    from snnfunc._kernel.call import parse_options

    src = skeleton.forward_source(neuron, parse_options(neuron, opts_text), hard=hard,
                                  want_h=want_h, dtype=DTYPES[dtype], want_trace=want_states,
                                  shared=shared)
    return build.build(src)


@functools.lru_cache(maxsize=KERNELS_IN_MEMORY)
def backward_lib(neuron, opts_text, hard, detach, token, has_gs, has_gh, has_sg, has_gv, need,
                 dtype, has_gtr, shared):
    from snnfunc._kernel.call import parse_options

    src = skeleton.backward_source(
        neuron, parse_options(neuron, opts_text), hard=hard, detach=detach,
        surrogate_derivative=derivative_rule_for(token, has_sg), has_gs=has_gs, has_gh=has_gh,
        has_gv=has_gv, need=need, dtype=DTYPES[dtype], has_gtr=has_gtr, shared=shared)
    return build.build(src)


def _forward_lib(c: ops.ForwardCall):
    return forward_lib(c.neuron, options_string(c.opts), c.hard, c.want_h, c.want_states,
                       c.x.dtype, shared(c.params, c.th))


def _forward_fields(c: ops.ForwardCall) -> dict:
    x = c.x
    sxt, sxr, xc = c.x_strides
    return dict(T=x.shape[0], N=x[0].numel() if x.shape[0] else c.out[0].numel(),
                sxt=sxt, sxr=sxr, xc=xc, sc=c.scalars.data_ptr(), x=_ptr(x), th=_ptr(c.th),
                st=[_ptr(t) for t in c.states], sst=[_stride(t) for t in c.states],
                par=[_ptr(t) for t in c.params], spar=[_stride(t) for t in c.params],
                sth=_stride(c.th), s=_ptr(c.s), h=_ptr(c.h) if c.want_h else None,
                st_out=[_ptr(t) for t in c.out], tr=[_ptr(t) for t in c.tr])


def forward_kernel(c: ops.ForwardCall) -> None:
    _run(_forward_lib(c), c.neuron, _forward_fields(c), backward=False)


def _backward_lib(c: ops.BackwardCall):
    return backward_lib(c.neuron, options_string(c.opts), c.hard, c.detach,
                        None if c.sg is not None else c.surrogate, c.gs is not None,
                        c.gh is not None, c.sg is not None,
                        tuple(t is not None for t in c.gstates), c.need, c.x.dtype,
                        tuple(t is not None for t in c.gtraces), shared(c.params, c.th))


def _backward_fields(c: ops.BackwardCall) -> dict:
    x = c.x
    sxt, sxr, xc = c.x_strides
    return dict(T=x.shape[0], N=x.shape[1:].numel(), sxt=sxt, sxr=sxr, xc=xc,
                sc=c.scalars.data_ptr(),
                x=_ptr(x), th=_ptr(c.th), gs=_ptr(c.gs), gh=_ptr(c.gh), sg=_ptr(c.sg),
                st=[_ptr(t) for t in c.states], sst=[_stride(t) for t in c.states],
                par=[_ptr(t) for t in c.params], spar=[_stride(t) for t in c.params],
                sth=_stride(c.th), gst=[_ptr(t) for t in c.gstates],
                gtr=[_ptr(t) for t in c.gtraces], gx=_ptr(c.gx), gth=_ptr(c.gth),
                gst0=[_ptr(t) for t in c.gst0], gpar=[_ptr(t) for t in c.gpar])


def backward_kernel(c: ops.BackwardCall) -> None:
    _run(_backward_lib(c), c.neuron, _backward_fields(c), backward=True)


# --------------------------------------------------------------------------- steppers


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


def forward_stepper(c: ops.ForwardCall):
    """`step(x, states, s, out)`: the checked call `c`'s kernel run again on new tensors in
    the places of `c.x`, `c.states`, `c.s` and `c.out`, each of the same shape, dtype and
    strides (checked): the kernel found and the job filled once, four pointers set a step."""
    lib, job, K = _forward_lib(c), _job(c.neuron, _forward_fields(c)), len(c.neuron.states)
    like = [c.x, c.s, *c.states, *c.out]

    def step(x, states, s, out):
        _same([x, s, *states, *out], like)
        job.x, job.s = _ptr(x), _ptr(s)
        for k in range(K):
            job.st[k], job.st_out[k] = _ptr(states[k]), _ptr(out[k])
        _launch(lib, job, False)
    step.call = c  # the job points into its tensors (parameters, threshold, scalars)
    return step


def backward_stepper(c: ops.BackwardCall):
    """`step(x, states, gs, gstates, gx, gst0, gpar, gth)`: the checked call `c`'s kernel run
    again on new tensors in the places of the same fields of `c`, each present where it is
    present in `c` and of the same shape, dtype and strides (checked)."""
    lib, job = _backward_lib(c), _job(c.neuron, _backward_fields(c))
    K, M = len(c.neuron.states), len(c.neuron.parameters)
    like = [c.x, c.gs, *c.states, *c.gstates, c.gx, *c.gst0, *c.gpar, c.gth]

    def step(x, states, gs, gstates, gx, gst0, gpar, gth):
        _same([x, gs, *states, *gstates, gx, *gst0, *gpar, gth], like)
        job.x, job.gs, job.gx, job.gth = _ptr(x), _ptr(gs), _ptr(gx), _ptr(gth)
        for k in range(K):
            job.st[k], job.gst[k], job.gst0[k] = _ptr(states[k]), _ptr(gstates[k]), _ptr(gst0[k])
        for k in range(M):
            job.gpar[k] = _ptr(gpar[k])
        _launch(lib, job, True)
    step.call = c  # the job points into its tensors (parameters, threshold, scalars)
    return step


defined_forward, defined_backward, forward_fn, backward_fn = ops.define(
    "", forward_kernel, backward_kernel, device_type="cpu")
