r"""Neurons from one definition: write a neuron's step once, get every path.

A neuron is its charge, in torch elementwise operations over named states and parameters,
plus optionally the threshold it fires at and what a spike does to its other states:

    @snnfunc.neuron(positive=("tau",))
    def my_lif(x, v, *, tau=2.0, v_rest):
        return v + (x - (v - v_rest)) / tau

`my_lif` is then a multi-step neuron like the built-ins, `my_lif(x_seq, v, tau=3.0,
v_reset=None, surrogate=ATan(), ...)`, with `my_lif.step` for one step. Every time step runs,
in this order:

$$(H_t, \text{other states}) = \text{charge}(X_t, \text{states}_{t-1}), \qquad
\theta_t = \text{threshold}(\ldots) \;(\text{default } V_{th}), \qquad S_t = \Theta(H_t - \theta_t),$$

then the membrane `v` resets (hard: $V_{reset}$ where $S_t = 1$; soft: $H_t - \theta_t$;
$H_t$ where $S_t = 0$) and `on_spike` updates the other states with $S_t$. The definition run
step by step is the reference; the fused kernels (forward and BPTT backward, C for the CPU
and Triton for CUDA) are generated from the same definition: traced into one operation per
statement, differentiated in reverse mode, written out and compiled once (cached by content
hash). The definition itself is parsed and traced in `snnfunc._core.definition`; this module
makes it callable: argument checks, the reference loop, and dispatch to the kernels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from snnfunc import memory
from snnfunc._core import checks, registry
from snnfunc._core.definition import Definition, option_values, parse
from snnfunc._core.ir import DefinitionError
from snnfunc._kernel import cached, dispatch
from snnfunc._core.results import (NeuronOutput, NeuronOutputWithH, StatesOutput,
                                   StatesOutputWithH, StepOutput, StepOutputWithH,
                                   StepStatesOutput, StepStatesOutputWithH, TraceOutput)
from snnfunc.surrogate import Sigmoid

__all__ = ["Neuron", "neuron", "DefinitionError", "StatesOutput", "StatesOutputWithH",
           "TraceOutput", "StepStatesOutput", "StepStatesOutputWithH"]

_IMPLS = ("auto", "fused", "reference")
FIRE = ("v_threshold", "v_reset", "surrogate", "detach_reset")
"""The options of the fire and the reset, which every neuron takes."""
CALL = ("return_h", "return_states", "batch_first", "impl")
"""The options of a call (what it returns and how it runs), which every neuron takes."""


def keywords_listed(fn):
    """A neuron function that names the keywords it takes when given one it does not (Python
    says only which one was wrong)."""
    import functools
    import inspect

    params = inspect.signature(fn).parameters
    names = ", ".join(n for n, p in params.items() if p.kind is p.KEYWORD_ONLY)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TypeError as exc:
            unknown = [k for k in kwargs if k not in params]
            if unknown and "unexpected keyword argument" in str(exc):
                raise TypeError(f"{fn.__name__}() got an unexpected keyword argument "
                                f"{unknown[0]!r}; it takes {names}") from None
            raise

    return call


def _batch_first(out):
    """A neuron's result with its sequences `[T, B, ...]` as `[B, T, ...]` views."""
    seq = lambda t: t.transpose(0, 1)  # noqa: E731
    parts = {f: getattr(out, f) for f in out._fields}
    for f in ("spikes", "h"):
        if f in parts:
            parts[f] = seq(parts[f])
    if "trace" in parts:
        tr = parts["trace"]
        parts["trace"] = seq(tr) if isinstance(tr, torch.Tensor) else type(tr)(*map(seq, tr))
    return type(out)(**parts)


def _row_major(shape, strides) -> bool:
    """Whether a tensor of this shape and these strides is C-contiguous (size-1 dimensions
    placed anywhere)."""
    expected = 1
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size != 1:
            if stride != expected:
                return False
            expected *= size
    return True


