r"""The recurrent layer's time loop as one operator, for neurons made from a definition.

The neuron's arguments are prepared once (`Neuron.prepare`: parameters as tensors, recorded
by autograd, so PLIF's parametrization differentiates as usual), then its call record reaches
the kernels through the backend table, like a neuron call: on every device with a backend.

- `snnfunc::rnn_forward`, per step: $I_t = X_t + S_{t-1} W^\top + b$ (the operations of
  `x + F.linear(s, W, b)`, so the same values bit for bit), then the neuron's forward kernel
  on that one step. With an input weight it takes the input $x$ and makes $X = x W_{in}^\top$
  itself (`steps.input_current`), then computes $I$ in its place. It returns the spikes,
  the inputs $I$ and the neuron's states after every
  `steps.CHUNK`-th step and after the last (the final state last).
- `snnfunc::rnn_backward`, per chunk of steps in reverse: the chunk's states again from the
  state kept before it (one forward kernel call), then per step in reverse the spikes'
  cotangent plus the recurrent path $g_{I_{t+1}} W$ and the neuron's one-step VJP kernel
  (the loops: `steps`). It returns $g_I$ (= $g_X$), the
  initial states' cotangents, the neuron's parameter and threshold gradients per neuron, and
  the weight's gradient $\sum_t g_{I_{t+1}}^\top S_t$ from the spikes each chunk computes
  again (the forward keeps no spikes: one `[T, ...]` tensor less to save), per group of
  rows, so that `vmap` gives it per sample. The bias's, the initial spikes', the input's and
  the input weight's gradients come from $g_I$ in torch, outside the operator.

Both operators have fake kernels (one node to `torch.compile`, whatever T) and vmap rules: a
vmapped dimension becomes one more batch dimension, unless the weight is vmapped too (an
ensemble), which runs the operator once per member.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from snnfunc._core.checks import compute_dtype
from snnfunc import memory
from snnfunc._kernel import dispatch
from snnfunc._kernel.call import CallRecord, step_tensor
from snnfunc.definition import FIRE
from snnfunc.functional import definition_of
from snnfunc.recurrent import steps


class Prepared(NamedTuple):
    """A recurrent layer's neuron, ready for the kernels: its call record, its parameters and
    threshold as step tensors (recorded by autograd), and its scalars."""

    record: CallRecord
    params: list
    th: Tensor
    scalars: Tensor


def prepare(neuron, x_seq, neuron_kwargs):
    """`(Prepared, None)` where the operator applies, else `(None, why not)`."""
    found = definition_of(neuron)
    if found is None:
        return None, ("the neuron is not made from a definition (snnfunc's neuron functions "
                      "and snnfunc.neuron are)")
    nrn, defaults, adapt = found
    kw = {**defaults, **neuron_kwargs}
    if adapt is not None:
        kw = adapt(kw)
    fire = {name: kw.pop(name) for name in FIRE if name in kw}
    p = nrn.prepare(x_seq, None, **fire, **kw)
    reason = dispatch.why_not(x_seq, p.surrogate, nrn)
    if reason is None:
        reason = dispatch.surrogate_reason(p.surrogate) or None
    if reason is not None:
        return None, reason
    record, scalars = dispatch.record(nrn, x_seq, p.opts, v_reset=p.v_reset,
                                      surrogate=p.surrogate, detach_reset=p.detach_reset)
    params = [step_tensor(p.params[n], x_seq) for n in nrn.parameters]
    return Prepared(record, params, step_tensor(p.v_threshold, x_seq), scalars), None


# --------------------------------------------------------------------------- the operators


@torch.library.custom_op("snnfunc::rnn_forward", mutates_args=())
def rnn_forward(x_seq: Tensor, state: list[Tensor], s0: Optional[Tensor], weight: Tensor,
                bias: Optional[Tensor], params: list[Tensor], th: Tensor, scalars: Tensor,
                neuron: str, options: str, hard: bool, input_weight: Optional[Tensor],
                sparse_input: bool, chunk: int,
                sparse_recurrent: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Spikes `[T, ...]`, the inputs $I$ (saved for the backward) and the kept states (one
    `[checkpoints(T, chunk), ...]` per state variable: after every `chunk`-th step and the
    last; the layer passes `steps.CHUNK`). No argument has a default: a compiled graph names
    every one, so that Inductor's cache, whose key is the graph's text and not this operator's
    fake kernel, never takes a graph compiled by another version for this one. With
    `input_weight` `[N, M]`, `x_seq` is the input `[T, ..., M]` and $X$ its product
    (`steps.input_current`), computed here: $I$ takes its place."""
    _check_weights(x_seq, weight, input_weight)
    _check_step_shapes(x_seq, state, s0, weight, bias)
    _check_chunk(chunk)
    with torch.autocast(x_seq.device.type, enabled=False):  # the inputs' dtypes, as the fake's
        return tuple(steps.forward(x_seq, state, s0, weight, bias, params, th, scalars, neuron,
                                   options, hard, input_weight, sparse_input, chunk,
                                   sparse_recurrent))


