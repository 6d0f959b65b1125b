"""The definition API: neurons written once (`snnfunc.neuron`), and the built-ins made with it."""

import numpy as np
import pytest
import torch

import snnfunc
from snnfunc._core.registry import _NEURONS as _REGISTRY
from snnfunc.definition import DefinitionError
from snnfunc.functional.defined import DEFINITIONS

torch.manual_seed(0)

# every built-in definition with the keyword arguments its tests use
CASES = {
    "cuba_lif": dict(tau_syn=1.5, tau_mem=2.5),
    "alif": dict(tau=2.0, tau_adapt=5.0, beta=0.3),
    "qif": dict(tau=2.0, v_c=0.5),
    "eif": dict(tau=2.0, delta_T=0.5, theta_rh=0.6),
}


def test_every_builtin_definition_has_test_parameters():
    assert set(CASES) == set(DEFINITIONS)


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
@pytest.mark.parametrize("v_reset", [0.0, None, -0.2])
def test_the_multi_step_function_is_its_step_function_in_a_loop(name, v_reset):
    fn, step = getattr(snnfunc, name), getattr(snnfunc, name + "_step")
    x = 0.5 + 1.5 * torch.rand(12, 3, 4, dtype=torch.float64)
    out = fn(x, v_reset=v_reset, return_h=True, impl="reference", **CASES[name])
    state, spikes, hs = None, [], []
    for xt in x:
        s = step(xt, state, v_reset=v_reset, return_h=True, **CASES[name])
        state = s[1]
        spikes.append(s.spike)
        hs.append(s.h)
    assert torch.equal(out.spikes, torch.stack(spikes))
    assert torch.equal(out.h, torch.stack(hs))
    for a, b in zip(torch.utils._pytree.tree_leaves(out[1]), torch.utils._pytree.tree_leaves(state)):
        assert torch.equal(a, b)
    assert 0 < out.spikes.mean() < 1  # an input of about 1 per step makes each of them fire


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_a_sequence_continues_from_its_final_state(name):
    fn = getattr(snnfunc, name)
    x = 1.5 * torch.rand(10, 6, dtype=torch.float64)
    whole = fn(x, impl="reference", **CASES[name])
    first = fn(x[:4], impl="reference", **CASES[name])
    rest = fn(x[4:], first[1], impl="reference", **CASES[name])
    assert torch.equal(whole.spikes, torch.cat([first.spikes, rest.spikes]))


def test_multi_state_neurons_return_their_state_tuple():
    out = snnfunc.cuba_lif(torch.rand(5, 2, 3))
    assert isinstance(out, snnfunc.StatesOutput)
    assert isinstance(out.state, snnfunc.CubaLIFState)
    assert out.state.i.shape == out.state.v.shape == (2, 3)
    s, state = out  # positional unpacking, as for every neuron
    assert s is out.spikes and state is out.state
    out = snnfunc.alif(torch.rand(5, 3), return_h=True)
    assert isinstance(out.state, snnfunc.ALIFState) and out.h.shape == (5, 3)


def test_alif_raises_its_threshold_after_each_spike():
    x = torch.full((40, 1), 1.2, dtype=torch.float64)
    plain = snnfunc.alif(x, beta=0.0).spikes.sum()
    adapted = snnfunc.alif(x, beta=0.5).spikes.sum()
    assert adapted < plain
    out = snnfunc.alif(x[:1] * 10, beta=0.5)
    assert out.spikes.item() == 1 and out.state.a.item() == 1.0  # jumped by the spike


def test_a_user_neuron_in_a_few_lines():
    @snnfunc.neuron(positive=("tau",))
    def leaky(x, v, *, tau=2.0, v_rest):
        return v + (x - (v - v_rest)) / tau

    x = 2 * torch.rand(8, 4)
    a = leaky(x, tau=3.0, v_reset=None, impl="reference")
    b = snnfunc.lif(x, tau=3.0, v_reset=None, impl="reference")
    assert torch.equal(a.spikes, b.spikes) and torch.equal(a.v, b.v)
    assert isinstance(leaky, snnfunc.Neuron) and leaky.parameters == {"tau": 2.0}
    assert leaky.name in _REGISTRY


