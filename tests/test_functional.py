"""The four neuron functions (SpikingFlow's): hand-worked cases from the spec, the hand-written
reference loop, options, shapes, dtypes, transforms and bad input; and for every neuron of the
test registry (tests/registry.py) the step function looped, continuation and jacfwd."""

import itertools

import pytest
import torch
from torch.func import grad, jacfwd, jacrev, vmap

import snnfunc
from snnfunc import surrogate as S
from conftest import NEURONS, call, call_step, default_param, ref_loop
from registry import ENTRIES, leaves

D = torch.float64


def t(*v):
    return torch.tensor(v, dtype=D)


# --------------------------------------------------------------------------- hand-worked cases

# (kind, param, options, x, expected spikes, expected h, expected final v), all exact in binary
GOLDEN = [
    ("if", None, {}, t(0.5, 0.75, 0.25, 1.0), t(0, 1, 0, 1), t(0.5, 1.25, 0.25, 1.25), 0.0),
    ("if", None, {"v_reset": None}, t(0.5, 0.75, 0.25, 1.0), t(0, 1, 0, 1), t(0.5, 1.25, 0.5, 1.5), 0.5),
    ("if", None, {"v_reset": -0.5, "v_threshold": 0.5}, t(0.5, 0.5, 1.0), t(0, 1, 1), t(0.0, 0.5, 0.5), -0.5),
    ("lif", 2.0, {}, t(1.0, 2.0, 0.5), t(0, 1, 0), t(0.5, 1.25, 0.25), 0.25),
    ("lif", 2.0, {"decay_input": False}, t(0.5, 0.75, 1.0), t(0, 1, 1), t(0.5, 1.0, 1.0), 0.0),
    ("lif", 2.0, {"v_reset": -0.5}, t(1.0, 3.0), t(0, 1), t(0.0, 1.25), -0.5),
    ("lif", 2.0, {"v_reset": None}, t(2.5, 1.0), t(1, 0), t(1.25, 0.625), 0.625),
    ("lif", 4.0, {"v_reset": None, "decay_input": False}, t(1.5, 0.5), t(1, 0), t(1.5, 0.875), 0.875),
    ("plif", 0.5, {}, t(1.0, 2.0, 0.5), t(0, 1, 0), t(0.5, 1.25, 0.25), 0.25),
    ("plif", 0.25, {"decay_input": False, "v_reset": None}, t(1.5, 0.5), t(1, 0), t(1.5, 0.875), 0.875),
    ("rif", -0.5, {}, t(0.5, 0.75, 1.0), t(0, 1, 1), t(0.5, 1.0, 1.0), 0.0),
    ("rif", 0.5, {"v_reset": -1.0}, t(0.5, 1.5), t(0, 1), t(-0.5, 1.25), -1.0),
    ("rif", 0.5, {"v_reset": None}, t(0.5, 0.5), t(0, 1), t(0.5, 1.25), 0.25),
]


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: f"{c[0]}-{c[2]}")
def test_golden_trajectories(case):
    kind, p, opts, x, spikes, h, v_end = case
    out = call(kind, x, None, p, return_h=True, **opts)
    assert torch.equal(out.spikes, spikes)
    assert torch.equal(out.h, h)
    assert out.v.item() == v_end


def test_plif_sigmoid_parametrization_is_lif_with_tau_one_over_sigmoid():
    x = t(1.0, 2.0, 0.5)
    out = snnfunc.plif(x, w=0.0, parametrization="sigmoid", return_h=True)  # k = 0.5
    assert torch.equal(out.h, t(0.5, 1.25, 0.25))
    w = torch.tensor(1.3, dtype=D)
    a = snnfunc.plif(x, w=w, parametrization="sigmoid", return_h=True)
    b = snnfunc.plif(x, w=torch.sigmoid(w), parametrization="reciprocal", return_h=True)
    assert torch.equal(a.h, b.h)


def test_threshold_equality_fires():
    out = snnfunc.if_(t(1.0), v_threshold=1.0)
    assert out.spikes.item() == 1.0


