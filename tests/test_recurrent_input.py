"""The recurrent layer with an input weight of its own (`rnn(..., input_weight=...)`,
`Recurrent(features, in_features=...)`): the input's product $X = x W_{in}^\top$ computed by
the layer, which computes $I$ in its place. Its definition is the layer over
`F.linear(x, W_in)` (or, with `sparse_input`, over `snnfunc.sparse.linear(x, W_in)`): the
operator equals it bit for bit (spikes and states) and to rounding (gradients), over chunks,
under `vmap`, `grad`, `functional_call` and `torch.compile`; it allocates one `[T, B, N]`
tensor fewer; the module saves, loads and exports to NIR (tests/test_nir.py)."""

import io
import pickle

import pytest
import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

import snnfunc
from conftest import CPU_KERNELS
from snnfunc import sparse
from snnfunc import surrogate as S
from snnfunc.nn import Recurrent
from snnfunc.recurrent import RecurrentState, rnn, steps
from snnfunc.recurrent import operator as R

pytestmark = CPU_KERNELS
B, M, N = 3, 9, 5
T = steps.CHUNK + 6  # two chunks

KINDS = {  # neuron, options
    "lif": (snnfunc.lif, dict(tau=2.0)),
    "alif": (snnfunc.alif, dict(tau=2.0, beta=0.4, surrogate=S.ATan(), detach_reset=True)),
    "plif": (snnfunc.plif, dict(w=torch.full((N,), 0.3, dtype=torch.float64,
                                             requires_grad=True))),
}


def _data(dtype=torch.float64, seed=0, density=0.3, T=T):
    torch.manual_seed(seed)
    x = (torch.rand(T, B, M) < density).to(dtype).requires_grad_()
    w_in = (2.0 * torch.randn(N, M, dtype=dtype)).requires_grad_()
    w = (0.6 * torch.randn(N, N, dtype=dtype)).requires_grad_()
    b = (0.1 * torch.randn(N, dtype=dtype)).requires_grad_()
    return x, w_in, w, b


def _product(x, w_in, sparse_input):
    return sparse.linear(x, w_in) if sparse_input else F.linear(x, w_in)


def _parts(u):
    return [u] if isinstance(u, torch.Tensor) else list(u)


