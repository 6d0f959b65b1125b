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


@snnfunc.neuron(positive=("tau",))
def leaky(x, v, *, tau=2.0, v_rest):
    """The docs' one-line user neuron."""
    return v + (x - (v - v_rest)) / tau


def _f64(value, n):
    return torch.full((n,), value, dtype=torch.float64)


# name -> (multi-step function, one-step function, keyword arguments for n neurons): every
# built-in neuron and the user neurons above, with non-default parameters (a parameter that is
# silently ignored shows), some of them tensors (their gradients are checked)
NEURONS = {
    "if": (snnfunc.if_, snnfunc.if_step, lambda n: {"v_threshold": 1.2}),
    "lif": (snnfunc.lif, snnfunc.lif_step, lambda n: {"tau": _f64(2.5, n)}),
    "plif": (snnfunc.plif, snnfunc.plif_step,
             lambda n: {"w": _f64(-0.4, n), "parametrization": "sigmoid"}),
    "rif": (snnfunc.rif, snnfunc.rif_step, lambda n: {"w": torch.tensor(-0.1, dtype=torch.float64)}),
    "cuba_lif": (snnfunc.cuba_lif, snnfunc.cuba_lif_step,
                 lambda n: {"tau_syn": _f64(1.5, n), "tau_mem": 2.0}),
    "alif": (snnfunc.alif, snnfunc.alif_step, lambda n: {"tau": 2.0, "beta": _f64(0.4, n)}),
    "qif": (snnfunc.qif, snnfunc.qif_step, lambda n: {"tau": 2.0, "v_c": 0.6}),
    "eif": (snnfunc.eif, snnfunc.eif_step, lambda n: {"tau": _f64(2.0, n), "delta_T": 0.8}),
    "user leaky": (leaky, leaky.step, lambda n: {"tau": _f64(1.8, n)}),
    "user two-state": (two_state_leaky, two_state_leaky.step, lambda n: {"tau": 2.0}),
    "user refractory": (refractory, refractory.step,
                        lambda n: {"t_ref": _f64(2.0, n), "tau_a": 5.0}),
}