def test_detach_reset_gradient_by_hand():
    # one IF step from v0 = 0.4 with x = 0.8: h = 1.2, fires; v1 = h (1 - s) + vr s
    sg = S.Sigmoid(4.0)
    g1 = sg.derivative(torch.tensor(0.2, dtype=D))
    for detach, vr in itertools.product([False, True], [0.0, -0.3]):
        x = torch.tensor([0.8], dtype=D, requires_grad=True)
        out = snnfunc.if_(x, torch.tensor(0.4, dtype=D), v_reset=vr, detach_reset=detach)
        (gx,) = torch.autograd.grad(out.v, x)
        want = 0.0 if detach else (vr - 1.2) * g1
        torch.testing.assert_close(gx[0], torch.as_tensor(want, dtype=D))
    # soft: v1 = h - s V_th  ->  dv/dx = 1 - V_th g' (or 1 when detached)
    for detach in (False, True):
        x = torch.tensor([0.8], dtype=D, requires_grad=True)
        out = snnfunc.if_(x, torch.tensor(0.4, dtype=D), v_reset=None, detach_reset=detach)
        (gx,) = torch.autograd.grad(out.v, x)
        torch.testing.assert_close(gx[0], 1 - (0.0 if detach else 1.0) * g1)


# --------------------------------------------------------------------------- against the reference

OPTIONS = [
    dict(v_reset=0.0, detach_reset=False, decay_input=True),
    dict(v_reset=None, detach_reset=False, decay_input=True),
    dict(v_reset=-0.2, detach_reset=True, decay_input=False),
    dict(v_reset=None, detach_reset=True, decay_input=False),
]


def _param(kind, shape, requires_grad=True):
    """The neuron's first parameter, a tensor of `shape` near its value (None where it has none)."""
    e = ENTRIES[kind]
    if e.first is None:
        return None
    base = {"lif": 1.5, "plif": 0.6, "rif": -0.1}.get(kind, e.params[e.first])
    p = base + 0.3 * torch.rand(shape, dtype=D)
    return p.requires_grad_(requires_grad)


def _same(a, b, exact):
    """Bit for bit; to rounding where a definition uses exp (the fused path's e^x)."""
    if exact:
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", NEURONS)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("pshape", ["scalar", "channel", "neuron"])
def test_values_and_gradients_equal_float64_reference(kind, opts, pshape):
    T, B, C = 9, 3, 4
    x = (torch.rand(T, B, C, dtype=D) * 1.2).requires_grad_(True)
    v0 = (torch.rand(B, C, dtype=D) * 0.5).requires_grad_(True)
    th = (0.8 + 0.4 * torch.rand(C, dtype=D)).requires_grad_(True)
    shape = {"scalar": (), "channel": (C,), "neuron": (B, C)}[pshape]
    p = None if kind == "if" else _param(kind, shape)
    kw = dict(opts)
    if kind in ("if", "rif"):
        kw.pop("decay_input")
    out = call(kind, x, v0, p, v_threshold=th, return_h=True, **kw)
    ref = ref_loop(kind, x, v0, p, v_threshold=th, **opts if kind in ("lif", "plif") else kw)
    assert torch.equal(out.spikes, ref[0])
    torch.testing.assert_close(out.v, ref[1])
    torch.testing.assert_close(out.h, ref[2])
    assert 0 < out.spikes.mean() < 1  # the case exercises both branches
    gs, gv, gh = torch.randn_like(ref[0]), torch.randn_like(ref[1]), torch.randn_like(ref[2])
    inputs = [x, v0, th] + ([p] if p is not None else [])
    got = torch.autograd.grad((out.spikes * gs).sum() + (out.v * gv).sum() + (out.h * gh).sum(), inputs)
    want = torch.autograd.grad((ref[0] * gs).sum() + (ref[1] * gv).sum() + (ref[2] * gh).sum(), inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# the classic four with three option sets, every other neuron with one of them in turn
STEP_CASES = [(kind, opts) for kind in NEURONS for opts in OPTIONS[:3]]
STEP_CASES += [(kind, OPTIONS[i % 3]) for i, kind in enumerate(k for k in ENTRIES if k not in NEURONS)]


@pytest.mark.parametrize("kind, opts", STEP_CASES, ids=[f"{k}-{o}" for k, o in STEP_CASES])
def test_single_step_loop_equals_multi_step(kind, opts):
    e = ENTRIES[kind]
    x = (torch.rand(6, 2, 5, dtype=D) * 1.2).requires_grad_(True)
    p = _param(kind, (5,))
    multi = e(x, None, p, return_h=True, **opts)
    state, spikes, hs = None, [], []
    for xt in x.unbind(0):
        s, state, h = e.call_step(xt, None if state is None else leaves(state), p, return_h=True, **opts)
        spikes.append(s)
        hs.append(h)
    _same(multi.spikes, torch.stack(spikes), e.exact)
    _same(multi.h, torch.stack(hs), e.exact)
    for a, b in zip(leaves(multi[1]), leaves(state)):
        _same(a, b, e.exact)
    inputs = [x] + ([p] if p is not None else [])
    a = torch.autograd.grad(multi.spikes.sum() + sum(v.sum() for v in leaves(multi[1])), inputs)
    b = torch.autograd.grad(torch.stack(spikes).sum() + sum(v.sum() for v in leaves(state)), inputs)
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga, gb)


