"""The kernels' ops, for every backend: one schema, the argument checks, fake kernels and vmap
rules; a backend supplies the two functions that fill the outputs of a checked call.

The ops are public (`torch.ops.snnfunc.defined_forward`, `defined_backward`, and a backend's
own pair such as `defined_forward_cuda`): they check every argument before a kernel reads a
byte, so no call can read out of bounds or reinterpret memory. Sequence tensors are
`[T, *S]`; step tensors (states, parameters, the threshold) are `[*S]` or hold a single value
shared by every neuron (then nothing per neuron is materialised). Names of neurons and
surrogates are looked up in registries, never imported.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import torch
from torch import Tensor

from snnfunc._core import registry
from snnfunc._core.checks import compute_dtype
from snnfunc._kernel import vmap
from snnfunc._kernel.call import DTYPES, parse_options
from snnfunc._kernel.plan import forward_kept
from snnfunc._kernel.surrogates import scalar_count

MAX_SCALARS = 64


# --------------------------------------------------------------------------- checks


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


def check_call(neuron_name, x, states, params, th, scalars, device_type):
    """Checks the arguments every op takes; returns the registered definition."""
    neuron = registry.lookup(neuron_name)
    if not isinstance(x, Tensor) or x.dtype not in DTYPES:
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a float16, bfloat16, float32 or float64 tensor, got {got}")
    if x.dim() < 1 or x.layout != torch.strided:
        raise ValueError(f"x must be a dense tensor [T, ...], got {x.dim()}-d ({x.layout})")
    if not _device_ok(x, device_type):
        raise ValueError(f"this op runs on {device_type} tensors, x is on {x.device}")
    if len(states) != len(neuron.states):
        raise ValueError(f"states must hold {len(neuron.states)} tensors {neuron.states}, got "
                         f"{len(states)}")
    if len(params) != len(neuron.parameters):
        raise ValueError(f"params must hold {len(neuron.parameters)} tensors "
                         f"{tuple(neuron.parameters)}, got {len(params)}")
    compute = compute_dtype(x.dtype)  # states are held in it (float32 for half)
    for name, t in zip(neuron.states, states):
        _check_step(name, t, x, dtype=compute)
    for name, t in [*zip(neuron.parameters, params), ("th", th)]:
        _check_step(name, t, x)
    if (not isinstance(scalars, Tensor) or scalars.dtype != torch.float64
            or scalars.dim() != 1 or not 1 <= scalars.numel() <= MAX_SCALARS
            or scalars.layout != torch.strided
            or not (scalars.device == x.device or device_type == "cpu"
                    and scalars.device.type == "cpu")):
        raise ValueError(f"scalars must be a 1-d float64 tensor on {x.device} of v_rest and the "
                         f"surrogate's run-time parameters (1 to {MAX_SCALARS} values)")
    return neuron


def check_need(neuron, need, name="need"):
    n = len(neuron.parameters) + 1 + len(neuron.states)
    if len(need) != n or not all(isinstance(b, bool) for b in need):
        raise ValueError(f"{name} must hold {n} bools (each parameter, the threshold, then each "
                         f"state's initial value), got {need!r}")


def check_kept(kept, x, nodes):
    """The kept values a backward reads: [len(nodes), *x.shape] in the compute dtype."""
    if kept is None:
        return
    if not isinstance(kept, Tensor):
        raise TypeError(f"kept must be a tensor or None, got {type(kept).__name__}")
    c = compute_dtype(x.dtype)
    if kept.dtype != c or kept.device != x.device or kept.layout != torch.strided:
        raise ValueError(f"kept must be a dense {c} tensor on {x.device}, got {kept.dtype} on "
                         f"{kept.device} ({kept.layout})")
    shape = (len(nodes), *x.shape)
    if tuple(kept.shape) != shape:
        raise ValueError(f"kept must have shape {shape} (the {len(nodes)} values the forward "
                         f"keeps for this need, then x's shape), got {tuple(kept.shape)}")


def check_backward(neuron, x, gs, gh, sg, gstates, need, gtraces=None, *, surrogate=None,
                   scalars=None):
    """Checks the backward op's own arguments."""
    for name, t in (("gs", gs), ("gh", gh), ("sg", sg)):
        if t is not None:
            _check_seq(name, t, x)
    if len(gstates) != len(neuron.states):
        raise ValueError(f"gstates must hold {len(neuron.states)} entries, got {len(gstates)}")
    for n, t in zip(neuron.states, gstates):
        if t is not None:
            _check_step(f"gstates[{n}]", t, x, shared_ok=False, dtype=compute_dtype(x.dtype))
    gtraces = [None] * len(neuron.states) if gtraces is None else gtraces
    if len(gtraces) != len(neuron.states):
        raise ValueError(f"gtraces must hold {len(neuron.states)} entries, got {len(gtraces)}")
    for n, t in zip(neuron.states, gtraces):
        if t is not None:
            _check_seq(f"gtraces[{n}]", t, x, dtype=compute_dtype(x.dtype))
    if gs is None and gh is None and all(t is None for t in (*gstates, *gtraces)):
        raise ValueError("the backward op needs at least one of gs, gh, gstates and gtraces")
    check_need(neuron, need)
    if sg is None:  # the kernel computes g'(u) from the surrogate's token and numbers
        n = scalar_count(surrogate)
        if scalars.numel() != n:
            raise ValueError(f"scalars must hold {n} values for this surrogate (v_rest and its "
                             f"run-time parameters), got {scalars.numel()}")


