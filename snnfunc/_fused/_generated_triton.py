"""The generated kernels on CUDA: Triton sources from `_triton_codegen`, written to the kernel
cache (Triton compiles a function from its source file) and registered with
`torch.library.triton_op`, so that `torch.compile` sees the kernels themselves. Same schema,
checks and vmap rules as the CPU ops in `_generated`.

Importing this module needs Triton; running it needs a CUDA device (or Triton's interpreter).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from typing import Optional

import torch
import triton
from torch import Tensor
from torch.library import triton_op, wrap_triton

from snnfunc._fused import _cpu, _generated, _triton_codegen
from snnfunc._fused._generated import (COMPUTE, DTYPES, _check, _check_backward, _parse_options,
                                       options_string)

_BLOCK = 256
_OPTIONS = dict(enable_fp_fusion=False)  # no FMA contraction: the reference rounds each op
_kernels: dict = {}


def _load(source: str):
    digest = hashlib.sha256((source + triton.__version__).encode()).hexdigest()[:20]
    if digest in _kernels:
        return _kernels[digest]
    path = _cpu._cache_dir() / f"snnfunc_triton_{digest}.py"
    try:
        current = path.read_text() == source  # what runs is what was generated, nothing else
    except OSError:
        current = False
    if not current:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)
        _cpu.evict()
    else:
        _cpu.touch(path)
    spec = importlib.util.spec_from_file_location(f"snnfunc_triton_{digest}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _kernels[digest] = module.kernel
    return module.kernel


def _grid(N):
    return (triton.cdiv(max(N, 1), _BLOCK),)


def _shared(neuron, th, states, params):
    flags = dict(TH_SHARED=th.numel() == 1)
    flags.update({f"ST{k}_SHARED": t.numel() == 1 for k, t in enumerate(states)})
    flags.update({f"PAR{k}_SHARED": t.numel() == 1 for k, t in enumerate(params)})
    return flags


@triton_op("snnfunc::defined_forward_cuda", mutates_args=())
def defined_forward_cuda(x: Tensor, states: list[Tensor], params: list[Tensor], th: Tensor,
                         scalars: Tensor, neuron: str, options: str, hard: bool, want_h: bool,
                         want_states: bool = False) -> list[Tensor]:
    nrn = _check(neuron, x, states, params, th, scalars, "cuda")
    opts = _parse_options(nrn, options)
    x, th, scalars = x.contiguous(), th.contiguous(), scalars.contiguous()
    states, params = [t.contiguous() for t in states], [t.contiguous() for t in params]
    T, N = x.shape[0], x.shape[1:].numel()
    s = x.new_empty(x.shape)
    h = x.new_empty(x.shape if want_h else (0,))
    compute = COMPUTE.get(x.dtype, x.dtype)
    out = [x.new_empty(x.shape[1:], dtype=compute) for _ in states]
    tr = [x.new_empty(x.shape if want_states else (0,), dtype=compute) for _ in states]
    key = ("f", nrn, options_string(opts), hard, want_h, want_states, x.dtype)
    if key not in _kernels:
        _kernels[key] = _load(_triton_codegen.forward_source(
            nrn, opts, hard=hard, want_h=want_h, dtype=DTYPES[x.dtype], want_trace=want_states))
    wrap_triton(_kernels[key])[_grid(N)](
        x, th, scalars, *states, *params, s, h if want_h else s, *out,
        *(t if want_states else out[0] for t in tr), T, N,
        **_shared(nrn, th, states, params), BLOCK=_BLOCK, **_OPTIONS)
    return [s, h, *out, *tr]


@triton_op("snnfunc::defined_backward_cuda", mutates_args=())
def defined_backward_cuda(x: Tensor, states: list[Tensor], params: list[Tensor], th: Tensor,
                          gs: Optional[Tensor], gh: Optional[Tensor], sg: Optional[Tensor],
                          gstates: list[Optional[Tensor]], scalars: Tensor, neuron: str,
                          options: str, surrogate: str, hard: bool, detach: bool,
                          need: list[bool],
                          gtraces: list[Optional[Tensor]]) -> list[Tensor]:
    nrn = _check(neuron, x, states, params, th, scalars, "cuda")
    _check_backward(nrn, x, gs, gh, sg, gstates, need, gtraces, surrogate=surrogate,
                    scalars=scalars)
    gtraces = [None if t is None else t.contiguous()
               for t in (gtraces or [None] * len(states))]
    opts = _parse_options(nrn, options)
    x, th, scalars = x.contiguous(), th.contiguous(), scalars.contiguous()
    states, params = [t.contiguous() for t in states], [t.contiguous() for t in params]
    gs, gh, sg = (None if t is None else t.contiguous() for t in (gs, gh, sg))
    gstates = [None if t is None else t.contiguous() for t in gstates]
    T, N = x.shape[0], x.shape[1:].numel()
    step = x.shape[1:]
    K, M = len(states), len(params)
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    buf = torch.empty((K, *x.shape), dtype=compute, device=x.device)
    gx = x.new_empty(x.shape)
    compute = COMPUTE.get(x.dtype, x.dtype)  # step gradients: summed before the cast
    gst0 = [x.new_empty(step if need[M + 1 + k] else (0,), dtype=compute) for k in range(K)]
    gpar = [x.new_empty(step if need[k] else (0,), dtype=compute) for k in range(M)]
    gth = x.new_empty(step if need[M] else (0,), dtype=compute)
    has_gv = tuple(t is not None for t in gstates)
    has_gtr = tuple(t is not None for t in gtraces)
    key = ("b", nrn, options_string(opts), hard, detach, None if sg is not None else surrogate,
           gs is not None, gh is not None, sg is not None, has_gv, tuple(need), x.dtype, has_gtr)
    if key not in _kernels:
        _kernels[key] = _load(_triton_codegen.backward_source(
            nrn, opts, hard=hard, detach=detach,
            surrogate_derivative=_generated.derivative_rule_for(surrogate, sg is not None),
            has_gs=gs is not None,
            has_gh=gh is not None, has_gv=has_gv, need=tuple(need), dtype=DTYPES[x.dtype],
            has_gtr=has_gtr))
    dummy = gx
    wrap_triton(_kernels[key])[_grid(N)](
        x, th, scalars, *states, *params, dummy if gs is None else gs,
        dummy if gh is None else gh, dummy if sg is None else sg,
        *(dummy if t is None else t for t in gstates),
        *(dummy if t is None else t for t in gtraces), buf, gx,
        *(dummy if t.numel() == 0 else t for t in (*gst0, *gpar)),
        dummy if gth.numel() == 0 else gth, T, N, **_shared(nrn, th, states, params),
        BLOCK=_BLOCK, **_OPTIONS)
    return [gx, *gst0, *gpar, gth]


_generated.register_vmap_rules(defined_forward_cuda, defined_backward_cuda)
