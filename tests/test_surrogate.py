"""Every surrogate × every transform, checked against g' from a hand-written primitive."""

import dataclasses
import math
import pickle

import pytest
import torch
from torch.func import grad, jacfwd, jacrev, jvp, vjp, vmap

import snnfunc
from snnfunc import surrogate as S
from conftest import SURROGATES, away_from_kinks, primitive_grad

NAMES = list(SURROGATES)


def _points(name, *shape):
    sg, g, kinks = SURROGATES[name]
    x = away_from_kinks(torch.randn(*shape, dtype=torch.float64) * 0.8, kinks)
    return sg, g, x


def test_every_listed_surrogate_is_in_the_registry():
    listed = {"Sigmoid", "BilinearLeakyReLU", "SignSwish", "ATan", "PiecewiseQuadratic",
              "PiecewiseExp", "SoftSign", "Erf", "SuperSpike", "PiecewiseLeakyReLU", "Rect",
              "Triangle", "StraightThrough"}
    covered = {type(sg).__name__ for sg, _, _ in SURROGATES.values()}
    assert listed <= covered


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_central_difference_of_primitive(name):
    sg, g, x = _points(name, 200)
    eps = 1e-6
    fd = (g(x + eps) - g(x - eps)) / (2 * eps)
    torch.testing.assert_close(sg.derivative(x), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_forward_is_heaviside_in_input_dtype(name, dtype):
    sg = SURROGATES[name][0]
    x = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 3.0], dtype=dtype)
    out = sg(x)
    assert out.dtype == dtype
    assert out.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", NAMES)
def test_backward(name):
    sg, g, x = _points(name, 50)
    c = torch.randn(50, dtype=torch.float64)
    x.requires_grad_(True)
    (sg(x) * c).sum().backward()
    torch.testing.assert_close(x.grad, c * primitive_grad(g, x))


@pytest.mark.parametrize("name", NAMES)
def test_func_grad_vjp_jacrev(name):
    sg, g, x = _points(name, 20)
    c = torch.randn(20, dtype=torch.float64)
    d = primitive_grad(g, x)
    torch.testing.assert_close(grad(lambda x: (sg(x) * c).sum())(x), c * d)
    out, pullback = vjp(sg, x)
    torch.testing.assert_close(out, (x >= 0).double())
    torch.testing.assert_close(pullback(c)[0], c * d)
    torch.testing.assert_close(jacrev(sg)(x), torch.diag(d))


@pytest.mark.parametrize("name", NAMES)
def test_forward_mode_jvp_jacfwd(name):
    sg, g, x = _points(name, 20)
    t = torch.randn(20, dtype=torch.float64)
    d = primitive_grad(g, x)
    out, tangent = jvp(sg, (x,), (t,))
    torch.testing.assert_close(out, (x >= 0).double())
    torch.testing.assert_close(tangent, t * d)
    torch.testing.assert_close(jacfwd(sg)(x), torch.diag(d))


@pytest.mark.parametrize("name", NAMES)
def test_vmap_and_per_sample_grad(name):
    sg, g, x = _points(name, 6, 10)
    c = torch.randn(10, dtype=torch.float64)
    torch.testing.assert_close(vmap(sg)(x), (x >= 0).double())
    per_sample = vmap(grad(lambda xi: (sg(xi) * c).sum()))(x)
    torch.testing.assert_close(per_sample, c * primitive_grad(g, x))
    # and the loop over samples gives the same
    loop = torch.stack([grad(lambda xi: (sg(xi) * c).sum())(xi) for xi in x])
    torch.testing.assert_close(per_sample, loop)


@pytest.mark.compile
def test_compile_fullgraph_every_surrogate_one_graph():
    """One compiled graph holds every surrogate: no graph break (fullgraph), one compile."""
    sgs = [SURROGATES[n][0] for n in NAMES]
    torch._dynamo.reset()

    def f(x):
        return torch.stack([sg(x * 1.0) for sg in sgs])

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = away_from_kinks(torch.randn(16, dtype=torch.float64), sorted({k for n in NAMES for k in SURROGATES[n][2]}))
    x.requires_grad_(True)
    c = torch.randn(len(sgs), 16, dtype=torch.float64)
    out = compiled(x)
    (gx,) = torch.autograd.grad((out * c).sum(), x)
    assert torch.equal(out.detach(), (x >= 0).double().expand(len(sgs), 16))
    want = sum(c[i] * primitive_grad(SURROGATES[n][1], x) for i, n in enumerate(NAMES))
    torch.testing.assert_close(gx, want)


