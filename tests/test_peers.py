"""snnfunc against SpikingJelly 2.0, snnTorch 1.0 and Norse 1.1 on random inputs.

Each test states the settings under which a peer computes the same neuron (identical spikes;
gradients to rounding where the surrogates match), or the peer's recurrence where it differs
by design, checked bit for bit against the peer and then against snnfunc. The mapping tables
are in docs/interop.md.
"""

import importlib.util
import math

import pytest
import torch

import snnfunc
from snnfunc import surrogate as S

F64 = torch.float64


def _needs(module, what):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"needs the peer library {what} (extra 'peers'; see README)")


def above(theta, dtype=F64):
    """The smallest float above theta: snnfunc's H >= above(θ) is a peer's strict H > θ."""
    t = torch.tensor(theta, dtype=dtype)
    return torch.nextafter(t, torch.tensor(math.inf, dtype=dtype))


def currents(T=64, shape=(8, 50), scale=1.5, shift=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, *shape, generator=g, dtype=F64) * scale + shift


def grads(f, *tensors):
    tensors = [t.detach().clone().requires_grad_() for t in tensors]
    out = f(*tensors)
    # weights exact in float32: snnTorch returns float32 spikes, so the gradient reaching its
    # spikes is rounded to float32
    weight = torch.linspace(-1, 1, out.numel(), dtype=torch.float32).view_as(out)
    return out.detach(), torch.autograd.grad((out * weight.to(out.dtype)).sum(), tensors)


# ------------------------------------------------------------------------------ SpikingJelly

SJ = _needs("spikingjelly", "SpikingJelly 2.0")
SJ_SURROGATES = [("Sigmoid", 4.0, S.Sigmoid(4.0)), ("ATan", 2.0, S.ATan(2.0))]


SJ_NEURONS = [("IFNode", True, "IF"), ("LIFNode", True, "LIF"),
              ("LIFNode", False, "LIF-no_decay_input"), ("ParametricLIFNode", True, "PLIF"),
              ("ParametricLIFNode", False, "PLIF-no_decay_input")]
SJ_RESETS = [(0.0, "hard0"), (-0.2, "hard-0.2"), (None, "soft")]
# every neuron, reset and detach_reset with one of the two surrogates, in turn: each
# (neuron, reset kind) meets both surrogates over detach_reset, each (neuron, detach_reset)
# both over the reset kinds (the hard resets 0.0 and -0.2 share a surrogate: one kernel)
SJ_CASES = [(neuron, decay, v_reset, detach, SJ_SURROGATES[(i + (v_reset is None) + detach) % 2],
             f"{nid}-{rid}-{'detach_reset' if detach else 'attached'}")
            for i, (neuron, decay, nid) in enumerate(SJ_NEURONS) for v_reset, rid in SJ_RESETS
            for detach in (False, True)]


@SJ
@pytest.mark.parametrize("neuron, decay_input, v_reset, detach_reset, surrogate",
                         [c[:5] for c in SJ_CASES], ids=[f"{c[5]}-{c[4][0]}" for c in SJ_CASES])
