"""The stateful adapters: SpikingFlow's interface, equivalence with the pure functions, state, monitor,
transforms, serialisation and bad input."""

import copy
import gc
import inspect
import itertools
import pickle
import weakref

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

import snnfunc
from snnfunc import nn as snn
from snnfunc import surrogate as S

D = torch.float64


def test_spikingflow_signatures():
    common = ["v_threshold", "v_reset", "pulse_soft", "monitor_state"]
    for cls, first in [(snn.IFNode, []), (snn.LIFNode, ["tau"]), (snn.PLIFNode, ["init_tau"]),
                       (snn.RIFNode, ["init_w"])]:
        params = inspect.signature(cls).parameters
        positional = [n for n, p in params.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert positional == first + common
        assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD)  # **options: BaseNode's
                   for n, p in params.items() if n not in positional)
        node = cls(detach_reset=True, step_mode="m", surrogate=S.ATan(), batch_first=True)
        assert node.detach_reset and node.step_mode == "m" and node.batch_first
        assert node.pulse_soft == S.ATan()
        assert params["v_threshold"].default == 1.0 and params["v_reset"].default == 0.0
        assert params["pulse_soft"].default == S.Sigmoid() and params["monitor_state"].default is False
    assert inspect.signature(snn.LIFNode).parameters["tau"].default == 100.0
    assert inspect.signature(snn.PLIFNode).parameters["init_tau"].default == 2.0
    assert inspect.signature(snn.RIFNode).parameters["init_w"].default == -1e-3


def test_spikingflow_parameters():
    plif = snn.PLIFNode()
    assert plif.w.shape == (1,) and plif.w.item() == 0.5
    torch.testing.assert_close(plif.tau, torch.tensor([2.0]))
    sig = snn.PLIFNode(3.0, parametrization="sigmoid")
    torch.testing.assert_close(sig.tau, torch.tensor([3.0]))
    assert snn.RIFNode().w.item() == pytest.approx(-1e-3)
    assert [n for n, _ in plif.named_parameters()] == ["w"]
    assert snn.PLIFNode(param_shape=(4, 1)).w.shape == (4, 1)
    assert list(snn.IFNode().parameters()) == [] and list(snn.LIFNode().parameters()) == []
    assert "tau=100.0" in repr(snn.LIFNode()) and "step_mode='s'" in repr(snn.IFNode())


# --------------------------------------------------------------------------- equivalence

NEURON_CASES = ["if", "lif", "plif", "plif-sigmoid", "rif"]
OPTIONS = [dict(v_reset=0.0), dict(v_reset=None), dict(v_reset=-0.3, detach_reset=True),
           dict(v_reset=None, detach_reset=True, decay_input=False)]


def _make(case, opts, step_mode, C):
    opts = dict(opts)
    decay = opts.pop("decay_input", True)
    pulse = S.ATan()
    if case == "if":
        node = snn.IFNode(0.9, opts.pop("v_reset"), pulse, step_mode=step_mode, **opts)
        fn = lambda x, v, **kw: snnfunc.if_(x, v, **kw)  # noqa: E731
    elif case == "lif":
        node = snn.LIFNode(2.5, 0.9, opts.pop("v_reset"), pulse, decay_input=decay,
                           step_mode=step_mode, **opts)
        fn = lambda x, v, **kw: snnfunc.lif(x, v, tau=2.5, decay_input=decay, **kw)  # noqa: E731
    elif case.startswith("plif"):
        par = "sigmoid" if case.endswith("sigmoid") else "reciprocal"
        node = snn.PLIFNode(1.8, 0.9, opts.pop("v_reset"), pulse, parametrization=par,
                            param_shape=(C,), decay_input=decay, step_mode=step_mode, **opts)
        with torch.no_grad():
            node.w.add_(0.05 * torch.randn(C))
        fn = lambda x, v, **kw: snnfunc.plif(x, v, w=node.w, parametrization=par,  # noqa: E731
                                             decay_input=decay, **kw)
    else:
        node = snn.RIFNode(-0.1, 0.9, opts.pop("v_reset"), pulse, param_shape=(C,),
                           step_mode=step_mode, **opts)
        fn = lambda x, v, **kw: snnfunc.rif(x, v, w=node.w, **kw)  # noqa: E731
    kw = dict(v_threshold=0.9, v_reset=node.v_reset, surrogate=pulse,
              detach_reset=node.detach_reset)
    return node.double(), fn, kw


