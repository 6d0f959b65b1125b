"""Recurrent layers: the operator equals the plain loop of step functions, spikes bit for bit
and gradients to rounding, for every neuron (multi-state ones included), under torch.func and
torch.compile; the stateful module carries its state and resets."""

from typing import NamedTuple

import pytest
import torch
from torch.nn import functional as F

import snnfunc
from snnfunc import surrogate as S
from snnfunc.nn import reset_net
from snnfunc.recurrent import Recurrent, RecurrentState, rnn

T, B, N = 7, 3, 6


def loop(x_seq, step, weight, bias=None, state=None, s=None, detach=False, **kw):
    """The definition, written with step functions: I_t = X_t + W S_{t-1} + b."""
    spikes = []
    for x in x_seq:
        i = (x if bias is None else x + bias) if s is None else \
            x + F.linear(s.detach() if detach else s, weight, bias)
        s, state = step(i, state, **kw)
        spikes.append(s)
    return torch.stack(spikes), state


def inputs(n=N, dtype=torch.float64, scale=3.0):
    x = (scale * torch.rand(T, B, n, dtype=dtype)).requires_grad_()
    w = (0.6 * torch.randn(n, n, dtype=dtype)).requires_grad_()
    b = (0.1 * torch.randn(n, dtype=dtype)).requires_grad_()
    return x, w, b


def grads(out, state_parts, wrt, seed=1):
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    loss = loss + sum(p.sum() for p in state_parts)
    return torch.autograd.grad(loss, wrt, allow_unused=True)


NEURONS = {
    "lif": (snnfunc.lif, snnfunc.lif_step, lambda n: {"tau": torch.full((n,), 2.5, dtype=torch.float64,
                                                                         requires_grad=True)}),
    "lif-soft": (snnfunc.lif, snnfunc.lif_step, lambda n: {"tau": 2.0, "v_reset": None,
                                                          "surrogate": S.ATan()}),
    "if": (snnfunc.if_, snnfunc.if_step, lambda n: {"v_threshold": 1.5}),
    "plif": (snnfunc.plif, snnfunc.plif_step,
             lambda n: {"w": torch.full((n,), 0.4, dtype=torch.float64, requires_grad=True),
                        "detach_reset": True}),
    "rif": (snnfunc.rif, snnfunc.rif_step,
            lambda n: {"w": torch.tensor(-0.1, dtype=torch.float64, requires_grad=True)}),
}


@pytest.mark.parametrize("name", sorted(NEURONS))
@pytest.mark.parametrize("start", ["rest", "given"])
def test_operator_equals_the_loop_of_step_functions(name, start):
    multi, step, make = NEURONS[name]
    kw = make(N)
    x, w, b = inputs()
    if start == "given":
        v0 = torch.rand(B, N, dtype=torch.float64, requires_grad=True)
        s0 = (torch.rand(B, N, dtype=torch.float64) < 0.5).double().requires_grad_()
        state, extra = RecurrentState(v0, s0), [v0, s0]
    else:
        state, extra = None, []
    out = rnn(x, state, weight=w, bias=b, neuron=multi, impl="op", **kw)
    ref = loop(x, step, w, b, *(state or (None, None)), **kw)
    assert torch.equal(out.spikes, ref[0]) and torch.equal(out.state.neuron, ref[1])
    assert torch.equal(out.state.spikes, ref[0][-1])
    assert 0 < out.spikes.mean() < 1  # some spikes, not all
    params = [p for p in kw.values() if isinstance(p, torch.Tensor)]
    wrt = [x, w, b, *params, *extra]
    for got, want in zip(grads(out.spikes, [out.state.neuron], wrt),
                         grads(ref[0], [ref[1]], wrt)):
        torch.testing.assert_close(got, want)
        assert got.abs().sum() > 0


def test_detached_recurrence_still_trains_the_weight():
    x, w, b = inputs()
    out = rnn(x, weight=w, bias=b, tau=2.0, detach_recurrent=True)
    ref = loop(x, snnfunc.lif_step, w, b, detach=True, tau=2.0)
    assert torch.equal(out.spikes, ref[0])
    full = rnn(x, weight=w, bias=b, tau=2.0)
    got, want, undetached = (grads(o, [], [x, w]) for o in (out.spikes, ref[0], full.spikes))
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c)
    assert got[1].abs().sum() > 0 and not torch.allclose(got[0], undetached[0])


class AdLIFState(NamedTuple):
    v: torch.Tensor
    a: torch.Tensor