def _memory_order(x_seq):
    """The order of `x_seq`'s step dimensions that makes one step C-contiguous, where the
    given order does not: a step laid out densely in another order (channels-last `[T, B, C,
    H, W]` steps, whose channels are the innermost dimension in memory). None otherwise: a
    C-contiguous step, rows of contiguous values (a batch-first input) and any other layout,
    which the kernels read as before; sizes or strides torch.compile made symbolic; tensors
    of a torch.func transform."""
    if x_seq.dim() < 3 or x_seq.numel() == 0:
        return None
    if not torch.compiler.is_compiling() and torch._C._functorch.is_functorch_wrapped_tensor(x_seq):
        return None
    shape, strides = tuple(x_seq.shape[1:]), tuple(x_seq.stride()[1:])
    if not all(type(n) is int for n in (*shape, *strides)) or _row_major(shape, strides):
        return None
    order = sorted(range(len(shape)), key=lambda d: -strides[d])  # stable: ties keep their order
    if not _row_major([shape[d] for d in order], [strides[d] for d in order]):
        return None
    return order


def _step_in_order(t, order):
    """A tensor that broadcasts to one step (a state, a parameter, the threshold) with its
    dimensions put in `order` (a view; missing leading dimensions become size 1)."""
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        return t
    return t[(None,) * (len(order) - t.dim())].permute(order)


def _broadcasts_to(t, step) -> bool:
    if not isinstance(t, torch.Tensor):
        return True
    if t.dim() > len(step):
        return False
    try:
        return torch.broadcast_shapes(t.shape, step) == step
    except RuntimeError:
        return False


def _in_memory_order(out, order):
    """A neuron's result computed on steps permuted to `order`, its tensors permuted back:
    views laid out like the input (channels-last in, channels-last out)."""
    inv = [order.index(d) for d in range(len(order))]
    seq_inv = [0, *(1 + d for d in inv)]

    def step(t):
        return t.permute(inv) if isinstance(t, torch.Tensor) and t.dim() == len(inv) else t

    def seq(t):
        return t.permute(seq_inv) if isinstance(t, torch.Tensor) and t.dim() == len(seq_inv) else t

    def each(value, fn):
        if isinstance(value, tuple):
            items = [fn(t) for t in value]
            return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
        return fn(value)

    parts = {f: getattr(out, f) for f in out._fields}
    for f in ("spikes", "h"):
        if f in parts:
            parts[f] = seq(parts[f])
    for f in ("v", "state"):
        if f in parts:
            parts[f] = each(parts[f], step)
    if "trace" in parts:
        parts["trace"] = each(parts["trace"], seq)
    return type(out)(**parts)


class Prepared(NamedTuple):
    """A neuron call's checked arguments (`Neuron.prepare`): the initial states, parameters
    (tensors of the input's dtype), options, threshold (a tensor), `v_reset` (a float, or None
    for the soft reset), surrogate and `detach_reset`."""

    states: tuple
    params: dict
    opts: dict
    v_threshold: torch.Tensor
    v_reset: float | None
    surrogate: object
    detach_reset: bool


