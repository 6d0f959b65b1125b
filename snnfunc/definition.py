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
step by step is the reference; the fused CPU kernel (forward and BPTT backward) is generated
from the same definition: traced into one operation per statement, differentiated in reverse
mode, written out as C and compiled once (cached by content hash).
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import typing
from typing import NamedTuple

import torch

from snnfunc import _ir, memory
from snnfunc._ir import DefinitionError
from snnfunc.functional import _checks
from snnfunc.functional._core import (NeuronOutput, NeuronOutputWithH, StepOutput,
                                      StepOutputWithH, reset)
from snnfunc.surrogate import Sigmoid, Surrogate, spike

__all__ = ["Neuron", "neuron", "DefinitionError", "StatesOutput", "StatesOutputWithH",
           "TraceOutput", "StepStatesOutput", "StepStatesOutputWithH"]

_RESERVED = ("x", "s", "v_rest", "v_threshold", "v_reset", "surrogate", "detach_reset",
             "return_h", "return_states", "impl", "state")
_IMPLS = ("auto", "fused", "reference")
_HALF = (torch.float16, torch.bfloat16)


class StatesOutput(NamedTuple):
    """Result of a multi-step neuron with several states: `spikes` `[T, *shape]` and the
    final `state`, the neuron's state NamedTuple (for example `CubaLIFState(i, v)`)."""

    spikes: torch.Tensor
    state: tuple


class StatesOutputWithH(NamedTuple):
    """`StatesOutput` plus `h` `[T, *shape]`, the membrane after charge and before reset."""

    spikes: torch.Tensor
    state: tuple
    h: torch.Tensor


class TraceOutput(NamedTuple):
    """Result with `return_states=True`: `spikes`, the final `state`, `h` (all `[T, *shape]`
    but the state) and `trace`, the state after every step (a tensor `[T, *shape]` for a
    neuron with the one state `v`, else the state NamedTuple of `[T, *shape]` tensors)."""

    spikes: torch.Tensor
    state: object
    h: torch.Tensor
    trace: object


class StepStatesOutput(NamedTuple):
    """Result of one step of a neuron with several states: `spike` and the next `state`."""

    spike: torch.Tensor
    state: tuple


class StepStatesOutputWithH(NamedTuple):
    """`StepStatesOutput` plus `h`, the membrane after charge and before reset."""

    spike: torch.Tensor
    state: tuple
    h: torch.Tensor


_REGISTRY: dict[str, "Neuron"] = {}


def lookup(name: str) -> "Neuron":
    """The neuron registered under `name` (the kernels' ops name neurons by string). Every
    neuron is registered when its definition runs; nothing is imported for a name, so a
    saved graph loads in a fresh process once the module defining its neurons is imported."""
    found = _REGISTRY.get(name) if isinstance(name, str) else None
    if found is None:
        module = name.rpartition(":")[0] if isinstance(name, str) else ""
        hint = f"import the module that defines it ({module}) first" if module else (
            "import the module that defines it first")
        raise ValueError(f"no neuron definition named {name!r} is registered in this process: "
                         f"{hint}")
    return found


def _keywords(fn, what) -> dict[str, inspect.Parameter]:
    params = inspect.signature(fn).parameters
    for p in params.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            raise DefinitionError(f"{what} cannot take *args: name each state")
    return {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _accepts(fn) -> tuple[set[str], bool]:
    params = inspect.signature(fn).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}, var_kw