def adlif(x_seq, state=None, *, tau=2.0, beta=0.5, surrogate=S.Sigmoid()):
    """A two-state neuron (LIF with an adaptive threshold) built on the protocol: the state
    is a NamedTuple of tensors, None means rest."""
    state = state or AdLIFState(x_seq.new_zeros(x_seq.shape[1:]), x_seq.new_zeros(x_seq.shape[1:]))
    v, a = state
    spikes = []
    for x in x_seq:
        v = v + (x - v) / tau
        s = S.spike(v - 1.0 - a, surrogate)
        v, a = v * (1 - s), beta * a + s
        spikes.append(s)
    out = torch.stack(spikes) if spikes else x_seq.new_empty(x_seq.shape)
    return out, AdLIFState(v, a)


def adlif_step(x, state=None, **kw):
    s, state = adlif(x[None], state, **kw)
    return s[0], state


MULTI_STATE = [("adlif", adlif, adlif_step, {"tau": 2.0, "beta": 0.7})]
if hasattr(snnfunc, "cuba_lif"):
    MULTI_STATE.append(("cuba_lif", snnfunc.cuba_lif, snnfunc.cuba_lif_step,
                        {"tau_syn": 3.0, "tau_mem": 2.0}))


@pytest.mark.parametrize("name,multi,step,kw", MULTI_STATE, ids=[m[0] for m in MULTI_STATE])
def test_multi_state_neurons_and_continuing(name, multi, step, kw):
    x, w, b = inputs(scale=2.0)
    out = rnn(x, weight=w, bias=b, neuron=multi, impl="op" if name != "adlif" else "auto", **kw)
    ref = loop(x, step, w, b, **kw)
    assert type(out.state.neuron) is type(ref[1])
    assert torch.equal(out.spikes, ref[0]) and out.spikes.sum() > 0
    assert all(torch.equal(a, c) for a, c in zip(out.state.neuron, ref[1]))
    for got, want in zip(grads(out.spikes, out.state.neuron, [x, w, b]),
                         grads(ref[0], ref[1], [x, w, b])):
        torch.testing.assert_close(got, want)
    # two calls from the returned state make one call
    first = rnn(x[:3], weight=w, bias=b, neuron=multi, **kw)
    second = rnn(x[3:], first.state, weight=w, bias=b, neuron=multi, **kw)
    assert torch.equal(torch.cat([first.spikes, second.spikes]), out.spikes)


def test_callable_maps_and_linear_modules():
    x, w, b = inputs()
    lin = torch.nn.Linear(N, N, dtype=torch.float64)
    out = rnn(x, weight=lin, tau=2.0)  # an nn.Linear takes the operator's path
    ref = loop(x, snnfunc.lif_step, lin.weight, lin.bias, tau=2.0)
    assert torch.equal(out.spikes, ref[0])
    # any callable runs the loop; the first step has no recurrent input
    low_rank = torch.nn.Sequential(torch.nn.Linear(N, 2, bias=False, dtype=torch.float64),
                                   torch.nn.Linear(2, N, bias=False, dtype=torch.float64))
    got = rnn(x, weight=low_rank, tau=2.0)
    want = loop(x, snnfunc.lif_step, low_rank[1].weight @ low_rank[0].weight, tau=2.0)
    torch.testing.assert_close(got.spikes, want[0], rtol=0, atol=0)
    g = torch.autograd.grad(got.spikes.sum(), low_rank[0].weight)[0]
    assert g.abs().sum() > 0


def test_torch_func_grad_and_empty_sequence():
    x, w, b = inputs()
    f = lambda w_, x_: rnn(x_, weight=w_, bias=b, tau=2.0).spikes.sum()  # noqa: E731
    g_w = torch.func.grad(f)(w.detach(), x.detach())
    want = torch.autograd.grad(loop(x, snnfunc.lif_step, w, b, tau=2.0)[0].sum(), w)[0]
    torch.testing.assert_close(g_w, want)
    empty = rnn(x[:0], weight=w, tau=2.0)
    assert empty.spikes.shape == (0, B, N) and empty.state.spikes is None
    assert torch.equal(empty.state.neuron, torch.zeros(B, N, dtype=torch.float64))


