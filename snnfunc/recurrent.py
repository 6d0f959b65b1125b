r"""Recurrent spiking layers: a neuron whose previous spikes feed back into its input.

For an input sequence $X_1, \dots, X_T$ (shape `[T, B, N]`), a recurrent map $W$ (a weight
matrix `[N, N]` with an optional bias $b$, or any callable) and a neuron, every step computes

$$I_t = X_t + W S_{t-1} + b, \qquad (S_t, U_t) = \mathrm{neuron}(I_t, U_{t-1}),$$

where $U$ is the neuron's state (a tensor, or a NamedTuple of tensors for neurons with several
state variables) and $S_0 = 0$ unless given (so the first step's input is $X_1 + b$). This is
snnTorch's `RLeaky`/`RSynaptic` with `all_to_all=True` and SpikingJelly's
`LinearRecurrentContainer` around a neuron, for every neuron of snnfunc.

- `rnn(x_seq, state, weight=..., neuron=snnfunc.lif, **neuron_kwargs)` is the function: it
  returns the spikes and a `RecurrentState(neuron, spikes)` to continue from.
- `Recurrent(features, neuron=snnfunc.lif, ...)` is the stateful module (a learnable weight
  and bias, the state held between calls, `reset()`).

With a weight tensor (or a `torch.nn.Linear`) the whole time loop is one custom operator,
`torch.ops.snnfunc.rnn_forward`, with a BPTT backward operator: `torch.compile` sees one node
whatever T. For the library's neurons and those made with `snnfunc.neuron` (on the CPU, in
float32 or float64), its body prepares the neuron's arguments once, then runs, per step, one
matmul into a buffer, one add and one call of the neuron's generated kernel (`torch.ops.snnfunc.defined_forward` on one step),
saving the inputs $I_t$; the backward operator is a hand-written BPTT loop, per step in
reverse one addmm (the recurrent path $g_{I_{t+1}} W$) and one call of the kernel's one-step
VJP (`defined_backward`), and $W$'s gradient one matmul over all steps. Any other neuron
function runs, per step, the neuron on a one-step slice, and its backward recomputes the loop
with autograd (the same operations, so the same values bit for bit) and differentiates it in
one pass. Any other callable map runs as a Python loop of the same calls (unrolled under
`torch.compile`).

Any neuron that follows the library's protocol works: `neuron(x_seq, state, **kwargs)`
returns `(spikes, state)` with `state` a tensor or a NamedTuple of tensors of the shape of one
time step, and `state=None` means rest.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import sys
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor, nn

from snnfunc.functional import lif

__all__ = ["RecurrentOutput", "RecurrentState", "Recurrent", "rnn"]

_IMPLS = ("auto", "op", "loop")
_RESERVED = ("return_h", "impl")


class RecurrentState(NamedTuple):
    """The state of a recurrent layer: the neuron's state and the last step's spikes `[B, N]`."""

    neuron: Any
    spikes: Tensor


class RecurrentOutput(NamedTuple):
    """Result of `rnn`: `spikes` `[T, B, N]` and the `RecurrentState` to continue from."""

    spikes: Tensor
    state: RecurrentState


# --------------------------------------------------------------------------- the neuron's options
#
# The custom operator takes tensors, numbers and strings only. The neuron and its options are
# split into a hashable *spec* (the neuron function, the names of the options, constants such
# as booleans, None, surrogate classes) registered under a string key, and the values: tensors
# (differentiable, e.g. PLIF's w) and floats (SymFloats under torch.compile(dynamic=True), so a
# new tau does not recompile). The spec is computed at trace time (assume_constant_result), and
# the operator's body rebuilds the keyword arguments from the key and the values.


class _Unsupported(Exception):
    """An option the operator cannot carry; `rnn` then runs the Python loop."""


def _encode(value, tensors: list, floats: list):
    if isinstance(value, Tensor):
        tensors.append(value)
        return ("tensor",)
    if isinstance(value, bool) or value is None or isinstance(value, (str, enum.Enum)):
        return ("const", value)
    if isinstance(value, numbers.Integral):
        floats.append(float(value))
        return ("int",)
    if isinstance(value, float):
        floats.append(value)
        return ("float",)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ("dataclass", type(value),
                tuple((f.name, _encode(getattr(value, f.name), tensors, floats))
                      for f in dataclasses.fields(value)))
    if callable(value) and not isinstance(value, nn.Module):
        return ("const", value)  # a function: compared by identity
    raise _Unsupported(type(value).__name__)


def _decode(code, tensors, floats, pos):
    kind = code[0]
    if kind == "tensor":
        pos[0] += 1
        return tensors[pos[0] - 1]
    if kind in ("float", "int"):
        pos[1] += 1
        value = floats[pos[1] - 1]
        return int(value) if kind == "int" else value
    if kind == "dataclass":
        return code[1](**{name: _decode(c, tensors, floats, pos) for name, c in code[2]})
    return code[1]


_SPECS: dict = {}  # key -> spec
_KEYS: dict = {}  # spec -> key


@torch._dynamo.assume_constant_result
def _register(spec) -> str:
    """The string key of a spec (the same key for equal specs), registered for the operator."""
    key = _KEYS.get(spec)
    if key is None:
        name = getattr(spec[0], "__qualname__", type(spec[0]).__name__)
        key = f"{name}#{len(_KEYS)}"
        _KEYS[spec] = key
        _SPECS[key] = spec
    return key


def _spec(key: str):
    """The spec registered under `key` in this process (nothing is imported or called for a
    key the operator is given)."""
    spec = _SPECS.get(key) if isinstance(key, str) else None
    if spec is None:
        raise ValueError(f"key must name a recurrent layer's options registered by "
                         f"snnfunc.rnn in this process, got {key!r}")
    return spec


def _kwargs(spec, tensors, floats) -> dict:
    pos = [0, 0]
    return {name: _decode(code, tensors, floats, pos) for name, code in spec[1]}


def _pack(state_type, parts):
    return parts[0] if state_type is None else state_type(*parts)


def _unpack(state) -> list:
    return [state] if isinstance(state, Tensor) else list(state)


# --------------------------------------------------------------------------- the fast path
#
# For the library's neurons (and any made with `snnfunc.neuron`), the operator's bodies call
# the neuron's generated kernels directly, one step at a time: the arguments are checked and
# prepared once per call of the layer, not once per step. Forward, per step: I_t from one
# matmul into a buffer and one add (the operations of `x + F.linear(s, W, b)`, so the same
# values bit for bit), then `defined_forward` with T = 1. The inputs I_t are saved. Backward,
# per step in reverse: the spikes' cotangent plus the recurrent path g_{I_{t+1}} W (one addmm),
# then `defined_backward` with T = 1 (one step's VJP from the saved I_t and the state before
# it); the weight's gradient is one matmul over all steps at the end.

_FIRE = ("v_threshold", "v_reset", "surrogate", "detach_reset")
_FAST_DTYPES = (torch.float32, torch.float64)
_DEFINED: dict = {}  # neuron function -> (Neuron, its keyword defaults, adapt) or None


def _plif_adapt(kw):
    from snnfunc.functional.neurons import _plif_k

    kw = dict(kw)
    kw["w"] = _plif_k(kw.get("w"), kw.pop("parametrization", "reciprocal"))
    return kw


def _definition_of(fn):
    """`(Neuron, keyword defaults, adapt)` when `fn` is one of the library's neuron functions
    or a `Neuron` (from `snnfunc.neuron`), else None."""
    try:
        return _DEFINED[fn]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable
        return None
    import inspect

    from snnfunc.definition import Neuron
    from snnfunc.functional import defined, neurons

    found = None
    if isinstance(fn, Neuron):
        found = (fn, None)
    else:
        for module in (neurons, defined):
            for kind, definition in module.DEFINITIONS.items():
                if fn is getattr(module, "if_" if kind == "if" else kind, None):
                    found = (definition, _plif_adapt if fn is neurons.plif else None)
    if found is not None:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            found = None
        else:
            nrn, adapt = found
            takes = {*nrn.parameters, *nrn.options, *_FIRE,
                     *(("parametrization",) if adapt is _plif_adapt else ())}
            defaults = {n: p.default for n, p in sig.parameters.items()
                        if p.kind is p.KEYWORD_ONLY and p.default is not p.empty
                        and n in takes}  # not return_h, impl, ...
            found = (found[0], defaults, found[1])
    _DEFINED[fn] = found
    return found


class _Kernel(NamedTuple):
    """A neuron call prepared for its generated kernels (the arguments of the ops)."""

    neuron: str
    options: str
    hard: bool
    detach: bool
    surrogate: str
    params: list  # kernel-ready: [*S] contiguous, or 0-d (one shared value)
    th: Tensor
    scalars: Tensor


def _kernel(spec, x_seq, tensors, floats) -> Optional[_Kernel]:
    """The neuron of `spec` prepared for the generated kernels, or None where they do not
    apply (another neuron function, half precision, not on the CPU, a surrogate whose
    derivative cannot be compiled, no compiler, ...; any argument error is left to the general
    path to raise)."""
    from snnfunc._kernel import call, dispatch, surrogates

    if x_seq.dtype not in _FAST_DTYPES or x_seq.device.type != "cpu":  # the CPU kernels' ops
        return None
    found = _definition_of(spec[0])
    if found is None:
        return None
    nrn, defaults, adapt = found
    try:
        kw = {**defaults, **_kwargs(spec, tensors, floats)}
        if adapt is not None:
            kw = adapt(kw)
        fire = {name: kw.pop(name) for name in _FIRE if name in kw}
        _, params, opts, th, v_reset = nrn._prepare(x_seq, None, kw, return_h=False,
                                                    sequence=True, **fire)
        surrogate = fire["surrogate"]
        if (dispatch.why_not(x_seq, surrogate, nrn) is not None
                or surrogates.why_not_surrogate(surrogate) is not None):
            return None
        ready = lambda t: call.step_tensor(t, x_seq).contiguous()  # noqa: E731
        plan = surrogates.surrogate_plan(surrogate)
        scalars = dispatch.new_scalars(torch.device("cpu"), 0.0 if v_reset is None else v_reset,
                                       plan.values)
        return _Kernel(nrn.name, call.options_string(opts), v_reset is not None,
                       bool(fire["detach_reset"]), plan.token,
                       [ready(params[n]) for n in nrn.parameters], ready(th), scalars)
    except Exception:
        return None


def _fast_forward(k: _Kernel, x_seq, state, s0, weight, bias):
    """Spikes `[T, ...]`, the states after every step, and the inputs I `[T, ...]`."""
    from snnfunc._kernel import backends

    forward = backends.BACKENDS[x_seq.device.type].forward
    I = torch.empty(x_seq.shape, dtype=x_seq.dtype, device=x_seq.device)
    xs, Is, I1 = x_seq.unbind(0), I.unbind(0), I.split(1)  # the views, made once
    wt = weight.t()
    buf = x_seq.new_empty(x_seq.shape[1:]) if x_seq.dim() == 3 else None
    st = [p.contiguous() for p in state]
    n = len(st)
    spikes, states = [], [[] for _ in st]
    s = s0
    for t, (x_t, i_t) in enumerate(zip(xs, Is)):
        if s is None:
            if bias is None:
                i_t.copy_(x_t)
            else:
                torch.add(x_t, bias, out=i_t)
        elif buf is not None and s.shape == buf.shape:  # x + F.linear(s, W, b) as F.linear
            if bias is None:  # computes it (mm or addmm), into the buffer, then the add
                torch.mm(s, wt, out=buf)
            else:
                torch.addmm(bias, s, wt, out=buf)
            torch.add(x_t, buf, out=i_t)
        else:  # another step shape, or a state.spikes that broadcasts
            torch.add(x_t, torch.nn.functional.linear(s, weight, bias), out=i_t)
        out = forward(I1[t], st, k.params, k.th, k.scalars, k.neuron, k.options, k.hard, False)
        spikes.append(out[0])
        st = out[2:2 + n]  # [s, h, *final states, ...]
        for acc, p in zip(states, st):
            acc.append(p)
        s = out[0][0]
    return torch.cat(spikes), [torch.stack(acc) for acc in states], I


def _fast_backward(k: _Kernel, need: list, detach, x_seq, state, s0, weight, spikes, states, I,
                   g_spikes, g_states):
    """BPTT, one step's VJP per call of the kernel in reverse: `(g_I [T, ...], g_state0,
    g_s0 or None, g_weight, g_neuron [one per kernel parameter, then the threshold; None
    where not needed], each summed over T)`."""
    from snnfunc._kernel import backends

    backward = backends.BACKENDS[x_seq.device.type].backward
    T, n = x_seq.shape[0], len(state)
    two_d = x_seq.dim() == 3
    # the cotangent of the state after the last step (None: none); the states before it are
    # outputs too, whose cotangents are usually None or zero (rnn returns the last state
    # only): then nothing to add at every step
    g_st = [None if g is None else g[T - 1] for g in g_states]
    g_before = T > 1 and any(g is not None and bool(g[:-1].any()) for g in g_states)
    I1, gs1, gs_steps = I.split(1), g_spikes.split(1), g_spikes.unbind(0)
    before = [list(p.unbind(0)) for p in states]  # before[k][t]: state k after step t
    acc = [None] * len(need)
    need_op = [*need, *[True] * n]  # every step's state cotangent carries on to the one before
    g_inputs = [None] * T
    g_next = None  # g_{I_{t+1}}
    for t in range(T - 1, -1, -1):
        if g_next is None or detach:
            gs = gs1[t]
        elif two_d:  # S_t feeds I_{t+1} = X + S_t W^T + b
            gs = torch.addmm(gs_steps[t], g_next, weight).unsqueeze(0)
        else:
            gs = (gs_steps[t] + g_next @ weight).unsqueeze(0)
        st = state if t == 0 else [b[t - 1] for b in before]
        out = backward(I1[t], st, k.params, k.th, gs, None, None, g_st, k.scalars, k.neuron,
                       k.options, k.surrogate, k.hard, k.detach, need_op, [None] * n)
        g_inputs[t] = out[0]
        g_next = out[0][0]
        g_st = out[1:1 + n]
        if t > 0 and g_before:
            g_st = [a if g is None else a + g[t - 1] for a, g in zip(g_st, g_states)]
        for j, flag in enumerate(need):
            if flag:
                g = out[1 + n + j]
                acc[j] = g if acc[j] is None else acc[j] + g
    g_I = torch.cat(g_inputs)
    N = x_seq.shape[-1]
    flat = lambda t: t.reshape(-1, N)  # noqa: E731
    g_w = flat(g_I[1:]).t() @ flat(spikes[:-1]) if T > 1 else torch.zeros_like(weight)
    g_s0 = None
    if s0 is not None:
        step_s0 = s0.expand(x_seq.shape[1:])
        g_w = g_w + flat(g_I[0]).t() @ flat(step_s0)
        g_s0 = torch.zeros_like(s0) if detach else (g_I[0] @ weight).sum_to_size(s0.shape)
    return g_I, list(g_st), g_s0, g_w, acc


def _neuron_grads(k_live: _Kernel, acc, leaves):
    """The gradients of the neuron's tensor options (the leaves) from those of the kernel's
    parameters and threshold (`acc`, per neuron, summed over T), through the preparation
    (`k_live`, computed from the leaves with autograd recording)."""
    outs, grads = [], []
    for t, g in zip([*k_live.params, k_live.th], acc):
        if g is not None:
            outs.append(t)
            grads.append(g.sum().reshape(t.shape) if t.shape != g.shape else g)
    wanted = [p for p in leaves if p.requires_grad]
    got = iter(torch.autograd.grad(outs, wanted, grads, allow_unused=True)
               if outs and wanted else [])
    out = []
    for p in leaves:
        g = next(got) if p.requires_grad else None
        out.append(torch.zeros_like(p) if p.requires_grad and g is None else g)
    return out


# --------------------------------------------------------------------------- the operator


def _step_input(x, s, weight, bias):
    """$I_t = X_t + W S_{t-1} + b$; $S_{t-1}$ None (before the first step) gives $X_t + b$."""
    if s is None:
        return x if bias is None else x + bias
    return x + torch.nn.functional.linear(s, weight, bias)


@torch.library.custom_op("snnfunc::rnn_forward", mutates_args=())
def _rnn_forward(key: str, x_seq: Tensor, state: list[Tensor], s0: Optional[Tensor],
                 weight: Tensor, bias: Optional[Tensor], params: list[Tensor],
                 floats: list[float]) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Spikes `[T, B, N]`, the inputs $I_t$ `[T, B, N]` (saved for the backward) and the
    neuron's state after every step (one `[T, ...]` per part)."""
    spec = _spec(key)
    k = _kernel(spec, x_seq, params, floats)
    if k is not None:  # the neuron's generated kernel, called one step at a time
        spikes, states, I = _fast_forward(k, x_seq, state, s0, weight, bias)
        return spikes, I, states
    neuron, state_type = spec[0], spec[2]
    kwargs = _kwargs(spec, params, floats)
    T = x_seq.shape[0]
    spikes = torch.empty_like(x_seq)
    I = torch.empty_like(x_seq)
    states = [x_seq.new_empty((T, *p.shape)) for p in state]
    u, s = _pack(state_type, state), s0
    for t in range(T):
        I[t] = _step_input(x_seq[t], s, weight, bias)
        out, u = neuron(I[t][None], u, **kwargs)
        spikes[t] = out[0]
        for k, part in enumerate(_unpack(u)):
            states[k][t] = part
        s = spikes[t]
    return spikes, I, states


@_rnn_forward.register_fake
def _(key, x_seq, state, s0, weight, bias, params, floats):
    T = x_seq.shape[0]
    return (torch.empty_like(x_seq), torch.empty_like(x_seq),
            [x_seq.new_empty((T, *p.shape)) for p in state])


def _autograd_back_on():
    """A context in which autograd records again: an operator's body runs below autograd, and
    the backward recomputes each step with autograd to differentiate it."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for name in ("AutogradFunctionality", "AutogradOther", "AutogradNestedTensor"):
        key = getattr(torch._C.DispatchKey, name, None)
        if key is not None:
            exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


@torch.library.custom_op("snnfunc::rnn_backward", mutates_args=())
def _rnn_backward(key: str, detach: bool, needs: list[bool], x_seq: Tensor, state: list[Tensor],
                  s0: Optional[Tensor], weight: Tensor, bias: Optional[Tensor],
                  params: list[Tensor], floats: list[float], spikes: Tensor, I: Tensor,
                  states: list[Tensor], g_spikes: Tensor,
                  g_states: list[Optional[Tensor]]) -> list[Tensor]:
    """BPTT. For a neuron with generated kernels, a loop over the steps in reverse, one
    step's VJP per kernel call from the saved inputs I and states; for any other neuron, the
    forward loop recomputed with autograd (the same operations, so the same values bit for
    bit) and differentiated once.

    Returns the gradients of x_seq, state (one per part), s0, weight, bias and params, in
    this order; an empty tensor where `needs` says none is wanted."""
    spec = _spec(key)
    with _autograd_back_on(), torch.enable_grad():  # the preparation, recorded for params
        leaves = [p.detach().requires_grad_(bool(need)) for p, need in zip(params, needs[5:])]
        k_live = _kernel(spec, x_seq, leaves, floats)
    if k_live is not None:
        k = k_live._replace(params=[t.detach() for t in k_live.params], th=k_live.th.detach())
        need_k = [t.requires_grad for t in (*k_live.params, k_live.th)]
        g_I, g_st, g_s0, g_w, acc = _fast_backward(k, need_k, detach, x_seq, state, s0, weight,
                                                   spikes, states, I, g_spikes, g_states)
        with _autograd_back_on(), torch.enable_grad():
            g_params = _neuron_grads(k_live, acc, leaves)
        pick = lambda g, flag: (g if flag and g is not None  # noqa: E731
                                else x_seq.new_empty(0))  # (outputs may not alias)
        g_b = None if bias is None else g_I.reshape(-1, bias.shape[0]).sum(0)
        return [pick(g_I, needs[0]), *(pick(g, needs[1]) for g in g_st), pick(g_s0, needs[2]),
                pick(g_w, needs[3]), pick(g_b, needs[4]),
                *(pick(g, need) for g, need in zip(g_params, needs[5:]))]
    neuron, state_type = spec[0], spec[2]
    n = len(state)
    g_states = [torch.zeros_like(p) if g is None else g for g, p in zip(g_states, states)]
    with _autograd_back_on(), torch.enable_grad():
        leaf = lambda t, need: t.detach().requires_grad_(bool(need))  # noqa: E731
        x_l = leaf(x_seq, needs[0])
        u0 = [leaf(p, needs[1]) for p in state]
        s0_l = None if s0 is None else leaf(s0, needs[2])
        w_l = leaf(weight, needs[3])
        b_l = None if bias is None else leaf(bias, needs[4])
        p_l = [leaf(p, need) for p, need in zip(params, needs[5:])]
        kwargs = _kwargs(spec, p_l, floats)
        u, s = _pack(state_type, u0), s0_l
        outs, grads = [], []
        for t in range(x_seq.shape[0]):
            i = _step_input(x_l[t], s if s is None or not detach else s.detach(), w_l, b_l)
            out, u = neuron(i[None], u, **kwargs)
            s = out[0]
            for o, g in zip([s, *_unpack(u)], [g_spikes[t], *(g[t] for g in g_states)]):
                if o.requires_grad:
                    outs.append(o)
                    grads.append(g)
        wrt = [x_l, *u0, *([s0_l] if s0_l is not None else []), w_l,
               *([b_l] if b_l is not None else []), *p_l]
        wanted = [t for t in wrt if t.requires_grad]
        got = iter(torch.autograd.grad(outs, wanted, grads, allow_unused=True)
                   if outs and wanted else [])
    result = {id(t): (next(got) if t.requires_grad else None) for t in wrt}

    def grad_of(t):
        g = None if t is None else result.get(id(t))
        return torch.zeros_like(t) if t is not None and t.requires_grad and g is None else (
            x_seq.new_empty(0) if g is None else g)

    return [grad_of(x_l), *(grad_of(p) for p in u0), grad_of(s0_l), grad_of(w_l), grad_of(b_l),
            *(grad_of(p) for p in p_l)]


@_rnn_backward.register_fake
def _(key, detach, needs, x_seq, state, s0, weight, bias, params, floats, spikes, I, states,
      g_spikes, g_states):
    like = lambda t, need: (torch.empty_like(t) if need and t is not None  # noqa: E731
                            else x_seq.new_empty(0))
    return [like(x_seq, needs[0]), *(like(p, needs[1]) for p in state), like(s0, needs[2]),
            like(weight, needs[3]), like(bias, needs[4]),
            *(like(p, need) for p, need in zip(params, needs[5:]))]


class _RNN(torch.autograd.Function):
    """The operator pair tied for autograd (also under `torch.func.grad`, `vjp`, `jacrev`).

    Tensors travel flat: `x_seq, weight, *state, [s0], [bias], *params`."""

    @staticmethod
    def forward(key, floats, x_seq, weight, *rest):
        layout = _spec(key)[4]
        state, s0, bias, params = _split(layout, rest)
        spikes, I, states = _rnn_forward(key, x_seq, state, s0, weight, bias, params, floats)
        return (spikes, I, *states)

    @staticmethod
    def setup_context(ctx, inputs, output):
        key, floats, x_seq, weight, *rest = inputs
        ctx.key, ctx.floats, ctx.layout = key, floats, _spec(key)[4]
        ctx.save_for_backward(x_seq, weight, *rest, *output)
        ctx.mark_non_differentiable(output[1])  # I, saved for the backward
        ctx.set_materialize_grads(False)  # no [T, ...] of zeros for the unused state outputs

    @staticmethod
    def backward(ctx, g_spikes, g_I, *g_states):
        n, has_s0, has_bias, m = ctx.layout
        saved = ctx.saved_tensors
        x_seq, weight = saved[:2]
        k = 2 + n + has_s0 + has_bias + m
        state, s0, bias, params = _split(ctx.layout, saved[2:k])
        spikes, I, states = saved[k], saved[k + 1], list(saved[k + 2:])
        need = ctx.needs_input_grad[2:]  # x_seq, weight, *state, [s0], [bias], *params
        need_state = need[2:2 + n]
        need_params = need[2 + n + has_s0 + has_bias:]
        needs = [need[0], any(need_state), bool(has_s0 and need[2 + n]),
                 need[1], bool(has_bias and need[2 + n + has_s0]), *need_params]
        if g_spikes is None:
            g_spikes = torch.zeros_like(spikes)
        g_states = list(g_states)  # None where a state output has no cotangent
        needs = tuple(bool(f) for f in needs)
        if torch.compiler.is_compiling():  # the operator itself: one node of the backward graph
            grads = _rnn_backward(ctx.key, _SPECS[ctx.key][3], list(needs), x_seq, state, s0,
                                  weight, bias, params, list(ctx.floats), spikes, I, states,
                                  g_spikes, g_states)
        else:  # through a Function, so that torch.func transforms see through it
            grads = _RNNBackward.apply(ctx.key, needs, ctx.floats, x_seq, weight, *saved[2:k],
                                       spikes, I, *states, g_spikes, *g_states)
        pick = lambda g, flag: g if flag else None  # noqa: E731
        g_x, g_state = grads[0], grads[1:1 + n]
        g_s0, g_w, g_b = grads[1 + n:4 + n]
        out = [pick(g_x, needs[0]), pick(g_w, needs[3]),
               *(pick(g, f) for g, f in zip(g_state, need_state))]
        if has_s0:
            out.append(pick(g_s0, needs[2]))
        if has_bias:
            out.append(pick(g_b, needs[4]))
        out += [pick(g, f) for g, f in zip(grads[4 + n:], need_params)]
        return (None, None, *out)


class _RNNBackward(torch.autograd.Function):
    """The backward operator as a Function of its own, so that it runs under `torch.func`
    transforms too; its own backward (a second derivative) is not implemented."""

    @staticmethod
    def forward(key, needs, floats, x_seq, weight, *rest):
        _, _, _, detach, layout = _spec(key)
        n, has_s0, has_bias, m = layout
        k = n + has_s0 + has_bias + m
        state, s0, bias, params = _split(layout, rest[:k])
        spikes, I, states = rest[k], rest[k + 1], list(rest[k + 2:k + 2 + n])
        g_spikes, g_states = rest[k + 2 + n], list(rest[k + 3 + n:])
        return tuple(_rnn_backward(key, detach, list(needs), x_seq, state, s0, weight, bias, params,
                                   floats, spikes, I, states, g_spikes, g_states))

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("second derivatives of snnfunc.recurrent.rnn are not implemented "
                           "(its backward recomputes each step); use impl='loop'")


def _split(layout, rest):
    n, has_s0, has_bias, m = layout
    rest = list(rest)
    state = rest[:n]
    s0 = rest[n] if has_s0 else None
    bias = rest[n + has_s0] if has_bias else None
    return state, s0, bias, rest[n + has_s0 + has_bias:n + has_s0 + has_bias + m]


# --------------------------------------------------------------------------- the public API


def _check(x_seq, weight, bias, neuron, impl, detach_recurrent, neuron_kwargs):
    if not isinstance(x_seq, Tensor):
        raise TypeError(f"x_seq must be a torch.Tensor, got {type(x_seq).__name__}")
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be time-major [T, B, N] (or [T, N]), got shape "
                         f"{tuple(x_seq.shape)}")
    if not x_seq.is_floating_point():
        raise TypeError(f"x_seq must have a floating dtype, got {x_seq.dtype}")
    if not callable(neuron):
        raise TypeError(f"neuron must be a neuron function such as snnfunc.lif, got "
                        f"{type(neuron).__name__}")
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if not isinstance(detach_recurrent, bool):
        raise TypeError(f"detach_recurrent must be True or False, got {detach_recurrent!r}")
    for name in _RESERVED:
        if name in neuron_kwargs:
            raise TypeError(f"{name}= is not a neuron option rnn passes on (rnn calls the neuron "
                            f"itself, one step at a time)")
    n = x_seq.shape[-1]
    if isinstance(weight, Tensor):
        if weight.shape != (n, n):
            raise ValueError(f"weight must have shape [N, N] = {[n, n]} (N = x_seq.shape[-1]), "
                             f"got {list(weight.shape)}")
        if weight.dtype != x_seq.dtype or weight.device != x_seq.device:
            raise ValueError(f"weight ({weight.dtype}, {weight.device}) must have x_seq's dtype "
                             f"and device ({x_seq.dtype}, {x_seq.device})")
    elif not callable(weight):
        raise TypeError(f"weight must be a tensor [N, N] or a callable (a module such as "
                        f"torch.nn.Linear(N, N)), got {type(weight).__name__}")
    elif bias is not None:
        raise TypeError("bias= goes with a weight tensor; a callable weight includes its own")
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias must be a tensor [N] or None, got {type(bias).__name__}")
        if bias.shape != (n,):
            raise ValueError(f"bias must have shape [N] = [{n}], got {list(bias.shape)}")


def _initial_state(state, x_seq, neuron, neuron_kwargs):
    """(neuron state, previous spikes or None) from `state`, checked."""
    if state is None:
        u, s0 = None, None
    elif isinstance(state, RecurrentState):
        u, s0 = state
    else:
        raise TypeError(f"state must be a RecurrentState(neuron, spikes) from an earlier call, "
                        f"or None for rest; got {type(state).__name__}")
    step = x_seq.shape[1:]
    if s0 is not None:
        if not isinstance(s0, Tensor):
            raise TypeError(f"state.spikes must be a tensor, got {type(s0).__name__}")
        try:
            ok = torch.broadcast_shapes(s0.shape, step) == step
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"state.spikes has shape {tuple(s0.shape)}, which does not broadcast "
                             f"to one time step of x_seq, {tuple(step)} (a new batch size? start "
                             f"from state=None)")
    if u is None:  # the neuron's resting state: what it returns for an empty sequence
        _, u = neuron(x_seq[:0], None, **neuron_kwargs)
    parts = _unpack(u)
    if not all(isinstance(p, Tensor) for p in parts):
        raise TypeError("state.neuron must be a tensor or a NamedTuple of tensors (the neuron's "
                        "own state)")
    parts = [p.to(x_seq.dtype).expand(step) if p.shape != step else p for p in parts]
    return (None if isinstance(u, Tensor) else type(u)), parts, s0


def _loop(x_seq, state_type, parts, s0, rec, neuron, detach, neuron_kwargs):
    """The Python loop: one map and one neuron call per step (the definition of `rnn`)."""
    u, s = _pack(state_type, parts), s0
    spikes = []
    for x in x_seq.unbind(0):
        if s is not None:
            x = x + rec(s.detach() if detach else s)
        out, u = neuron(x[None], u, **neuron_kwargs)
        s = out[0]
        spikes.append(s)
    return torch.stack(spikes), u


def rnn(x_seq: Tensor, state: RecurrentState | None = None, *, weight, bias: Tensor | None = None,
        neuron: Callable = lif, detach_recurrent: bool = False, impl: str = "auto",
        **neuron_kwargs) -> RecurrentOutput:
    r"""A recurrent spiking layer over a time-major sequence.

    Every step feeds the previous step's spikes back through the recurrent map:

    $$I_t = X_t + W S_{t-1} + b, \qquad (S_t, U_t) = \mathrm{neuron}(I_t, U_{t-1}),$$

    with $S_0$ = `state.spikes` (no recurrent input at the first step when `state` is None, so
    $I_1 = X_1 + b$) and $U_0$ = `state.neuron` (rest when None). Semantically, with
    `s = x_seq.new_zeros(x_seq.shape[1:])`:
    `for x in x_seq: spk, u = neuron((x + F.linear(s, weight, bias))[None], u, **neuron_kwargs); s = spk[0]`.

    Args:
      x_seq: the input currents $X$ (the feed-forward part, e.g. `fc(x)`), shape `[T, B, N]`
        (or `[T, N]`), floating dtype.
      state: `RecurrentState(neuron, spikes)` from an earlier call to continue from, or
        `None` for rest and no previous spikes.
      weight: the recurrent map: a weight tensor $W$ `[N, N]` (applied as `F.linear(s, W, b)`,
        row `i` holds the weights into neuron `i`), or any callable mapping spikes `[B, N]` to
        `[B, N]`, such as `torch.nn.Linear(N, N)` (whose weight and bias then take the
        operator's path) or a sparse or low-rank module (run as a Python loop).
      bias: $b$ `[N]` with a weight tensor, or `None`.
      neuron: the neuron function: `snnfunc.lif` (default), `if_`, `plif`, `rif`, or any
        function `neuron(x_seq, state, **kwargs) -> (spikes, state)` whose state is a tensor
        or a NamedTuple of tensors of one step's shape (`None` meaning rest).
      detach_recurrent: detach the spikes fed back from the graph: no gradient flows from
        $I_t$ to $S_{t-1}$ (the weight's gradient still does).
      impl: `"auto"` (default) runs the time loop as one operator where it applies (a weight
        tensor or `nn.Linear`, options that are tensors, numbers, booleans, strings, `None`,
        functions or dataclasses such as surrogates), the Python loop elsewhere; `"op"`
        forces the operator (a `TypeError` says what it cannot carry) and `"loop"` the loop.
      **neuron_kwargs: the neuron's options, passed on at every step: `tau=2.0`,
        `surrogate=ATan()`, `w=...` for PLIF, `v_reset=None`, ... (not `return_h`).

    Returns:
      `RecurrentOutput(spikes, state)`: `spikes` `[T, B, N]` and
        `state = RecurrentState(neuron, spikes)`, the neuron's final state and the last
        step's spikes `[B, N]`, to pass to the next call. For `T = 0`, `spikes` is empty and
        the state is the initial one.
    """
    _check(x_seq, weight, bias, neuron, impl, detach_recurrent, neuron_kwargs)
    if isinstance(weight, nn.Linear):
        weight, bias = weight.weight, weight.bias
        _check(x_seq, weight, bias, neuron, impl, detach_recurrent, neuron_kwargs)
    state_type, parts, s0 = _initial_state(state, x_seq, neuron, neuron_kwargs)
    if x_seq.shape[0] == 0:
        u = _pack(state_type, parts)
        return RecurrentOutput(x_seq.new_empty(x_seq.shape), RecurrentState(u, s0))
    if isinstance(weight, Tensor) and impl != "loop":
        tensors, floats = [], []
        try:
            codes = tuple((name, _encode(value, tensors, floats))
                          for name, value in neuron_kwargs.items())
            layout = (len(parts), int(s0 is not None), int(bias is not None), len(tensors))
            spec = (neuron, codes, state_type, detach_recurrent, layout)
        except _Unsupported as e:
            if impl == "op":
                raise TypeError(f"impl='op' cannot carry a neuron option of type {e}; use "
                                f"impl='loop'") from None
        else:
            key = _register(spec)
            spikes, _, *states = _RNN.apply(key, tuple(floats), x_seq, weight, *parts,
                                         *([s0] if s0 is not None else []),
                                         *([bias] if bias is not None else []), *tensors)
            u = _pack(state_type, [p[-1] for p in states])
            return RecurrentOutput(spikes, RecurrentState(u, spikes[-1]))
    elif impl == "op":
        raise TypeError("impl='op' needs weight to be a tensor or a torch.nn.Linear")
    if isinstance(weight, Tensor):
        w, b = weight, bias
        rec = lambda s: torch.nn.functional.linear(s, w, b)  # noqa: E731
        s_first = s0
    else:
        rec, s_first = weight, s0
    if s_first is None and bias is not None:
        x_seq = torch.cat([x_seq[:1] + bias, x_seq[1:]])
    spikes, u = _loop(x_seq, state_type, parts, s_first, rec, neuron, detach_recurrent,
                      neuron_kwargs)
    return RecurrentOutput(spikes, RecurrentState(u, spikes[-1]))


# --------------------------------------------------------------------------- the module


def _inside_functional_call() -> bool:
    from torch.nn.utils import stateless

    code = stateless._functional_call.__code__
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


class Recurrent(nn.Module):
    r"""A recurrent spiking layer that holds its state between calls; see `rnn`.

    $I_t = X_t + W S_{t-1} + b$ with a learnable $W$ `[features, features]` and $b$,
    initialised as `torch.nn.Linear(features, features)` is, then the neuron. The input is the
    feed-forward current (put a `torch.nn.Linear(in, features)` before it). Like snnTorch's
    `RLeaky(beta, all_to_all=True, linear_features=features)` or SpikingJelly's
    `LinearRecurrentContainer(neuron, features, features)`.

    State (`self.state`, a `RecurrentState`, or `None` at rest) carries over between calls
    until `reset()` (which `snnfunc.nn.reset_net` calls). Under `torch.func.functional_call` or
    a `torch.func` transform the module starts from the state it holds and leaves it unchanged.

    Args:
      features: $N$, the number of neurons.
      neuron: the neuron function (`snnfunc.lif` by default; any neuron of the library).
      bias: learn a bias $b$ of the recurrent map.
      detach_recurrent: detach the spikes fed back from the graph.
      step_mode: `"m"` (default): `forward` takes `[T, B, N]`; `"s"`: one step `[B, N]`.
      **neuron_kwargs: the neuron's options (`tau=2.0`, `surrogate=ATan()`, ...). A
        `torch.nn.Parameter` among them (PLIF's `w`) is registered as a parameter of this
        module under its option's name.
    """

    def __init__(self, features: int, neuron: Callable = lif, *, bias: bool = True,
                 detach_recurrent: bool = False, step_mode: str = "m", **neuron_kwargs):
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be a positive int, got {features!r}")
        if not callable(neuron):
            raise TypeError(f"neuron must be a neuron function such as snnfunc.lif, got "
                            f"{type(neuron).__name__}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        if not isinstance(detach_recurrent, bool):
            raise TypeError(f"detach_recurrent must be True or False, got {detach_recurrent!r}")
        if step_mode not in ("s", "m"):
            raise ValueError(f"step_mode must be 's' or 'm', got {step_mode!r}")
        for name in (*_RESERVED, "weight", "bias"):
            if name in neuron_kwargs:
                raise TypeError(f"{name}= is not a neuron option of Recurrent")
        self.features, self.neuron = features, neuron
        self.detach_recurrent, self.step_mode = detach_recurrent, step_mode
        self.weight = nn.Parameter(torch.empty(features, features))
        self.bias = nn.Parameter(torch.empty(features)) if bias else None
        self._params = []
        for name, value in list(neuron_kwargs.items()):
            if isinstance(value, nn.Parameter):
                self.register_parameter(name, value)
                self._params.append(name)
                del neuron_kwargs[name]
        self.neuron_kwargs = neuron_kwargs
        self.reset_parameters()
        self.state: RecurrentState | None = None

    def reset_parameters(self) -> None:
        """Weight and bias drawn as `torch.nn.Linear` draws them."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.features)
            nn.init.uniform_(self.bias, -bound, bound)

    def reset(self) -> None:
        """State back to rest (no previous spikes); parameters untouched."""
        self.state = None

    def forward(self, x: Tensor) -> Tensor:
        """Spikes for a sequence `[T, B, N]` (`step_mode="m"`) or one step `[B, N]` (`"s"`)."""
        x_seq = x[None] if self.step_mode == "s" else x
        kwargs = dict(self.neuron_kwargs, **{name: getattr(self, name) for name in self._params})
        state = self.state
        if state is not None and not torch.compiler.is_compiling():
            step = x_seq.shape[1:]
            if tuple(state.spikes.shape) != tuple(step):
                raise ValueError(
                    f"Recurrent holds a state for steps of shape {tuple(state.spikes.shape)}, "
                    f"which does not fit this input's {tuple(step)} (a new batch size?): call "
                    f"reset() on it, or snnfunc.nn.reset_net(net), between batches")
        out = rnn(x_seq, state, weight=self.weight, bias=self.bias, neuron=self.neuron,
                  detach_recurrent=self.detach_recurrent, **kwargs)
        if self._writes_state(out.spikes):
            self.state = out.state
        return out.spikes[0] if self.step_mode == "s" else out.spikes

    @staticmethod
    def _writes_state(t: Tensor) -> bool:
        if torch.compiler.is_compiling():
            return True
        if torch._C._functorch.is_functorch_wrapped_tensor(t):
            return False
        return not _inside_functional_call()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.state is not None:
            u, s = self.state
            u = fn(u) if isinstance(u, Tensor) else type(u)(*map(fn, u))
            self.state = RecurrentState(u, fn(s))
        return self

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("state") is not None:  # never copy an autograd graph
            state["state"] = torch.utils._pytree.tree_map(torch.Tensor.detach, state["state"])
        return state

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.neuron_kwargs.items())
        name = getattr(self.neuron, "__name__", repr(self.neuron))
        return (f"{self.features}, neuron={name}, bias={self.bias is not None}, "
                f"detach_recurrent={self.detach_recurrent}, step_mode={self.step_mode!r}{options}")