def _check_chunk(chunk):
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int (steps between kept states), got "
                         f"{chunk!r}")


def _check_weights(x_seq, weight, input_weight):
    N = weight.shape[0] if weight.dim() == 2 else -1
    if weight.dim() != 2 or weight.shape[1] != N:
        raise ValueError(f"rnn_forward: weight must be [N, N], got {tuple(weight.shape)}")
    M = x_seq.shape[-1] if x_seq.dim() >= 2 else -1
    if input_weight is None:
        if M != N:
            raise ValueError(f"rnn_forward: x_seq must be [T, ..., {N}] for weight "
                             f"{tuple(weight.shape)}, got {tuple(x_seq.shape)}")
    elif input_weight.dim() != 2 or tuple(input_weight.shape) != (N, M):
        raise ValueError(f"rnn_forward: input_weight must be [N, M] = [{N}, {M}] (weight's N, "
                         f"x_seq's M), got {tuple(input_weight.shape)}")
    elif input_weight.dtype != x_seq.dtype or input_weight.device != x_seq.device:
        raise ValueError(f"rnn_forward: input_weight must have x_seq's dtype and device "
                         f"({x_seq.dtype}, {x_seq.device}), got {input_weight.dtype}, "
                         f"{input_weight.device}")


def _check_step_shapes(x_seq, state, s0, weight, bias):
    """The state's parts and s0 one step of I `[..., N]`, bias `[N]` (before any work)."""
    step = (*x_seq.shape[1:-1], weight.shape[0])
    for k, p in enumerate(state):
        if tuple(p.shape) != step:
            raise ValueError(f"rnn_forward: state[{k}] must have one step's shape {step}, got "
                             f"{tuple(p.shape)}")
    if s0 is not None and tuple(s0.shape) != step:
        raise ValueError(f"rnn_forward: s0 must have one step's shape {step}, got "
                         f"{tuple(s0.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"rnn_forward: bias must be [{weight.shape[0]}], got "
                         f"{tuple(bias.shape)}")


@rnn_forward.register_fake
def _(x_seq, state, s0, weight, bias, params, th, scalars, neuron, options, hard,
      input_weight, sparse_input, chunk, sparse_recurrent):
    _check_weights(x_seq, weight, input_weight)
    _check_step_shapes(x_seq, state, s0, weight, bias)
    _check_chunk(chunk)
    shape = (*x_seq.shape[:-1], weight.shape[0])
    C, step = steps.checkpoints(shape[0], chunk), shape[1:]
    return (x_seq.new_empty(shape), x_seq.new_empty(shape),
            [x_seq.new_empty((C, *step), dtype=p.dtype) for p in state])


