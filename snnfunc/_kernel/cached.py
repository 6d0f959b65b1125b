"""Repeated eager calls: a neuron called again as before (the same neuron, numbers and options;
an input of the same shape, dtype, strides and device; the same autograd mode) runs its
kernels without the work around them.

The first such call was checked and its kernels found; what came of it is kept here: the
numbers given as the kernels read them (parameters, threshold, the state at rest), the
scalars, and the kernels with their jobs filled (`Backend.runners`). A call that matches
allocates its outputs, sets the pointers of its tensors and runs: microseconds around the
kernels where the whole path takes hundreds (the small layer of `benchmarks/bench_cpu.py`).
It computes what the whole path computes, on the same kernels with the same arguments, and
checks what the whole path checks of the values it is given (a positive parameter given as
a tensor); `tests/test_cached_calls.py`.

A call is taken here where it is eager in a plain context (`backends.plain_context`: no
compile, trace, torch.func transform or mode) without forward-mode AD, on a backend with
runners (the C backend), with `x_seq` a plain tensor the kernels read in place, the
parameters and `v_threshold` numbers or tensors in `x_seq`'s dtype, the state None or
contiguous tensors of one step's shape in the compute dtype, a surrogate compiled into the
kernels, and spikes and the final state returned (no `return_h` or `return_states`). A call
seen for the first time runs the whole path; seen again, its entry is made (its arguments
checked as the whole path checks them); every later one hits. At most `LIMIT` entries are
kept, the oldest dropped first; an entry holds no tensor of a call.
"""

from __future__ import annotations

import collections
import types

import torch
from torch import Tensor
from torch.nn import Parameter

from snnfunc._core import checks
from snnfunc._core.checks import compute_dtype
from snnfunc._kernel import backends, dispatch, ops
from snnfunc._kernel.autograd import DefinedNeuron, _reduced
from snnfunc._kernel.call import step_tensor

LIMIT = 256
_entries: dict = {}
_SEEN, _NO = object(), object()  # seen once; not taken here
stats: collections.Counter = collections.Counter()
"""`hits` (calls that ran from an entry) and `made` (entries made) in this process."""


def clear() -> None:
    """Forgets every entry (they hold no input, only constants and built kernels)."""
    _entries.clear()


def _number(v):
    """A parameter's, threshold's or option's part of the key (None: not taken here): a float
    by its bits (0.0 and -0.0 apart; NaN never), an int or bool with its type, a tensor by
    its layout (given at every call)."""
    t = type(v)
    if t is float:
        return v.hex() if v == v else None
    if t is int or t is bool:
        return (t, v)
    return _meta(v)


def _meta(t):
    if t is None:
        return "rest"
    if type(t) is not Tensor and type(t) is not Parameter:
        return None
    return (t.shape, t.stride(), t.dtype, t.device, t.requires_grad)


def _given(state) -> tuple:
    """The states the call was given, one entry per state (None: at rest)."""
    if state is None:
        return ()
    return (state,) if isinstance(state, Tensor) else tuple(state)


def _key(neuron, x, state, fire, impl, kwargs):
    if type(x) is not Tensor or not backends.plain_context() \
            or torch.autograd.forward_ad._current_level >= 0:
        return None
    v_threshold, v_reset, surrogate, detach_reset = fire
    parts = [_number(v_threshold), "soft" if v_reset is None else _number(v_reset),
             _number(detach_reset)]
    for k, v in kwargs.items():
        parts += (k, _number(v))
    if state is None:
        parts.append("rest")
    elif isinstance(state, (Tensor, tuple)):
        parts += map(_meta, _given(state))
    else:
        return None
    if None in parts or type(surrogate).__hash__ is None:
        return None
    return (neuron, x.shape, x.stride(), x.dtype, x.device, x.requires_grad,
            torch.is_grad_enabled(), torch.is_inference_mode_enabled(), surrogate, impl,
            *parts)


