r"""A neuron's definition, parsed: its charge, threshold and spike jumps, and its step.

Every time step runs, in this order (written once, in `Definition.advance`, for the reference
loop on tensors and for the trace the kernels are generated from):

$$(H_t, \text{other states}) = \text{charge}(X_t, \text{states}_{t-1}), \qquad
\theta_t = \text{threshold}(\ldots) \;(\text{default } V_{th}), \qquad S_t = \Theta(H_t - \theta_t),$$

then the membrane `v` resets (hard: $V_{reset}$ where $S_t = 1$; soft: $H_t - \theta_t$;
$H_t$ where $S_t = 0$) and `on_spike` updates the other states with $S_t$.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import typing
from typing import NamedTuple

import torch

from snnfunc import memory
from snnfunc._core import ir, registry
from snnfunc._core.ir import DefinitionError
from snnfunc._core.reset import reset
from snnfunc.surrogate import spike

RESERVED = ("x", "s", "v_rest", "v_threshold", "v_reset", "surrogate", "detach_reset",
            "return_h", "return_states", "impl", "state", "batch_first")


@dataclasses.dataclass(frozen=True, eq=False)
class Definition:
    """A parsed neuron definition (see `snnfunc.neuron`).

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

    @property
    def membrane(self) -> int:
        return self.states.index("v")

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

    def advance(self, x, states, params, v_threshold, v_rest, opts, fire):
        """One step, `(s, h, new states)`, in the order every path shares: charge, threshold,
        spike, reset, jumps. `fire` supplies what differs between the reference loop
        (`_Tensors`) and the trace (`_Trace`)."""
        new = self._charge(x, states, params, v_rest, opts)
        new = tuple(fire.state(v, f"the charge's new value of state {n!r}")
                    for v, n in zip(new, self.states))
        m = self.membrane
        h = new[m]
        th = v_threshold
        if self.threshold is not None:
            th = fire.state(self._threshold(new, params, v_threshold), "the threshold")
        s = fire.spike(h, th)
        r = fire.detach(s)
        v = fire.reset(h, r, th)
        jumps = self._jumps(r, new, params)
        out = tuple(v if k == m else fire.state(jumps.get(n, new[k]),
                                                f"on_spike's new value of state {n!r}")
                    for k, n in enumerate(self.states))
        return s, h, out

    def step_values(self, x, states, params, *, v_threshold, v_reset, surrogate, detach_reset,
                    opts):
        """One reference step on tensors: `(s, h, new states)`."""
        v_rest = 0.0 if v_reset is None else v_reset
        return self.advance(x, states, params, v_threshold, v_rest, opts,
                            _Tensors(surrogate, v_reset, detach_reset))

    def trace(self, opts: dict, *, hard: bool, detach_reset: bool):
        """The step as an IR graph: `(graph, inputs, outputs)` with named input nodes
        (`x`, `state:<n>`, `param:<n>`, `v_threshold`, `v_rest`) and outputs (`s`, `h`, the
        new states)."""
        g = ir.Graph(f"neuron {self.name}")
        x = g.input("x")
        states = tuple(g.input(f"state:{n}") for n in self.states)
        params = {n: g.input(f"param:{n}") for n in self.parameters}
        vth = g.input("v_threshold")
        vr = g.input("v_rest")
        try:
            s, h, out = self.advance(x, states, params, vth, vr if hard else 0.0, opts,
                                     _Trace(g, hard, detach_reset, vr))
        except TypeError as exc:
            if isinstance(exc, DefinitionError):
                raise
            raise DefinitionError(f"neuron {self.name}: {exc}") from None
        inputs = {"x": x.id, **{f"state:{n}": s.id for n, s in zip(self.states, states)},
                  **{f"param:{n}": p.id for n, p in params.items()}, "v_threshold": vth.id,
                  "v_rest": vr.id}
        return g, inputs, {"s": s.id, "h": h.id, "states": [v.id for v in out]}

    def pack(self, states):
        """The states as the neuron returns them: a tensor (one state) or its NamedTuple."""
        return states[0] if self.State is None else self.State(*states)

    def __reduce__(self):
        # a neuron pickles as its name (and the module defining it), as a function pickles
        return registry.unpickle, (self.name, self.charge.__module__)

    def __deepcopy__(self, memo):
        return self  # a definition is immutable