def test_bad_arguments_name_the_argument():
    x, w, b = inputs()
    with pytest.raises(ValueError, match=r"weight must have shape \[N, N\]"):
        rnn(x, weight=w[:2])
    with pytest.raises(ValueError, match="bias must have shape"):
        rnn(x, weight=w, bias=b[:2])
    with pytest.raises(TypeError, match="return_h"):
        rnn(x, weight=w, return_h=True)
    with pytest.raises(TypeError, match="state must be a RecurrentState"):
        rnn(x, torch.zeros(B, N), weight=w)
    with pytest.raises(ValueError, match="state.spikes has shape"):
        rnn(x, RecurrentState(None, torch.zeros(B + 1, N)), weight=w)
    with pytest.raises(TypeError, match="weight must be a tensor"):
        rnn(x, weight=3.0)
    with pytest.raises(ValueError, match="impl must be one of"):
        rnn(x, weight=w, impl="fast")
    by_dict = lambda xs, st, cfg: snnfunc.lif(xs, st, **cfg)  # noqa: E731
    with pytest.raises(ValueError, match="impl='op' is not available: the neuron is not made "
                                         "from a definition"):
        rnn(x, weight=w, neuron=by_dict, impl="op", cfg={"tau": 2.0})
    fallback = rnn(x, weight=w, neuron=by_dict, cfg={"tau": 2.0})  # "auto" runs the loop
    assert torch.equal(fallback.spikes, rnn(x, weight=w, tau=2.0).spikes)
    with pytest.raises(TypeError, match="state.neuron must be a tensor"):
        rnn(x, RecurrentState("rest", None), weight=w)


def test_module_holds_state_resets_and_stays_pure_under_functional_call():
    torch.manual_seed(0)
    layer = Recurrent(N, snnfunc.plif, w=torch.nn.Parameter(torch.full((N,), 0.5)),
                      surrogate=S.ATan())
    torch.nn.init.normal_(layer.weight, 0.0, 0.5)
    assert {n for n, _ in layer.named_parameters()} == {"weight", "bias", "w"}
    net = torch.nn.Sequential(torch.nn.Linear(4, N), layer)
    x = 2 * torch.rand(T, B, 4)
    whole = net(x)
    assert whole.shape == (T, B, N) and whole.sum() > 0
    reset_net(net)
    assert layer.state is None
    halves = torch.cat([net(x[:3]), net(x[3:])])  # state carries over between calls
    assert torch.equal(halves, whole)
    held = layer.state
    params = dict(net.named_parameters())
    torch.func.functional_call(net, params, (x,))
    assert layer.state is held  # a pure call leaves the state
    reset_net(net)
    stepper = Recurrent(N, snnfunc.plif, w=torch.nn.Parameter(torch.zeros(N)), surrogate=S.ATan(),
                        step_mode="s")
    stepper.load_state_dict(layer.state_dict())
    steps = torch.stack([stepper(h) for h in net[0](x)])
    assert torch.equal(steps, whole) and torch.equal(stepper.w, layer.w)
    loss = whole.sum()
    loss.backward()
    assert layer.weight.grad.abs().sum() > 0 and layer.w.grad.abs().sum() > 0
    net(x)
    with pytest.raises(ValueError, match="new batch size"):
        net(x[:, :1])
    with pytest.raises(ValueError, match="features must be a positive int"):
        Recurrent(0)


@pytest.mark.compile
def test_compiled_network_one_graph_whatever_T():
    torch._dynamo.reset()
    torch.manual_seed(0)
    fc = torch.nn.Linear(4, 5)
    layer = Recurrent(5, tau=2.0, surrogate=S.ATan())
    torch.nn.init.normal_(layer.weight, 0.0, 0.5)

    def net(x):
        layer.reset()
        return layer(fc(x)).sum(0)

    sizes = {}

    def backend(gm, example_inputs):  # Dynamo's graph: the same size whatever T
        sizes[len(sizes)] = sum(n.op == "call_function" for n in gm.graph.nodes)
        code = gm.print_readable(print_output=False)
        assert code.count("torch.ops.snnfunc.rnn_forward.default(") == 1, code
        op = torch.ops.snnfunc.rnn_forward.default
        (node,) = [n for m in gm.modules() if isinstance(m, torch.fx.GraphModule)
                   for n in m.graph.nodes if n.target is op]  # (in the Function's body)
        # every argument in the graph, the chunk too (see the next test)
        assert len(node.args) + len(node.kwargs) == len(op._schema.arguments), node
        return torch._inductor.compile(gm, example_inputs)

    compiled = torch.compile(net, backend=backend, fullgraph=True, dynamic=True)
    params = [fc.weight, layer.weight, layer.bias]
    first = None
    for T_ in (3, 9, 40):
        x = 2 * torch.rand(T_, 2, 4)
        out = compiled(x)
        got = torch.autograd.grad(out.sum(), params)
        ref = rnn(fc(x), weight=layer.weight, bias=layer.bias, tau=2.0, surrogate=S.ATan(),
                  impl="loop").spikes.sum(0)
        assert torch.equal(out, ref)
        for a, c in zip(got, torch.autograd.grad(ref.sum(), params)):
            torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
        first = first or len(sizes)
        assert len(sizes) == first and len(set(sizes.values())) == 1, sizes  # no recompile