def test_step_returns_named_tuples():
    out = snnfunc.lif_step(torch.rand(3))
    assert isinstance(out, snnfunc.StepOutput) and out._fields == ("spike", "v")
    out = snnfunc.lif_step(torch.rand(3), return_h=True)
    assert isinstance(out, snnfunc.StepOutputWithH)
    out = snnfunc.lif(torch.rand(2, 3))
    assert isinstance(out, snnfunc.NeuronOutput) and out._fields == ("spikes", "v")
    assert snnfunc.lif(torch.rand(2, 3), return_h=True)._fields == ("spikes", "v", "h")


# the classic four split at every k, every other neuron at two of them
SPLIT_CASES = [(kind, k) for kind in NEURONS for k in (0, 1, 4, 7)]
SPLIT_CASES += [(kind, k) for kind in ENTRIES if kind not in NEURONS for k in (1, 4)]


@pytest.mark.parametrize("kind, k", SPLIT_CASES, ids=[f"{n}-{k}" for n, k in SPLIT_CASES])
def test_continuation_is_exact(kind, k):
    e = ENTRIES[kind]
    x = (torch.rand(7, 3, dtype=D) * 1.5).requires_grad_(True)
    p = _param(kind, ())
    whole = e(x, None, p)
    first = e(x[:k], None, p)
    second = e(x[k:], leaves(first[1]), p)
    assert torch.equal(torch.cat([first.spikes, second.spikes]), whole.spikes)
    for a, b in zip(leaves(second[1]), leaves(whole[1])):
        assert torch.equal(a, b)
    inputs = [x] + ([p] if p is not None else [])

    def ends(out):
        return sum(v.sum() for v in leaves(out[1]))

    a = torch.autograd.grad(whole.spikes.sum() * 2 + ends(whole), inputs)
    b = torch.autograd.grad(torch.cat([first.spikes, second.spikes]).sum() * 2 + ends(second), inputs)
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga, gb)