# --------------------------------------------------------------------------- checked calls


def _c(t):
    return None if t is None else t.contiguous()


def x_rows(x):
    """How the kernels read x: `(x, step stride, row stride, row length)`, neuron i of step t
    at `x[t * sT + (i // C) * sR + i % C]`. x itself where its layout allows it: a contiguous
    step (any stride between steps, 0 for an input expanded over T) or a step of rows of
    contiguous values (a batch-first input); else a contiguous copy."""
    step, strides = x.shape[1:], x.stride()[1:]
    N = step.numel()
    C, k = 1, len(step)
    while k > 0 and (step[k - 1] == 1 or strides[k - 1] == C):
        C *= step[k - 1]
        k -= 1
    if k == 0 or N == 0:
        return x, (x.stride(0) if x.shape[0] > 1 else N), C, max(C, 1)
    row = expected = strides[k - 1]
    for d in range(k - 1, -1, -1):
        if step[d] == 1:
            continue
        if strides[d] != expected:
            x = x.contiguous()
            return x, N, N, max(N, 1)
        expected = strides[d] * step[d]
    return x, (x.stride(0) if x.shape[0] > 1 else N), row, C


@dataclasses.dataclass
class ForwardCall:
    """A checked call of the forward op: contiguous inputs, the outputs to fill (`s`, `h`,
    the final states `out` and their traces `tr`, states in the compute dtype, and `kept`,
    the values of the backward trace's nodes `kept_nodes` at every step, [NK, T, *S] in the
    compute dtype, where the backend keeps them and the call asked: `keep`, the `need` of
    the backward they are for; else empty and `keep` None)."""

    neuron: object
    opts: dict
    hard: bool
    want_h: bool
    want_states: bool
    x: Tensor  # as x_rows reads it, with x_strides its (step stride, row stride, row length)
    states: list
    params: list
    th: Tensor
    scalars: Tensor
    s: Tensor
    h: Tensor
    out: list
    tr: list

    x_strides: tuple = ()
    detach: bool = False
    kept: Optional[Tensor] = None
    kept_nodes: tuple = ()
    keep: Optional[tuple] = None
    options: str = ""  # the options as the op was given them (checked: `opts`)

    def outputs(self) -> list:
        return [self.s, self.h, *self.out, *self.tr, self.kept]


def _forward_outputs(x, states, want_h, want_states, kept_nodes=None):
    c = compute_dtype(x.dtype)
    return (x.new_empty(x.shape), x.new_empty(x.shape if want_h else (0,)),
            [x.new_empty(x.shape[1:], dtype=c) for _ in states],
            [x.new_empty(x.shape if want_states else (0,), dtype=c) for _ in states],
            x.new_empty((0,) if kept_nodes is None else (len(kept_nodes), *x.shape), dtype=c))