@dataclasses.dataclass(frozen=True, eq=False)
class Neuron:
    """A neuron made from one definition; calling it runs the multi-step neuron.

    Make one with the `neuron` decorator. `neuron_fn(x_seq, state=None, *, <parameters>,
    <options>, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(), detach_reset=False,
    return_h=False, impl="auto")` returns `NeuronOutput(spikes, v)` for a neuron with one
    state and `StatesOutput(spikes, state)` for several; `neuron_fn.step(x, state=None, ...)`
    runs one step. The attributes describe the definition.

    Attributes:
      name: the name the kernels' ops know the neuron by (module and function).
      states: the state names in order; `"v"` is the membrane, the one that fires and resets.
      parameters: parameter name -> default (`None`: required).
      options: static flags (keyword-only `bool` arguments of the charge) -> default.
      positive: the parameters that must be > 0.
      State: the NamedTuple of states (`None` for a neuron with the single state `v`).
    """

    charge: typing.Callable
    threshold: typing.Callable | None
    on_spike: typing.Callable | None
    name: str
    states: tuple[str, ...]
    parameters: dict
    options: dict
    positive: tuple[str, ...]
    rest: dict
    State: type | None
    _takes: dict

    # -------------------------------------------------------------------- the definition

    def _charge(self, x, states, params, v_rest, opts):
        kw = {n: params[n] for n in self._takes["charge"] if n in params}
        kw.update({n: opts[n] for n in self.options})
        if "v_rest" in self._takes["charge"]:
            kw["v_rest"] = v_rest
        out = self.charge(x, *states, **kw)
        if len(self.states) == 1:
            out = out[0] if isinstance(out, tuple) and len(out) == 1 else out
            return (out,)
        if isinstance(out, dict):
            out = tuple(out.get(n, s) for n, s in zip(self.states, states))
        if not isinstance(out, tuple) or len(out) != len(self.states):
            raise DefinitionError(f"{self.name}: the charge must return the new values of "
                                  f"{self.states} (a tuple in that order, or a dict)")
        return out

    def _threshold(self, new, params, v_threshold):
        if self.threshold is None:
            return v_threshold
        kw = {n: params[n] for n in self._takes["threshold"] if n in params}
        return self.threshold(*new, v_threshold=v_threshold, **kw)

    def _jumps(self, r, new, params) -> dict:
        if self.on_spike is None:
            return {}
        kw = {n: params[n] for n in self._takes["on_spike"] if n in params}
        out = self.on_spike(r, *new, **kw)
        if not isinstance(out, dict) or not set(out) <= set(self.states) - {"v"}:
            raise DefinitionError(
                f"{self.name}: on_spike must return a dict of new values for some of "
                f"{tuple(n for n in self.states if n != 'v')} (the membrane v resets by the "
                f"hard or soft reset)")
        return out

    @property
    def membrane(self) -> int:
        return self.states.index("v")

    def step_values(self, x, states, params, *, v_threshold, v_reset, surrogate, detach_reset,
                    opts):
        """One reference step on tensors: `(s, h, new states)`."""
        v_rest = 0.0 if v_reset is None else v_reset
        new = self._charge(x, states, params, v_rest, opts)
        m = self.membrane
        h = new[m]
        th = self._threshold(new, params, v_threshold)
        s = memory.register_spikes(spike(h - th, surrogate))
        r = s.detach() if detach_reset else s
        v = reset(h, s, th, v_reset, detach_reset)
        jumps = self._jumps(r, new, params)
        out = tuple(v if k == m else jumps.get(n, new[k]) for k, n in enumerate(self.states))
        return s, h, out

    def trace(self, opts: dict, *, hard: bool, detach_reset: bool):
        """The step as an IR graph: `(graph, inputs, outputs)` with named input nodes
        (`x`, `state:<n>`, `param:<n>`, `v_threshold`, `v_rest`) and outputs (`s`, `h`, the
        new states)."""
        g = _ir.Graph(f"neuron {self.name}")
        x = g.input("x")
        states = tuple(g.input(f"state:{n}") for n in self.states)
        params = {n: g.input(f"param:{n}") for n in self.parameters}
        vth = g.input("v_threshold")
        vr = g.input("v_rest")
        try:
            new = self._charge(x, states, params, vr if hard else 0.0, opts)
            ids = [_ir.state_value(g, v, f"the charge's new value of state {n!r}")
                   for v, n in zip(new, self.states)]
            new = tuple(_ir.Sym(g, i) for i in ids)
            m = self.membrane
            h = new[m]
            th = self._threshold(new, params, vth)
            th_id = _ir.state_value(g, th, "the threshold") if self.threshold else th.id
            u = g.add("sub", h.id, th_id)
            s = g.add("spike", u)
            r = g.add("detach", s) if detach_reset else s
            if hard:
                v = g.add("reset_hard", h.id, r, vr.id)
            else:
                v = g.add("reset_soft", h.id, r, th_id)
            jumps = self._jumps(_ir.Sym(g, r), new, params)
            out = [v if k == m else _ir.state_value(g, jumps.get(n, new[k]),
                                                    f"on_spike's new value of state {n!r}")
                   for k, n in enumerate(self.states)]
        except TypeError as exc:
            if isinstance(exc, DefinitionError):
                raise
            raise DefinitionError(f"neuron {self.name}: {exc}") from None
        inputs = {"x": x.id, **{f"state:{n}": s.id for n, s in zip(self.states, states)},
                  **{f"param:{n}": p.id for n, p in params.items()}, "v_threshold": vth.id,
                  "v_rest": vr.id}
        return g, inputs, {"s": s, "h": h.id, "states": out}

    # -------------------------------------------------------------------- calling

    def _split(self, kwargs, where):
        params, opts = {}, {}
        for k, val in kwargs.items():
            if k in self.parameters:
                params[k] = val
            elif k in self.options:
                opts[k] = val
            else:
                allowed = ", ".join([*self.parameters, *self.options, "v_threshold",
                                     "v_reset", "surrogate", "detach_reset", "return_h"])
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
        step_shape = _checks.check_input("x_seq" if sequence else "x", x, sequence=sequence)
        _checks.check_options(v_reset, surrogate, detach_reset, return_h=return_h)
        params, opts = self._split(kwargs, where)
        what = "one time step of x_seq, shape" if sequence else "the input x, shape"
        params = {k: _checks.check_param(k, val, x, step_shape, what, positive=k in self.positive)
                  for k, val in params.items()}
        v_threshold = _checks.check_param("v_threshold", v_threshold, x, step_shape, what)
        v_reset = None if v_reset is None else float(v_reset)
        states = self._states(state, x, step_shape, v_reset, what)
        return states, params, opts, v_threshold, v_reset

    def _states(self, state, x, step_shape, v_reset, what):
        rest = {**self.rest, "v": 0.0 if v_reset is None else v_reset}
        if len(self.states) == 1:
            return (_checks.check_state(state, x, step_shape, rest["v"], what,
                                        parameter=next(iter(self.parameters), None)),)
        dtype = _checks.state_dtype(x)
        if state is None:
            return tuple(x.new_full((), float(rest[n]), dtype=dtype) for n in self.states)
        if not isinstance(state, tuple) or len(state) != len(self.states):
            raise TypeError(f"state must be None or a {self.State.__name__}"
                            f"({', '.join(self.states)}) of tensors, got {type(state).__name__}")
        out = []
        for n, val in zip(self.states, state):
            if val is None:
                out.append(x.new_full((), float(rest[n]), dtype=dtype))
            elif not isinstance(val, torch.Tensor):
                raise TypeError(f"state.{n} must be a tensor or None, got {type(val).__name__}")
            else:
                out.append(_checks.check_tensor_like(f"state.{n}", val, x, step_shape, what,
                                                     dtype=dtype))
        return tuple(out)

    def _pack(self, states):
        return states[0] if self.State is None else self.State(*states)

    def __call__(self, x_seq, state=None, *, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
                 detach_reset=False, return_h=False, return_states=False, impl="auto",
                 **kwargs):
        """The multi-step neuron over `x_seq` `[T, *shape]`; see the class docstring.
        `return_states=True` also returns the state after every step (`TraceOutput`)."""
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
        if not isinstance(return_states, bool):
            raise TypeError(f"return_states must be True or False, got {return_states!r}")
        states, params, opts, v_threshold, v_reset = self._prepare(
            x_seq, state, kwargs, v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
            detach_reset=detach_reset, return_h=return_h, sequence=True)
        out = None
        if impl != "reference":
            from snnfunc._fused import _generated

            out = _generated.run(self, x_seq, states, params, opts, v_threshold=v_threshold,
                                 v_reset=v_reset, surrogate=surrogate,
                                 detach_reset=detach_reset, return_h=return_h,
                                 force=impl == "fused", return_states=return_states)
        if out is None:
            out = self._reference(x_seq, states, params, opts, v_threshold=v_threshold,
                                  v_reset=v_reset, surrogate=surrogate,
                                  detach_reset=detach_reset)
        spikes, h, states, trace = out
        memory.register_spikes(spikes)
        if return_states:
            trace = trace[0] if self.State is None else self.State(*trace)
            return TraceOutput(spikes, self._pack(states), h, trace)
        if self.State is None:
            return NeuronOutputWithH(spikes, states[0], h) if return_h else NeuronOutput(
                spikes, states[0])
        st = self.State(*states)
        return StatesOutputWithH(spikes, st, h) if return_h else StatesOutput(spikes, st)

    def _reference(self, x_seq, states, params, opts, *, v_threshold, v_reset, surrogate,
                   detach_reset):
        """The definition run step by step (half precision computed in float32)."""
        io = x_seq.dtype
        params, v_threshold = _upcast(params, v_threshold, io)
        spikes, hs, trace = [], [], []
        shape = x_seq.shape[1:]
        for x in x_seq.unbind(0):
            s, h, states = self.step_values(x.float() if io in _HALF else x, states, params,
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
        params, v_threshold = _upcast(params, v_threshold, io)
        s, h, states = self.step_values(x.float() if io in _HALF else x, states, params, v_threshold=v_threshold,
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

    def __reduce__(self):
        # a neuron pickles as its name (and the module defining it), as a function pickles
        return _unpickle, (self.name, self.charge.__module__)

    def __deepcopy__(self, memo):
        return self  # a definition is immutable


def _reduce_state(state):
    nrn = next(n for n in _REGISTRY.values() if n.State is type(state))
    return _unpickle_state, (nrn.name, nrn.charge.__module__, tuple(state))


def _unpickle_state(name: str, module: str, values: tuple):
    return _unpickle(name, module).State(*values)


def _unpickle(name: str, module: str) -> "Neuron":
    """The neuron `name` for pickle: the module that defines it is imported first if needed,
    as pickle imports a function's module (a saved graph's ops never import)."""
    if name not in _REGISTRY and isinstance(module, str):
        import importlib

        importlib.import_module(module)
    return lookup(name)


def _upcast(params, v_threshold, io):
    """Half precision computes in float32 (the kernels' rule): parameters and threshold too."""
    if io not in _HALF:
        return params, v_threshold
    return {k: p.float() for k, p in params.items()}, v_threshold.float()


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
    where = f"neuron {getattr(charge, '__qualname__', charge)!r}"
    sig = inspect.signature(charge)
    pos = [n for n, p in sig.parameters.items()
           if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(pos) < 2:
        raise DefinitionError(f"{where}: the charge takes the input and the states, "
                              f"charge(x, v, *, ...), got ({', '.join(pos)})")
    states = tuple(pos[1:])
    if "v" not in states:
        raise DefinitionError(f"{where}: one state must be named v (the membrane that fires "
                              f"and resets); states are {states}")
    parameters, options = {}, {}
    takes = {}
    for part, fn in (("charge", charge), ("threshold", threshold), ("on_spike", on_spike)):
        if fn is None:
            takes[part] = set()
            continue
        kws = _keywords(fn, f"{where} ({part})")
        takes[part] = set(kws)
        for n, p in kws.items():
            if n in ("v_rest", "v_threshold"):
                continue
            if n in _RESERVED:
                raise DefinitionError(f"{where}: {n!r} is reserved and cannot be a parameter")
            default = None if p.default is inspect.Parameter.empty else p.default
            if isinstance(default, bool):
                if part != "charge":
                    raise DefinitionError(f"{where}: options ({n}) belong to the charge")
                options[n] = default
                continue
            if default is not None and not isinstance(default, numbers.Real):
                raise DefinitionError(f"{where}: the default of {n} must be a number, True or "
                                      f"False, got {default!r}")
            if n in parameters and parameters[n] is not None and default is not None \
                    and parameters[n] != default:
                raise DefinitionError(f"{where}: {n} has two defaults, {parameters[n]} and "
                                      f"{default}")
            parameters[n] = default if default is not None else parameters.get(n)
    for n in positive:
        if n not in parameters:
            raise DefinitionError(f"{where}: positive names {n!r}, which is not a parameter")
    rest = dict(rest or {})
    for n in rest:
        if n not in states or n == "v":
            raise DefinitionError(f"{where}: rest gives {n!r}, not a state other than v")
    rest = {n: float(rest.get(n, 0.0)) for n in states if n != "v"}
    if state_type is None and len(states) > 1:
        title = "".join(p.capitalize() for p in charge.__name__.strip("_").split("_"))
        title = title if title.isidentifier() else "Neuron"  # a lambda
        state_type = NamedTuple(f"{title}State", [(n, torch.Tensor) for n in states])
        state_type.__module__ = charge.__module__
        state_type.__reduce__ = _reduce_state  # pickled through its neuron's name
    if state_type is not None and tuple(state_type._fields) != states:
        raise DefinitionError(f"{where}: state_type has fields {state_type._fields}, the "
                              f"charge's states are {states}")
    name = name or f"{charge.__module__}:{charge.__qualname__}"
    out = Neuron(charge=charge, threshold=threshold, on_spike=on_spike, name=name,
                 states=states, parameters=parameters, options=options,
                 positive=tuple(positive), rest=rest, State=state_type, _takes=takes)
    # trace every option now: an operation the generator cannot emit fails here, not later
    for flags in _option_values(options):
        for hard in (True, False):
            out.trace(flags, hard=hard, detach_reset=False)
    _REGISTRY[name] = out
    return out


def _option_values(options: dict):
    names = list(options)
    for bits in range(2 ** len(names)):
        yield {n: bool(bits >> k & 1) for k, n in enumerate(names)}