class _Tensors:
    """The step on tensors: the reference loop."""

    def __init__(self, surrogate, v_reset, detach_reset):
        self.surrogate, self.v_reset, self.detach_reset = surrogate, v_reset, detach_reset

    def state(self, value, what):
        return value

    def spike(self, h, th):
        return memory.register_spikes(spike(h - th, self.surrogate))

    def detach(self, s):
        return s.detach() if self.detach_reset else s

    def reset(self, h, r, th):
        return reset(h, r, th, self.v_reset, False)


class _Trace:
    """The step traced into a graph: each value a node, checked as the reference needs it."""

    def __init__(self, g, hard, detach_reset, vr):
        self.g, self.hard, self.detach_reset, self.vr = g, hard, detach_reset, vr

    def state(self, value, what):
        return ir.Sym(self.g, ir.state_value(self.g, value, what))

    def spike(self, h, th):
        return self.g.sym("spike", self.g.add("sub", h.id, th.id))

    def detach(self, s):
        return self.g.sym("detach", s.id) if self.detach_reset else s

    def reset(self, h, r, th):
        if self.hard:
            return self.g.sym("reset_hard", h.id, r.id, self.vr.id)
        return self.g.sym("reset_soft", h.id, r.id, th.id)


# --------------------------------------------------------------------------- parsing


def _keywords(fn, what) -> dict[str, inspect.Parameter]:
    params = inspect.signature(fn).parameters
    for p in params.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            raise DefinitionError(f"{what} cannot take *args: name each state")
    return {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def parse(charge, *, threshold=None, on_spike=None, positive=(), rest=None, name=None,
          state_type=None) -> dict:
    """The fields of a `Definition` from the functions of a definition (see
    `snnfunc.neuron`), checked."""
    where = f"neuron {getattr(charge, '__qualname__', charge)!r}"
    sig = inspect.signature(charge)
    pos = [n for n, p in sig.parameters.items()
           if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for n in pos:
        if sig.parameters[n].default is not inspect.Parameter.empty:
            raise DefinitionError(
                f"{where}: {n} has a default value before `*`: the charge's positional "
                f"arguments are the input and the states; write parameters after `*`, as in "
                f"charge(x, v, *, {n}={sig.parameters[n].default!r})")
    if len(pos) < 2:
        raise DefinitionError(f"{where}: the charge takes the input and the states, "
                              f"charge(x, v, *, ...), got ({', '.join(pos)})")
    states = tuple(pos[1:])
    if "v" not in states:
        raise DefinitionError(f"{where}: one state must be named v (the membrane that fires "
                              f"and resets); states are {states}")
    parameters, options, takes = {}, {}, {}
    for part, fn in (("charge", charge), ("threshold", threshold), ("on_spike", on_spike)):
        if fn is None:
            takes[part] = set()
            continue
        kws = _keywords(fn, f"{where} ({part})")
        takes[part] = set(kws)
        for n, p in kws.items():
            if n in ("v_rest", "v_threshold"):
                continue
            if n in RESERVED:
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
        state_type.__reduce__ = registry.reduce_state  # pickled through its neuron's name
    if state_type is not None and tuple(state_type._fields) != states:
        raise DefinitionError(f"{where}: state_type has fields {state_type._fields}, the "
                              f"charge's states are {states}")
    return dict(charge=charge, threshold=threshold, on_spike=on_spike,
                name=name or f"{charge.__module__}:{charge.__qualname__}", states=states,
                parameters=parameters, options=options, positive=tuple(positive), rest=rest,
                State=state_type, _takes=takes)


def option_values(options: dict):
    """Every combination of a definition's options' values."""
    names = list(options)
    for bits in range(2 ** len(names)):
        yield {n: bool(bits >> k & 1) for k, n in enumerate(names)}