@torch.library.custom_op("snnfunc::rnn_backward", mutates_args=())
def rnn_backward(I: Tensor, state: list[Tensor], states: list[Tensor], weight: Tensor,
                 params: list[Tensor], th: Tensor, scalars: Tensor, g_spikes: Tensor,
                 g_states: list[Optional[Tensor]], neuron: str, options: str, hard: bool,
                 surrogate: str, detach_reset: bool, detach_recurrent: bool,
                 need: list[bool], want_w: bool, groups: int, chunk: int) -> list[Tensor]:
    """`[g_I, *g_state0, *g_params, g_th, g_w]`: see `steps.backward`; `chunk` the forward's
    (no default either: see `rnn_forward`)."""
    _check_groups(I, groups)
    _check_kept(I, states, chunk)
    with torch.autocast(I.device.type, enabled=False):
        return steps.backward(I, state, states, weight, params, th, scalars, g_spikes, g_states,
                              neuron, options, hard, surrogate, detach_reset, detach_recurrent,
                              need, want_w, groups, chunk)


def _check_groups(I, groups):
    rows = math.prod(I.shape[1:-1])
    if groups < 1 or rows % groups:
        raise ValueError(f"rnn_backward: groups must be at least 1 and divide the rows of a "
                         f"step of I [T, ..., N] ({rows} rows); got {groups}")


def _check_kept(I, states, chunk):
    _check_chunk(chunk)
    C = steps.checkpoints(I.shape[0], chunk)
    if any(k.shape[0] != C for k in states):
        raise ValueError(f"rnn_backward: states must hold {C} kept states each (T = "
                         f"{I.shape[0]}, chunk = {chunk}: the forward's), got "
                         f"{[k.shape[0] for k in states]}")


@rnn_backward.register_fake
def _(I, state, states, weight, params, th, scalars, g_spikes, g_states, neuron, options, hard,
      surrogate, detach_reset, detach_recurrent, need, want_w, groups, chunk):
    _check_groups(I, groups)
    _check_kept(I, states, chunk)
    c = state[0].dtype  # the compute dtype the kernels sum gradients in
    step, N = I.shape[1:], I.shape[-1]
    return [torch.empty_like(I), *(torch.empty_like(p) for p in state),
            *(I.new_empty(step if flag else (0,), dtype=c) for flag in need),
            I.new_empty((groups, N, N) if want_w else (0,), dtype=c)]


# --------------------------------------------------------------------------- vmap rules


def _seq(t, d, V):
    if t is None:
        return None
    return t.unsqueeze(1).expand(t.shape[0], V, *t.shape[1:]) if d is None else t.movedim(d, 1)


def _step(t, d, shape):
    """A step tensor with the vmapped dimension first: `shape` is [V, *S]."""
    if t is None:
        return None
    if d is None:
        return t if t.dim() == 0 else t.expand(shape)
    t = t.movedim(d, 0)
    if t.dim() == 1 and len(shape) > 1:  # one value per member
        t = t.reshape(shape[0], *[1] * (len(shape) - 1))
    return t.expand(shape)


def _dims(d, n):
    return list(d) if isinstance(d, (list, tuple)) else [d] * n


def _per_member(op, info, in_dims, args):
    """The operator once per vmapped member (a vmapped weight: an ensemble), stacked."""
    outs = []
    for v in range(info.batch_size):
        def pick(a, d):
            if isinstance(a, (list, tuple)):
                return [pick(x, e) for x, e in zip(a, _dims(d, len(a)))]
            return a if d is None or a is None else a.select(d, v)
        outs.append(op(*(pick(a, d) for a, d in zip(args, in_dims))))
    first = outs[0]

    def stack(k):
        if isinstance(first[k], (list, tuple)):
            return [torch.stack([o[k][j] for o in outs]) for j in range(len(first[k]))]
        return torch.stack([o[k] for o in outs])
    return [stack(k) for k in range(len(first))]