def _loss(out):
    g = torch.linspace(-1, 1, out.spikes.numel(), dtype=out.spikes.dtype)
    return (out.spikes.reshape(-1) * g).sum() + sum(p.sum() for p in _parts(out.state.neuron))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("sparse_input", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("start", ["rest", "given"])
def test_the_layer_with_an_input_weight_is_the_layer_over_its_product(kind, sparse_input,
                                                                      start):
    neuron, kw = KINDS[kind]
    x, w_in, w, b = _data(seed=len(kind))
    state = None
    if start == "given":
        with torch.no_grad():
            _, u = neuron(torch.rand(2, B, N, dtype=x.dtype), None, **kw)
        state = RecurrentState(u, (torch.rand(B, N) < 0.5).double())
    wrt = [x, w_in, w, b, *(v for v in kw.values() if isinstance(v, torch.Tensor))]
    got = rnn(x, state, weight=w, bias=b, input_weight=w_in, sparse_input=sparse_input,
              neuron=neuron, impl="op", **kw)
    for impl in ("loop", "op"):  # the definition, and the operator over the caller's X
        want = rnn(_product(x, w_in, sparse_input), state, weight=w, bias=b, neuron=neuron,
                   impl=impl, **kw)
        assert torch.equal(got.spikes, want.spikes) and 0 < got.spikes.mean() < 0.9
        assert torch.equal(got.state.spikes, want.state.spikes)
        for a, c in zip(*(_parts(o.state.neuron) for o in (got, want))):
            assert torch.equal(a, c)
        g_got = torch.autograd.grad(_loss(got), wrt, retain_graph=True)
        g_want = torch.autograd.grad(_loss(want), wrt)
        for a, c in zip(g_got, g_want):
            assert c.abs().sum() > 0
            torch.testing.assert_close(a, c)
    loop = rnn(x, state, weight=w, bias=b, input_weight=w_in, sparse_input=sparse_input,
               neuron=neuron, impl="loop", **kw)
    assert torch.equal(loop.spikes, got.spikes)


def test_sparse_input_runs_the_sparse_product_and_matches_the_dense_one_to_rounding(
        monkeypatch):
    runs, fwd, weight_grad = sparse.KERNELS["cpu"]
    ran = []
    monkeypatch.setitem(sparse.KERNELS, "cpu", (
        runs, lambda x, *a: ran.append(("x", x.shape[1])) or fwd(x, *a),
        lambda x, g: ran.append(("w", x.shape[1])) or weight_grad(x, g)))
    x, w_in, w, b = _data(dtype=torch.float32, density=0.05)
    with torch.no_grad():
        w_in.mul_(4)
    out = {}
    for sparse_input in (False, True):
        o = rnn(x, weight=w, bias=b, input_weight=w_in, sparse_input=sparse_input, impl="op")
        out[sparse_input] = (o.spikes, torch.autograd.grad(_loss(o), [x, w_in, w, b]))
    # the sparse run's product of its input and its input weight's gradient (the recurrent
    # weight's gradient, from the spikes, takes that kernel in both runs)
    assert [r for r in ran if r[1] == M] == [("x", M), ("w", M)]
    assert out[True][0].mean() > 0
    assert (out[True][0] != out[False][0]).float().mean() < 0.01  # rounding at the threshold
    torch.testing.assert_close(out[True][1][1], out[False][1][1], rtol=1e-4, atol=1e-3)


def test_the_layer_computes_I_in_the_place_of_its_product(monkeypatch):
    """The product X the operator makes is the storage of the I it saves for the backward:
    one [T, B, N] tensor fewer than a Linear before the layer (X, I, spikes)."""
    x, w_in, w, b = _data(dtype=torch.float32)
    made = []
    product = steps.input_current
    monkeypatch.setattr(steps, "input_current",
                        lambda *a: made.append(product(*a)) or made[-1])
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = rnn(x, weight=w, bias=b, input_weight=w_in, neuron=snnfunc.alif, impl="op")
    assert len(made) == 1 and made[0].shape == out.spikes.shape
    full = [t for t in saved if t.shape == out.spikes.shape]
    assert len(full) == 1 and full[0].data_ptr() == made[0].data_ptr()  # I, over X
    assert not torch.equal(full[0], F.linear(x, w_in))  # (the recurrent input added)


def test_per_sample_gradients_and_an_ensemble_of_input_weights():
    x, w_in, w, b = _data(seed=3)
    x, w_in, w, b = (t.detach() for t in (x, w_in, w, b))
    kw = dict(tau=2.0, beta=0.4, surrogate=S.ATan())

    def loss(x, w_in, w, b, impl="auto"):
        return _loss(rnn(x, weight=w, bias=b, input_weight=w_in, neuron=snnfunc.alif,
                         impl=impl, **kw))

    per_sample = vmap(grad(loss, argnums=(0, 1, 2, 3)), in_dims=(1, None, None, None))(
        x[:, :, None], w_in, w, b)
    for i in range(B):
        one = grad(loss, argnums=(0, 1, 2, 3))(x[:, i:i + 1], w_in, w, b, "loop")
        assert one[1].abs().sum() > 0
        for a, c in zip(per_sample, one):
            torch.testing.assert_close(a[i], c)
    members = torch.stack([w_in, 0.5 * w_in, -w_in])
    f = lambda w_in: rnn(x, weight=w, bias=b, input_weight=w_in,  # noqa: E731
                         neuron=snnfunc.alif, **kw).spikes
    ensemble = vmap(f)(members)
    for m in range(3):
        assert torch.equal(ensemble[m], rnn(F.linear(x, members[m]), weight=w, bias=b,
                                            neuron=snnfunc.alif, impl="loop", **kw).spikes)


def test_the_module_with_in_features_saves_loads_steps_and_stays_pure():
    torch.manual_seed(4)
    layer = Recurrent(N, snnfunc.alif, in_features=M, sparse_input=True, tau=2.0, beta=0.4)
    with torch.no_grad():
        layer.input_weight.mul_(4)
    assert {n for n, _ in layer.named_parameters()} == {"weight", "input_weight", "bias"}
    assert "in_features=9, sparse_input=True" in repr(layer)
    x = (torch.rand(T, B, M) < 0.3).float()
    out = layer(x)
    assert out.shape == (T, B, N) and out.mean() > 0
    halves = (layer.reset(), torch.cat([layer(x[:4]), layer(x[4:])]))[1]
    assert torch.equal(halves, out)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    again = Recurrent(N, snnfunc.alif, in_features=M, sparse_input=True, tau=2.0, beta=0.4,
                      step_mode="s")
    again.load_state_dict(torch.load(buf))
    assert torch.equal(torch.stack([again(x_t) for x_t in x]), out)
    dense = Recurrent(N, snnfunc.alif, in_features=M, tau=2.0, beta=0.4)
    dense.load_state_dict(layer.state_dict())
    plain = torch.nn.Sequential(torch.nn.Linear(M, N, bias=False),
                                Recurrent(N, snnfunc.alif, tau=2.0, beta=0.4))
    plain[0].weight.data.copy_(layer.input_weight.data)
    plain[1].load_state_dict({k: v for k, v in layer.state_dict().items() if k != "input_weight"})
    assert torch.equal(dense(x), plain(x))
    layer.reset()
    params = {k: v.detach().clone().requires_grad_() for k, v in layer.named_parameters()}
    pure = functional_call(layer, params, (x,))
    assert layer.state is None and torch.equal(pure, out)
    g = torch.autograd.grad(pure.sum(), [params["input_weight"]])[0]
    assert g.shape == (N, M) and g.abs().sum() > 0


def test_bad_input_weights_are_named():
    x, w_in, w, b = _data()
    with pytest.raises(ValueError, match=r"input_weight must have shape \[N, M\] with M = "):
        rnn(x, weight=w, input_weight=w_in[:, :4])
    with pytest.raises(ValueError, match="input_weight .* must have x_seq's dtype"):
        rnn(x, weight=w, input_weight=w_in.float())
    with pytest.raises(TypeError, match="input_weight must be a dense tensor"):
        rnn(x, weight=w, input_weight=[[1.0]])
    with pytest.raises(TypeError, match="input_weight must be a dense tensor .*sparse_coo"):
        rnn(x, weight=w, input_weight=w_in.detach().to_sparse())
    with pytest.raises(TypeError, match="x_seq must be a dense"):
        rnn(x.detach().to_sparse(), weight=w, input_weight=w_in)
    with pytest.raises(ValueError, match=r"weight must have shape \[N, N\] = \[5, 5\]"):
        rnn(x, weight=w[:4, :4], input_weight=w_in)
    with pytest.raises(TypeError, match="sparse_input=True goes with input_weight"):
        rnn(F.linear(x, w_in), weight=w, sparse_input=True)
    with pytest.raises(TypeError, match="sparse_input must be True or False"):
        rnn(x, weight=w, input_weight=w_in, sparse_input=1)
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        Recurrent(N, in_features=0)
    with pytest.raises(TypeError, match="sparse_input=True goes with in_features"):
        Recurrent(N, sparse_input=True)
    with pytest.raises(TypeError, match="input_weight= is not a neuron option"):
        Recurrent(N, input_weight=w_in)
    # the registered operator checks its own arguments before any work
    with torch.no_grad():
        prepared, _ = R.prepare(snnfunc.lif, F.linear(x, w_in), {})
        args = ([torch.zeros(B, N, dtype=x.dtype)], None, w, None, prepared.params,
                prepared.th, prepared.scalars, prepared.record.neuron, prepared.record.options,
                prepared.record.hard)
        rest = (False, steps.CHUNK, False)  # sparse_input, chunk, sparse_recurrent
        with pytest.raises(ValueError, match=r"rnn_forward: input_weight must be \[N, M\]"):
            R.rnn_forward(x, *args, w_in[:, :2], *rest)
        with pytest.raises(ValueError, match=r"rnn_forward: x_seq must be \[T, \.\.\., 5\]"):
            R.rnn_forward(x, *args, None, *rest)
        with pytest.raises(ValueError, match="rnn_forward: input_weight must have x_seq's"):
            R.rnn_forward(x, *args, w_in.float(), *rest)
        wide = [torch.zeros(B, M, dtype=x.dtype)]  # a state of the input's width, not N's
        with pytest.raises(ValueError, match=r"rnn_forward: state\[0\] must have one step's"):
            R.rnn_forward(x, wide, *args[1:], w_in, *rest)
        with pytest.raises(ValueError, match="rnn_forward: s0 must have one step's shape"):
            R.rnn_forward(x, args[0], wide[0], *args[2:], w_in, *rest)
        with pytest.raises(ValueError, match=r"rnn_forward: bias must be \[5\]"):
            R.rnn_forward(x, *args[:3], torch.zeros(M, dtype=x.dtype), *args[4:], w_in, *rest)


@pytest.mark.compile
def test_compiled_one_node_equal_to_the_loop():
    torch._dynamo.reset()
    x, w_in, w, b = (t.detach().float().requires_grad_() for t in _data(T=12))
    kw = dict(tau=2.0, beta=0.4, surrogate=S.ATan())
    graphs = []

    def backend(gm, example_inputs):
        code = gm.print_readable(print_output=False)
        graphs.append(code.count("torch.ops.snnfunc.rnn_forward.default("))
        calls = [line for line in code.splitlines() if "rnn_forward.default(" in line]
        assert all(f", {steps.CHUNK}, False);" in line for line in calls), calls  # chunk
        return torch._inductor.compile(gm, example_inputs)

    f = torch.compile(lambda x, w_in: rnn(x, weight=w, bias=b, input_weight=w_in,
                                          neuron=snnfunc.alif, **kw).spikes,
                      backend=backend, fullgraph=True)
    out = f(x, w_in)
    want = rnn(F.linear(x, w_in), weight=w, bias=b, neuron=snnfunc.alif, impl="loop", **kw)
    assert graphs[0] == 1 and torch.equal(out, want.spikes)
    g = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    got = torch.autograd.grad((out * g).sum(), [x, w_in, w, b])
    ref = torch.autograd.grad((want.spikes * g).sum(), [x, w_in, w, b])
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    layer = Recurrent(N, snnfunc.alif, in_features=M, sparse_input=True, **kw)  # the module
    with torch.no_grad():
        layer.input_weight.mul_(4)
    eager = layer(x.detach())
    layer.reset()
    assert torch.equal(torch.compile(layer, fullgraph=True)(x.detach()), eager)
    assert eager.mean() > 0


def _module_linear(w, b):
    lin = torch.nn.Linear(N, N).double()
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    return lin


CASES = {  # name: (x shape, rnn options, transposed: x and spikes [B, T, ...])
    "[T, M]": ((T, M), {}, False),
    "[T, B1, B2, M]": ((T, 2, B, M), {}, False),
    "batch_first": ((B, T, M), {"batch_first": True}, True),
    "detach_recurrent": ((T, B, M), {"detach_recurrent": True}, False),
    "T = 0": ((0, B, M), {}, False),
    "nn.Linear weight": ((T, B, M), {"weight": "linear"}, False),
    "callable weight": ((T, B, M), {"weight": "callable"}, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_option_with_an_input_weight_is_the_layer_over_its_product(case):
    """Other step shapes, batch_first, detach_recurrent, T = 0 and the other recurrent maps:
    the layer with `input_weight` equals the loop over `F.linear(x, W_in)`; its gradients come
    from a plain backward (g_I written over I where the operator runs)."""
    shape, options, transposed = CASES[case]
    torch.manual_seed(7)
    x = (torch.rand(shape) < 0.4).double().requires_grad_()
    w_in = (2.0 * torch.randn(N, M, dtype=torch.float64)).requires_grad_()
    w = (0.6 * torch.randn(N, N, dtype=torch.float64)).requires_grad_()
    b = (0.1 * torch.randn(N, dtype=torch.float64)).requires_grad_()
    options = dict(options)
    kind = options.pop("weight", None)
    maps = {None: dict(weight=w, bias=b), "linear": dict(weight=_module_linear(w, b)),
            "callable": dict(weight=lambda s: F.linear(s, w, b))}[kind]
    wrt = [x, w_in, *([w, b] if kind is None else maps["weight"].parameters()
                      if kind == "linear" else [w, b])]
    kw = dict(tau=2.0, surrogate=S.ATan(), **options)
    got = rnn(x, input_weight=w_in, **maps, **kw)
    want = rnn(F.linear(x, w_in), impl="loop", **maps, **kw)
    assert got.spikes.shape == (*shape[:-1], N) and torch.equal(got.spikes, want.spikes)
    assert torch.equal(got.state.neuron, want.state.neuron)
    if shape[int(transposed)] == 0:
        return
    assert 0 < got.spikes.mean() < 0.9
    cot = torch.linspace(-1, 1, got.spikes.numel(), dtype=x.dtype).reshape(got.spikes.shape)
    g_got = torch.autograd.grad((got.spikes * cot).sum(), wrt)  # plain: g_I over I
    g_want = torch.autograd.grad((want.spikes * cot).sum(), wrt)
    for a, c in zip(g_got, g_want):
        assert c.abs().sum() > 0
        torch.testing.assert_close(a, c)


def test_forward_mode_and_jacrev_with_an_input_weight():
    x, w_in, w, b = (t.detach() for t in _data(T=6))
    f = lambda w_in, impl: rnn(x, weight=w, bias=b, input_weight=w_in,  # noqa: E731
                               impl=impl, tau=2.0, surrogate=S.ATan()).spikes
    tangent = torch.randn_like(w_in)
    out, jvp_out = torch.func.jvp(lambda w: f(w, "auto"), (w_in,), (tangent,))
    ref, jvp_ref = torch.func.jvp(lambda w: f(w, "loop"), (w_in,), (tangent,))
    assert torch.equal(out, ref) and jvp_ref.abs().sum() > 0
    torch.testing.assert_close(jvp_out, jvp_ref)
    jac = torch.func.jacrev(lambda w: f(w, "op").sum(1))(w_in)
    torch.testing.assert_close(jac, torch.func.jacrev(lambda w: f(w, "loop").sum(1))(w_in))


def test_sparse_input_per_sample_gradients():
    x, w_in, w, b = (t.detach().float() for t in _data(seed=5, density=0.1))

    def loss(x, w_in):
        return _loss(rnn(x, weight=w.float(), bias=b.float(), input_weight=w_in,
                         sparse_input=True, tau=2.0))

    per_sample = vmap(grad(loss, argnums=(0, 1)), in_dims=(1, None))(x[:, :, None], w_in)
    for i in range(B):
        one = grad(loss, argnums=(0, 1))(x[:, i:i + 1], w_in)
        assert one[1].abs().sum() > 0
        for a, c in zip(per_sample, one):
            torch.testing.assert_close(a[i], c, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_with_an_input_weight(dtype):
    x, w_in, w, b = (t.detach().to(dtype) for t in _data(seed=6))
    got = rnn(x, weight=w, bias=b, input_weight=w_in, impl="op", tau=2.0)
    want = rnn(F.linear(x, w_in), weight=w, bias=b, impl="loop", tau=2.0)
    assert got.spikes.dtype == dtype and torch.equal(got.spikes, want.spikes)
    assert got.spikes.mean() > 0


def test_under_autocast_the_layer_runs_the_loop_and_leaves_autocast_as_it_was():
    """Autocast decides the dtype of the layer's products: the layer runs its loop (which
    autocast reaches), not the operator (which it does not)."""
    x, w_in, w, b = _data(dtype=torch.float32, seed=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rnn(x, weight=w, bias=b, input_weight=w_in, tau=2.0)
        want = rnn(x, weight=w, bias=b, input_weight=w_in, impl="loop", tau=2.0)
        assert F.linear(x, w_in).requires_grad  # autocast's cast cache still has a graph
        with pytest.raises(ValueError, match="impl='op' is not available: autocast is on"):
            rnn(x, weight=w, bias=b, input_weight=w_in, impl="op", tau=2.0)
        # without an input weight: autocast's X in bfloat16, the weights in float32
        layer = Recurrent(N, tau=2.0)
        X = F.linear(x, w_in)
        assert X.dtype == torch.bfloat16
        spikes = layer(X)
        ref = rnn(X, weight=layer.weight, bias=layer.bias, impl="loop", tau=2.0).spikes
        assert torch.equal(spikes, ref) and spikes.mean() > 0
    assert got.spikes.dtype == want.spikes.dtype and torch.equal(got.spikes, want.spikes)
    assert got.spikes.mean() > 0


def test_a_frozen_input_weight_keeps_no_input():
    x, w_in, w, b = _data(seed=9)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        frozen = rnn(x, weight=w, bias=b, input_weight=w_in.detach(), tau=2.0)
        learnt = rnn(x.detach(), weight=w, bias=b, input_weight=w_in, tau=2.0)
    assert sum(t is x for t in saved) == 0 and sum(t.shape == x.shape for t in saved) == 1
    want = rnn(F.linear(x, w_in.detach()), weight=w, bias=b, impl="loop", tau=2.0)
    torch.testing.assert_close(torch.autograd.grad(_loss(frozen), [x, w]),
                               torch.autograd.grad(_loss(want), [x, w]))
    assert learnt.spikes.requires_grad


def test_the_module_refuses_a_sequence_in_single_step_mode_and_loads_old_pickles():
    layer = Recurrent(N, in_features=M, step_mode="s", tau=2.0)
    layer(torch.rand(B, M))
    with pytest.raises(ValueError, match="single-step mode"):
        layer(torch.rand(4, B, M))
    old = Recurrent(N, tau=2.0)  # as a layer pickled before input weights: no such attributes
    for name in ("in_features", "sparse_input", "input_weight"):
        del old.__dict__[name]
    again = pickle.loads(pickle.dumps(old))
    x = torch.rand(5, B, N)
    assert again.in_features is None and again.input_weight is None
    fresh = Recurrent(N, tau=2.0)
    fresh.load_state_dict(old.state_dict())
    assert torch.equal(again(x), fresh(x))


@pytest.mark.parametrize("case", ["sparse", "dense spikes", "[T, M]", "given state",
                                  "detach_recurrent", "nn.Linear weight"])
def test_sparse_recurrent_is_the_loop_over_the_sparse_product(case, monkeypatch):
    """`sparse_recurrent=True`: $W S_{t-1} + b$ as `snnfunc.sparse.linear` computes it, the
    operator (the backend's kernel with the weight prepared once; ATen's product where the
    spikes are dense) bit for bit the loop over that product, gradients to rounding."""
    stepper = sparse.STEPPERS["cpu"]
    ran = []

    def counting(weight, bias):
        run = stepper(weight, bias)
        return lambda x, out: ran.append(run(x, out)) or ran[-1]
    monkeypatch.setitem(sparse.STEPPERS, "cpu", counting)
    torch.manual_seed(13)
    shape = (T, M) if case == "[T, M]" else (T, B, M)
    x = (torch.rand(shape) < 0.4).double().requires_grad_()
    w_in = (2.0 * torch.randn(N, M, dtype=torch.float64)).requires_grad_()
    w = ((3.0 if case == "dense spikes" else 0.6) * torch.randn(N, N, dtype=torch.float64))
    w = w.requires_grad_()
    b = (0.1 * torch.randn(N, dtype=torch.float64)).requires_grad_()
    weight = dict(weight=w, bias=b)
    if case == "nn.Linear weight":
        weight = dict(weight=_module_linear(w, b))
    state = None
    if case == "given state":
        state = RecurrentState(torch.rand(shape[1:-1] + (N,), dtype=torch.float64),
                               (torch.rand(shape[1:-1] + (N,)) < 0.5).double())
    kw = dict(tau=2.0, surrogate=S.ATan(), detach_recurrent=case == "detach_recurrent")
    got = rnn(x, state, input_weight=w_in, sparse_recurrent=True, impl="op", **weight, **kw)
    want = rnn(x, state, input_weight=w_in, sparse_recurrent=True, impl="loop", **weight, **kw)
    assert torch.equal(got.spikes, want.spikes) and torch.equal(got.state.neuron,
                                                                want.state.neuron)
    assert 0 < got.spikes.mean() < 0.95
    if case == "dense spikes":
        assert False in ran  # ATen's product, on the steps whose spikes are dense
    elif case != "[T, M]":
        assert any(ran)  # the kernel (on the steps whose spikes are sparse enough)
    wrt = [x, w_in, *(weight["weight"].parameters() if case == "nn.Linear weight" else (w, b))]
    cot = torch.linspace(-1, 1, got.spikes.numel(), dtype=x.dtype).reshape(got.spikes.shape)
    for a, c in zip(torch.autograd.grad((got.spikes * cot).sum(), wrt),
                    torch.autograd.grad((want.spikes * cot).sum(), wrt)):
        assert c.abs().sum() > 0 or case == "detach_recurrent"
        torch.testing.assert_close(a, c)
    dense = rnn(x, state, input_weight=w_in, impl="loop", **weight, **kw)
    assert (dense.spikes != got.spikes).double().mean() < 0.05  # F.linear's, to rounding


def test_sparse_recurrent_per_sample_gradients_compiled_and_refused():
    x, w_in, w, b = (t.detach() for t in _data(seed=14))
    kw = dict(tau=2.0, surrogate=S.ATan(), sparse_recurrent=True)

    def loss(x, w):
        return _loss(rnn(x, weight=w, bias=b, input_weight=w_in, **kw))

    per_sample = vmap(grad(loss, argnums=1), in_dims=(1, None))(x[:, :, None], w)
    for i in range(B):
        torch.testing.assert_close(per_sample[i], grad(loss, argnums=1)(x[:, i:i + 1], w))
    with pytest.raises(TypeError, match="sparse_recurrent=True goes with a weight tensor"):
        rnn(x, weight=lambda s: s, input_weight=w_in, sparse_recurrent=True)
    with pytest.raises(TypeError, match="sparse_recurrent must be True or False"):
        rnn(x, weight=w, input_weight=w_in, sparse_recurrent=None)
    layer = Recurrent(N, in_features=M, sparse_recurrent=True, tau=2.0).double()
    assert "sparse_recurrent=True" in repr(layer)
    with pytest.raises(TypeError, match="sparse_recurrent must be True or False"):
        Recurrent(N, sparse_recurrent="yes")