def test_the_recurrent_operators_name_every_argument_in_a_graph():
    # Inductor's cache keys a compiled graph by its text, not by the operators' fake kernels:
    # an argument left at a default is not in the text, so a graph compiled when the chunk
    # was 32 (before it was an argument) was taken for one whose chunk is 16, and its output
    # shapes failed at run time. With no default, every argument is in the text.
    for op in (torch.ops.snnfunc.rnn_forward, torch.ops.snnfunc.rnn_backward):
        schema = op.default._schema
        assert not [a.name for a in schema.arguments if a.has_default_value()], schema


# --------------------------------------------------------------------------- the fast path
# For the library's neurons and those made with snnfunc.neuron, the operator calls the
# neuron's generated kernels one step at a time (forward) and runs a hand-written BPTT loop
# of one-step VJPs (backward); other neurons take the general path.


@pytest.fixture
def fast_calls(monkeypatch):
    """Counts the calls of the fast forward and backward loops."""
    from snnfunc.recurrent import steps as R

    calls = {"forward": 0, "backward": 0}
    for name in ("forward", "backward"):
        fn = getattr(R, name)

        def counted(*a, _fn=fn, _name=name, **k):
            calls[_name] += 1
            return _fn(*a, **k)

        monkeypatch.setattr(R, name, counted)
    return calls


@snnfunc.neuron(positive=("tau",), on_spike=lambda s, v, a: {"a": a + s},
                threshold=lambda v, a, *, v_threshold, beta=0.3: v_threshold + beta * a)
def adaptive(x, v, a, *, tau=2.0, decay=0.8, v_rest):
    """A user neuron: LIF with a threshold raised by a decaying trace of its spikes."""
    return v + (x - (v - v_rest)) / tau, decay * a


def check_against_loop(multi, step, kw, *, state=None, extra=(), detach=False, dtype=torch.float64,
                       scale=3.0, shape=(B, N)):
    """rnn (the operator) against the loop of step functions: spikes and states bit for bit,
    gradients of every input, parameter and tensor option to rounding."""
    n = shape[-1]
    x = (scale * torch.rand(T, *shape, dtype=dtype)).requires_grad_()
    w = (0.6 * torch.randn(n, n, dtype=dtype)).requires_grad_()
    b = (0.1 * torch.randn(n, dtype=dtype)).requires_grad_()
    out = rnn(x, state, weight=w, bias=b, neuron=multi, detach_recurrent=detach, impl="op", **kw)
    ref = loop(x, step, w, b, *(state or (None, None)), detach=detach, **kw)
    parts = lambda u: [u] if isinstance(u, torch.Tensor) else list(u)  # noqa: E731
    assert torch.equal(out.spikes, ref[0]) and 0 < out.spikes.mean() < 1
    assert all(torch.equal(a, c) for a, c in zip(parts(out.state.neuron), parts(ref[1])))
    params = [p for p in kw.values() if isinstance(p, torch.Tensor) and p.requires_grad]
    wrt = [x, w, b, *params, *extra]
    got = grads(out.spikes, parts(out.state.neuron), wrt)
    want = grads(ref[0], parts(ref[1]), wrt)
    for a, c in zip(got, want):
        if c is None:
            assert a is None or not a.abs().sum()
        else:
            torch.testing.assert_close(a, c)
    return got


def per_neuron(value, n=N, dtype=torch.float64):
    return torch.linspace(value, 1.3 * value, n, dtype=dtype).requires_grad_()