@rnn_forward.register_vmap
def _(info, in_dims, x_seq, state, s0, weight, bias, params, th, scalars, neuron, options, hard,
      input_weight, sparse_input, chunk, sparse_recurrent):
    args = (x_seq, state, s0, weight, bias, params, th, scalars, neuron, options, hard,
            input_weight, sparse_input, chunk, sparse_recurrent)
    if any(in_dims[k] is not None for k in (3, 4, 7, 11)):  # weights, bias, scalars
        out = _per_member(rnn_forward, info, in_dims, args)
        return tuple(out), (0, 0, [0] * len(state))
    V = info.batch_size
    x = _seq(x_seq, in_dims[0], V)
    shape = (*x.shape[1:-1], weight.shape[0])
    state = [_step(p, d, shape) for p, d in zip(state, _dims(in_dims[1], len(state)))]
    s0 = _step(s0, in_dims[2], shape)
    params = [_step(p, d, shape) for p, d in zip(params, _dims(in_dims[5], len(params)))]
    th = _step(th, in_dims[6], shape)
    spikes, I, states = rnn_forward(x, state, s0, weight, bias, params, th, scalars, neuron,
                                    options, hard, input_weight, sparse_input, chunk,
                                    sparse_recurrent)
    return (spikes, I, states), (1, 1, [1] * len(states))


@rnn_backward.register_vmap
def _(info, in_dims, I, state, states, weight, params, th, scalars, g_spikes, g_states, neuron,
      options, hard, surrogate, detach_reset, detach_recurrent, need, want_w, groups, chunk):
    args = (I, state, states, weight, params, th, scalars, g_spikes, g_states, neuron, options,
            hard, surrogate, detach_reset, detach_recurrent, need, want_w, groups, chunk)
    n = len(state)
    if in_dims[3] is not None or in_dims[6] is not None:
        out = _per_member(rnn_backward, info, in_dims, args)
        return out, [0 if o.dim() else None for o in out]
    V = info.batch_size
    I = _seq(I, in_dims[0], V)
    shape = I.shape[1:]
    state = [_step(p, d, shape) for p, d in zip(state, _dims(in_dims[1], n))]
    states = [_seq(p, d, V) for p, d in zip(states, _dims(in_dims[2], n))]
    params = [_step(p, d, shape) for p, d in zip(params, _dims(in_dims[4], len(params)))]
    th = _step(th, in_dims[5], shape)
    g_spikes = _seq(g_spikes, in_dims[7], V)
    g_states = [_seq(g, d, V) for g, d in zip(g_states, _dims(in_dims[8], n))]
    # the V members become V times as many groups of rows: [V * groups, N, N], member first
    out = rnn_backward(I, state, states, weight, params, th, scalars, g_spikes, g_states,
                       neuron, options, hard, surrogate, detach_reset, detach_recurrent, need,
                       want_w, V * groups, chunk)
    if want_w:
        out[-1] = out[-1].reshape(V, groups, *out[-1].shape[1:])
    return out, [1, *[0] * n, *[0 if o.dim() else None for o in out[1 + n:-1]],
                 0 if want_w else None]


# --------------------------------------------------------------------------- autograd


@dataclasses.dataclass(frozen=True)
class Layout:
    """The non-tensor part of one recurrent call (constants to torch.compile)."""

    record: CallRecord
    detach_recurrent: bool
    n_states: int
    has_s0: bool
    has_bias: bool
    has_input: bool = False  # an input weight: x_seq is the input, X its product
    sparse_input: bool = False
    chunk: int = steps.CHUNK  # steps between kept states (in the graph: see rnn_forward)
    sparse_recurrent: bool = False  # S_{t-1} W^T as snnfunc.sparse.linear computes it


def _reduced(grad, like):
    """A gradient per neuron (in the compute dtype) summed to `like`'s shape and dtype."""
    if grad.shape != like.shape:
        grad = grad.sum() if like.numel() == 1 else grad.sum_to_size(like.shape)
        grad = grad.reshape(like.shape)
    return grad.to(like.dtype)


