"""The test registry: user neurons defined at module level (so they pickle and load from a
saved graph like a user's), shared by the tests that cross them with contracts."""

import torch

import snnfunc


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
