"""The test registry: every neuron the tests run, with what they need of it. A neuron added to
`ENTRIES` is run by every contract test: fused equals the reference loop (test_fused,
test_generated), edge values (test_edge_values), the Triton kernels under the interpreter
(triton_*_cases.py), shapes, the recurrent layer under its transforms, trust. The user neurons
are defined at module level, so they pickle and load from a saved graph like a user's."""

import dataclasses
from typing import Any, Callable

import torch

import snnfunc
from snnfunc.functional.defined import DEFINITIONS
from snnfunc.functional.neurons import DEFINITIONS as CLASSIC_DEFINITIONS


@snnfunc.neuron(positive=("tau",))
def two_state_leaky(x, v, a, *, tau=2.0, v_rest):
    """A user neuron with two states: a filtered input `a` drives the membrane."""
    a = a * 0.5 + x
    return v + (a - (v - v_rest)) / tau, a


def _threshold(v, r, a, *, v_threshold, beta=0.3):
    return v_threshold + beta * a


def _on_spike(s, v, r, a, *, t_ref=2.0):
    return {"r": r + t_ref * s, "a": a + s}


@snnfunc.neuron(threshold=_threshold, on_spike=_on_spike, positive=("tau", "tau_a"))
def refractory(x, v, r, a, *, tau=2.0, tau_a=10.0, v_rest):
    """The refractory neuron of docs/custom-neuron.md: `r - 1` lands on clamp's bound 0."""
    resting = r > 0
    v = torch.where(resting, v_rest, v + (x - (v - v_rest)) / tau)
    r = torch.clamp(r - 1, min=0.0)
    a = a - a / tau_a
    return v, r, a


@snnfunc.neuron(positive=("tau",))
def leaky(x, v, *, tau=2.0, v_rest):
    """The docs' one-line user neuron."""
    return v + (x - (v - v_rest)) / tau


@snnfunc.neuron(positive=("tau",), rest={"w": 0.25})
def gated(x, v, w, *, tau=2.0, gain=0.5, adapt=True, v_rest):
    """A user neuron with a gate state: minimum, sigmoid, where, a state left as it is."""
    if adapt:
        w = torch.where(w > 1, w - 1, w * gain + torch.sigmoid(x))
    v = v + (torch.minimum(x, 2 * w + 1) - (v - v_rest)) / tau
    return v, w


def _gated_jump(s, v, w, *, gain=0.5):
    return {"w": w - gain * s}


@snnfunc.neuron(on_spike=_gated_jump, threshold=lambda v, w, *, v_threshold: v_threshold + w * w)
def jumpy(x, v, w, *, gain=0.5, v_rest):
    """A user neuron whose threshold and jump depend on a second state."""
    return v + 0.5 * (x - (v - v_rest)), w + 0.1 * (1 - w)


def _f64(value, n):
    return torch.full((n,), value, dtype=torch.float64)