def test_values_equal_and_hashable():
    assert S.Sigmoid(2.0) == S.Sigmoid(2.0) and hash(S.Sigmoid(2.0)) == hash(S.Sigmoid(2.0))
    assert S.Sigmoid(2.0) != S.Sigmoid(3.0)
    assert S.ATan() != S.Erf()
    assert len({S.Rect(1.0), S.Rect(1.0), S.Rect(2.0)}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        S.Sigmoid().alpha = 3.0
    assert pickle.loads(pickle.dumps(S.SuperSpike(3.0))) == S.SuperSpike(3.0)
    assert S.FastSigmoid is S.SuperSpike


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_parameters_raise_naming_the_argument(bad):
    with pytest.raises(ValueError, match="alpha"):
        S.Sigmoid(alpha=bad)
    with pytest.raises(ValueError, match="w"):
        S.PiecewiseLeakyReLU(w=bad)


def test_non_number_parameter_raises():
    with pytest.raises(TypeError, match="alpha"):
        S.ATan(alpha="2")


@dataclasses.dataclass(frozen=True)
class Gaussian(S.Surrogate):
    """The documented recipe: a new surrogate from its derivative alone."""

    sigma: float = 0.5

    def derivative(self, x):
        return torch.exp(-0.5 * (x / self.sigma) ** 2) / (self.sigma * math.sqrt(2 * math.pi))


def test_custom_surrogate_from_derivative_alone():
    sg = Gaussian(0.3)
    g = lambda x: (1 + torch.erf(x / (0.3 * math.sqrt(2)))) / 2  # noqa: E731
    x = torch.randn(8, 5, dtype=torch.float64)
    c = torch.randn(5, dtype=torch.float64)
    assert Gaussian(0.3) == sg and hash(Gaussian(0.3)) == hash(sg)
    torch.testing.assert_close(vmap(grad(lambda xi: (sg(xi) * c).sum()))(x), c * primitive_grad(g, x))
    torch.testing.assert_close(jacfwd(sg)(x[0]), torch.diag(primitive_grad(g, x[0])))
    # and it drives a neuron
    x_seq = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    snnfunc.lif(x_seq, surrogate=sg).spikes.sum().backward()
    assert x_seq.grad.abs().sum() > 0


def test_surrogate_without_derivative_raises():
    @dataclasses.dataclass(frozen=True)
    class Nothing(S.Surrogate):
        pass

    x = torch.randn(3, requires_grad=True)
    with pytest.raises(TypeError, match="derivative"):
        Nothing()(x).sum().backward()


def test_spikingflow_alias_module():
    import snnfunc.soft_pulse_function as spf

    assert spf is S
    assert spf.Sigmoid is S.Sigmoid and spf.BilinearLeakyReLU is S.BilinearLeakyReLU
    assert spf.SignSwish is S.SignSwish


def test_double_backward_uses_the_second_derivative():
    sg = S.Sigmoid(2.0)
    x = torch.randn(7, dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(sg(x).sum(), x, create_graph=True)
    (dd,) = torch.autograd.grad(d.sum(), x)
    s = torch.sigmoid(2 * x.detach())
    torch.testing.assert_close(dd, 4 * s * (1 - s) * (1 - 2 * s))


def test_piecewise_constants_keep_the_input_precision():
    x = torch.tensor([-3.0, 0.1, 3.0], dtype=torch.float64)
    assert S.BilinearLeakyReLU(1.0, 0.01, 0.5).derivative(x).tolist() == [0.01, 1.0, 0.01]
    assert S.Rect(1.7).derivative(x)[1].item() == 1 / 1.7
    assert S.PiecewiseLeakyReLU(0.3, 0.07).derivative(x).tolist() == [0.07, 1 / 0.6, 0.07]