FAST = {
    "lif per-neuron tau and threshold": (snnfunc.lif, snnfunc.lif_step,
                                         lambda: {"tau": per_neuron(2.0),
                                                  "v_threshold": per_neuron(1.0)}),
    "lif as the benchmark": (snnfunc.lif, snnfunc.lif_step,
                             lambda: {"tau": 2.0, "decay_input": False, "v_reset": None,
                                      "surrogate": S.ATan()}),
    "plif sigmoid": (snnfunc.plif, snnfunc.plif_step,
                     lambda: {"w": per_neuron(-0.5), "parametrization": "sigmoid",
                              "detach_reset": True}),
    "cuba_lif per-neuron": (snnfunc.cuba_lif, snnfunc.cuba_lif_step,
                            lambda: {"tau_syn": per_neuron(3.0), "tau_mem": 2.0, "v_reset": -0.1}),
    "alif": (snnfunc.alif, snnfunc.alif_step, lambda: {"tau": 2.0, "beta": 0.4}),
    "user neuron": (adaptive, adaptive.step, lambda: {"tau": per_neuron(2.5), "beta": 0.2}),
}


@pytest.mark.parametrize("name", list(FAST))
@pytest.mark.parametrize("detach", [False, True], ids=["", "detach_recurrent"])
def test_fast_path_equals_the_loop(name, detach, fast_calls):
    multi, step, make = FAST[name]
    torch.manual_seed(3)
    check_against_loop(multi, step, make(), detach=detach, scale=2.0)
    assert fast_calls == {"forward": 1, "backward": 1}


@pytest.mark.parametrize("neuron", ["lif", "cuba_lif"])
def test_fast_path_from_a_given_state(neuron, fast_calls):
    torch.manual_seed(4)
    multi, step = getattr(snnfunc, neuron), getattr(snnfunc, f"{neuron}_step")
    s0 = (torch.rand(B, N, dtype=torch.float64) < 0.5).double().requires_grad_()
    if neuron == "lif":
        u0 = torch.rand(B, N, dtype=torch.float64, requires_grad=True)
        extra = [u0, s0]
    else:
        u0 = snnfunc.CubaLIFState(torch.rand(B, N, dtype=torch.float64, requires_grad=True),
                                  torch.rand(N, dtype=torch.float64, requires_grad=True))
        extra = [*u0, s0]
    for detach in (False, True):
        got = check_against_loop(multi, step, {"tau": 2.0} if neuron == "lif" else {},
                                 state=RecurrentState(u0, s0), extra=extra, detach=detach)
        assert got[-1].abs().sum() > 0 if not detach else not got[-1].abs().sum()
    assert fast_calls["backward"] == 2


@pytest.mark.parametrize("shape", [(N,), (2, B, N)], ids=["[T, N]", "[T, B1, B2, N]"])
def test_fast_path_other_step_shapes_and_float32(shape, fast_calls):
    torch.manual_seed(5)
    check_against_loop(snnfunc.lif, snnfunc.lif_step, {"tau": per_neuron(2.0)}, shape=shape)
    x = 3 * torch.rand(T, B, N)
    w, b = 0.6 * torch.randn(N, N), 0.1 * torch.randn(N)
    kw = dict(tau=2.0, decay_input=False, v_reset=None, surrogate=S.ATan())
    assert torch.equal(rnn(x, weight=w, bias=b, **kw).spikes, loop(x, snnfunc.lif_step, w, b, **kw)[0])
    assert fast_calls["forward"] == 2


def test_general_path_for_protocol_neurons_and_torch_func(fast_calls):
    x, w, b = inputs()
    rnn(x, weight=w, bias=b, neuron=adlif, tau=2.0).spikes.sum().backward()
    assert fast_calls == {"forward": 0, "backward": 0}  # a plain function: the general path
    tau = per_neuron(2.0).detach()
    f = lambda tau_: rnn(x.detach(), weight=w.detach(), tau=tau_).spikes.sum()  # noqa: E731
    got = torch.func.grad(f)(tau)
    tau_ = tau.clone().requires_grad_()
    want = torch.autograd.grad(loop(x.detach(), snnfunc.lif_step, w.detach(), tau=tau_)[0].sum(),
                               tau_)[0]
    torch.testing.assert_close(got, want)
    assert fast_calls["backward"] == 1


def test_fast_path_with_spikes_that_broadcast(fast_calls):
    torch.manual_seed(6)
    s0 = (torch.rand(N, dtype=torch.float64) < 0.5).double().requires_grad_()  # [N], not [B, N]
    got = check_against_loop(snnfunc.lif, snnfunc.lif_step, {"tau": 2.0},
                             state=RecurrentState(None, s0), extra=[s0])
    assert got[-1].shape == s0.shape and got[-1].abs().sum() > 0
    assert fast_calls["backward"] == 1
