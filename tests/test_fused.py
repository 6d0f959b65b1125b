"""The fused kernels equal the reference loop: spikes, h and states bit for bit (to rounding
where a definition uses exp), gradients to rounding, over every neuron of the test registry
(tests/registry.py), options, shared and per-neuron parameters, shapes, T, dtypes and
transforms."""

import dataclasses
import itertools
import math

import pytest
import torch
from torch.func import grad, jacfwd, jvp, vmap

import snnfunc
from conftest import CPU_KERNELS
from snnfunc import surrogate as S
from conftest import SURROGATES
from registry import CLASSIC, ENTRIES, leaves

pytestmark = CPU_KERNELS

OPTIONS = [
    dict(v_reset=0.0, detach_reset=False, decay_input=True),
    dict(v_reset=None, detach_reset=False, decay_input=True),
    dict(v_reset=-0.2, detach_reset=True, decay_input=False),
    dict(v_reset=None, detach_reset=True, decay_input=False),
    dict(v_reset=0.3, detach_reset=False, decay_input=False),
]


def _param(name, pshape, shape, dtype, gen):
    """The neuron's first parameter: its number, or a tensor of one value, one per channel or
    one per neuron (shared values and per-neuron ones take other kernels)."""
    e = ENTRIES[name]
    if e.first is None:
        return None
    base = e.params[e.first]
    if pshape == "float":
        return base
    size = {"scalar": (), "channel": shape[-1:], "neuron": shape}[pshape]
    return (base + 0.2 * torch.rand(size, generator=gen, dtype=torch.float64)).to(dtype).requires_grad_(True)


def _check(a, b, exact, what):
    if exact:
        assert torch.equal(a, b), what
    else:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=what)


def _compare(name, T, shape, dtype, opts, pshape, th_tensor, surrogate=S.ATan(), seed=0, drive=1.0):
    e = ENTRIES[name]
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand((T, *shape), generator=gen, dtype=torch.float64) * e.drive * drive
         ).to(dtype).requires_grad_(True)
    states = [(torch.rand(shape, generator=gen, dtype=torch.float64) * 0.5).to(dtype).requires_grad_(True)
              for _ in e.neuron.states]
    p = _param(name, pshape, shape, dtype, gen)
    th = ((0.8 + 0.4 * torch.rand(shape[-1:], generator=gen, dtype=torch.float64)).to(dtype)
          .requires_grad_(True) if th_tensor else 1.0)
    kw = dict(opts, v_threshold=th, surrogate=surrogate, return_h=True)
    fused = e(x, states, p, impl="fused", **kw)
    ref = e(x, states, p, impl="reference", **kw)
    _check(fused.spikes, ref.spikes, e.exact, "spikes")
    _check(fused.h, ref.h, e.exact, "h")
    for k, (a, b) in enumerate(zip(leaves(fused[1]), leaves(ref[1]))):
        _check(a, b, e.exact, f"state {e.neuron.states[k]}")
    inputs = [x, *states] + [t for t in (p, th) if isinstance(t, torch.Tensor)]
    gs = torch.randn(ref.spikes.shape, generator=gen, dtype=torch.float64).to(dtype)
    gh = torch.randn(ref.h.shape, generator=gen, dtype=torch.float64).to(dtype)
    gv = [torch.randn(v.shape, generator=gen, dtype=torch.float64).to(dtype) for v in leaves(ref[1])]

    def loss(o):
        return (o.spikes * gs).sum() + (o.h * gh).sum() + sum((v * g).sum() for v, g in zip(leaves(o[1]), gv))

    got = torch.autograd.grad(loss(fused), inputs)
    want = torch.autograd.grad(loss(ref), inputs)
    tol = dict(rtol=1e-7, atol=1e-8) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
    return fused


