"""Signed zeros in the Triton kernels, run by Triton's interpreter on CPU tensors against the
reference loop. Triton 3.6 compiles `-x` as `0 - x` (so `-(+0.0)` is +0.0) and makes a
constant -0.0 a +0.0, in its interpreter and its compiler alike; the kernels spell neither
(`snnfunc._backends.triton.spelling`), so they keep the sign of zero on every Triton. Run by
test_triton_signed_zero.py in a subprocess (TRITON_INTERPRET=1 must be set before Triton
compiles anything):

    TRITON_INTERPRET=1 python tests/triton_signed_zero_cases.py [--cpu]

The cases: every IR operation (tests/ir_op_table.py) at ±0, ±inf and NaN, its zeros' signs
included; a user neuron whose states negate and hold the constant -0.0, over T steps of edge
inputs, every dtype, by bit pattern; and gradients that are -0.0 where the reference's are:
a surrogate whose derivative is a run-time field negated, or times the constant -0.0 (the
kernel's numbers, in float64), and the VJP of a subtraction (its cotangent negated).
`--cpu` runs the same cases on the C kernels. One line per failing case, exit status 1.
"""

import dataclasses
import itertools
import math
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import snnfunc  # noqa: E402
from snnfunc import surrogate as S  # noqa: E402
from snnfunc._kernel import backends  # noqa: E402
from test_edge_values import bits  # noqa: E402

INF, NAN = math.inf, math.nan
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@snnfunc.neuron(name="tests:mirror")
def mirror(x, v, a, b, c, *, v_rest):
    """Negations of a state, of x and of a difference, and the constant -0.0 as a factor and
    as a value."""
    return (x - v,
            -a,
            torch.where(b > x, -x, b * -0.0),
            torch.where(c < 0, -(c - x), torch.full_like(c, -0.0)))


@dataclasses.dataclass(frozen=True)
class NegatedField(S.Surrogate):
    """g'(u) = -alpha everywhere: a run-time number negated (-0.0 at alpha = 0)."""

    alpha: float = 0.0

    def derivative(self, x):
        return torch.ones_like(x) * (-self.alpha)


@dataclasses.dataclass(frozen=True)
class NegativeZeroField(S.Surrogate):
    """g'(u) = alpha * -0.0 everywhere: a run-time number times the constant -0.0."""

    alpha: float = 1.0

    def derivative(self, x):
        return torch.ones_like(x) * (self.alpha * -0.0)