class Neuron(Definition):
    """A neuron made from one definition; calling it runs the multi-step neuron.

    Make one with the `neuron` decorator. `neuron_fn(x_seq, state=None, *, <parameters>,
    <options>, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(), detach_reset=False,
    return_h=False, return_states=False, impl="auto")` returns `NeuronOutput(spikes, v)` for
    a neuron with one state and `StatesOutput(spikes, state)` for several;
    `neuron_fn.step(x, state=None, ...)` runs one step. The attributes describe the
    definition.

    Attributes:
      name: the name the kernels' ops know the neuron by (module and function).
      states: the state names in order; `"v"` is the membrane, the one that fires and resets.
      parameters: parameter name -> default (`None`: required).
      options: static flags (keyword-only `bool` arguments of the charge) -> default.
      positive: the parameters that must be > 0.
      State: the NamedTuple of states (`None` for a neuron with the single state `v`).
    """

    def _split(self, kwargs, where):
        params, opts = {}, {}
        for k, val in kwargs.items():
            if k in self.parameters:
                params[k] = val
            elif k in self.options:
                opts[k] = val
            else:
                allowed = ", ".join([*self.parameters, *self.options, *FIRE, *CALL])
                raise TypeError(f"{where}() got an unexpected keyword argument {k!r}; it takes "
                                f"{allowed}")
        for k, default in self.parameters.items():
            if k not in params:
                if default is None:
                    raise TypeError(f"{where}() needs the parameter {k}=")
                params[k] = default
        for k, default in self.options.items():
            opts.setdefault(k, default)
            if not isinstance(opts[k], bool):
                raise TypeError(f"{k} must be True or False, got {opts[k]!r}")
        return params, opts

    def _prepare(self, x, state, kwargs, *, v_threshold, v_reset, surrogate, detach_reset,
                 return_h, sequence):
        where = self.name.rpartition(":")[2] + ("" if sequence else ".step")
        step_shape = checks.check_input("x_seq" if sequence else "x", x, sequence=sequence)
        checks.check_options(v_reset, surrogate, detach_reset, return_h=return_h)
        params, opts = self._split(kwargs, where)
        what = "one time step of x_seq, shape" if sequence else "the input x, shape"
        params = {k: checks.check_param(k, val, x, step_shape, what, positive=k in self.positive)
                  for k, val in params.items()}
        v_threshold = checks.check_param("v_threshold", v_threshold, x, step_shape, what)
        if v_reset is not None and not checks.traced_number(v_reset):
            v_reset = float(v_reset)
        states = self._states(state, x, step_shape, v_reset, what)
        return states, params, opts, v_threshold, v_reset

    def _states(self, state, x, step_shape, v_reset, what):
        rest = {**self.rest, "v": 0.0 if v_reset is None else v_reset}
        if len(self.states) == 1:
            return (checks.check_state(state, x, step_shape, rest["v"], what,
                                        parameter=next(iter(self.parameters), None)),)
        dtype = checks.state_dtype(x)
        if state is None:
            return tuple(checks.full(x, rest[n], dtype) for n in self.states)
        if not isinstance(state, tuple) or len(state) != len(self.states):
            raise TypeError(f"state must be None or a {self.State.__name__}"
                            f"({', '.join(self.states)}) of tensors, got {type(state).__name__}")
        out = []
        for n, val in zip(self.states, state):
            if val is None:
                out.append(checks.full(x, rest[n], dtype))
            elif not isinstance(val, torch.Tensor):
                raise TypeError(f"state.{n} must be a tensor or None, got {type(val).__name__}")
            else:
                out.append(checks.check_tensor_like(f"state.{n}", val, x, step_shape, what,
                                                     dtype=dtype))
        return tuple(out)

    def prepare(self, x_seq, state=None, *, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
                detach_reset=False, **kwargs) -> "Prepared":
        """The checked arguments of a call over `x_seq`, as the kernels and the reference loop
        take them: for layers built on the neuron (the recurrent layer prepares once, then
        runs its kernels step by step). Raises as a call would."""
        states, params, opts, v_threshold, v_reset = self._prepare(
            x_seq, state, kwargs, v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
            detach_reset=detach_reset, return_h=False, sequence=True)
        return Prepared(states, params, opts, v_threshold, v_reset, surrogate, detach_reset)

    def __call__(self, x_seq, state=None, *, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
                 detach_reset=False, return_h=False, return_states=False, batch_first=False,
                 impl="auto", **kwargs):
        """The multi-step neuron over `x_seq` `[T, *shape]` (`[B, T, ...]` with
        `batch_first=True`, read in place; the sequences it returns are `[B, T, ...]` views
        too); see the class docstring. `return_states=True` also returns the state after
        every step (`TraceOutput`)."""
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
        for name, flag in (("return_states", return_states), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if batch_first:
            if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 2:
                raise ValueError(f"x_seq must be [B, T, ...] with batch_first=True, got "
                                 f"{getattr(x_seq, 'shape', type(x_seq).__name__)}")
            out = self(x_seq.transpose(0, 1), state, v_threshold=v_threshold, v_reset=v_reset,
                       surrogate=surrogate, detach_reset=detach_reset, return_h=return_h,
                       return_states=return_states, impl=impl, **kwargs)
            return _batch_first(out)
        if return_h is False and return_states is False and impl != "reference":
            hit = cached.call(self, x_seq, state, (v_threshold, v_reset, surrogate, detach_reset),
                              impl, kwargs, _memory_order)
            if hit is not None:
                return self._result(hit[0], None, hit[1], None, False, False)
        order = _memory_order(x_seq) if isinstance(x_seq, torch.Tensor) else None
        if order is not None:
            out = self._in_order(order, x_seq, state, v_threshold=v_threshold, v_reset=v_reset,
                                 surrogate=surrogate, detach_reset=detach_reset,
                                 return_h=return_h, return_states=return_states, impl=impl,
                                 **kwargs)
            if out is not None:
                return out
        states, params, opts, v_threshold, v_reset = self._prepare(
            x_seq, state, kwargs, v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
            detach_reset=detach_reset, return_h=return_h, sequence=True)
        out = None
        if impl != "reference":
            out = dispatch.run(self, x_seq, states, params, opts, v_threshold=v_threshold,
                                 v_reset=v_reset, surrogate=surrogate,
                                 detach_reset=detach_reset, return_h=return_h,
                                 force=impl == "fused", return_states=return_states)
        if out is None:
            out = self._reference(x_seq, states, params, opts, v_threshold=v_threshold,
                                  v_reset=v_reset, surrogate=surrogate,
                                  detach_reset=detach_reset)
        return self._result(*out, return_h, return_states)

    def _result(self, spikes, h, states, trace, return_h, return_states):
        memory.register_spikes(spikes)
        if return_states:
            trace = trace[0] if self.State is None else self.State(*trace)
            return TraceOutput(spikes, self.pack(states), h, trace)
        if self.State is None:
            return NeuronOutputWithH(spikes, states[0], h) if return_h else NeuronOutput(
                spikes, states[0])
        st = self.State(*states)
        return StatesOutputWithH(spikes, st, h) if return_h else StatesOutput(spikes, st)

    def _in_order(self, order, x_seq, state, *, v_threshold, **kwargs):
        """The call on `x_seq`'s steps permuted to `order` (`_memory_order`), where the kernels
        read them in place, and its result permuted back: a channels-last input is neither
        copied to the default layout nor returned in it. None where a state or a parameter
        does not broadcast to one step (the plain call then raises the usual error)."""
        step = x_seq.shape[1:]
        states = tuple(state) if isinstance(state, tuple) else (state,)
        tensors = [v_threshold, *states, *(kwargs[k] for k in self.parameters if k in kwargs)]
        if not all(_broadcasts_to(t, step) for t in tensors):
            return None
        if isinstance(state, tuple):
            items = [_step_in_order(t, order) for t in state]
            state = type(state)(*items) if hasattr(state, "_fields") else tuple(items)
        else:
            state = _step_in_order(state, order)
        for k in self.parameters:
            if k in kwargs:
                kwargs[k] = _step_in_order(kwargs[k], order)
        out = self(x_seq.permute(0, *(1 + d for d in order)), state,
                   v_threshold=_step_in_order(v_threshold, order), **kwargs)
        return _in_memory_order(out, order)

    def _reference(self, x_seq, states, params, opts, *, v_threshold, v_reset, surrogate,
                   detach_reset):
        """The definition run step by step (half precision computed in float32)."""
        io = x_seq.dtype
        params, v_threshold = checks.upcast(params, v_threshold, io)
        spikes, hs, trace = [], [], []
        shape = x_seq.shape[1:]
        for x in x_seq.unbind(0):
            s, h, states = self.step_values(x.float() if io in checks.HALF else x, states, params,
                                            v_threshold=v_threshold, v_reset=v_reset,
                                            surrogate=surrogate, detach_reset=detach_reset,
                                            opts=opts)
            spikes.append(s)
            hs.append(h)
            trace.append(tuple(t.expand(shape) for t in states))
        states = tuple(s.expand(shape) for s in states)  # float32 for half precision
        if not spikes:  # T == 0
            empty = x_seq.new_empty(x_seq.shape)
            return empty, empty, states, tuple(t.new_empty((0, *shape)) for t in states)
        trace = tuple(torch.stack(ts) for ts in zip(*trace))
        return torch.stack(spikes).to(io), torch.stack(hs).to(io), states, trace

    def step(self, x, state=None, *, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
             detach_reset=False, return_h=False, **kwargs):
        """One time step: `StepOutput(spike, v)` or `StepStatesOutput(spike, state)`."""
        states, params, opts, v_threshold, v_reset = self._prepare(
            x, state, kwargs, v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
            detach_reset=detach_reset, return_h=return_h, sequence=False)
        io = x.dtype
        params, v_threshold = checks.upcast(params, v_threshold, io)
        s, h, states = self.step_values(x.float() if io in checks.HALF else x, states, params, v_threshold=v_threshold,
                                        v_reset=v_reset, surrogate=surrogate,
                                        detach_reset=detach_reset, opts=opts)
        s, h = s.to(io), h.to(io)
        states = tuple(t.expand(x.shape) for t in states)  # float32 for half precision
        if self.State is None:
            return StepOutputWithH(s, states[0], h) if return_h else StepOutput(s, states[0])
        st = self.State(*states)
        return StepStatesOutputWithH(s, st, h) if return_h else StepStatesOutput(s, st)

    def __repr__(self):
        return f"<neuron {self.name} states={self.states} parameters={self.parameters}>"


def neuron(charge=None, *, threshold=None, on_spike=None, positive=(), rest=None, name=None,
           state_type=None):
    r"""Makes a neuron from its definition (a decorator).

    The charge is a function `charge(x, <states...>, *, <parameters>, <options>, v_rest)`:
    its positional arguments after `x` name the states (one of them `v`, the membrane), its
    keyword-only arguments with number defaults (or no default: required) are the parameters,
    those with `True`/`False` defaults are static options (the definition may branch on them
    with `if`), and `v_rest` (optional) is $V_{reset}$, or 0 with the soft reset. It returns
    the new states (a tuple in order, or a dict; one value for a neuron with the single state
    `v`), the membrane before fire and reset, $H_t$. It uses torch elementwise operations
    only: arithmetic, comparisons, `torch.where`, `exp`, `sigmoid`, `tanh`, `minimum`, ...;
    anything else is a `DefinitionError` when the neuron is defined.

    Args:
      charge: the charge function (the decorated one).
      threshold: `threshold(<states after charge...>, *, v_threshold, <parameters>)` -> the
        value $\theta_t$ the membrane fires at; default `v_threshold`.
      on_spike: `on_spike(s, <states after charge...>, *, <parameters>)` -> a dict of new
        values for the states other than `v`, given the spike `s` (0 or 1; detached with
        `detach_reset=True`). Default: none change.
      positive: names of parameters that must be > 0 (checked where it is free to check).
      rest: the resting value of each state other than `v` (default 0); `v` rests at
        `v_reset`, or 0 with the soft reset.
      name: the name the kernels' ops know the neuron by; default `module:qualname`.
      state_type: the NamedTuple class of the states (made from the names by default).

    Returns:
      A `Neuron`, callable as the multi-step neuron, with `.step` for one step.

    Raises:
      DefinitionError: the definition uses an operation the kernel generator cannot emit.
    """
    if charge is None:
        return lambda fn: neuron(fn, threshold=threshold, on_spike=on_spike, positive=positive,
                                 rest=rest, name=name, state_type=state_type)
    out = Neuron(**parse(charge, threshold=threshold, on_spike=on_spike, positive=positive,
                         rest=rest, name=name, state_type=state_type))
    # trace every option now: an operation the generator cannot emit fails here, not later
    for flags in option_values(out.options):
        for hard in (True, False):
            out.trace(flags, hard=hard, detach_reset=False)
    registry.register(out)
    return out