DTYPES = [torch.float32, torch.float64]
PSHAPES = [("float", False), ("scalar", True), ("channel", False), ("neuron", True)]
# the classic four with every option and both dtypes, each with two of the four ways of
# passing the parameter and the threshold (one shared or not, per channel or per neuron), in
# turn: every option meets all four ways over the two dtypes, every dtype all four over the
# options; every other neuron of the registry (test_generated crosses them with every option,
# reset and detach_reset, in both dtypes) with one option set, one dtype and two of those
# ways, in turn: each configuration is a kernel to build
OPTION_CASES = [(name, opts, dtype, [PSHAPES[(i + k + d) % 4], PSHAPES[(i + k + d + 2) % 4]])
                for i, name in enumerate(CLASSIC) for k, opts in enumerate(OPTIONS)
                for d, dtype in enumerate(DTYPES)]
OPTION_CASES += [(name, OPTIONS[i % len(OPTIONS)], DTYPES[i % 2], [PSHAPES[i % 4], PSHAPES[(i + 1) % 4]])
                 for i, name in enumerate(n for n in ENTRIES if n not in CLASSIC)]


@pytest.mark.parametrize("name, opts, dtype, pshapes", OPTION_CASES, ids=[
    f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}-{str(d)[6:]}" for n, o, d, _ in OPTION_CASES])
def test_fused_equals_reference_every_option(name, opts, dtype, pshapes):
    for pshape, th_tensor in pshapes:
        out = _compare(name, 9, (3, 5), dtype, opts, pshape, th_tensor)
        assert 0 < out.spikes.mean() < 1


@pytest.mark.parametrize("T", [1, 2, 7, 64, 300])
@pytest.mark.parametrize("name", ENTRIES)
def test_fused_equals_reference_over_T(T, name):
    # the classic four at their drive; the others at 0.4 of it, as test_generated's long
    # sequences: over long T a neuron that runs away (qif's v^2, eif's e^v) with a soft reset
    # reaches inf, and in float32 e^v's last-bit difference grows with it
    drive = 1.0 if ENTRIES[name].classic else 0.4
    _compare(name, T, (4, 3), torch.float64, OPTIONS[0], "channel", True, seed=T, drive=drive)
    _compare(name, T, (2, 7), torch.float32, OPTIONS[1], "neuron", False, seed=T + 1, drive=drive)


@pytest.mark.parametrize("shape", [(), (1,), (5,), (2, 3, 4), (3, 1, 2, 2, 3), (2000,)])
def test_fused_shapes(shape):
    _compare("plif", 6, shape, torch.float32, OPTIONS[0], "float", False)


@pytest.mark.parametrize("name", list(SURROGATES))
def test_fused_every_surrogate(name):
    _compare("lif", 8, (4, 6), torch.float64, OPTIONS[0], "channel", True, SURROGATES[name][0])


@dataclasses.dataclass(frozen=True)
class Gaussian(S.Surrogate):
    sigma: float = 0.4

    def derivative(self, x):
        return torch.exp(-0.5 * (x / self.sigma) ** 2) / (self.sigma * math.sqrt(2 * math.pi))


@dataclasses.dataclass(frozen=True)
class SharperSigmoid(S.Sigmoid):
    """A subclass of a built-in: its own derivative must be used, not the kernel's."""

    def derivative(self, x):
        return 2 * super().derivative(x)


@pytest.mark.parametrize("sg", [Gaussian(), SharperSigmoid(3.0)], ids=str)
def test_fused_user_defined_surrogate(sg):
    _compare("rif", 8, (4, 6), torch.float64, OPTIONS[1], "neuron", True, sg)


@pytest.mark.parametrize("sg", [Gaussian(), SharperSigmoid(3.0)], ids=str)
def test_fused_user_defined_surrogate_under_grad_and_vmap_grad(sg):
    """The torch-evaluated derivative of a user surrogate inside torch.func transforms."""
    x = torch.rand(9, 5, 7, dtype=torch.float64) * 1.5
    w = torch.full((7,), 0.4, dtype=torch.float64)
    weight = torch.linspace(-1, 1, 63, dtype=torch.float64).view(9, 7)

    def grads(impl):
        f = lambda x, w: (snnfunc.plif(x, w=w, surrogate=sg, impl=impl).spikes * weight).sum()  # noqa: E731
        per_sample = torch.func.vmap(torch.func.grad(f, argnums=(0, 1)), in_dims=(1, None))(x, w)
        return torch.func.grad(lambda x, w: f(x, w), argnums=(0, 1))(x[:, 0], w), per_sample

    (g, per_sample), (g_ref, per_sample_ref) = grads("fused"), grads("reference")
    for a, b in zip((*g, *per_sample), (*g_ref, *per_sample_ref)):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_non_contiguous_and_large():
    base = torch.rand(5, 40, 30, dtype=torch.float32) * 1.5
    x = base.transpose(1, 2)[:, ::3]
    a = snnfunc.lif(x, return_h=True, impl="fused")
    b = snnfunc.lif(x, return_h=True, impl="reference")
    assert all(torch.equal(u, w) for u, w in zip(a, b))
    x = torch.rand(3, 70_000) * 2  # several blocks and threads
    a = snnfunc.if_(x, v_reset=None, impl="fused")
    b = snnfunc.if_(x, v_reset=None, impl="reference")
    assert torch.equal(a.spikes, b.spikes) and torch.equal(a.v, b.v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_large_gradients_streamed_equal_reference(dtype):
    # input gradients of 8 MiB and more are written with streaming stores; an odd neuron
    # count leaves every row but the first unaligned
    n = (8 << 20) // (2 * dtype.itemsize) + 3
    _compare("lif", 2, (n,), dtype, {}, "float", False, surrogate=S.Sigmoid())


def test_surrogate_derivative_over_the_range_of_exp():
    # the backward's e^x (a polynomial of the kernel's own on AVX-512 and AVX2 CPUs): the Sigmoid
    # surrogate's derivative where alpha * u runs from exp's underflow (subnormal results) to
    # its overflow, and at the edge values, against the reference loop
    alpha = 4.0
    u = torch.cat([torch.linspace(-30.0, 30.0, 60001), torch.tensor(
        [-1e30, -26.0, -21.8, 21.8, 22.3, 26.0, 1e30, math.inf, -math.inf, math.nan, 0.0, -0.0])])
    x = (u + 1.0).reshape(1, -1).requires_grad_(True)  # IF from rest: H = x, u = x - 1
    g = torch.randn_like(x)
    grads = [torch.autograd.grad(snnfunc.if_(x, surrogate=S.Sigmoid(alpha), impl=impl)
                                 .spikes, x, g)[0] for impl in ("fused", "reference")]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6, equal_nan=True)


def test_auto_picks_fused_and_falls_back():
    x = torch.rand(4, 3, requires_grad=True)
    out = snnfunc.lif(x)
    assert "DefinedNeuron" in type(out.spikes.grad_fn).__name__
    assert "Stack" in type(snnfunc.lif(x, impl="reference").spikes.grad_fn).__name__
    half = snnfunc.lif(x.half())  # half precision: fused too, computed in float32
    assert half.spikes.dtype == torch.float16 and "DefinedNeuron" in type(half.spikes.grad_fn).__name__
    assert torch.equal(half.v, snnfunc.lif(x.half(), impl="reference").v)
    with pytest.raises(ValueError, match="impl"):
        snnfunc.lif(x, impl="triton")


def test_forward_mode_falls_back_to_reference():
    x = torch.rand(5, 3, dtype=torch.float64) * 1.5
    f = lambda x: snnfunc.plif(x, w=0.4, surrogate=S.Erf()).spikes  # noqa: E731
    t = torch.randn_like(x)
    _, tangent = jvp(f, (x,), (t,))
    _, ref = jvp(lambda x: snnfunc.plif(x, w=0.4, surrogate=S.Erf(), impl="reference").spikes,
                 (x,), (t,))
    torch.testing.assert_close(tangent, ref)
    torch.testing.assert_close(jacfwd(f)(x), torch.func.jacrev(f)(x))
    with pytest.raises(ValueError, match="forward-mode"):
        jvp(lambda x: snnfunc.plif(x, w=0.4, impl="fused").spikes, (x,), (t,))
    want = jvp(lambda x: snnfunc.lif(x).spikes, (x,), (t,))[1]
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, t)
        out = snnfunc.lif(dual).spikes
        torch.testing.assert_close(torch.autograd.forward_ad.unpack_dual(out).tangent, want)