def _grid(dtype, shape, T, seed):
    """x [T, *shape] and one initial state [*shape] drawn from ±0, ±1, ±inf and NaN."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, INF, -INF, NAN], dtype=dtype)
    x = pool[torch.randint(len(pool), (T, *shape), generator=g)]
    state = [pool[torch.randint(len(pool), shape, generator=g)] for _ in mirror.states]
    return x, state


def _differs(what, got, want):
    if torch.equal(bits(got), bits(want)):
        return []
    i = (bits(got) != bits(want)).nonzero()[0].tolist()
    return [f"{what} at {i}: {got[tuple(i)].item()!r} vs {want[tuple(i)].item()!r}"]


def ir_operations():
    """Every IR operation at every pair of ±0, ±inf, NaN, ±0.5 ...: values as test_ir_ops
    compares them (the signs of zeros of every one, exact or not)."""
    from ir_op_table import run
    from test_ir_ops import compare

    for dtype in (torch.float64, torch.float32):
        yield from (f"IR operations {dtype}: {line}"
                    for line in compare(run(dtype, "fused"), run(dtype, "reference"), dtype))


def states():
    """The mirror neuron's spikes, h and states, bit for bit, at the zeros' signs."""
    for dtype, T, seed in itertools.product(DTYPES, (1, 6), (0, 1)):
        x, state = _grid(dtype, (4, 9), T, seed)
        x.requires_grad_(True)  # the fused path's grad_fn shows that it ran
        kw = dict(v_threshold=0.5, v_reset=(0.0, None)[seed], return_h=True)
        fused = mirror(x, mirror.State(*state), impl="fused", **kw)
        ref = mirror(x, mirror.State(*state), impl="reference", **kw)
        case = f"states {dtype} T={T} seed={seed}"
        if "Defined" not in type(fused.spikes.grad_fn).__name__:
            yield f"{case}: the fused path did not run"
        pairs = [("spikes", fused.spikes, ref.spikes), ("h", fused.h, ref.h),
                 *((n, a, b) for n, a, b in zip(mirror.State._fields, fused.state, ref.state))]
        for n, a, b in pairs:
            yield from _differs(f"{case} {n}", a, b)
        if not ref.state.a.signbit().any() or not ref.state.c.signbit().any():
            yield f"{case}: no -0.0 in the reference's states (the case tests nothing)"


def gradients():
    """-0.0 gradients: a surrogate's negated field (or the field times -0.0) makes x's
    gradient through the spikes -0.0 (one step: g_s * g'(u)); a +0.0 cotangent of h makes
    v0's gradient -0.0 through `x - v` (the cotangent negated in the VJP)."""
    for dtype, sg in itertools.product((torch.float32, torch.float64),
                                       (NegatedField(0.0), NegativeZeroField(2.0))):
        g = torch.Generator().manual_seed(3)
        x = (torch.rand(5, 2, 7, generator=g, dtype=torch.float64) * 2 - 0.5).to(dtype)
        v0 = (torch.rand(2, 7, generator=g, dtype=torch.float64) - 0.5).to(dtype)
        grads = {}
        for impl in ("fused", "reference"):
            xi, vi = x[:1].clone().requires_grad_(True), v0.clone().requires_grad_(True)
            o = snnfunc.if_(xi, vi, surrogate=sg, v_threshold=0.4, impl=impl)
            spikes = torch.autograd.grad((o.spikes * 1.5).sum(), xi)[0]
            fused_ran = "Defined" in type(o.spikes.grad_fn).__name__
            xi, vi = x.clone().requires_grad_(True), v0.clone().requires_grad_(True)
            o = mirror(xi, mirror.State(vi, *[torch.zeros_like(v0)] * 3), surrogate=sg,
                       v_threshold=0.4, return_h=True, impl=impl)
            h = torch.autograd.grad((o.h * 0.0).sum(), vi)[0]
            fused_ran &= "Defined" in type(o.h.grad_fn).__name__
            if impl == "fused" and not fused_ran:
                yield f"gradients {dtype}: the fused path did not run"
            grads[impl] = {"x through the spikes": spikes, "v0 through h": h}
        for what, want in grads["reference"].items():
            case = f"gradient of {what} {dtype} {type(sg).__name__}"
            yield from _differs(case, grads["fused"][what], want)
            if not want.signbit().all() or want.ne(0).any():
                yield f"{case}: the reference's gradient is not -0.0 (the case tests nothing)"


def main():
    if "--cpu" not in sys.argv:
        if os.environ.get("TRITON_INTERPRET") != "1":
            sys.exit("set TRITON_INTERPRET=1: the kernels must be built for Triton's interpreter")
        backends.BACKENDS["cpu"] = backends.BACKENDS["cuda"]  # CPU tensors to the Triton ops
    warnings.simplefilter("ignore")  # numpy warns about the masked lanes' 0/0
    np.seterr(all="ignore")
    groups, failed = (ir_operations, states, gradients), 0
    for group in groups:
        try:
            bad = list(group())
        except Exception as exc:  # noqa: BLE001  (report every group, then fail)
            bad = [f"{group.__name__}: {type(exc).__name__}: {exc}"]
        failed += bool(bad)
        for line in bad:
            print("FAIL", line)
    print(f"{len(groups) - failed} passed, {failed} failed (groups of cases)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