def call(neuron, x, state, fire, impl, kwargs, permuted):
    """`(spikes, states)` of the call where an entry takes it, else None (the caller runs
    the whole path). `fire`: `(v_threshold, v_reset, surrogate, detach_reset)`;
    `permuted(x)`: the caller's step order where it permutes `x` (not taken here) or None.
    Raises as the whole call would where making the entry or a hit checks the arguments."""
    key = _key(neuron, x, state, fire, impl, kwargs)
    if key is None:
        return None
    entry = _entries.get(key)
    if entry is None or entry is _SEEN:
        while len(_entries) >= LIMIT:
            _entries.pop(next(iter(_entries), None), None)
        if entry is None:
            _entries[key] = _SEEN
            return None
        entry = _entries[key] = _make(neuron, x, state, fire, kwargs, permuted)
    if entry is _NO:
        return None
    out = entry(x, _given(state), fire[0], kwargs)
    stats["hits"] += 1
    return out


def _make(neuron, x, state, fire, kwargs, permuted):
    v_threshold, v_reset, surrogate, detach_reset = fire
    p = neuron.prepare(x, state, v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                       detach_reset=detach_reset, **kwargs)  # raises as the call would
    backend = backends.BACKENDS.get(x.device.type)
    if backend is None or backend.runners is None or not backend.direct or backend.keeps:
        return _NO
    plan = dispatch._plan(surrogate, False)
    if plan[2] or permuted(x) is not None \
            or dispatch.why_not(x, surrogate, neuron, plan, False) is not None:
        return _NO
    given, step = _given(state), x.shape[1:]
    # each state, parameter and the threshold: a constant of the entry, or None where the
    # call gives it (as a tensor the checks pass through as it is)
    fixed = []
    for i, t in enumerate(p.states):
        g = given[i] if given else None
        if g is not None and (t is not g or t.shape != step or not t.is_contiguous()):
            return _NO
        fixed.append(t if g is None else None)
    values = [v_threshold, *(kwargs.get(n) for n in neuron.parameters)]
    for v, t in zip(values, [p.v_threshold, *(p.params[n] for n in neuron.parameters)]):
        if isinstance(v, Tensor) and t is not v:
            return _NO
        fixed.append(None if isinstance(v, Tensor) else t)
    cfg, scalars = dispatch.record(neuron, x, p.opts, v_reset=p.v_reset, surrogate=surrogate,
                                   detach_reset=p.detach_reset, plan=plan, plain=True)
    entry = _Entry(neuron, backend, cfg, scalars, fixed,
                   x.new_empty((0,), dtype=compute_dtype(x.dtype)))
    th, states, params = _read(x, *entry.tensors(x, given, v_threshold, kwargs))
    c = ops.forward_call(x, states, params, th, scalars, cfg.neuron, cfg.options, cfg.hard,
                         False, False, x.device.type, cfg.detach)
    if c.x is not x:  # a layout the kernels read from a copy
        return _NO
    entry.run = backend.runners[0](c)
    stats["made"] += 1
    return entry


def _read(x, th, states, params):
    """`(th, states, params)` as the kernels read them: one value or one step each,
    contiguous (what `DefinedNeuron.forward` and the ops make of them)."""
    step = x.shape[1:]
    read = lambda t: step_tensor(t, x, step).contiguous()  # noqa: E731
    return read(th), [*map(read, states)], [*map(read, params)]


