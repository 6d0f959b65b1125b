"""Edge inputs: ±0, ±inf and NaN in the input, the state, the parameters and the threshold.
Every path (fused, reference, single step, adapters) computes the same IEEE expression, so
spikes, h and v are compared by bit pattern, not by value (torch.equal hides -0.0 and NaN)."""

import itertools
import math

import pytest
import torch

import snnfunc
from conftest import CPU_KERNELS
from snnfunc import nn as snn
from snnfunc import surrogate as S
from conftest import NEURONS, call, call_step

pytestmark = CPU_KERNELS

INF, NAN = math.inf, math.nan
EDGE = [0.0, -0.0, INF, -INF, NAN, 0.5, 1.0, 1.5, -1.0, 1e-30]
RESETS = [dict(v_reset=0.0), dict(v_reset=-0.0), dict(v_reset=-0.2), dict(v_reset=None)]
INT = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
       torch.bfloat16: torch.int16}


def bits(t):
    """The bit pattern of every element, with every NaN as one canonical NaN (IEEE 754 leaves
    the sign and payload of a NaN result unspecified; x86 and compilers do differ there)."""
    t = torch.where(t.isnan(), torch.full_like(t, NAN), t)
    return t.contiguous().view(INT[t.dtype])


def assert_bits(a, b, what=""):
    assert a.shape == b.shape, what
    if not torch.equal(bits(a), bits(b)):
        diff = (bits(a) != bits(b)).nonzero()[:5].tolist()
        raise AssertionError(f"{what}: bit patterns differ at {diff}: {a.flatten()[:8]} vs {b.flatten()[:8]}")


def edge_grid(T, N, dtype, seed):
    """x [T, N] and v0 [N] mixing edge values with ordinary ones."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor(EDGE, dtype=dtype)
    x = pool[torch.randint(len(EDGE), (T, N), generator=g)]
    x = torch.where(torch.rand(T, N, generator=g) < 0.5, torch.rand(T, N, generator=g, dtype=dtype) * 1.5, x)
    v0 = pool[torch.randint(len(EDGE), (N,), generator=g)]
    return x, v0


def edge_param(kind, N, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    base = {"if": None, "lif": 1.7, "plif": 0.55, "rif": -0.15}[kind]
    if base is None:
        return None
    # tau must be > 0 (checked); k and w may hold anything
    pool = [INF, 1e30, 1.0, 3.0] if kind == "lif" else [0.0, -0.0, INF, -INF, NAN, 1.0, -1.0]
    p = torch.full((N,), base, dtype=dtype)
    idx = torch.randint(len(pool), (N,), generator=g)
    pick = torch.rand(N, generator=g) < 0.4
    return torch.where(pick, torch.tensor(pool, dtype=dtype)[idx], p)


@pytest.mark.parametrize("kind", NEURONS)
@pytest.mark.parametrize("reset", RESETS, ids=lambda r: f"v_reset={r['v_reset']}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_edge_values_fused_equals_reference_bit_for_bit(kind, reset, dtype):
    N = 64
    for seed, th in itertools.product(range(3), [1.0, "edge"]):
        x, v0 = edge_grid(7, N, dtype, seed)
        p = edge_param(kind, N, dtype, seed)
        if th == "edge":
            th = torch.tensor(EDGE * 7, dtype=dtype)[:N]
        for detach in (False, True):
            kw = dict(reset, v_threshold=th, detach_reset=detach, return_h=True)
            a = call(kind, x, v0, p, impl="fused", **kw)
            b = call(kind, x, v0, p, impl="reference", **kw)
            for field in ("spikes", "h", "v"):
                assert_bits(getattr(a, field), getattr(b, field), f"{field} seed={seed} detach={detach}")
            # the step function, step by step, is the same expression
            v = v0
            for t in range(x.shape[0]):
                s, v, h = call_step(kind, x[t], v, p, **kw)
                assert_bits(s, b.spikes[t], f"step {t} spike")
                assert_bits(h, b.h[t], f"step {t} h")
            assert_bits(v, b.v, "step v")


def test_hard_reset_of_an_infinite_voltage_is_v_reset():
    """The issue's case: H = +inf fires and resets to v_reset (a select, not inf * 0)."""
    x = torch.tensor([[INF], [0.5], [0.6]])
    for impl in ("fused", "reference"):
        out = snnfunc.if_(x, impl=impl)
        assert out.spikes.flatten().tolist() == [1.0, 0.0, 1.0], impl
        assert out.v.item() == 0.0
    s_mode = snn.IFNode()
    s_spikes = torch.stack([s_mode(xt) for xt in x])
    m_spikes = snn.IFNode(step_mode="m")(x)
    assert_bits(s_spikes, m_spikes)