def test_spikingjelly_same_spikes_state_and_gradients(neuron, decay_input, v_reset, detach_reset,
                                                       surrogate):
    """SpikingJelly's IFNode / LIFNode(tau) / ParametricLIFNode(init_tau), step_mode="m", equal
    snnfunc.if_ / lif(tau=tau) / plif(w=node.w, parametrization="sigmoid") with the same
    v_threshold, v_reset, decay_input and detach_reset: spikes and final v bit for bit, input
    (and w) gradients to rounding with Sigmoid(alpha) / ATan(alpha) on both sides."""
    from spikingjelly.activation_based import neuron as sjn
    from spikingjelly.activation_based import surrogate as sjs

    name, alpha, ours = surrogate
    sg = getattr(sjs, name)(alpha=alpha)
    opts = dict(v_threshold=0.9, v_reset=v_reset, detach_reset=detach_reset)
    extra = {} if neuron == "IFNode" else dict(decay_input=decay_input)
    kw = {"IFNode": {}, "LIFNode": dict(tau=3.0), "ParametricLIFNode": dict(init_tau=3.0)}[neuron]
    node = getattr(sjn, neuron)(**kw, **opts, **extra, surrogate_function=sg, step_mode="m").double()
    x = currents()

    def peer(x):
        node.reset()
        return node(x)

    def run(x, *w):
        common = dict(**opts, **extra, surrogate=ours)
        if neuron == "IFNode":
            return snnfunc.if_(x, **common)
        if neuron == "LIFNode":
            return snnfunc.lif(x, tau=3.0, **common)
        return snnfunc.plif(x, w=w[0], parametrization="sigmoid", **common)

    s_peer, (gx_peer,) = grads(peer, x)
    v_peer = node.v.detach().clone()
    w = [node.w.detach().clone()] if neuron == "ParametricLIFNode" else []
    s_mine, g_mine = grads(lambda *a: run(*a).spikes, x, *w)
    assert 0.05 < s_peer.mean() < 0.8
    assert torch.equal(s_peer, s_mine)
    assert torch.equal(v_peer, run(x, *w).v)
    torch.testing.assert_close(g_mine[0], gx_peer, rtol=1e-9, atol=1e-12)
    if w:  # the learned 1/tau: peer's gradient of w after a backward through the same loss
        xs = x.clone().requires_grad_()
        node.reset()
        node.w.grad = None
        o = node(xs)
        weight = torch.linspace(-1, 1, o.numel(), dtype=torch.float32).view_as(o).to(o.dtype)
        (o * weight).sum().backward()
        torch.testing.assert_close(g_mine[1], node.w.grad, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------ snnTorch

SNNTORCH = _needs("snntorch", "snnTorch 1.0")


def snntorch_run(node, x):
    mem = node.reset_mem()
    spikes, mems = [], []
    for x_t in x:
        spk, mem = node(x_t, mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def snntorch_documented(x, beta, theta, mechanism):
    """snnTorch's Leaky with its default reset_delay=True, as written in docs/interop.md:
    R_t = [M_{t-1} > θ] (detached), M_t = β M_{t-1} + X_t - θ R_t ("subtract") or
    M_t = β (1 - R_t) M_{t-1} + X_t ("zero"), S_t = [M_t > θ]."""
    m = torch.zeros_like(x[0])
    spikes, mems = [], []
    for x_t in x:
        r = (m > theta).to(x.dtype)
        if mechanism == "subtract":
            m = beta * m + x_t - r * theta
        else:
            m = beta * ((1 - r) * m) + x_t
        spikes.append((m > theta).to(x.dtype))
        mems.append(m)
    return torch.stack(spikes), torch.stack(mems)


@SNNTORCH
@pytest.mark.parametrize("mechanism", ["subtract", "zero"])
def test_snntorch_leaky_is_its_documented_recurrence(mechanism):
    """The delayed, undecayed (subtract) and always-detached reset, checked bit for bit."""
    import snntorch

    beta, theta = 0.875, 1.0
    x = currents()
    node = snntorch.Leaky(beta=beta, threshold=theta, reset_mechanism=mechanism)
    s, m = snntorch_run(node, x)
    s_doc, m_doc = snntorch_documented(x, beta, theta, mechanism)
    assert 0.05 < s.mean() < 0.8
    assert torch.equal(s, s_doc) and torch.equal(m, m_doc)


@SNNTORCH
def test_snntorch_zero_reset_equals_snnfunc_hard_reset():
    """Leaky(beta, threshold=θ, reset_mechanism="zero") is snnfunc's hard reset to 0 with
    decay_input=False, 1/tau = 1 - beta, detach_reset=True and v_threshold = above(θ):
    same spikes, snnTorch's returned mem is snnfunc's h, input gradients equal with ATan(2)."""
    import snntorch

    beta, theta = 0.875, 1.0
    node = snntorch.Leaky(beta=beta, threshold=theta, reset_mechanism="zero")
    x = currents()
    (s_peer, gx_peer) = grads(lambda x: snntorch_run(node, x)[0], x)
    s_mine, gx_mine = grads(lambda x: snnfunc.plif(
        x, w=1 - beta, decay_input=False, v_reset=0.0, v_threshold=above(theta), detach_reset=True,
        surrogate=S.ATan(2.0)).spikes, x)
    h = snnfunc.plif(x, w=1 - beta, decay_input=False, v_threshold=above(theta), return_h=True).h
    assert 0.05 < s_peer.mean() < 0.8
    assert torch.equal(s_peer, s_mine)
    torch.testing.assert_close(snntorch_run(node, x)[1], h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx_mine[0], gx_peer[0], rtol=1e-9, atol=1e-12)


@SNNTORCH
def test_snntorch_subtract_reset_differs_by_its_undecayed_subtraction():
    """Leaky("subtract") subtracts θ from the *next* membrane without decaying it; snnfunc's soft
    reset subtracts θ before the decay. They agree for beta = 1 (IF) and differ otherwise."""
    import snntorch

    x = currents()
    s_if, _ = snntorch_run(snntorch.Leaky(beta=1.0, threshold=1.0), x)
    assert torch.equal(s_if, snnfunc.if_(x, v_reset=None, v_threshold=above(1.0)).spikes)
    s_leaky, _ = snntorch_run(snntorch.Leaky(beta=0.875, threshold=1.0), x)
    soft = snnfunc.plif(x, w=0.125, decay_input=False, v_reset=None, v_threshold=above(1.0)).spikes
    assert not torch.equal(s_leaky, soft)
    # exactly the documented recurrence (see test above) explains every difference
    assert torch.equal(s_leaky, snntorch_documented(x, 0.875, 1.0, "subtract")[0])


@SNNTORCH
def test_snntorch_without_reset_delay_is_snnfunc_while_v_stays_below_threshold():
    """reset_delay=False resets in the same step: "zero" is snnfunc's hard reset (gradient through
    the reset, so detach_reset=False); "subtract" is the soft reset as long as no membrane stays
    above θ after its reset (H < 2θ), which bounded inputs guarantee here."""
    import snntorch

    beta = 0.875
    x = torch.rand(64, 8, 50, dtype=F64, generator=torch.Generator().manual_seed(1)) * 0.9
    for mechanism, v_reset in (("zero", 0.0), ("subtract", None)):
        node = snntorch.Leaky(beta=beta, threshold=1.0, reset_mechanism=mechanism, reset_delay=False)
        s_peer, g_peer = grads(lambda x: snntorch_run(node, x)[0], x)
        s_mine, g_mine = grads(lambda x: snnfunc.plif(
            x, w=1 - beta, decay_input=False, v_reset=v_reset, v_threshold=above(1.0),
            surrogate=S.ATan(2.0)).spikes, x)
        assert 0.05 < s_peer.mean() < 0.8
        assert torch.equal(s_peer, s_mine), mechanism
        if mechanism == "zero":  # the reset's gradient passes snnTorch's float32 spikes
            torch.testing.assert_close(g_mine[0], g_peer[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ Norse

NORSE = _needs("norse", "Norse 1.1 (which imports nir and nirtorch)")


def norse_cells(cell, x):
    state, out = None, []
    for x_t in x:
        z, state = cell(x_t, state)
        out.append(z)
    return torch.stack(out)


@NORSE
def test_norse_lif_box_equals_plif_above_threshold():
    """LIFBoxCell(LIFBoxParameters(tau_mem_inv, v_th=θ, v_leak=v_reset=0), dt) is
    snnfunc.plif(w=dt*tau_mem_inv, v_reset=0, v_threshold=above(θ)): spikes bit for bit, and
    input gradients to rounding with snnfunc's SuperSpike(1.0): Norse 1.1's SuperSpike backward
    is 1/(|x| + 1)^2 whatever its alpha (checked here with alpha = 100 and 1)."""
    import norse.torch as nt

    dt, tau_inv = 1e-3, torch.tensor(250.0, dtype=F64)
    p = nt.LIFBoxParameters(tau_mem_inv=tau_inv, v_th=torch.tensor(1.0, dtype=F64),
                            v_leak=torch.tensor(0.0, dtype=F64), v_reset=torch.tensor(0.0, dtype=F64),
                            method="super", alpha=torch.tensor(100.0, dtype=F64))
    cell = nt.LIFBoxCell(p, dt=dt)
    x = currents(shift=1.2)
    s_peer, g_peer = grads(lambda x: norse_cells(cell, x), x)
    s_mine, g_mine = grads(lambda x: snnfunc.plif(
        x, w=dt * tau_inv, v_reset=0.0, v_threshold=above(1.0), surrogate=S.SuperSpike(1.0)).spikes, x)
    assert 0.05 < s_peer.mean() < 0.8
    assert torch.equal(s_peer, s_mine)
    torch.testing.assert_close(g_mine[0], g_peer[0], rtol=1e-9, atol=1e-12)
    cell1 = nt.LIFBoxCell(p._replace(alpha=torch.tensor(1.0, dtype=F64)), dt=dt)
    assert torch.equal(grads(lambda x: norse_cells(cell1, x), x)[1][0], g_peer[0])


@NORSE
def test_norse_strict_threshold_is_the_only_difference():
    """With v_threshold=θ itself, snnfunc fires where H == θ exactly and Norse does not."""
    import norse.torch as nt

    cell = nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=torch.tensor(500.0)), dt=1e-3)  # k = 0.5
    x = torch.full((4, 1), 2.0)  # H = 0 + (2 - 0) * 0.5 = 1.0 = θ exactly
    assert norse_cells(cell, x)[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]  # H: 1.0, 1.5, 1.0, 1.5
    assert snnfunc.plif(x, w=0.5).spikes[:, 0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert snnfunc.plif(x, w=0.5, v_threshold=above(1.0, torch.float32)).spikes[:, 0].tolist() == [
        0.0, 1.0, 0.0, 1.0]


@NORSE
def test_norse_iaf_equals_if_above_threshold():
    """IAFCell(IAFParameters(v_th=θ, v_reset)) is snnfunc.if_(v_threshold=above(θ), v_reset)."""
    import norse.torch as nt

    p = nt.IAFParameters(v_th=torch.tensor(1.0, dtype=F64), v_reset=torch.tensor(-0.1, dtype=F64))
    x = currents(shift=0.1, scale=0.8)
    s_peer = norse_cells(nt.IAFCell(p), x)
    s_mine = snnfunc.if_(x, v_reset=-0.1, v_threshold=above(1.0)).spikes
    assert 0.05 < s_peer.mean() < 0.8
    assert torch.equal(s_peer, s_mine)


@NORSE
def test_norse_lif_feed_forward_step_is_a_synapse_then_plif():
    """lif_feed_forward_step (current-based LIF, v_leak = v_reset = 0): the current jumps by the
    input and decays after driving the membrane, i.e. it is the h of a non-spiking
    plif(w=dt*tau_syn_inv, decay_input=False, v_threshold=inf), fed to
    plif(w=dt*tau_mem_inv, v_threshold=above(θ)). Spikes bit for bit."""
    from norse.torch.functional.lif import LIFFeedForwardState, LIFParameters, lif_feed_forward_step

    dt = 1e-3
    p = LIFParameters(tau_syn_inv=torch.tensor(200.0, dtype=F64), tau_mem_inv=torch.tensor(100.0, dtype=F64),
                      v_leak=torch.tensor(0.0, dtype=F64), v_th=torch.tensor(1.0, dtype=F64),
                      v_reset=torch.tensor(0.0, dtype=F64))
    x = currents(shift=2.0, scale=3.0)
    state = LIFFeedForwardState(v=torch.zeros_like(x[0]), i=torch.zeros_like(x[0]))
    out = []
    for x_t in x:
        z, state = lif_feed_forward_step(x_t, state, p, dt)
        out.append(z)
    s_peer = torch.stack(out)
    i_syn = snnfunc.plif(x, w=dt * p.tau_syn_inv, decay_input=False, v_reset=0.0,
                         v_threshold=math.inf, return_h=True).h
    s_mine = snnfunc.plif(i_syn, w=dt * p.tau_mem_inv, v_reset=0.0, v_threshold=above(1.0)).spikes
    assert 0.05 < s_peer.mean() < 0.8
    assert torch.equal(s_peer, s_mine)