def _keep(nrn, opts, hard, detach, keep, keeps):
    """The nodes whose values the forward keeps, or None (the backend keeps none, or the
    call did not ask)."""
    if keep is None:
        return None
    check_need(nrn, keep, "keep")
    return forward_kept(nrn, opts, hard=hard, detach=detach, need=tuple(keep)) if keeps else None


def forward_call(x, states, params, th, scalars, neuron, options, hard, want_h, want_states,
                 device_type, detach=False, keep=None, keeps=False) -> ForwardCall:
    nrn = check_call(neuron, x, states, params, th, scalars, device_type)
    opts = parse_options(nrn, options)
    nodes = _keep(nrn, opts, hard, detach, keep, keeps)
    s, h, out, tr, kept = _forward_outputs(x, states, want_h, want_states, nodes)
    x, *x_strides = x_rows(x)
    return ForwardCall(nrn, opts, hard, want_h, want_states, x,
                       [t.contiguous() for t in states], [t.contiguous() for t in params],
                       th.contiguous(), scalars.contiguous(), s, h, out, tr, tuple(x_strides),
                       detach, kept, nodes or (), None if nodes is None else tuple(keep),
                       options)


@dataclasses.dataclass
class BackwardCall:
    """A checked call of the backward op: contiguous inputs, the outputs to fill (`gx`, the
    initial states' `gst0`, the parameters' `gpar` and the threshold's `gth` gradients, each
    empty where `need` says it is not wanted), and the values the forward kept (`kept`, of
    the nodes `kept_nodes`; None where the call has none: a backend that reads them makes
    them)."""

    neuron: object
    opts: dict
    hard: bool
    detach: bool
    surrogate: str
    need: tuple
    x: Tensor
    states: list
    params: list
    th: Tensor
    scalars: Tensor
    gs: Optional[Tensor]
    gh: Optional[Tensor]
    sg: Optional[Tensor]
    gstates: list
    gtraces: list
    gx: Tensor
    gst0: list
    gpar: list
    gth: Tensor
    x_strides: tuple = ()
    kept: Optional[Tensor] = None
    kept_nodes: tuple = ()
    options: str = ""  # the options as the op was given them (checked: `opts`)

    def outputs(self) -> list:
        return [self.gx, *self.gst0, *self.gpar, self.gth]


def _backward_outputs(x, n_states, n_params, need):
    c, step, M = compute_dtype(x.dtype), x.shape[1:], n_params  # summed before the cast
    return (x.new_empty(x.shape),
            [x.new_empty(step if need[M + 1 + k] else (0,), dtype=c) for k in range(n_states)],
            [x.new_empty(step if need[k] else (0,), dtype=c) for k in range(M)],
            x.new_empty(step if need[M] else (0,), dtype=c))


def backward_call(x, states, params, th, gs, gh, sg, gstates, scalars, neuron, options,
                  surrogate, hard, detach, need, gtraces, device_type, kept=None,
                  keeps=False) -> BackwardCall:
    nrn = check_call(neuron, x, states, params, th, scalars, device_type)
    check_backward(nrn, x, gs, gh, sg, gstates, need, gtraces, surrogate=surrogate,
                   scalars=scalars)
    opts = parse_options(nrn, options)
    nodes = (forward_kept(nrn, opts, hard=hard, detach=detach, need=tuple(need))
             if keeps or kept is not None else ())
    check_kept(kept, x, nodes)
    gtraces = [_c(t) for t in (gtraces or [None] * len(nrn.states))]
    gx, gst0, gpar, gth = _backward_outputs(x, len(states), len(params), need)
    x, *x_strides = x_rows(x)
    return BackwardCall(nrn, opts, hard, detach, surrogate, tuple(need), x,
                        [t.contiguous() for t in states], [t.contiguous() for t in params],
                        th.contiguous(),
                        scalars.contiguous(), _c(gs), _c(gh), _c(sg), [_c(t) for t in gstates],
                        gtraces, gx, gst0, gpar, gth, tuple(x_strides),
                        _c(kept) if keeps else None, nodes, options)