def test_soft_reset_with_a_threshold_that_cannot_fire_keeps_h():
    x = torch.tensor([[0.5, 0.5], [0.25, -0.0]])
    th = torch.tensor([NAN, INF])
    for impl in ("fused", "reference"):
        out = snnfunc.if_(x, v_reset=None, v_threshold=th, return_h=True, impl=impl)
        assert out.spikes.sum() == 0
        assert_bits(out.v, torch.tensor([0.75, 0.5]))


def test_negative_zero_is_kept_where_no_spike_resets_it():
    x = torch.tensor([[-0.0], [-0.0]])
    for impl in ("fused", "reference"):
        for reset in RESETS:
            out = snnfunc.if_(x, torch.tensor([-0.0]), impl=impl, **reset)
            assert math.copysign(1.0, out.v.item()) == -1.0, (impl, reset)


@pytest.mark.parametrize("kind", NEURONS)
@pytest.mark.parametrize("sg", [S.Sigmoid(), S.Triangle(), S.PiecewiseQuadratic(), S.Rect(),
                                S.SignSwish(), S.BilinearLeakyReLU(), S.PiecewiseLeakyReLU()], ids=str)
@pytest.mark.parametrize("reset", RESETS[2:], ids=lambda r: f"v_reset={r['v_reset']}")
@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detached"])
def test_edge_values_gradients_agree(kind, sg, reset, detach):
    """Gradients at edge inputs: the same formulas on both paths, so the same values to
    rounding and NaN exactly where the reference has NaN."""
    dtype = torch.float64
    x, v0 = edge_grid(6, 40, dtype, 1)
    x.requires_grad_(True)
    v0.requires_grad_(True)
    p = edge_param(kind, 40, dtype, 1)
    p = None if p is None else p.requires_grad_(True)
    th = torch.tensor(0.9, dtype=dtype, requires_grad=True)
    inputs = [t for t in (x, v0, p, th) if t is not None]
    grads = []
    for impl in ("fused", "reference"):
        out = call(kind, x, v0, p, v_threshold=th, surrogate=sg, detach_reset=detach, impl=impl, **reset)
        grads.append(torch.autograd.grad(out.spikes.sum(), inputs))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", ["Triangle", "PiecewiseQuadratic", "Rect", "Sigmoid", "ATan",
                                  "SignSwish", "Erf", "SuperSpike", "PiecewiseExp", "SoftSign",
                                  "BilinearLeakyReLU", "PiecewiseLeakyReLU", "StraightThrough"])
def test_surrogate_derivative_at_non_finite_values_matches_the_kernel(name):
    """g'(u) at u = ±0, ±inf, NaN: the kernels' value is torch's (NaN stays NaN)."""
    sg = getattr(S, name)()
    # u = h - th with th = 0: feed h directly through one IF step from v = 0 (h = x)
    x = torch.tensor([[0.0, -0.0, INF, -INF, NAN, 0.3, -0.3]], dtype=torch.float64, requires_grad=True)
    grads = [torch.autograd.grad(snnfunc.if_(x, v_threshold=0.0, surrogate=sg, detach_reset=True,
                                             impl=impl).spikes.sum(), x)[0] for impl in ("fused", "reference")]
    want = S.derivative(sg, x.detach())
    torch.testing.assert_close(grads[1], want, equal_nan=True)
    torch.testing.assert_close(grads[0], want, equal_nan=True)