def _split(layout: Layout, rest):
    n = layout.n_states
    state, rest = list(rest[:n]), list(rest[n:])
    s0 = rest.pop(0) if layout.has_s0 else None
    bias = rest.pop(0) if layout.has_bias else None
    w_in = rest.pop(0) if layout.has_input else None
    th, scalars, params = rest[0], rest[1], rest[2:]
    return state, s0, bias, w_in, th, scalars, params


class RNN(torch.autograd.Function):
    """The operators tied for autograd, under `torch.func` transforms too. Tensors travel flat:
    `x_seq, weight, *state, [s0], [bias], [input_weight], th, scalars, *params`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(layout: Layout, x_seq, weight, *rest):
        state, s0, bias, w_in, th, scalars, params = _split(layout, rest)
        r = layout.record
        spikes, I, states = rnn_forward(x_seq, state, s0, weight, bias, params, th, scalars,
                                        r.neuron, r.options, r.hard, w_in, layout.sparse_input,
                                        layout.chunk, layout.sparse_recurrent)
        memory.register_spikes(spikes)  # saved as bits under packed_spikes(), as fc(spikes) is
        return (spikes, I, *states)

    @staticmethod
    def setup_context(ctx, inputs, output):
        layout, x_seq, weight, *rest = inputs
        ctx.layout = layout
        _, I, *states = output  # not the spikes: the backward computes them again from I
        n = layout.n_states
        w_in_at = 3 + n + layout.has_s0 + layout.has_bias  # (layout, x_seq, weight, *rest)
        # the input, for the input weight's gradient (where it has one)
        x = x_seq if layout.has_input and ctx.needs_input_grad[w_in_at] else None
        ctx.save_for_backward(x, weight, *rest, I, *states)
        ctx.mark_non_differentiable(I)  # saved for the backward
        ctx.set_materialize_grads(False)  # no [T, ...] of zeros for the unused state outputs

    @staticmethod
    def backward(ctx, g_spikes, g_I, *g_states):
        layout, r = ctx.layout, ctx.layout.record
        n = layout.n_states
        x, weight, *saved = ctx.saved_tensors
        k = len(saved) - 1 - n
        state, s0, bias, w_in, th, scalars, params = _split(layout, saved[:k])
        I, states = saved[k], saved[k + 1:]
        needs = ctx.needs_input_grad  # layout, x_seq, weight, *rest
        n_before = 3 + n + layout.has_s0 + layout.has_bias + layout.has_input
        need = [bool(f) for f in (*needs[n_before + 2:], needs[n_before])]  # params, th
        if g_spikes is None:
            g_spikes = torch.zeros_like(I)  # the spikes' shape and dtype
        args = (I, state, list(states), weight, params, th, scalars, g_spikes, list(g_states),
                r.neuron, r.options, r.hard, r.surrogate, r.detach, layout.detach_recurrent,
                need, bool(needs[2]), 1, layout.chunk)
        if _reusable(I):  # a plain backward: g_I over I, which nothing else holds
            with torch.profiler.record_function("snnfunc::rnn_backward"):  # named in profiles
                grads = steps.backward(*args, reuse=True)
        elif torch.compiler.is_compiling() or not torch.is_grad_enabled():
            grads = rnn_backward(*args)
        else:  # through a Function, so that torch.func transforms see through it
            grads = RNNBackward.apply(*args)
        g_I, g_state0 = grads[0], grads[1:1 + n]
        g_params, g_th = grads[1 + n:1 + n + len(params)], grads[1 + n + len(params)]
        N = I.shape[-1]
        flat = lambda t: t.reshape(-1, N)  # noqa: E731
        g_w = None
        if needs[2]:
            g_w = grads[-1][0].to(g_I.dtype)
            if s0 is not None:
                g_w = g_w + flat(g_I[0]).t() @ flat(s0.expand(I.shape[1:]).to(g_I.dtype))
        g_x = g_I
        if layout.has_input:
            g_x = g_I @ w_in if needs[1] else None
        out = [g_x if needs[1] else None, g_w,
               *(_reduced(g, p) if needs[3 + j] else None
                 for j, (g, p) in enumerate(zip(g_state0, state)))]
        if layout.has_s0:
            want = needs[3 + n]
            g_s0 = (torch.zeros_like(s0) if layout.detach_recurrent
                    else (g_I[0] @ weight).sum_to_size(s0.shape)) if want else None
            out.append(g_s0)
        if layout.has_bias:
            out.append(g_I.reshape(-1, N).sum(0) if needs[3 + n + layout.has_s0] else None)
        if layout.has_input:
            want = needs[3 + n + layout.has_s0 + layout.has_bias]
            out.append(_input_weight_grad(x, g_I, layout.sparse_input) if want else None)
            # (x saved where `want`: setup_context's needs_input_grad are these)
        out.append(_reduced(g_th, th) if need[-1] else None)
        out.append(None)  # scalars
        out += [_reduced(g, p) if flag else None for g, p, flag in zip(g_params, params, need)]
        return (None, *out)


def _input_weight_grad(x, g_I, sparse_input):
    r"""The input weight's gradient $\sum g_I^\top x$ over every step and row, as the
    product `steps.input_current` used computes it: `torch.nn.functional.linear`'s, or
    snnfunc.sparse's."""
    g, x = g_I.reshape(-1, g_I.shape[-1]), x.reshape(-1, x.shape[-1])
    if sparse_input and (torch.compiler.is_compiling() or not any(
            map(torch._C._functorch.is_functorch_wrapped_tensor, (x, g)))):
        # (under a torch.func transform ATen's product, as SpikeLinear has it)
        return torch.ops.snnfunc.spike_linear_weight_grad(x, g.contiguous())
    return g.t() @ x