# --------------------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize("kind", NEURONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(kind, dtype):
    x = (torch.rand(5, 4) * 1.5).to(dtype).requires_grad_(True)
    p = None if kind == "if" else torch.tensor(default_param(kind), requires_grad=True)  # float32
    out = call(kind, x, None, p, return_h=True)
    assert out.spikes.dtype == out.h.dtype == dtype
    half = dtype in (torch.float16, torch.bfloat16)  # computed and held in float32
    assert out.v.dtype == (torch.float32 if half else dtype)
    assert set(out.spikes.unique().tolist()) <= {0.0, 1.0}
    out.spikes.sum().backward()
    assert x.grad.dtype == dtype
    if p is not None:
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad)
    # the reference loop's computation in float32, from the input and parameter in `dtype`
    ref = ref_loop(kind, x.detach().float(), torch.zeros(()),
                   None if p is None else p.detach().to(dtype).float())
    assert torch.equal(out.spikes.float(), ref[0])


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4), (2, 1, 3, 2, 2)])
def test_any_trailing_shape(shape):
    x = torch.rand(4, *shape, dtype=D) * 1.5
    out = snnfunc.lif(x, return_h=True)
    assert out.spikes.shape == x.shape and out.v.shape == shape
    ref = ref_loop("lif", x, torch.zeros(shape, dtype=D), 2.0)
    assert torch.equal(out.spikes, ref[0])


def test_non_contiguous_input_equals_contiguous():
    base = torch.rand(5, 6, 8, dtype=D) * 1.5
    x = base.transpose(1, 2)[:, ::2]
    assert not x.is_contiguous()
    a = snnfunc.plif(x, w=0.4, return_h=True)
    b = snnfunc.plif(x.contiguous(), w=0.4, return_h=True)
    assert all(torch.equal(u, w) for u, w in zip(a, b))


@pytest.mark.parametrize("kind", NEURONS)
def test_T_equals_one_and_zero(kind):
    p = default_param(kind)
    x = torch.rand(1, 3, dtype=D) * 2
    out = call(kind, x, None, p)
    assert out.spikes.shape == (1, 3)
    step = call_step(kind, x[0], None, p)
    assert torch.equal(out.spikes[0], step.spike) and torch.equal(out.v, step.v)
    v0 = torch.rand(3, dtype=D)
    empty = call(kind, torch.zeros(0, 3, dtype=D), v0, p, return_h=True)
    assert empty.spikes.shape == (0, 3) and empty.h.shape == (0, 3)
    assert torch.equal(empty.v, v0)
    rest = call(kind, torch.zeros(0, 3, dtype=D), None, p, v_reset=-0.25)
    assert torch.equal(rest.v, torch.full((3,), -0.25, dtype=D))


def test_state_and_parameters_broadcast():
    x = torch.rand(3, 2, 4, dtype=D) * 1.5
    v0 = torch.rand(4, dtype=D)
    out = snnfunc.lif(x, v0, tau=torch.full((1, 4), 2.0, dtype=D))
    ref = ref_loop("lif", x, v0, 2.0)
    assert torch.equal(out.spikes, ref[0])
    assert out.v.shape == (2, 4)


def test_resting_value_default():
    x = torch.zeros(1, 2, dtype=D)
    assert torch.equal(snnfunc.if_(x, v_reset=-0.5, return_h=True).h, torch.full((1, 2), -0.5, dtype=D))
    assert torch.equal(snnfunc.if_(x, v_reset=None, return_h=True).h, torch.zeros(1, 2, dtype=D))


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("kind", NEURONS)
def test_per_sample_gradients_vmap_grad_equal_loop(kind):
    B, T, N = 5, 6, 4
    xs = torch.rand(B, T, N, dtype=D) * 1.5
    p = None if kind == "if" else _param(kind, (N,), requires_grad=False)
    target = torch.rand(B, T, N, dtype=D)

    def loss(p, x, y):
        out = call(kind, x, None, p, surrogate=S.ATan())
        return ((out.spikes - y) ** 2).sum() + out.v.sum()

    if p is None:
        per = vmap(grad(lambda x, y: loss(None, x, y)))(xs, target)
        loop = torch.stack([grad(lambda x: loss(None, x, y))(x) for x, y in zip(xs, target)])
    else:
        per = vmap(grad(loss), in_dims=(None, 0, 0))(p, xs, target)
        loop = torch.stack([grad(loss)(p, x, y) for x, y in zip(xs, target)])
    torch.testing.assert_close(per, loop)
    assert per.abs().sum() > 0


