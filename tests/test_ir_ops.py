"""Every IR operation, in the generated C kernel, against torch on the same expression: values
bit for bit (correctly rounded operations) or within an ulp or two (libm functions), and
derivatives as torch.autograd takes them at ties, bounds, ±0, ±inf and NaN."""

import pytest
import torch

from conftest import CPU_KERNELS
from ir_op_table import OPS, STATES, VALUES, run

pytestmark = CPU_KERNELS

INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def _bits(t):
    t = torch.where(t.isnan(), torch.full_like(t, float("nan")), t)
    return t.view(INT[t.dtype])


def _pairs(dtype):
    pool = torch.tensor(VALUES, dtype=dtype)
    n = len(VALUES)
    return list(zip(pool.repeat_interleave(n).tolist(), pool.repeat(n).tolist()))


def compare(fused, reference, dtype):
    """Failures as `op: what at (x, r0): fused vs reference` lines."""
    (fs, fg, fx), (rs, rg, rx) = fused, reference
    pairs = _pairs(dtype)
    eps = torch.finfo(dtype).eps
    bad = []
    for name, a, b, ga, gb in zip(STATES, fs, rs, fg, rg):
        exact = name == "v" or OPS[name][1]
        # a function's value within a few ulp, its derivative within what that error becomes
        # where it is ill-conditioned (tanh's 1 - y^2 near |x| = 2: about 30 times)
        tol = dict(rtol=4 * eps, atol=0.0) if exact else dict(rtol=64 * eps, atol=0.0)
        ga = torch.zeros_like(a) if ga is None else ga
        gb = torch.zeros_like(b) if gb is None else gb
        same_value = _bits(a) == _bits(b)
        if not exact:  # within rounding, and special values (inf, NaN, zero) alike
            close = torch.isclose(a, b, equal_nan=True, rtol=4 * eps, atol=0.0)
            special = ~(torch.isfinite(a) & torch.isfinite(b) & (a != 0) & (b != 0))
            same_value = torch.where(special, same_value, close)
        close_grad = torch.isclose(ga, gb, equal_nan=True, **tol) & (
            ga.isinf() == gb.isinf()) & (ga.isnan() == gb.isnan())
        for what, ok, p, q in (("value", same_value, a, b), ("gradient", close_grad, ga, gb)):
            for i in (~ok).nonzero().flatten()[:3].tolist():
                bad.append(f"{name}: {what} at (x, r0) = {pairs[i]}: {p[i].item()!r} vs "
                           f"{q[i].item()!r}")
    return bad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_ir_operation_against_torch(dtype):
    fused = run(dtype, "fused")
    reference = run(dtype, "reference")
    bad = compare(fused, reference, dtype)
    assert not bad, "\n".join(bad)
    # x's gradient is the sum over every operation's: the same to rounding
    torch.testing.assert_close(fused[2], reference[2], equal_nan=True, rtol=1e-5, atol=1e-5)