@pytest.mark.parametrize("body, message", [
    (lambda x, v, *, v_rest: v + torch.erf(x), "torch.erf cannot be emitted"),
    (lambda x, v, *, v_rest: v + (x if x > 0 else 0), "cannot branch on a value"),
    (lambda x, v, *, v_rest: v + torch.ones(3), "captured from outside"),
])
def test_a_definition_the_generator_cannot_emit_fails_when_defined(body, message):
    with pytest.raises(DefinitionError, match=message):
        snnfunc.neuron(body)


def test_a_definition_needs_a_membrane_state_named_v():
    with pytest.raises(DefinitionError, match="named v"):
        snnfunc.neuron(lambda x, u, *, v_rest: u + x)


def test_unknown_keywords_and_missing_parameters_are_named():
    with pytest.raises(TypeError, match="unexpected keyword argument 'tau'.*tau_syn"):
        DEFINITIONS["cuba_lif"](torch.rand(3, 2), tau=2.0)
    with pytest.raises(ValueError, match="tau_adapt must be > 0"):
        snnfunc.alif(torch.rand(3, 2), tau_adapt=0.0)
    with pytest.raises(TypeError, match="CubaLIFState"):
        snnfunc.cuba_lif(torch.rand(3, 2), torch.zeros(2))


# --------------------------------------------------------------------------- adapters

from snnfunc import nn as snn  # noqa: E402

ADAPTERS = {"cuba_lif": snn.CubaLIFNode, "alif": snn.ALIFNode, "qif": snn.QIFNode,
            "eif": snn.EIFNode}


def test_every_builtin_definition_has_an_adapter():
    assert set(ADAPTERS) == set(DEFINITIONS)


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_adapters_hold_the_state_between_calls_in_both_step_modes(name):
    x = 0.5 + 1.5 * torch.rand(6, 2, 5, dtype=torch.float64)
    want = getattr(snnfunc, name)(x, return_h=True, **CASES[name])
    multi = ADAPTERS[name](**CASES[name], monitor_state=True)
    got = torch.cat([multi(x[:2]), multi(x[2:])])
    assert torch.equal(got, want.spikes)
    assert torch.equal(torch.tensor(np.array(multi.monitor["v"])), want.h)
    single = ADAPTERS[name](**CASES[name], step_mode="s")
    assert torch.equal(torch.stack([single(xt) for xt in x]), want.spikes)
    for a, b in zip(torch.utils._pytree.tree_leaves(single.state),
                    torch.utils._pytree.tree_leaves(want[1])):
        assert torch.equal(a, b)
    snn.reset_net(torch.nn.Sequential(single))
    assert single.state is None
    with pytest.raises(ValueError, match="reset"):
        multi(torch.rand(3, 7, 5, dtype=torch.float64))


def test_a_parameter_given_to_an_adapter_is_learned():
    tau = torch.nn.Parameter(torch.full((5,), 2.0))
    node = snn.CubaLIFNode(tau_syn=tau)
    assert dict(node.named_parameters()) == {"tau_syn": tau}
    node(2 * torch.rand(4, 3, 5)).sum().backward()
    assert tau.grad is not None and tau.grad.abs().sum() > 0


def test_a_user_neuron_gets_an_adapter():
    @snnfunc.neuron
    def leaky(x, v, *, tau=2.0, v_rest):
        return v + (x - (v - v_rest)) / tau

    node = snn.NeuronNode(leaky, tau=3.0, v_reset=None)
    x = 2 * torch.rand(5, 4)
    assert torch.equal(node(x), snnfunc.lif(x, tau=3.0, v_reset=None).spikes)
    with pytest.raises(TypeError, match="unexpected keyword argument 'beta'"):
        snn.NeuronNode(leaky, beta=1.0)
