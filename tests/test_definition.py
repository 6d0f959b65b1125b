"""The definition API: neurons written once (`snnfunc.neuron`), and the built-ins made with it."""

import pytest
import torch

import snnfunc
from snnfunc.definition import _REGISTRY, DefinitionError
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
