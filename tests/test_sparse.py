"""snnfunc.sparse.SpikeLinear and its ops: torch.nn.Linear's results to rounding on sparse,
dense and edge inputs, with the C kernels taken where they should be and ATen's product where
they should not; gradients (input, weight, bias, second order); transforms; compile; state."""

import copy
import io

import pytest
import torch
from torch.func import functional_call, grad, jacrev, jvp, vmap

import snnfunc
from snnfunc import memory, sparse
from snnfunc._backends.c import build, spike_linear as kernels
from snnfunc.nn import SpikeLinear

needs_cc = pytest.mark.skipif(build.error() is not None, reason="needs a C compiler")


def _pair(K=70, N=40, bias=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    ours = SpikeLinear(K, N, bias=bias, dtype=dtype)
    ref = torch.nn.Linear(K, N, bias=bias, dtype=dtype)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _spikes(*shape, p=0.05, dtype=torch.float32):
    return (torch.rand(*shape) < p).to(dtype)


def _close(a, b, dtype):
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a, b, equal_nan=True, **tol)


def _both(ours, ref, x, g=None):
    """Outputs and every gradient of both layers for input x (and output gradient g)."""
    xs = [x.detach().clone().requires_grad_(x.requires_grad) for _ in range(2)]
    ys = [m(xi) for m, xi in zip((ours, ref), xs)]
    g = torch.randn_like(ys[1]) if g is None else g
    for y in ys:
        y.backward(g)
    grads = [[t.grad for t in (xi, *m.parameters())] for m, xi in zip((ours, ref), xs)]
    return ys, grads


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("values", ["spikes", "sparse values"])
def test_equals_linear_and_runs_the_kernels(dtype, bias, values):
    ours, ref = _pair(bias=bias, dtype=dtype)
    x = _spikes(9, 7, 70, dtype=dtype)
    if values == "sparse values":
        x = x * torch.randn_like(x)
    x.requires_grad_()
    (y, yr), (gs, gr) = _both(ours, ref, x)
    assert y.shape == yr.shape == (9, 7, 40)
    _close(y, yr, dtype)
    for a, b in zip(gs, gr):
        _close(a, b, dtype)
    # the kernels computed it (not ATen's fallback)
    x2 = x.detach().reshape(-1, 70)
    assert kernels.forward(x2, ours.weight.detach(), ours.bias) is not None
    assert kernels.weight_grad(x2, torch.randn(63, 40, dtype=dtype)) is not None


@needs_cc
def test_dense_inputs_and_non_finite_weights_or_gradients_go_to_aten_exactly():
    ours, ref = _pair()
    w = ours.weight.detach()
    dense = torch.randn(50, 70)
    assert kernels.forward(dense, w, None) is None  # many non-zeros: ATen's product
    assert torch.equal(ours(dense), ref(dense))
    x = _spikes(50, 70)
    for bad in (float("inf"), float("nan")):
        w2 = w.clone()
        w2[3, 5] = bad
        assert kernels.forward(x, w2, None) is None
        with torch.no_grad():
            ours.weight[3, 5] = bad
            ref.weight[3, 5] = bad
        assert torch.equal(ours(x).isnan(), ref(x).isnan())
        _close(ours(x), ref(x), torch.float32)
        with torch.no_grad():
            ours.weight.copy_(w)
            ref.weight.copy_(w)
        g = torch.randn(50, 40)
        g[7, 2] = bad  # 0 * inf in the dense product: NaN where x is 0, kept as ATen has it
        assert kernels.weight_grad(x, g) is None
        _, (gs, gr) = _both(ours, ref, x, g)
        assert torch.equal(gs[1], gr[1]) or torch.equal(gs[1].isnan(), gr[1].isnan())
        _close(gs[1], gr[1], torch.float32)


@needs_cc
def test_edge_values_in_the_input():
    ours, ref = _pair(K=40, N=24)
    x = _spikes(16, 40)
    x[0, 3], x[1, 4], x[2, 5], x[3, 6] = float("inf"), float("-inf"), float("nan"), -0.0
    x[4, 7], x[4, 9] = float("inf"), float("-inf")  # inf - inf: NaN in either order
    x[5, 1] = 1e-45  # a subnormal is not 0
    (y, yr), (gs, gr) = _both(ours, ref, x.requires_grad_())
    _close(y, yr, torch.float32)
    assert torch.equal(y.isnan(), yr.isnan()) and torch.equal(y.isinf(), yr.isinf())
    for a, b in zip(gs, gr):
        _close(a, b, torch.float32)


@needs_cc
def test_threads_do_not_change_a_bit():
    ours, _ = _pair(K=300, N=100)
    x = _spikes(1000, 300)  # 8 chunks of rows: rounds of 2 and 3 threads, the last one short
    x[::7] *= torch.randn(300)  # values other than 1 too
    g = torch.randn(1000, 100)
    before = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out.append((kernels.forward(x, ours.weight.detach(), ours.bias.detach()),
                        kernels.weight_grad(x, g)))
    finally:
        torch.set_num_threads(before)
    for y, gw in out[1:]:
        assert torch.equal(y, out[0][0]) and torch.equal(gw, out[0][1])
    torch.testing.assert_close(out[0][1], g.t() @ x)