# --------------------------------------------------------------------------- the ops


def define(suffix: str, forward_kernel, backward_kernel, *, device_type: str, triton=False,
           keeps=False):
    """Registers a backend's pair of ops, `snnfunc::defined_forward<suffix>` and
    `snnfunc::defined_backward<suffix>`: the schema, checks, fake kernels and vmap rules of
    this module around `forward_kernel(ForwardCall)` and `backward_kernel(BackwardCall)`,
    which fill the call's outputs. `triton=True` registers them with
    `torch.library.triton_op`, so that `torch.compile` sees the Triton kernels they launch.

    `keeps`: the backend's backward reads the forward values its forward kept (the plan's
    `forward_kept`) rather than computing them again from x. Its forward op then returns them
    last, `[NK, T, *S]` in the compute dtype, where `keep` (the `need` of the backward to
    come) is given; its backward op reads them from `kept`, or makes them where `kept` is
    None. Where the backend keeps nothing the forward's last output is empty and a `kept`
    given to the backward is checked and not read.

    Returns `(forward op, backward op, forward function, backward function)`: the functions
    run the same checks and kernels without the dispatcher (eager calls)."""

    def forward(x: Tensor, states: list[Tensor], params: list[Tensor], th: Tensor,
                scalars: Tensor, neuron: str, options: str, hard: bool, want_h: bool,
                want_states: bool = False, detach: bool = False,
                keep: Optional[list[bool]] = None) -> list[Tensor]:
        call = forward_call(x, states, params, th, scalars, neuron, options, hard, want_h,
                            want_states, device_type, detach, keep, keeps)
        forward_kernel(call)
        return call.outputs()

    def backward(x: Tensor, states: list[Tensor], params: list[Tensor], th: Tensor,
                 gs: Optional[Tensor], gh: Optional[Tensor], sg: Optional[Tensor],
                 gstates: list[Optional[Tensor]], scalars: Tensor, neuron: str, options: str,
                 surrogate: str, hard: bool, detach: bool, need: list[bool],
                 gtraces: list[Optional[Tensor]], kept: Optional[Tensor] = None) -> list[Tensor]:
        call = backward_call(x, states, params, th, gs, gh, sg, gstates, scalars, neuron,
                             options, surrogate, hard, detach, need, gtraces, device_type, kept,
                             keeps)
        backward_kernel(call)
        return call.outputs()

    if triton:
        from torch.library import triton_op

        make = lambda name: triton_op(name, mutates_args=())  # noqa: E731
    else:
        make = lambda name: torch.library.custom_op(name, mutates_args=())  # noqa: E731
    forward_op = make(f"snnfunc::defined_forward{suffix}")(forward)
    backward_op = make(f"snnfunc::defined_backward{suffix}")(backward)

    @forward_op.register_fake
    def _(x, states, params, th, scalars, neuron, options, hard, want_h, want_states=False,
          detach=False, keep=None):
        nrn = check_call(neuron, x, states, params, th, scalars, device_type)
        nodes = _keep(nrn, parse_options(nrn, options), hard, detach, keep, keeps)
        s, h, out, tr, kept = _forward_outputs(x, states, want_h, want_states, nodes)
        return [s, h, *out, *tr, kept]

    @backward_op.register_fake
    def _(x, states, params, th, gs, gh, sg, gstates, scalars, neuron, options, surrogate, hard,
          detach, need, gtraces, kept=None):
        nrn = check_call(neuron, x, states, params, th, scalars, device_type)
        check_backward(nrn, x, gs, gh, sg, gstates, need, gtraces, surrogate=surrogate,
                       scalars=scalars)
        opts = parse_options(nrn, options)
        if kept is not None:
            check_kept(kept, x, forward_kept(nrn, opts, hard=hard, detach=detach,
                                             need=tuple(need)))
        gx, gst0, gpar, gth = _backward_outputs(x, len(states), len(params), need)
        return [gx, *gst0, *gpar, gth]

    vmap.register(forward_op, backward_op)
    return forward_op, backward_op, forward, backward
