"""Registries crossed with contracts: surrogates (with hand-written primitives), and for
SpikingFlow's four neurons a plainly written reference loop that uses nothing of snnfunc but the
surrogate's primitive (the neurons every test runs are in tests/registry.py)."""

import math

import pytest
import torch

from snnfunc import surrogate as S
from registry import CLASSIC
from snnfunc._kernel import backends, dispatch

CPU_KERNELS = pytest.mark.skipif(not dispatch.available("cpu"),
                                 reason=f"fused CPU kernels unavailable: {backends.error('cpu')}")
"""Marks tests that need the C kernels (built with the machine's C compiler)."""


def _pw(x, conds_vals, default):
    out = default
    for cond, val in reversed(conds_vals):
        out = torch.where(cond, val, out)
    return out


# name -> (surrogate, primitive g with g' the surrogate derivative, kinks of g')
def _primitives():
    a = 1.7  # non-default parameters catch a parameter that is silently ignored
    return {
        "Sigmoid": (S.Sigmoid(), lambda x: torch.sigmoid(4.0 * x), ()),
        "Sigmoid(1.5)": (S.Sigmoid(1.5), lambda x: torch.sigmoid(1.5 * x), ()),
        "BilinearLeakyReLU": (
            S.BilinearLeakyReLU(),
            lambda x: _pw(x, [(x < -0.5, 0.01 * (x + 0.5) - 0.5), (x > 0.5, 0.01 * (x - 0.5) + 0.5)], x),
            (-0.5, 0.5),
        ),
        "BilinearLeakyReLU(2,0.1,0.3)": (
            S.BilinearLeakyReLU(2.0, 0.1, 0.3),
            lambda x: _pw(x, [(x < -0.3, 0.1 * (x + 0.3) - 0.6), (x > 0.3, 0.1 * (x - 0.3) + 0.6)], 2 * x),
            (-0.3, 0.3),
        ),
        "SignSwish": (
            S.SignSwish(),
            lambda x: 2 * torch.sigmoid(5 * x) * (1 + 5 * x * (1 - torch.sigmoid(5 * x))) - 1,
            (),
        ),
        "ATan": (S.ATan(), lambda x: torch.atan(math.pi / 2 * 2.0 * x) / math.pi + 0.5, ()),
        "ATan(a)": (S.ATan(a), lambda x: torch.atan(math.pi / 2 * a * x) / math.pi + 0.5, ()),
        "PiecewiseQuadratic": (
            S.PiecewiseQuadratic(a),
            lambda x: _pw(x, [(x < -1 / a, 0 * x), (x > 1 / a, 0 * x + 1)],
                          -(a**2) * x * x.abs() / 2 + a * x + 0.5),
            (-1 / a, 1 / a),
        ),
        "PiecewiseExp": (
            S.PiecewiseExp(a),
            lambda x: _pw(x, [(x < 0, torch.exp(a * x) / 2)], 1 - torch.exp(-a * x) / 2),
            (),
        ),
        "SoftSign": (S.SoftSign(), lambda x: (2.0 * x / (1 + 2.0 * x.abs()) + 1) / 2, ()),
        "SoftSign(a)": (S.SoftSign(a), lambda x: (a * x / (1 + a * x.abs()) + 1) / 2, ()),
        "Erf": (S.Erf(a), lambda x: (1 + torch.erf(a * x)) / 2, ()),
        "SuperSpike": (S.SuperSpike(a), lambda x: x / (1 + a * x.abs()), ()),
        "PiecewiseLeakyReLU": (
            S.PiecewiseLeakyReLU(0.8, 0.05),
            lambda x: _pw(x, [(x < -0.8, 0.05 * (x + 0.8)), (x > 0.8, 0.05 * (x - 0.8) + 1)],
                          x / 1.6 + 0.5),
            (-0.8, 0.8),
        ),
        "Rect": (S.Rect(a), lambda x: torch.clamp(x / a + 0.5, 0, 1), (-a / 2, a / 2)),
        "Triangle": (
            S.Triangle(a),
            lambda x: _pw(
                x,
                [(x < -a, 0 * x), (x < 0, (x + a) ** 2 / (2 * a * a)), (x <= a, 1 - (a - x) ** 2 / (2 * a * a))],
                0 * x + 1,
            ),
            (-a, 0.0, a),
        ),
        "StraightThrough": (S.StraightThrough(), lambda x: x, ()),
    }


SURROGATES = _primitives()


def away_from_kinks(x, kinks, gap=1e-3):
    for k in kinks:
        x = torch.where((x - k).abs() < gap, x + 2 * gap, x)
    return x


def primitive_grad(g, x):
    """g'(x) by autograd through the hand-written primitive, in float64."""
    x = x.detach().to(torch.float64).requires_grad_(True)
    (d,) = torch.autograd.grad(g(x).sum(), x)
    return d


def ref_spike(u, g):
    """Θ(u) forward, g'(u) backward, built from the primitive alone."""
    return (u >= 0).to(u.dtype) + (g(u) - g(u).detach())  # exactly Θ(u) forward


def ref_loop(kind, x_seq, v, p=None, *, v_threshold=1.0, v_reset=0.0, g=None, detach_reset=False,
             decay_input=True, parametrization="reciprocal"):
    """The spec, written out plainly (section 1 and 2 of neuron-semantics.md)."""
    if g is None:
        g = lambda u: torch.sigmoid(4.0 * u)  # noqa: E731  (Sigmoid(4.0))
    vr = 0.0 if v_reset is None else v_reset
    if kind == "plif" and parametrization == "sigmoid":
        p = torch.sigmoid(p) if torch.is_tensor(p) else 1 / (1 + math.exp(-p))
    spikes, hs = [], []
    for t in range(x_seq.shape[0]):
        x = x_seq[t]
        if kind == "if":
            h = v + x
        elif kind in ("lif", "plif"):
            k = 1 / p if kind == "lif" else p
            h = v + (x - (v - vr)) * k if decay_input else v - (v - vr) * k + x
        else:
            h = v + p * (v - vr) + x
        s = ref_spike(h - v_threshold, g)
        r = s.detach() if detach_reset else s
        v = h - r * v_threshold if v_reset is None else h * (1 - r) + v_reset * r
        spikes.append(s)
        hs.append(h)
    if not spikes:
        return x_seq.new_empty(x_seq.shape), v, x_seq.new_empty(x_seq.shape)
    return torch.stack(spikes), v, torch.stack(hs)


NEURONS = CLASSIC
"""SpikingFlow's four neurons (if, lif, plif, rif), the ones `ref_loop`, `call`, `call_step` and
`default_param` know: for the tests against that hand-written spec. Every other test takes its
neurons from tests/registry.py's ENTRIES."""


def default_param(kind):
    return {"if": None, "lif": 2.0, "plif": 0.5, "rif": -0.2}[kind]


def call(kind, x_seq, v=None, p=None, **kw):
    import snnfunc

    if kind == "if":
        return snnfunc.if_(x_seq, v, **kw)
    if kind == "lif":
        return snnfunc.lif(x_seq, v, tau=p, **kw)
    if kind == "plif":
        return snnfunc.plif(x_seq, v, w=p, **kw)
    return snnfunc.rif(x_seq, v, w=p, **kw)


def call_step(kind, x, v=None, p=None, **kw):
    import snnfunc

    if kind == "if":
        return snnfunc.if_step(x, v, **kw)
    if kind == "lif":
        return snnfunc.lif_step(x, v, tau=p, **kw)
    if kind == "plif":
        return snnfunc.plif_step(x, v, w=p, **kw)
    return snnfunc.rif_step(x, v, w=p, **kw)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
