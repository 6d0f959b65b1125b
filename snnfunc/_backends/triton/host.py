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

_OPTIONS = dict(enable_fp_fusion=False)  # no FMA contraction: the reference rounds each op

# The launch configuration, from the dtype and N (a table, never an autotune per call). Chosen
# without a GPU to measure (none was lent when it was written), from how the kernels run: a
# program takes BLOCK neurons through every step in turn, so T does not enter; each thread
# holds 16 bytes of a row of x (one 128-bit access: 4 float32, 8 half, 2 float64 values), 4
# warps a program; where N gives fewer programs than _WAVE (two per SM of an H100, 132),
# smaller blocks (fewer warps, down to one) spread the neurons over more SMs.
_VALUES_PER_THREAD = {torch.float32: 4, torch.float16: 8, torch.bfloat16: 8, torch.float64: 2}
_WARPS = 4
_WAVE = 264


def launch_config(dtype, N) -> tuple:
    """`(BLOCK, num_warps)` of a kernel over N neurons of `dtype`."""
    lane = 32 * _VALUES_PER_THREAD[dtype]  # the neurons of one warp
    warps = _WARPS
    while warps > 1 and (N + lane * warps - 1) // (lane * warps) < _WAVE:
        warps //= 2
    return lane * warps, warps


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


def _wrap(kernel):
    """`wrap_triton(kernel)`; under Triton's interpreter (`TRITON_INTERPRET=1`, where
    `triton.jit` makes an `InterpretedFunction`) the kernel as it is, as torch 2.13's
    `wrap_triton` returns it (torch 2.11's refuses it)."""
    from triton.runtime.interpreter import InterpretedFunction

    if isinstance(kernel, InterpretedFunction):
        return kernel
    return wrap_triton(kernel)


def _launch(dtype, N):
    """The grid and launch options of a kernel over N neurons of `dtype`."""
    block, warps = launch_config(dtype, N)
    return ((max(N, 1) + block - 1) // block,), dict(BLOCK=block, num_warps=warps, **_OPTIONS)


def _shared(th, states, params):
    flags = dict(TH_SHARED=th.numel() == 1)
    flags.update({f"ST{k}_SHARED": t.numel() == 1 for k, t in enumerate(states or ())})
    flags.update({f"PAR{k}_SHARED": t.numel() == 1 for k, t in enumerate(params)})
    return flags


def forward_kernel(c: ops.ForwardCall, outputs=True) -> None:
    """Fills the call's outputs (none where `outputs` is False) and, where `c.keep`, its kept
    values."""
    x, nrn, keep = c.x, c.neuron, c.keep
    T, N = x.shape[0], x.shape[1:].numel()
    key = ("f", nrn, options_string(c.opts), c.hard, c.want_h, c.want_states, x.dtype,
           keep, c.detach if keep is not None else False, outputs)
    if key not in _kernels:
        _kernels[key] = _load(skeleton.forward_source(
            nrn, c.opts, hard=c.hard, want_h=c.want_h, dtype=DTYPES[x.dtype],
            want_trace=c.want_states, keep=keep, detach=c.detach, outputs=outputs))
    grid, launch = _launch(x.dtype, N)
    kept = [] if keep is None else [c.kept if c.kept.numel() else c.out[0]]
    _wrap(_kernels[key])[grid](
        x, c.th, c.scalars, *c.states, *c.params, c.s, c.h if c.want_h else c.s, *c.out,
        *(t if c.want_states else c.out[0] for t in c.tr), *kept, T, N, *c.x_strides,
        **_shared(c.th, c.states, c.params), **launch)


def _kept(c: ops.BackwardCall):
    """The values the forward keeps, where no forward kept them: the forward kernel once more,
    writing them and nothing else."""
    x, K = c.x, len(c.states)
    kept = torch.empty((len(c.kept_nodes), *x.shape), dtype=compute_dtype(x.dtype),
                       device=x.device)
    unused = x.new_empty(1, dtype=kept.dtype)  # the outputs' pointers: nothing written
    forward_kernel(ops.ForwardCall(
        c.neuron, c.opts, c.hard, want_h=False, want_states=False, x=x, states=c.states,
        params=c.params, th=c.th, scalars=c.scalars, s=unused, h=unused, out=[unused] * K,
        tr=[unused] * K, x_strides=c.x_strides, detach=c.detach, kept=kept,
        kept_nodes=c.kept_nodes, keep=tuple(c.need)), outputs=False)
    return kept


def backward_kernel(c: ops.BackwardCall) -> None:
    x, nrn = c.x, c.neuron
    T, N = x.shape[0], x.shape[1:].numel()
    kept = c.kept if c.kept is not None else _kept(c)
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
    grid, launch = _launch(x.dtype, N)
    _wrap(_kernels[key])[grid](
        x, c.th, c.scalars, *c.params, dummy if c.gs is None else c.gs,
        dummy if c.gh is None else c.gh, dummy if c.sg is None else c.sg,
        *(dummy if t is None else t for t in c.gstates),
        *(dummy if t is None else t for t in c.gtraces), kept if kept.numel() else dummy, c.gx,
        *(dummy if t.numel() == 0 else t for t in (*c.gst0, *c.gpar)),
        dummy if c.gth.numel() == 0 else c.gth, T, N, *c.x_strides,
        **_shared(c.th, None, c.params), **launch)


defined_forward_cuda, defined_backward_cuda, forward_fn, backward_fn = ops.define(
    "_cuda", forward_kernel, backward_kernel, device_type="cuda", triton=True, keeps=True)