def leaves(state):
    """The state's tensors: a NamedTuple of several, or the one tensor."""
    return list(state) if isinstance(state, (tuple, list)) else [state]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One neuron of the tests.

    neuron: its definition (states, parameters, options, State); multi, step: its public
    multi-step and one-step functions; params: numbers for the fused, generated, edge-value
    and Triton tests, not the defaults (a parameter silently ignored shows), whose first one
    those tests make a learnable tensor of the shape they test; make: n -> keyword arguments
    for n neurons, some of them float64 tensors (shapes, recurrent layer, trust); exact:
    whether its fused forward equals the reference bit for bit (not where the definition uses
    exp: a last-bit difference); classic: one of SpikingFlow's four neurons, which the
    hand-written spec `conftest.ref_loop` and the adapters' tests also cover; full: whether
    the tests that cross neurons with many cases run all of them on it (the others run a
    sample: they add neurons that the full ones' cases already exercise); drive: the scale of
    uniform inputs in [0, drive) that fire it at a moderate rate within a few steps."""

    neuron: Any
    multi: Callable
    step: Callable
    params: dict
    make: Callable
    exact: bool = True
    classic: bool = False
    full: bool = True
    drive: float = 2.5

    @property
    def first(self):
        """The name of the parameter the tests make a tensor, or None."""
        return next(iter(self.params), None)

    def state(self, tensors):
        """The state argument made of one tensor per state."""
        return tensors[0] if len(tensors) == 1 else self.neuron.State(*tensors)

    def kwargs(self, p=None, **options):
        """The keyword arguments of a call: the parameters with the first one p (if not None),
        and those of `options` this neuron takes (decay_input only where it has it)."""
        kw = dict(self.params)
        if p is not None:
            kw[self.first] = p
        for k, v in options.items():
            if k not in DEFINITION_OPTIONS or k in self.neuron.options:
                kw[k] = v
        return kw

    def __call__(self, x, tensors, p=None, **options):
        """The multi-step function on x from the state of `tensors` (None: at rest)."""
        state = None if tensors is None else self.state(list(tensors))
        return self.multi(x, state, **self.kwargs(p, **options))

    def call_step(self, x, tensors, p=None, **options):
        state = None if tensors is None else self.state(list(tensors))
        return self.step(x, state, **self.kwargs(p, **options))


def _builtin(kind, params, make, **kw):
    neuron = CLASSIC_DEFINITIONS.get(kind) or DEFINITIONS[kind]
    name = "if_" if kind == "if" else kind
    classic = kind in CLASSIC_DEFINITIONS
    return Entry(neuron, getattr(snnfunc, name), getattr(snnfunc, f"{kind}_step"), params, make,
                 classic=classic, drive=1.4 if classic else 2.5, **kw)


def _user(neuron, params, make, **kw):
    return Entry(neuron, neuron, neuron.step, params, make, **kw)


# every built-in neuron and the user neurons above, with non-default parameters
ENTRIES = {
    "if": _builtin("if", {}, lambda n: {"v_threshold": 1.2}),
    "lif": _builtin("lif", dict(tau=1.7), lambda n: {"tau": _f64(2.5, n)}),
    "plif": _builtin("plif", dict(w=0.55),
                     lambda n: {"w": _f64(-0.4, n), "parametrization": "sigmoid"}),
    "rif": _builtin("rif", dict(w=-0.15), lambda n: {"w": torch.tensor(-0.1, dtype=torch.float64)}),
    "cuba_lif": _builtin("cuba_lif", dict(tau_syn=1.5, tau_mem=2.5),
                         lambda n: {"tau_syn": _f64(1.5, n), "tau_mem": 2.0}),
    "alif": _builtin("alif", dict(tau=2.0, tau_adapt=5.0, beta=0.3),
                     lambda n: {"tau": 2.0, "beta": _f64(0.4, n)}),
    "qif": _builtin("qif", dict(tau=2.0, v_c=0.5), lambda n: {"tau": 2.0, "v_c": 0.6}),
    "eif": _builtin("eif", dict(tau=2.0, delta_T=0.5, theta_rh=0.6),
                    lambda n: {"tau": _f64(2.0, n), "delta_T": 0.8}, exact=False),
    # sigmoid: exp inside
    "user gated": _user(gated, dict(tau=1.7, gain=0.4), lambda n: {"tau": _f64(1.7, n), "gain": 0.4},
                        exact=False),
    "user jumpy": _user(jumpy, dict(gain=0.3), lambda n: {"gain": _f64(0.3, n)}),
    "user leaky": _user(leaky, dict(tau=1.8), lambda n: {"tau": _f64(1.8, n)}, full=False),
    "user two-state": _user(two_state_leaky, dict(tau=1.6), lambda n: {"tau": 2.0}, full=False),
    "user refractory": _user(refractory, dict(t_ref=3.0, tau=1.7, tau_a=5.0),
                             lambda n: {"t_ref": _f64(2.0, n), "tau_a": 5.0}, full=False),
}

DEFINITION_OPTIONS = frozenset(k for e in ENTRIES.values() for k in e.neuron.options)
"""The options of some neuron's definition (decay_input, ...): a call passes them to those that
take them."""

CLASSIC = tuple(name for name, e in ENTRIES.items() if e.classic)
"""SpikingFlow's four neurons: if, lif, plif, rif."""

# name -> (multi-step function, one-step function, keyword arguments for n neurons), for the
# tests that take those three (shapes, the recurrent layer)
NEURONS = {name: (e.multi, e.step, e.make) for name, e in ENTRIES.items()}