@pytest.mark.parametrize("case", NEURON_CASES)
@pytest.mark.parametrize("opts", OPTIONS, ids=str)
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_adapter_equals_functional(case, opts, step_mode):
    T, B, C = 7, 3, 4
    node, fn, kw = _make(case, opts, step_mode, C)
    node.set_monitor(True)
    x = (torch.rand(T, B, C, dtype=D) * 1.5).requires_grad_(True)
    ref = fn(x, None, return_h=True, **kw)
    if step_mode == "s":
        spikes = torch.stack([node(xt) for xt in x.unbind(0)])
    else:
        spikes = node(x)
    assert torch.equal(spikes, ref.spikes)
    assert torch.equal(node.v, ref.v)
    # the monitor holds H and S of every step, as numpy copies
    assert len(node.monitor["v"]) == len(node.monitor["s"]) == T
    for t in range(T):
        assert (node.monitor["v"][t] == ref.h[t].detach().numpy()).all()
        assert (node.monitor["s"][t] == ref.spikes[t].detach().numpy()).all()
    params = [x] + list(node.parameters())
    gs = torch.randn_like(spikes)
    got = torch.autograd.grad((spikes * gs).sum() + node.v.sum(), params)
    want = torch.autograd.grad((ref.spikes * gs).sum() + ref.v.sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("case", NEURON_CASES)
def test_single_and_multi_step_modes_agree_with_continuation(case):
    s_node, _, _ = _make(case, {"v_reset": 0.0}, "s", 4)
    m_node, _, _ = _make(case, {"v_reset": 0.0}, "m", 4)
    m_node.load_state_dict(s_node.state_dict())
    x = torch.rand(6, 2, 4, dtype=D) * 1.5
    s_out = torch.stack([s_node(xt) for xt in x])
    m_out = torch.cat([m_node(x[:2]), m_node(x[2:])])  # state carries over between calls
    assert torch.equal(s_out, m_out) and torch.equal(s_node.v, m_node.v)


# --------------------------------------------------------------------------- state and monitor


def test_state_is_plain_attribute_shaped_like_first_input():
    node = snn.LIFNode(2.0, v_reset=-0.2, step_mode="s")
    assert node.v == -0.2
    node(torch.rand(3, 5, dtype=torch.float16))
    assert isinstance(node.v, torch.Tensor) and node.v.shape == (3, 5)
    assert node.v.dtype == torch.float32 and node.v.device.type == "cpu"  # half: held in float32
    assert "v" not in node.state_dict() and all(p is not node.v for p in node.parameters())
    node.reset()
    assert node.v == -0.2
    node(torch.rand(7, 2, 2))  # another batch shape after reset just works
    assert node.v.shape == (7, 2, 2)
    assert snn.IFNode(v_reset=None).v == 0.0


def test_reset_empties_monitor_and_keeps_parameters():
    node = snn.PLIFNode(monitor_state=True)
    with torch.no_grad():
        node.w.fill_(0.7)
    node(torch.rand(4))
    assert len(node.monitor["v"]) == 1
    node.reset()
    assert node.monitor == {"v": [], "s": []} and node.w.item() == pytest.approx(0.7)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), snn.IFNode(), torch.nn.Sequential(snn.LIFNode()))
    net(torch.rand(2, 3) * 5)
    snn.reset_net(net)
    assert net[1].v == 0.0 and net[2][0].v == 0.0


def test_monitor_switch_and_copies():
    node = snn.IFNode(monitor_state=False)
    assert node.monitor is False
    node(torch.rand(3))
    node.set_monitor(True)
    s = node(torch.ones(3) * 2)
    s.mul_(0)  # a caller's in-place op does not change the record
    assert node.monitor["s"][0].tolist() == [1.0, 1.0, 1.0]
    node.set_monitor(False)
    assert node.monitor is False
    node.set_monitor(True)
    node(torch.rand(2, 3, dtype=torch.bfloat16))
    assert len(node.monitor["v"]) == 1 and node.monitor["v"][0].shape == (2, 3)
    assert str(node.monitor["v"][0].dtype) == "float32"  # numpy has no bfloat16


def test_bad_input_does_not_corrupt_state():
    node = snn.LIFNode(2.0)
    node(torch.rand(2, 3))
    v = node.v
    with pytest.raises(ValueError, match="v"):
        node(torch.rand(4, 3))  # another batch size without reset
    with pytest.raises(TypeError, match="x"):
        node(torch.ones(2, 3, dtype=torch.int64))
    assert node.v is v
    m = snn.IFNode(step_mode="m")
    with pytest.raises(ValueError, match="x_seq"):
        m(torch.tensor(1.0))
    assert m.v == 0.0


@pytest.mark.parametrize("make,err,name", [
    (lambda: snn.LIFNode(tau=0.0), ValueError, "tau"),
    (lambda: snn.LIFNode(tau="2"), TypeError, "tau"),
    (lambda: snn.PLIFNode(init_tau=1.0, parametrization="sigmoid"), ValueError, "init_tau"),
    (lambda: snn.PLIFNode(init_tau=-1.0), ValueError, "init_tau"),
    (lambda: snn.PLIFNode(parametrization="exp"), ValueError, "parametrization"),
    (lambda: snn.PLIFNode(param_shape=(0,)), ValueError, "param_shape"),
    (lambda: snn.RIFNode(init_w=None), TypeError, "init_w"),
    (lambda: snn.IFNode(pulse_soft=torch.sigmoid), TypeError, "pulse_soft"),
    (lambda: snn.IFNode(v_reset="0"), TypeError, "v_reset"),
    (lambda: snn.IFNode(step_mode="multi"), ValueError, "step_mode"),
    (lambda: snn.IFNode(monitor_state=1), TypeError, "monitor_state"),
    (lambda: snn.LIFNode(decay_input=None), TypeError, "decay_input"),
])
def test_bad_constructor_arguments(make, err, name):
    with pytest.raises(err, match=name):
        make()