@needs_cc
@pytest.mark.parametrize("M", [1, 3, 64, 130])
@pytest.mark.parametrize("N", [20, 100, 300])
def test_a_few_rows_split_by_columns_over_threads_give_the_same_bits(M, N):
    # fewer chunks of rows than threads (a recurrent layer's step): the columns in parts
    torch.manual_seed(M + N)
    w, b = torch.randn(N, 70), torch.randn(N)
    x = _spikes(M, 70)
    x[::3] *= torch.randn(70)
    run = kernels.stepper(w, b)
    before = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out.append(torch.full((M, N), float("nan")))
            assert run(x, out[-1])
            assert torch.equal(out[-1], kernels.forward(x, w, b))  # the checked path's
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(y, out[0]) for y in out[1:])
    torch.testing.assert_close(out[0], torch.addmm(b, x, w.t()))


@needs_cc
def test_a_stepper_checks_its_weight_once_and_refuses_one_with_an_infinity():
    w = torch.randn(8, 70)
    x = _spikes(4, 70)
    w[2, 5] = float("inf")  # a dense product's 0 * inf is NaN: ATen's product computes it
    run = kernels.stepper(w, None)
    assert not run(x, torch.empty(4, 8))
    w[2, 5] = 1.0  # the stepper holds its own copy, checked when it was made
    assert not run(x, torch.empty(4, 8))
    out = torch.empty(4, 8)
    assert kernels.stepper(w, None)(x, out)
    torch.testing.assert_close(out, x @ w.t())
    steps = sparse.linear_steps(w.clone().index_fill_(1, torch.tensor([5]), float("nan")))
    steps(x, out)  # ATen's product
    assert torch.equal(out.isnan(), (x @ w.t().index_fill(0, torch.tensor([5]), float("nan"))
                                     ).isnan())


@pytest.mark.parametrize("shape", [(0, 70), (5, 0, 70), (70,)])
def test_empty_and_one_dimensional_inputs(shape):
    ours, ref = _pair()
    x = _spikes(*shape)
    torch.testing.assert_close(ours(x), ref(x))
    with pytest.warns(UserWarning, match="zero-element"):  # torch's initialisation says so
        zero_in, zero_ref = _pair(K=0)
    torch.testing.assert_close(zero_in(torch.zeros(3, 0)), zero_ref(torch.zeros(3, 0)))


def test_a_torch_sparse_input_is_linear_s():
    ours, ref = _pair()
    x = _spikes(6, 70).to_sparse()
    assert torch.equal(ours(x), ref(x))


def test_non_contiguous_inputs_and_other_dtypes():
    ours, ref = _pair()
    x = _spikes(70, 30).t()  # rows not contiguous
    _close(ours(x), ref(x), torch.float32)
    half, half_ref = (m.to(torch.bfloat16) for m in _pair())
    xb = _spikes(6, 70, dtype=torch.bfloat16)
    assert torch.equal(half(xb), half_ref(xb))  # no kernel: ATen's linear itself


def test_autocast_inference_mode_and_no_grad_as_linear():
    ours, ref = _pair()
    x = _spikes(4, 70)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, yr = ours(x), ref(x)
    assert y.dtype == yr.dtype == torch.bfloat16 and torch.equal(y, yr)
    with torch.inference_mode():
        _close(ours(x), ref(x), torch.float32)
    with torch.no_grad():
        _close(ours(x), ref(x), torch.float32)


def test_second_order_gradients():
    ours, ref = _pair(K=20, N=10)
    x = _spikes(30, 20, p=0.2)
    outs = []
    for m in (ours, ref):
        gw, = torch.autograd.grad(m(x).pow(2).sum(), m.weight, create_graph=True)
        outs.append(torch.autograd.grad(gw.pow(2).sum(), m.weight))
    _close(outs[0][0], outs[1][0], torch.float32)


