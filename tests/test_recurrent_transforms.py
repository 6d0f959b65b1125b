"""The recurrent layer under every transform, for every neuron of the registry (the built-ins
and user neurons with one and several states, `on_spike` and a threshold of their own):
`grad`, `vjp`, `jacrev`, `vmap` (batch and ensembles), `vmap(grad)` equal to a loop of grads
(per-sample gradients, the weight's included), `functional_call`, half precision, and
`torch.compile(fullgraph=True, dynamic=True)` without recompiling over T."""

import pytest
import torch
from torch.func import functional_call, grad, jacrev, vjp, vmap
from torch.nn import functional as F

from conftest import CPU_KERNELS
from registry import NEURONS
from snnfunc.nn import Recurrent
from snnfunc.recurrent import rnn

pytestmark = CPU_KERNELS
T, B, N = 5, 3, 4
NAMES = sorted(NEURONS)


def _tensors(kw):
    return {k: v for k, v in kw.items() if isinstance(v, torch.Tensor)}


def _setup(name, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    multi, step, make = NEURONS[name]
    kw = {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in make(N).items()}
    x = (2.5 * torch.rand(T, B, N, dtype=dtype))
    w = 0.5 * torch.randn(N, N, dtype=dtype)
    b = 0.1 * torch.randn(N, dtype=dtype)
    return multi, step, kw, x, w, b


def _loop(x, step, w, b, kw):
    """The definition with step functions: I_t = X_t + W S_{t-1} + b."""
    s, state, out = None, None, []
    for x_t in x:
        i = x_t + b if s is None else x_t + F.linear(s, w, b)
        s, state = step(i, state, **kw)
        out.append(s)
    return torch.stack(out)


def _loss(spikes):
    g = torch.linspace(-1, 1, spikes.numel(), dtype=spikes.dtype).reshape(spikes.shape)
    return (spikes * g).sum()


@pytest.mark.parametrize("name", NAMES)
def test_grad_vjp_and_jacrev_equal_the_loop(name):
    multi, step, kw, x, w, b = _setup(name)
    tensors = _tensors(kw)

    def f(x, w, b, tensors, impl):
        return rnn(x, weight=w, bias=b, neuron=multi, impl=impl, **{**kw, **tensors}).spikes

    got = grad(lambda *a: _loss(f(*a, "op")), argnums=(0, 1, 2, 3))(x, w, b, tensors)
    want = grad(lambda *a: _loss(f(*a, "loop")), argnums=(0, 1, 2, 3))(x, w, b, tensors)
    torch.testing.assert_close(got, want)
    assert any(g.abs().sum() > 0 for g in got[:3])
    out, pull = vjp(lambda x, w: f(x, w, b, tensors, "op"), x, w)
    ref, pull_ref = vjp(lambda x, w: f(x, w, b, tensors, "loop"), x, w)
    assert torch.equal(out, ref)
    cot = torch.randn_like(out)
    torch.testing.assert_close(pull(cot), pull_ref(cot))
    small = x[:3, :1]
    jac = jacrev(lambda x: f(x, w, b, tensors, "op").sum(1))(small)
    jac_ref = jacrev(lambda x: f(x, w, b, tensors, "loop").sum(1))(small)
    torch.testing.assert_close(jac, jac_ref)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_of_grad_is_a_loop_of_grads(name):
    """Per-sample gradients (DP-SGD): of the input and of the shared weight, bias and neuron
    parameters, one per sample."""
    multi, step, kw, x, w, b = _setup(name, seed=1)
    tensors = _tensors(kw)

    def loss(x_i, w, b, tensors):  # one sample: [T, N]
        return _loss(rnn(x_i, weight=w, bias=b, neuron=multi, **{**kw, **tensors}).spikes)

    per_sample = vmap(grad(loss, argnums=(0, 1, 2, 3)), in_dims=(1, None, None, None))(
        x, w, b, tensors)
    for i in range(B):
        one = grad(loss, argnums=(0, 1, 2, 3))(x[:, i], w, b, tensors)
        torch.testing.assert_close(per_sample[0][i], one[0])
        torch.testing.assert_close(per_sample[1][i], one[1])
        torch.testing.assert_close(per_sample[2][i], one[2])
        for k in tensors:
            torch.testing.assert_close(per_sample[3][k][i], one[3][k])


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_a_batch_and_over_an_ensemble_of_weights(name):
    multi, step, kw, x, w, b = _setup(name, seed=2)
    f = lambda x, w: rnn(x, weight=w, bias=b, neuron=multi, **kw).spikes  # noqa: E731
    batched = vmap(f, in_dims=(1, None), out_dims=1)(x[:, :, None], w)
    assert torch.equal(batched[:, :, 0], _loop(x, step, w, b, kw))
    ws = torch.stack([w, 0.5 * w, -w])
    members = vmap(f, in_dims=(None, 0))(x, ws)
    for m in range(3):
        assert torch.equal(members[m], _loop(x, step, ws[m], b, kw))


@pytest.mark.parametrize("name", NAMES)
def test_functional_call_of_the_module_is_pure(name):
    multi, step, kw, x, w, b = _setup(name, seed=3)
    layer = Recurrent(N, multi, **kw).double()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in layer.named_parameters()}
    out = functional_call(layer, params, (x,))
    assert layer.state is None  # nothing written back
    assert torch.equal(out, _loop(x, step, params["weight"], params["bias"], kw))
    (g,) = torch.autograd.grad(_loss(out), [params["weight"]])
    assert g.shape == (N, N)


