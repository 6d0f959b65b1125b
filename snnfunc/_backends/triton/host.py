"""The Triton kernels' host side: a configuration's source written to the kernel cache
(Triton compiles a function from its source file), loaded once, and launched through
`torch.library.wrap_triton` from ops registered with `torch.library.triton_op`, so that
`torch.compile` sees the kernels themselves.

Registering the ops needs nothing but torch; Triton is imported on the first kernel built,
and running one needs a CUDA device (or Triton's interpreter, `TRITON_INTERPRET=1`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

import torch
from torch.library import wrap_triton

from snnfunc._backends.triton import skeleton
from snnfunc._core.checks import compute_dtype
from snnfunc._kernel import cache, ops
from snnfunc._kernel.call import DTYPES, options_string
from snnfunc._kernel.surrogates import derivative_rule_for

_BLOCK = 256
_OPTIONS = dict(enable_fp_fusion=False)  # no FMA contraction: the reference rounds each op
_kernels: dict = {}


def _load(source: str):
    import triton

    digest = hashlib.sha256((source + triton.__version__).encode()).hexdigest()[:20]
    if digest in _kernels:
        return _kernels[digest]
    path = cache.directory() / f"snnfunc_triton_{digest}.py"
    try:
        current = path.read_text() == source  # what runs is what was generated, nothing else
    except OSError:
        current = False
    if not current:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)
        cache.evict()
    else:
        cache.touch(path)
    spec = importlib.util.spec_from_file_location(f"snnfunc_triton_{digest}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _kernels[digest] = module.kernel
    return module.kernel


def _grid(N):
    return ((max(N, 1) + _BLOCK - 1) // _BLOCK,)


def _shared(th, states, params):
    flags = dict(TH_SHARED=th.numel() == 1)
    flags.update({f"ST{k}_SHARED": t.numel() == 1 for k, t in enumerate(states)})
    flags.update({f"PAR{k}_SHARED": t.numel() == 1 for k, t in enumerate(params)})
    return flags


def forward_kernel(c: ops.ForwardCall) -> None:
    x, nrn = c.x, c.neuron
    T, N = x.shape[0], x.shape[1:].numel()
    key = ("f", nrn, options_string(c.opts), c.hard, c.want_h, c.want_states, x.dtype)
    if key not in _kernels:
        _kernels[key] = _load(skeleton.forward_source(
            nrn, c.opts, hard=c.hard, want_h=c.want_h, dtype=DTYPES[x.dtype],
            want_trace=c.want_states))
    wrap_triton(_kernels[key])[_grid(N)](
        x, c.th, c.scalars, *c.states, *c.params, c.s, c.h if c.want_h else c.s, *c.out,
        *(t if c.want_states else c.out[0] for t in c.tr), T, N, *c.x_strides,
        **_shared(c.th, c.states, c.params), BLOCK=_BLOCK, **_OPTIONS)


def backward_kernel(c: ops.BackwardCall) -> None:
    x, nrn = c.x, c.neuron
    T, N = x.shape[0], x.shape[1:].numel()
    K = len(c.states)
    buf = torch.empty((K, *x.shape), dtype=compute_dtype(x.dtype), device=x.device)
    has_gv = tuple(t is not None for t in c.gstates)
    has_gtr = tuple(t is not None for t in c.gtraces)
    key = ("b", nrn, options_string(c.opts), c.hard, c.detach,
           None if c.sg is not None else c.surrogate, c.gs is not None, c.gh is not None,
           c.sg is not None, has_gv, c.need, x.dtype, has_gtr)
    if key not in _kernels:
        _kernels[key] = _load(skeleton.backward_source(
            nrn, c.opts, hard=c.hard, detach=c.detach,
            surrogate_derivative=derivative_rule_for(c.surrogate, c.sg is not None),
            has_gs=c.gs is not None, has_gh=c.gh is not None, has_gv=has_gv, need=c.need,
            dtype=DTYPES[x.dtype], has_gtr=has_gtr))
    dummy = c.gx
    wrap_triton(_kernels[key])[_grid(N)](
        x, c.th, c.scalars, *c.states, *c.params, dummy if c.gs is None else c.gs,
        dummy if c.gh is None else c.gh, dummy if c.sg is None else c.sg,
        *(dummy if t is None else t for t in c.gstates),
        *(dummy if t is None else t for t in c.gtraces), buf, c.gx,
        *(dummy if t.numel() == 0 else t for t in (*c.gst0, *c.gpar)),
        dummy if c.gth.numel() == 0 else c.gth, T, N, *c.x_strides,
        **_shared(c.th, c.states, c.params), BLOCK=_BLOCK, **_OPTIONS)


defined_forward_cuda, defined_backward_cuda, forward_fn, backward_fn = ops.define(
    "_cuda", forward_kernel, backward_kernel, device_type="cuda", triton=True)
