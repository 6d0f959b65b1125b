"""Edge inputs: ±0, ±inf and NaN in the input, the state, the parameters and the threshold,
for every neuron of the test registry (tests/registry.py). Every path (fused, reference,
single step, adapters) computes the same IEEE expression, so spikes, h and the states are
compared by bit pattern, not by value (torch.equal hides -0.0 and NaN); where a definition
uses exp (the registry's `exact` is False) the fused path's values are compared to rounding."""

import itertools
import math

import pytest
import torch

import snnfunc
from conftest import CPU_KERNELS
from snnfunc import nn as snn
from snnfunc import surrogate as S
from registry import CLASSIC, ENTRIES, leaves

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


def edge_grid(T, N, dtype, seed, states=1):
    """x [T, N] mixing edge values with ordinary ones, and `states` tensors [N] of edge values."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor(EDGE, dtype=dtype)
    x = pool[torch.randint(len(EDGE), (T, N), generator=g)]
    x = torch.where(torch.rand(T, N, generator=g) < 0.5, torch.rand(T, N, generator=g, dtype=dtype) * 1.5, x)
    return x, [pool[torch.randint(len(EDGE), (N,), generator=g)] for _ in range(states)]


def edge_param(name, N, dtype, seed):
    """The neuron's first parameter per neuron, 40% of it edge values: a positive one (tau,
    checked > 0) from +inf, 1e30, 1 and 3, any other from ±0, ±inf, NaN, ±1."""
    e = ENTRIES[name]
    if e.first is None:
        return None
    g = torch.Generator().manual_seed(seed)
    pool = [INF, 1e30, 1.0, 3.0] if e.first in e.neuron.positive else [0.0, -0.0, INF, -INF, NAN, 1.0, -1.0]
    p = torch.full((N,), e.params[e.first], dtype=dtype)
    idx = torch.randint(len(pool), (N,), generator=g)
    pick = torch.rand(N, generator=g) < 0.4
    return torch.where(pick, torch.tensor(pool, dtype=dtype)[idx], p)


def assert_same(a, b, exact, what=""):
    """Bit for bit where the fused forward is exact, else to rounding with NaN where NaN (in
    float32 a neuron that runs away, exp of exp, carries a last-bit difference of e^x to a
    relative 1e-4 in a few steps)."""
    if exact:
        assert_bits(a, b, what)
    else:
        rtol = 1e-3 if a.dtype == torch.float32 else 1e-9
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-6, equal_nan=True, msg=what)


# the classic four in every reset and both dtypes, every other neuron in every reset with
# float32 and float64 in turn (each configuration is a kernel to build)
DTYPES = [torch.float32, torch.float64]
EDGE_CASES = [(name, reset, dtype) for i, name in enumerate(ENTRIES)
              for k, reset in enumerate(RESETS) for j, dtype in enumerate(DTYPES)
              if name in CLASSIC or (i + j + k) % 2 == 0]


@pytest.mark.parametrize("name, reset, dtype", EDGE_CASES, ids=[
    f"{n}-v_reset={r['v_reset']}-{str(d)[6:]}" for n, r, d in EDGE_CASES])
def test_edge_values_fused_equals_reference_bit_for_bit(name, reset, dtype):
    e = ENTRIES[name]
    N = 64
    for seed, th in itertools.product(range(3), [1.0, "edge"]):
        x, state = edge_grid(7, N, dtype, seed, len(e.neuron.states))
        p = edge_param(name, N, dtype, seed)
        if th == "edge":
            th = torch.tensor(EDGE * 7, dtype=dtype)[:N]
        for detach in (False, True):
            kw = dict(reset, v_threshold=th, detach_reset=detach, return_h=True)
            a = e(x, state, p, impl="fused", **kw)
            b = e(x, state, p, impl="reference", **kw)
            for field, u, w in zip(("spikes", "h", *e.neuron.states),
                                   (a.spikes, a.h, *leaves(a[1])), (b.spikes, b.h, *leaves(b[1]))):
                assert_same(u, w, e.exact, f"{field} seed={seed} detach={detach}")
            # the step function, step by step, is the same expression
            st = state
            for t in range(x.shape[0]):
                s, st, h = e.call_step(x[t], leaves(st), p, **kw)
                assert_bits(s, b.spikes[t], f"step {t} spike")
                assert_bits(h, b.h[t], f"step {t} h")
            for k, (u, w) in enumerate(zip(leaves(st), leaves(b[1]))):
                assert_bits(u, w, f"step state {e.neuron.states[k]}")


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


EDGE_SURROGATES = [S.Sigmoid(), S.Triangle(), S.PiecewiseQuadratic(), S.Rect(), S.SignSwish(),
                   S.BilinearLeakyReLU(), S.PiecewiseLeakyReLU()]
# the classic four: every surrogate, each with one of the four (reset, detach_reset) pairs in
# turn (a Latin square: every neuron meets every surrogate and every pair, every surrogate
# every pair); every other neuron three of the surrogates in turn, with the resets and
# detach_reset in turn. Each case is a backward kernel to build.
RESET_DETACH = [(reset, detach) for reset in RESETS[2:] for detach in (False, True)]
GRAD_CASES = [(name, sg, *RESET_DETACH[(i + j) % len(RESET_DETACH)])
              for i, name in enumerate(CLASSIC) for j, sg in enumerate(EDGE_SURROGATES)]
GRAD_CASES += [(name, EDGE_SURROGATES[(i + k) % len(EDGE_SURROGATES)], RESETS[2 + (i + k) % 2],
                (i + k // 2) % 2 == 1)
               for i, name in enumerate(n for n in ENTRIES if n not in CLASSIC) for k in range(3)]


@pytest.mark.parametrize("name, sg, reset, detach", GRAD_CASES, ids=[
    f"{n}-{s}-v_reset={r['v_reset']}-{'detached' if d else 'attached'}" for n, s, r, d in GRAD_CASES])
def test_edge_values_gradients_agree(name, sg, reset, detach):
    """Gradients at edge inputs: the same formulas on both paths, so the same values to
    rounding and NaN exactly where the reference has NaN."""
    e = ENTRIES[name]
    dtype = torch.float64
    x, state = edge_grid(6, 40, dtype, 1, len(e.neuron.states))
    x.requires_grad_(True)
    for t in state:
        t.requires_grad_(True)
    p = edge_param(name, 40, dtype, 1)
    p = None if p is None else p.requires_grad_(True)
    th = torch.tensor(0.9, dtype=dtype, requires_grad=True)
    inputs = [t for t in (x, *state, p, th) if t is not None]
    grads = []
    for impl in ("fused", "reference"):
        out = e(x, state, p, v_threshold=th, surrogate=sg, detach_reset=detach, impl=impl, **reset)
        loss = out.spikes.sum() + sum((0.5 + k) * t.sum() for k, t in enumerate(leaves(out[1])))
        grads.append(torch.autograd.grad(loss, inputs))
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