def _reusable(I) -> bool:
    """Whether the backward may write $g_I$ over the saved $I$: an eager backward that keeps
    no graph (no `retain_graph`, no `create_graph`, so nothing reads the saved tensors again),
    outside `torch.compile` and `torch.func` transforms. $I$ is the layer's own: `run` hands
    the user the spikes and states, never $I$."""
    if torch.compiler.is_compiling() or torch.is_grad_enabled() or type(I) is not torch.Tensor:
        return False
    keep = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return (keep is not None and not keep()
            and not torch._C._functorch.is_functorch_wrapped_tensor(I))


class RNNBackward(torch.autograd.Function):
    """The backward operator as a Function of its own, so that it runs under `torch.func`
    transforms; its own backward (a second derivative) is not implemented."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*args):
        return tuple(rnn_backward(*args))

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("second derivatives of snnfunc.rnn's fused path are not "
                           "implemented; use impl='loop'")


def run(prepared: Prepared, x_seq, state, s0, weight, bias, detach_recurrent,
        input_weight=None, sparse_input=False, sparse_recurrent=False):
    """Spikes `[T, ...]` and the neuron's kept states (one `[checkpoints(T), ...]` per part,
    the final state last). With `input_weight`, `x_seq` is the input `[T, ..., M]`."""
    layout = Layout(prepared.record, detach_recurrent, len(state), s0 is not None,
                    bias is not None, input_weight is not None,
                    input_weight is not None and sparse_input,
                    sparse_recurrent=sparse_recurrent)
    step = (*x_seq.shape[1:-1], weight.shape[0])
    if s0 is not None:
        s0 = s0.expand(step) if s0.shape != step else s0
    state = [p.to(compute_dtype(x_seq.dtype)) for p in state]  # as the kernels hold states
    out = RNN.apply(layout, x_seq, weight, *state, *([s0] if s0 is not None else []),
                    *([bias] if bias is not None else []),
                    *([input_weight] if input_weight is not None else []), prepared.th,
                    prepared.scalars, *prepared.params)
    return out[0], out[2:]