@pytest.mark.parametrize("kind", ENTRIES)
def test_jacfwd_equals_jacrev(kind):
    """Forward mode runs the reference loop, reverse mode the fused kernels: the same Jacobian."""
    e = ENTRIES[kind]
    x = torch.rand(5, 3, dtype=D) * 1.5
    p = default_param(kind) if kind in NEURONS else None

    def f(x):
        out = e(x, None, p, surrogate=S.Erf())
        return torch.cat([out.spikes.flatten(), *leaves(out[1])])

    jf, jr = jacfwd(f)(x), jacrev(f)(x)
    torch.testing.assert_close(jf, jr)
    assert jf.abs().sum() > 0


def test_vmap_over_parameters_ensemble():
    x = torch.rand(6, 2, 3, dtype=D) * 1.5
    ws = torch.rand(4, 3, dtype=D) * 0.5 + 0.3
    batched = vmap(lambda w: snnfunc.plif(x, w=w).spikes)(ws)
    loop = torch.stack([snnfunc.plif(x, w=w).spikes for w in ws])
    assert torch.equal(batched, loop)


# --------------------------------------------------------------------------- bad input

BAD = [
    (lambda: snnfunc.lif([1.0, 2.0]), TypeError, "x_seq"),
    (lambda: snnfunc.lif(torch.ones(3, 2, dtype=torch.int64)), TypeError, "x_seq"),
    (lambda: snnfunc.lif(torch.tensor(1.0)), ValueError, "x_seq"),
    (lambda: snnfunc.lif(torch.rand(3, 2), torch.rand(3)), ValueError, "v"),
    (lambda: snnfunc.lif(torch.rand(3, 2), "zero"), TypeError, "v"),
    (lambda: snnfunc.lif(torch.rand(3, 2), tau=0.0), ValueError, "tau"),
    (lambda: snnfunc.lif(torch.rand(3, 2), tau=-2.0), ValueError, "tau"),
    (lambda: snnfunc.lif(torch.rand(3, 2), tau=torch.rand(5)), ValueError, "tau"),
    (lambda: snnfunc.lif(torch.rand(3, 2), tau="2"), TypeError, "tau"),
    (lambda: snnfunc.plif(torch.rand(3, 2), w=0.5, parametrization="exp"), ValueError, "parametrization"),
    (lambda: snnfunc.plif(torch.rand(3, 2), w=torch.ones(2, 2)), ValueError, "w"),
    (lambda: snnfunc.rif(torch.rand(3, 2), w=None), TypeError, "w"),
    (lambda: snnfunc.if_(torch.rand(3, 2), v_threshold=torch.rand(3)), ValueError, "v_threshold"),
    (lambda: snnfunc.if_(torch.rand(3, 2), v_reset="zero"), TypeError, "v_reset"),
    (lambda: snnfunc.if_(torch.rand(3, 2), surrogate=torch.sigmoid), TypeError, "surrogate"),
    (lambda: snnfunc.if_(torch.rand(3, 2), detach_reset=1), TypeError, "detach_reset"),
    (lambda: snnfunc.lif(torch.rand(3, 2), decay_input="yes"), TypeError, "decay_input"),
    (lambda: snnfunc.lif_step(torch.ones(2, dtype=torch.int32)), TypeError, "x"),
    (lambda: snnfunc.lif_step(torch.rand(2), torch.rand(3)), ValueError, "v"),
    (lambda: snnfunc.plif_step(torch.rand(2), w=0.5, parametrization="tanh"), ValueError, "parametrization"),
]


@pytest.mark.parametrize("fn,err,name", BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_input_raises_naming_argument(fn, err, name):
    with pytest.raises(err, match=rf"\b{name}\b"):
        fn()


def test_no_state_anywhere():
    x = torch.rand(4, 3)
    a = snnfunc.lif(x)
    b = snnfunc.lif(x)
    assert torch.equal(a.spikes, b.spikes) and torch.equal(a.v, b.v)