@pytest.mark.parametrize("name", ENTRIES)
def test_vmap_grad_through_fused_equals_loop(name):
    e = ENTRIES[name]
    B, T, N = 4, 6, 5
    xs = torch.rand(B, T, N, dtype=torch.float64) * 1.5
    p = None if e.first is None else torch.full((N,), e.params[e.first], dtype=torch.float64)

    def loss(x, p, th, impl="fused"):
        out = e(x, None, p, v_threshold=th, impl=impl)
        return (out.spikes * torch.arange(N)).sum() + sum(v.sum() for v in leaves(out[1]))

    th = torch.full((N,), 0.9, dtype=torch.float64)
    argnums = (0, 2) if p is None else (0, 1, 2)
    batched = vmap(grad(loss, argnums=argnums), in_dims=(0, None, None))(xs, p, th)
    ref = [grad(lambda x, p, th: loss(x, p, th), argnums=argnums)(x, p, th) for x in xs]
    ref_impl = [grad(lambda x, p, th: loss(x, p, th, "reference"), argnums=argnums)(x, p, th)
                for x in xs]
    for i in range(len(argnums)):
        torch.testing.assert_close(batched[i], torch.stack([r[i] for r in ref]))
        torch.testing.assert_close(batched[i], torch.stack([r[i] for r in ref_impl]))