class _Entry:
    """One kept call: its constants (`fixed`: each state, then the threshold, then each
    parameter, or None where the call gives it), its forward runner and the backward
    runners made for it (one per set of gradients present and wanted)."""

    def __init__(self, neuron, backend, cfg, scalars, fixed, kept):
        self.neuron, self.backend, self.cfg, self.scalars = neuron, backend, cfg, scalars
        self.k = cfg.n_states
        self.positive = [n in neuron.positive for n in neuron.parameters]
        self.fixed, self.run, self.backward_runs = fixed, None, {}
        self.kept = kept  # what DefinedNeuron's forward returns last where it keeps nothing

    def tensors(self, x, given, v_threshold, kwargs):
        """`(th, states, params)` of a call, as its arguments (the given ones checked as the
        whole path checks their values)."""
        k, fixed, step = self.k, self.fixed, x.shape[1:]
        states = [g if f is None else f for f, g in zip(fixed[:k], given or fixed[:k])]
        th = fixed[k]
        if th is None:
            th = v_threshold
        params = []
        for j, n in enumerate(self.neuron.parameters):
            t = fixed[k + 1 + j]
            if t is None:
                t = kwargs[n]
                if self.positive[j]:
                    checks.check_param(n, t, x, step, "", positive=True)
            params.append(t)
        return th, states, params

    def __call__(self, x, given, v_threshold, kwargs):
        th, states, params = self.tensors(x, given, v_threshold, kwargs)
        if torch.is_grad_enabled() and (x.requires_grad or any(
                t.requires_grad for t in (th, *states, *params))):
            s, *out = _apply(self, x, th, *states, *params)
            return s, out
        return self.forward(x, th, states, params)

    def forward(self, x, th, states, params):
        c = compute_dtype(x.dtype)
        s, out = x.new_empty(x.shape), [x.new_empty(x.shape[1:], dtype=c) for _ in states]
        th, states, params = _read(x, th, states, params)
        self.run(x, states, params, th, s, out)
        return s, out

    def backward_run(self, x, st, par, th, gs, gstates, need):
        key = (gs is not None, tuple(g is not None for g in gstates), need)
        run = self.backward_runs.get(key)
        if run is None:
            cfg = self.cfg
            c = ops.backward_call(x, st, par, th, gs, None, None, gstates, self.scalars,
                                  cfg.neuron, cfg.options, cfg.surrogate, cfg.hard, cfg.detach,
                                  list(need), [None] * self.k, x.device.type)
            run = self.backward_runs[key] = self.backend.runners[1](c)
        return run

    def backward(self, ctx, gs, gstates):
        x, th, scalars, kept, *tensors = ctx.saved_tensors
        k, needs = self.k, ctx.needs_input_grad
        states, params = tensors[:k], tensors[k:]
        if torch.is_grad_enabled():  # the backward is recorded: DefinedNeuron's backward
            shim = types.SimpleNamespace(  # from a context like its own
                saved_tensors=(x, th, scalars, kept, *tensors), cfg=self.cfg,
                needs_input_grad=(needs[1], needs[2], False, False, *needs[3:]))
            g = DefinedNeuron.backward(shim, gs, None, *gstates, *[None] * k, None)
            return (None, g[0], g[1], *g[4:])
        step, c = x.shape[1:], compute_dtype(x.dtype)
        gs = None if gs is None else gs.contiguous()
        gstates = [None if g is None else g.contiguous() for g in gstates]
        n_st, n_th, n_par = needs[3:3 + k], needs[2], needs[3 + k:]
        need = (*n_par, n_th, *n_st)
        ths, st, par = _read(x, th, states, params)
        run = self.backward_run(x, st, par, ths, gs, gstates, need)
        grad = lambda wanted: x.new_empty(step, dtype=c) if wanted else None  # noqa: E731
        gx, gth = x.new_empty(x.shape), grad(n_th)
        gst0, gpar = [*map(grad, n_st)], [*map(grad, n_par)]
        run(x, st, par, ths, gs, gstates, gx, gst0, gpar, gth)
        red = lambda g, t: None if g is None else _reduced(g, t)  # noqa: E731
        return (None, gx, red(gth, th), *map(red, gst0, states), *map(red, gpar, params))


class _Cached(torch.autograd.Function):
    """An entry's kernels under autograd: inputs `(entry, x, th, *states, *params)`."""

    @staticmethod
    def forward(ctx, entry, x, th, *tensors):
        k = entry.k
        s, out = entry.forward(x, th, tensors[:k], tensors[k:])
        ctx.entry = entry
        # saved as DefinedNeuron saves (x, th, scalars, kept, *tensors): a checkpoint's
        # recomputation may take the whole path where its forward hit, or the other way
        ctx.save_for_backward(x, th, entry.scalars, entry.kept, *tensors)
        ctx.set_materialize_grads(False)
        return (s, *out)

    @staticmethod
    def backward(ctx, gs, *gstates):
        if gs is None and all(g is None for g in gstates):
            return (None,) * len(ctx.needs_input_grad)
        return ctx.entry.backward(ctx, gs, gstates)


_apply = super(torch.autograd.Function, _Cached).apply  # Function.apply without its binding