def test_transforms():
    ours, ref = _pair(K=20, N=10)
    x = _spikes(6, 20, p=0.3)
    p_o, p_r = dict(ours.named_parameters()), dict(ref.named_parameters())
    loss = lambda m: lambda p, x: functional_call(m, p, (x,)).pow(2).sum()  # noqa: E731
    for a, b in zip(grad(loss(ours))(p_o, x).values(), grad(loss(ref))(p_r, x).values()):
        _close(a, b, torch.float32)
    _close(vmap(ours)(x.view(2, 3, 20)), vmap(ref)(x.view(2, 3, 20)), torch.float32)
    _close(jacrev(ours)(x[0]), jacrev(ref)(x[0]), torch.float32)
    t = torch.randn_like(x)
    for a, b in zip(jvp(ours, (x,), (t,)), jvp(ref, (x,), (t,))):
        _close(a, b, torch.float32)
    # the ops themselves under vmap: their rules, batched over x, the weight or both
    w, b, g = ours.weight.detach(), ours.bias.detach(), torch.randn(2, 3, 10)
    xb = x.view(2, 3, 20)
    _close(vmap(torch.ops.snnfunc.spike_linear, (0, None, None))(xb, w, b), ref(xb), torch.float32)
    ws = torch.stack([w, 2 * w])
    _close(vmap(torch.ops.snnfunc.spike_linear, (None, 0, None))(x, ws, None),
           torch.stack([x @ w.t(), x @ (2 * w).t()]), torch.float32)
    _close(vmap(torch.ops.snnfunc.spike_linear_weight_grad)(xb, g),
           g.transpose(1, 2) @ xb, torch.float32)


def test_packed_spikes_keep_gradients_bit_for_bit():
    torch.manual_seed(1)
    fc = SpikeLinear(30, 20)
    x = torch.rand(8, 4, 30)

    def loss():
        s = snnfunc.lif(x * 2.0, tau=2.0, v_threshold=0.5).spikes
        return fc(s).pow(2).sum()

    plain = torch.autograd.grad(loss(), list(fc.parameters()))
    with memory.packed_spikes() as stats:
        l2 = loss()
    packed = torch.autograd.grad(l2, list(fc.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(plain, packed))
    assert stats.spike_bytes > 0  # the spikes the op saved were packed


def test_state_dict_and_saved_modules_interchange_with_linear():
    ours, ref = _pair()
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    other = torch.nn.Linear(70, 40)
    other.load_state_dict(torch.load(buf))
    x = _spikes(5, 70)
    _close(ours(x), other(x), torch.float32)
    buf = io.BytesIO()
    torch.save(torch.nn.Sequential(ours), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert isinstance(loaded[0], SpikeLinear) and torch.equal(loaded(x), ours(x))
    assert torch.equal(copy.deepcopy(ours)(x), ours(x))
    assert repr(ours) == "SpikeLinear(in_features=70, out_features=40, bias=True)"


@pytest.mark.parametrize("call, message", [
    (lambda: torch.ops.snnfunc.spike_linear(torch.zeros(3), torch.zeros(2, 3), None), "x must"),
    (lambda: torch.ops.snnfunc.spike_linear(torch.zeros(2, 3), torch.zeros(2, 4), None),
     "weight must be"),
    (lambda: torch.ops.snnfunc.spike_linear(torch.zeros(2, 3), torch.zeros(2, 3).double(), None),
     "weight must have x's dtype"),
    (lambda: torch.ops.snnfunc.spike_linear(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3)),
     "bias must be"),
    (lambda: torch.ops.snnfunc.spike_linear(torch.zeros(2, 3, dtype=torch.long),
                                            torch.zeros(2, 3), None), "x must"),
    (lambda: torch.ops.snnfunc.spike_linear_weight_grad(torch.zeros(2, 3), torch.zeros(4, 5)),
     "g must have"),
    (lambda: torch.ops.snnfunc.spike_linear_weight_grad(torch.zeros(2, 3), torch.zeros(5)),
     "g must be"),
    (lambda: torch.ops.snnfunc.spike_linear(torch.eye(3).to_sparse(), torch.zeros(2, 3), None),
     "x must be a 2-d floating-point strided tensor"),
])
def test_bad_arguments_raise_before_any_work(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_wrong_inputs_to_the_layer_raise_as_linear_does():
    ours, ref = _pair()
    for x in (torch.zeros(3, 69), torch.zeros(3, 70, dtype=torch.float64)):
        with pytest.raises(RuntimeError):
            ref(x)
        with pytest.raises(RuntimeError):
            ours(x)


def test_module_is_exported():
    assert snnfunc.nn.SpikeLinear is sparse.SpikeLinear
    assert "sparse" in snnfunc.__all__


@pytest.mark.compile
@needs_cc
def test_compiled_equals_linear():
    ours, ref = _pair(K=50, N=30)
    x = _spikes(8, 4, 50)
    compiled = torch.compile(ours, fullgraph=True)
    ys = [compiled(x), ref(x)]
    g = torch.randn_like(ys[1])
    for y in ys:
        y.backward(g)
    _close(ys[0], ys[1], torch.float32)
    for a, b in zip(ours.parameters(), ref.parameters()):
        _close(a.grad, b.grad, torch.float32)


@needs_cc
def test_wide_inputs_list_fewer_rows_at_a_time():
    torch.manual_seed(2)
    K = 20000  # 128 rows would list 2.56M values: fewer rows a chunk
    w, x, g = torch.randn(8, K), _spikes(300, K, p=0.01), torch.randn(300, 8)
    _close(kernels.forward(x, w, None), x @ w.t(), torch.float32)
    _close(kernels.weight_grad(x, g), g.t() @ x, torch.float32)