# --------------------------------------------------------------------------- leak-free


def _batch(T=5, B=4):
    return torch.rand(T, B, 6) * 2, torch.randint(0, 3, (B,))


def _net(step_mode):
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), snn.LIFNode(2.0, 0.5, step_mode=step_mode),
        torch.nn.Linear(8, 3), snn.PLIFNode(param_shape=(3,), v_threshold=0.3, step_mode=step_mode))


def test_reset_releases_the_previous_graph():
    net = _net("m")
    x, _ = _batch()
    spikes = net(x)
    spikes.sum().backward()
    refs = [weakref.ref(net[1].v), weakref.ref(net[3].v), weakref.ref(spikes)]
    del spikes
    snn.reset_net(net)
    gc.collect()
    assert all(r() is None for r in refs)
    for _ in range(2):  # a new batch after reset never meets the old graph
        net(_batch()[0]).sum().backward()
        snn.reset_net(net)


def test_single_step_reset_releases_graph():
    node = snn.LIFNode(2.0)
    x = torch.rand(4, 3, requires_grad=True)
    outs = [node(xt) for xt in x]
    torch.stack(outs).sum().backward()
    ref = weakref.ref(node.v)
    del outs
    node.reset()
    gc.collect()
    assert ref() is None
    torch.stack([node(xt) for xt in x]).sum().backward()


def test_functional_call_leaves_state_alone():
    net = _net("m")
    x, _ = _batch()
    params = {k: v.detach().clone() * 1.01 for k, v in net.named_parameters()}
    out = functional_call(net, params, (x,))
    assert net[1].v == net[1].v_rest and net[3].v == net[3].v_rest
    with torch.no_grad():
        for k, v in net.named_parameters():
            v.copy_(params[k])
    assert torch.equal(net(x), out)  # the same computation, now stateful
    assert isinstance(net[1].v, torch.Tensor)


def test_vmap_over_an_ensemble_of_adapters():
    models = [_net("m") for _ in range(3)]
    for i, m in enumerate(models):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * i)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x, _ = _batch()

    def f(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = vmap(f, in_dims=(0, 0, None))(params, buffers, x)
    loop = torch.stack([m(x) for m in models])
    assert torch.equal(batched, loop)
    assert base[1].v == base[1].v_rest  # nothing leaked out of vmap


def test_grad_through_functional_call():
    net = _net("m")
    x, y = _batch()
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p):
        return torch.nn.functional.cross_entropy(functional_call(net, p, (x,)).sum(0), y)

    g = torch.func.grad(loss)(params)
    net.zero_grad()
    snn.reset_net(net)
    torch.nn.functional.cross_entropy(net(x).sum(0), y).backward()
    for k, p in net.named_parameters():
        torch.testing.assert_close(g[k], p.grad)


# --------------------------------------------------------------------------- serialisation


def test_deepcopy_pickle_state_dict_and_dtype():
    node = snn.PLIFNode(param_shape=(3,), monitor_state=True)
    rif = snn.RIFNode(param_shape=(3,))
    with torch.no_grad():
        node.w.copy_(torch.tensor([0.3, 0.4, 0.5]))
        rif.w.fill_(-0.05)
    x = torch.rand(2, 3, requires_grad=True)
    node(x)
    for clone in (copy.deepcopy(node), pickle.loads(pickle.dumps(node))):
        assert torch.equal(clone.w, node.w) and torch.equal(clone.v, node.v)
        assert clone.v.grad_fn is None and len(clone.monitor["v"]) == 1
    sd = node.state_dict()
    assert set(sd) == {"w"}
    fresh = snn.PLIFNode(param_shape=(3,))
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.w, node.w)
    fresh_rif = snn.RIFNode(param_shape=(3,))
    fresh_rif.load_state_dict(rif.state_dict())
    assert torch.equal(fresh_rif.w, rif.w) and set(rif.state_dict()) == {"w"}
    # SpikingFlow named PLIF's parameter "tau" (holding 1/tau)
    old = snn.PLIFNode(param_shape=(3,))
    old.load_state_dict({"tau": torch.tensor([0.2, 0.3, 0.4])})
    assert torch.equal(old.w.data, torch.tensor([0.2, 0.3, 0.4]))
    # SpikingJelly's ParametricLIFNode keeps one 0-d w
    sj = snn.PLIFNode(parametrization="sigmoid")
    sj.load_state_dict({"w": torch.tensor(-0.5)})
    assert sj.w.shape == (1,) and sj.w.item() == -0.5
    with pytest.raises(RuntimeError, match="size mismatch"):
        snn.PLIFNode(param_shape=(3,)).load_state_dict({"w": torch.tensor(-0.5)})
    d = node.double()
    assert d.w.dtype == D and d.v.dtype == D
    h = snn.LIFNode().to(torch.float16)
    h(torch.rand(3, dtype=torch.float16))
    assert h.to(D).v.dtype == D