def test_vmap_over_parameters_and_inputs():
    x = torch.rand(5, 2, 3, dtype=torch.float64) * 1.5
    ws = torch.rand(4, 3, dtype=torch.float64) * 0.5 + 0.3
    xs = torch.rand(4, 5, 2, 3, dtype=torch.float64) * 1.5
    f = lambda w, x: snnfunc.plif(x, w=w, impl="fused", return_h=True)  # noqa: E731
    for args, dims in [((ws, x), (0, None)), ((ws, xs), (0, 0)), ((ws[0], xs), (None, 0))]:
        out = vmap(f, in_dims=dims)(*args)
        n = 4
        loop = [f(*(a[i] if d == 0 else a for a, d in zip(args, dims))) for i in range(n)]
        for field in range(3):
            assert torch.equal(out[field], torch.stack([o[field] for o in loop]))


def test_saves_at_most_one_tensor_per_step():
    """At most 4 bytes per neuron-step saved for backward in float32 (the input itself)."""
    T, N = 16, 1000
    for kind, p in [("lif", 2.0), ("plif", torch.full((N,), 0.5, requires_grad=True)),
                    ("rif", torch.full((N,), -0.1, requires_grad=True)), ("if", None)]:
        saved = []

        def pack(t):
            saved.append(t)
            return t

        x = torch.rand(T, N, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            ENTRIES[kind](x, None, p, v_reset=None)
        per_step = sum(t.numel() * t.element_size() for t in saved if t.dim() and t.shape[0] == T)
        assert per_step / (T * N) <= 4, (kind, [tuple(t.shape) for t in saved])


def test_double_backward_says_so():
    x = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(snnfunc.lif(x).spikes.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="impl='reference'"):
        g.sum().backward()


@pytest.mark.parametrize("name", ENTRIES)
@pytest.mark.parametrize("use", ["spikes", "state", "h"])
def test_shared_values_and_unused_outputs(name, use):
    """V_0 at rest, float parameters and one-element tensors are shared, not materialised;
    gradients are right whichever outputs the loss uses."""
    e = ENTRIES[name]
    x = (torch.rand(6, 3, 4, dtype=torch.float64) * 1.5).requires_grad_(True)
    p = None  # the first parameter a number, a one-element or a 0-d tensor, neuron by neuron
    if e.first is not None:
        base = e.params[e.first]
        p = [base, torch.tensor([base], dtype=torch.float64, requires_grad=True),
             torch.tensor(base, dtype=torch.float64, requires_grad=True)][(list(ENTRIES).index(name) + 2) % 3]
    th = torch.tensor([0.9], dtype=torch.float64, requires_grad=True)
    inputs = [x, th] + ([p] if isinstance(p, torch.Tensor) else [])
    grads = []
    for impl in ("fused", "reference"):
        out = e(x, None, p, v_threshold=th, return_h=use == "h", impl=impl)
        ys = {"spikes": [out.spikes], "h": [getattr(out, "h", None)], "state": leaves(out[1])}[use]
        grads.append(torch.autograd.grad(sum(y.pow(2).sum() for y in ys), inputs, allow_unused=True))
    for t, a, b in zip(inputs, *grads):
        if b is None:  # the reference's graph does not reach it (refractory's t_ref: a where)
            assert a is None or not a.any()
            continue
        assert a.shape == b.shape == t.shape
        torch.testing.assert_close(a, b)
    assert grads[0][0].abs().sum() > 0


@pytest.mark.parametrize("name", ENTRIES)
def test_vjp_and_jacrev_through_fused(name):
    e = ENTRIES[name]
    x = torch.rand(5, 3, dtype=torch.float64) * 1.5

    def f(impl):
        return lambda x: e(x, None, surrogate=S.SoftSign(), impl=impl).spikes

    torch.testing.assert_close(torch.func.jacrev(f("fused"))(x), torch.func.jacrev(f("reference"))(x))
    _, pull_f = torch.func.vjp(f("fused"), x)
    _, pull_r = torch.func.vjp(f("reference"), x)
    ct = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(pull_f(ct)[0], pull_r(ct)[0])


@dataclasses.dataclass(frozen=True)
class Exp(S.Surrogate):
    """g'(x) = e^x: the backward kernel's own e^x (on AVX2 and AVX-512), bare."""

    def derivative(self, x):
        return torch.exp(x)


def test_the_backward_kernels_exp_is_within_two_ulp():
    """The kernel's own e^x over its whole range (subnormal results, overflow, the edges), against
    float64's e^x rounded: within 2 ulp, the special values exact."""
    g = torch.Generator().manual_seed(0)
    u = torch.cat([(torch.rand(200000, generator=g, dtype=torch.float64) * 200 - 110),
                   torch.tensor([-104.0, -103.97, -87.34, -87.33, 0.0, -0.0, 88.72, 88.73, 89.0,
                                 math.inf, -math.inf, math.nan, 1e-30, -1e-30])]).float()
    x = (u + 1.0).reshape(1, -1)  # IF from rest: H = x, the surrogate's argument x - 1
    x = x.requires_grad_(True)
    (got,) = torch.autograd.grad(snnfunc.if_(x, surrogate=Exp(), impl="fused").spikes, x,
                                 torch.ones_like(x))
    want = torch.exp((x.detach() - 1.0).double())
    ok = torch.isclose(got.double(), want, rtol=2 * 2.0**-23, atol=0.0, equal_nan=True)
    small = want < torch.finfo(torch.float32).tiny  # subnormal results: absolute, one rounding
    ok |= small & ((got.double() - want).abs() <= 2.0**-149)
    big = want > torch.finfo(torch.float32).max  # beyond float: inf, as float's e^x rounds
    ok |= big & (got == math.inf)
    assert bool(ok.all()), (x[0][~ok[0]][:5], got[0][~ok[0]][:5], want[0][~ok[0]][:5])