# each neuron in one of the two half-precision dtypes, in turn (a kernel each): both dtypes
# run, and every neuron in one of them
HALF_CASES = [(name, (torch.float16, torch.bfloat16)[i % 2]) for i, name in enumerate(NAMES)]


@pytest.mark.parametrize("name, dtype", HALF_CASES, ids=[f"{n}-{str(d)[6:]}" for n, d in HALF_CASES])
def test_half_precision_equals_the_loop(name, dtype):
    multi, step, kw, x, w, b = _setup(name, seed=4, dtype=dtype)
    out = rnn(x, weight=w, bias=b, neuron=multi, impl="op", **kw)
    assert out.spikes.dtype == dtype
    assert torch.equal(out.spikes, _loop(x, step, w, b, kw))


COMPILED = ["lif", "alif", "user leaky", "user refractory"]


@pytest.mark.compile
@pytest.mark.parametrize("name", COMPILED)
def test_compiled_once_whatever_T(name):
    """One graph for every T (dynamic shapes), the rnn operator one node of it, with the
    same spikes and gradients as the loop."""
    torch._dynamo.reset()
    multi, step, kw, x, w, b = _setup(name, seed=5)
    kw = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    w, b = w.float().requires_grad_(), b.float().requires_grad_()
    graphs = []

    def backend(gm, example_inputs):  # Dynamo's graph: the operator one node of it
        code = gm.print_readable(print_output=False)
        if "torch.ops.snnfunc.rnn_forward.default(" in code:  # (not the backward's)
            assert code.count("torch.ops.snnfunc.rnn_forward.default(") == 1, code
            graphs.append(code)
        return torch._inductor.compile(gm, example_inputs)

    f = torch.compile(lambda x: rnn(x, weight=w, bias=b, neuron=multi, **kw).spikes,
                      backend=backend, fullgraph=True, dynamic=True)
    compiled = []
    for T_ in (3, 7, 12):  # (none equal to the batch 2 or N: no duck-sized guard)
        x_ = 2.5 * torch.rand(T_, 2, N)
        out = f(x_)
        assert torch.equal(out, _loop(x_, step, w, b, kw))
        got = torch.autograd.grad(_loss(out), [w, b])
        want = torch.autograd.grad(_loss(_loop(x_, step, w, b, kw)), [w, b])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        compiled.append(len(graphs))
    assert compiled[0] > 0 and compiled == compiled[:1] * 3, "a new T compiled again"
