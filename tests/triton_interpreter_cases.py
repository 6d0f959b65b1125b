"""The CUDA (Triton) kernels run by Triton's interpreter on CPU tensors, through the public
functions, against the reference loop. Run by test_triton.py in a subprocess, since
TRITON_INTERPRET=1 must be set before Triton compiles anything:

    TRITON_INTERPRET=1 python tests/triton_interpreter_cases.py [--quick]

Every neuron of the test registry (tests/registry.py): the classic four with every option
(decay_input, hard/soft reset, detach_reset, return_h) and dtype, every surrogate (the built-ins
and user-defined ones whose derivative is not a full tensor of x's dtype) on each of them in
one dtype, the dtypes in turn, every other neuron with
four of those cases in turn (triton_generated_cases.py crosses them with every option); T in
{1, 7, 33} and N in {1, 5, 300} (1 hits Triton's specialisation of
arguments equal to 1), edge values (±0, ±inf, NaN) in some cases, and losses that leave
outputs unused. Spikes, h and the states compared by bit pattern (to rounding where a
definition uses exp), gradients to rounding. And the
values the forward keeps for the backward: the backward op reading them equals, bit for bit,
the backward op given none (which makes them itself), under vmap too.
Exit status 1 and one line per failing case when anything differs.
"""

import dataclasses
import itertools
import math
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import snnfunc  # noqa: E402
from snnfunc import surrogate as S  # noqa: E402
from snnfunc._kernel import backends  # noqa: E402
from registry import CLASSIC, ENTRIES, leaves  # noqa: E402
from snnfunc._core.definition import option_values  # noqa: E402
from test_fused import Gaussian  # noqa: E402

INF, NAN = math.inf, math.nan
INT = {torch.float32: torch.int32, torch.float64: torch.int64}


@dataclasses.dataclass(frozen=True)
class Const(S.Surrogate):
    """A 0-d derivative."""

    def derivative(self, x):
        return torch.ones((), dtype=x.dtype) * 0.7


@dataclasses.dataclass(frozen=True)
class PerChannel(S.Surrogate):
    """A derivative of shape [C] (the last dimension), in float64 whatever x's dtype."""

    def derivative(self, x):
        return torch.linspace(0.2, 1.0, x.shape[-1], dtype=torch.float64)


BUILTINS = [S.Sigmoid(1.5), S.BilinearLeakyReLU(2.0, 0.1, 0.3), S.SignSwish(), S.ATan(1.7),
            S.PiecewiseQuadratic(1.7), S.PiecewiseExp(1.7), S.SoftSign(1.7), S.Erf(1.7),
            S.SuperSpike(1.7), S.PiecewiseLeakyReLU(0.8, 0.05), S.Rect(1.7), S.Triangle(1.7),
            S.StraightThrough()]
USER = [Gaussian(), Const(), PerChannel()]


def variants(name):
    """Every option set of the neuron's definition (the defaults first), with every reset and
    detach_reset."""
    options = list(option_values(ENTRIES[name].neuron.options))[::-1]
    for opts, v_reset, detach in itertools.product(options, (0.0, -0.2, None), (False, True)):
        yield dict(opts, v_reset=v_reset, detach_reset=detach)


def bits(t):
    t = torch.where(t.isnan(), torch.full_like(t, NAN), t)
    return t.contiguous().view(INT[t.dtype])


def one_case(name, kw, dtype, T, N, sg, pshape, use, edge, seed):
    e = ENTRIES[name]
    g = torch.Generator().manual_seed(seed)
    shape = (N,) if N < 3 else (3, N // 3)
    x = (torch.rand((T, *shape), generator=g, dtype=torch.float64) * e.drive).to(dtype)
    states = [(torch.rand(shape, generator=g, dtype=torch.float64) * 0.5).to(dtype)
              for _ in e.neuron.states]
    if edge:
        pool = torch.tensor([0.0, -0.0, INF, -INF, NAN], dtype=dtype)
        pick = torch.rand(x.shape, generator=g) < 0.2
        x = torch.where(pick, pool[torch.randint(5, x.shape, generator=g)], x)
        states = [torch.where(torch.rand(shape, generator=g) < 0.2, pool[torch.randint(5, shape, generator=g)], v)
                  for v in states]
    p = None  # the first parameter: the registry's number, or a tensor of one or N values
    if e.first is not None and pshape != "float":
        size = () if pshape == "scalar" else shape
        p = (e.params[e.first] + 0.2 * torch.rand(size, generator=g, dtype=torch.float64)
             ).to(dtype).requires_grad_(True)
    th = (0.8 + 0.4 * torch.rand(shape[-1:], generator=g, dtype=torch.float64)).to(dtype).requires_grad_(True)
    x.requires_grad_(True)
    for v in states:
        v.requires_grad_(True)
    opts = dict(kw, v_threshold=th, surrogate=sg, return_h=True)
    fused = e(x, states, p, impl="fused", **opts)
    ref = e(x, states, p, impl="reference", **opts)
    if "Defined" not in type(fused.spikes.grad_fn).__name__:
        return "the fused path did not run"
    outs = {"spikes": (fused.spikes, ref.spikes), "h": (fused.h, ref.h)}
    for k, (a, b) in enumerate(zip(leaves(fused[1]), leaves(ref[1]))):
        outs[f"state{k}"] = (a, b)
    for f, (a, b) in outs.items():
        if e.exact and not torch.equal(bits(a), bits(b)):
            return f"{f} differs"
        if not e.exact and not edge and not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
            return f"{f} differs beyond rounding"
    named = [(n, t) for n, t in zip(("x", *e.neuron.states, "p", "th"), (x, *states, p, th))
             if isinstance(t, torch.Tensor)]
    inputs = [t for _, t in named]
    keys = [k for k in outs if k in use or k.startswith("state") and "v" in use]
    w = {k: torch.randn(outs[k][1].shape, generator=g, dtype=torch.float64).to(dtype) for k in keys}

    def loss(which):
        return sum((outs[k][which] * w[k]).sum() for k in keys)

    got = torch.autograd.grad(loss(0), inputs, allow_unused=True)
    want = torch.autograd.grad(loss(1), inputs, allow_unused=True)
    tol = dict(rtol=1e-7, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    for (n, t), a, b in zip(named, got, want):
        a = torch.zeros_like(t) if a is None else a  # unused on one path: a zero gradient
        b = torch.zeros_like(t) if b is None else b
        if edge and not e.exact:
            continue
        try:
            torch.testing.assert_close(a, b, equal_nan=True, **tol)
        except AssertionError as exc:
            return f"grad {n}: {str(exc).splitlines()[2:4]}"
    return None


def cases(quick):
    Ts, Ns = (1, 7, 33), (1, 5, 300)
    uses = (("spikes", "h", "v"), ("spikes",), ("v",), ("h",), ("spikes", "v"))
    i = 0
    for name in CLASSIC:
        for kw, dtype in itertools.product(list(variants(name)), (torch.float32, torch.float64)):
            i += 1
            yield (name, kw, dtype, Ts[i % 3], Ns[(i // 3) % 3], BUILTINS[i % len(BUILTINS)],
                   ("float", "scalar", "neuron")[i % 3], uses[i % len(uses)], i % 4 == 0, i)
    # every surrogate on every neuron, in one dtype, the dtypes in turn (each surrogate in
    # both over the neurons, each neuron in both over the surrogates)
    for j, sg in enumerate(BUILTINS + USER):
        for k, (name, dtype) in enumerate(itertools.product(CLASSIC, (torch.float32, torch.float64))):
            i += 1
            if quick and i % 4 or (j + k // 2 + k % 2) % 2:
                continue
            kw = dict(v_reset=(0.0, None)[i % 2], detach_reset=False)
            yield (name, kw, dtype, Ts[i % 3], Ns[(j + i) % 3], sg, "neuron",
                   uses[(i // 2) % len(uses)], j % 3 == 0, i)
    # every other neuron of the registry: four cases, options, surrogates, ways of passing the
    # parameter and dtypes in turn (a derivative evaluated in torch needs the plain threshold;
    # where the definition uses exp, a last-bit difference grows over T: few steps)
    sgs = BUILTINS + USER
    for j, name in enumerate(n for n in ENTRIES if n not in CLASSIC):
        options = list(variants(name))
        plain = ENTRIES[name].neuron.threshold is None
        for k in range(4):
            i += 1
            if quick and i % 4:
                continue
            sg = sgs[(4 * j + k) % len(sgs)]
            if sg in USER[1:] and not plain:
                sg = BUILTINS[(4 * j + k) % len(BUILTINS)]
            yield (name, options[(5 * j + k) % len(options)], (torch.float32, torch.float64)[k % 2],
                   Ts[i % 3] if ENTRIES[name].exact else Ts[i % 2], Ns[(j + k) % 3], sg, ("float", "scalar", "neuron")[(j + k) % 3],
                   uses[i % len(uses)], k == 3, i)


def kept_cases():
    """The backward op given the values the forward op kept equals it given none (it runs
    the forward once more to make them), bit for bit; and vmap of grad equals the loop."""
    from snnfunc._backends.triton import host
    from snnfunc._core import registry
    from snnfunc._kernel import surrogates

    token = surrogates.surrogate_token(S.Sigmoid(3.0))
    for i, (name, dtype, detach, need_all) in enumerate(itertools.product(
            ("snnfunc:lif", "snnfunc:alif"), (torch.float32, torch.bfloat16, torch.float64),
            (False, True), (False, True))):
        gh = i % 3 == 0  # h's cotangent too
        nrn = registry.lookup(name)
        options = ",".join(f"{k}=1" for k in sorted(nrn.options))
        K, M = len(nrn.states), len(nrn.parameters)
        g = torch.Generator().manual_seed(i)
        c = torch.float64 if dtype == torch.float64 else torch.float32
        x = (torch.rand(5, 2, 3, generator=g, dtype=torch.float64) * 1.5).to(dtype)
        states = [(torch.rand(2, 3, generator=g, dtype=torch.float64) * 0.5).to(c)
                  for _ in range(K)]
        params = [(1.5 + torch.rand(2, 3, generator=g, dtype=torch.float64)).to(dtype)
                  for _ in range(M)]
        th = torch.full((), 0.9, dtype=dtype)
        sc = torch.tensor([0.0, 3.0], dtype=torch.float64)
        need = [need_all] * (M + 1 + K)
        out = host.defined_forward_cuda(x, states, params, th, sc, name, options, True, False,
                                        False, detach, need)
        kept = out[-1]
        gs = torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype)
        ghv = gs.flip(0) if gh else None
        args = (x, states, params, th, gs, ghv, None, [None] * K, sc, name, options, token,
                True, detach, need, [None] * K)
        with_kept = host.defined_backward_cuda(*args, kept)
        without = host.defined_backward_cuda(*args)
        if kept.shape[0] == 0 or kept.shape[1:] != x.shape or kept.dtype != c:
            yield f"kept {name} {dtype}: shape {tuple(kept.shape)} {kept.dtype}"
        for a, b in zip(with_kept, without):
            if not torch.equal(a.view(-1).double().nan_to_num(7.0), b.view(-1).double().nan_to_num(7.0)):
                yield f"kept {name} {dtype} detach={detach} need={need_all} gh={gh}: differs"
                break
    # vmap of grad: the kept values batched (at dim 2) through the forward and backward ops
    xs = torch.rand(3, 6, 4, dtype=torch.float64) * 1.5
    tau = torch.full((4,), 1.7, dtype=torch.float64, requires_grad=True)

    def loss(x, tau):
        return (snnfunc.lif(x, tau=tau, impl="fused").spikes * torch.arange(4.0)).sum()

    per = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(0, None))(xs, tau)
    for b in range(xs.shape[0]):
        one = torch.func.grad(loss, argnums=(0, 1))(xs[b], tau)
        if not all(torch.equal(p[b], o) for p, o in zip(per, one)):
            yield "kept under vmap(grad): differs from one by one"
            break


def main():
    quick = "--quick" in sys.argv
    if "--cpu" in sys.argv:  # the same cases against the C kernels
        pass
    elif os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("set TRITON_INTERPRET=1: the kernels must be built for Triton's interpreter")
    warnings.simplefilter("ignore")  # numpy warns about the masked lanes' 0/0
    np.seterr(all="ignore")
    if "--cpu" not in sys.argv:  # route the public functions' CPU tensors to the Triton ops
        backends.BACKENDS["cpu"] = backends.BACKENDS["cuda"]  # CPU tensors to the Triton ops
    start, failures, n = time.time(), [], 0
    for case in cases(quick):
        n += 1
        try:
            err = one_case(*case)
        except Exception as exc:  # noqa: BLE001  (report every case, then fail)
            err = f"{type(exc).__name__}: {exc}"
        if err:
            kind, kw, dtype, T, N, sg = case[:6]
            failures.append(f"{kind} {kw} {dtype} T={T} N={N} {sg} {case[6:9]}: {err}")
    for dtype in (torch.float64, torch.float32):  # every IR operation, at its boundaries
        from ir_op_table import run
        from test_ir_ops import compare

        n += 1
        try:
            fused, reference = run(dtype, "fused"), run(dtype, "reference")
            bad = compare(fused, reference, dtype)
        except Exception as exc:  # noqa: BLE001
            bad = [f"{type(exc).__name__}: {exc}"]
        failures += [f"IR operations {dtype}: {line}" for line in bad]
    n += 1
    try:
        failures += list(kept_cases())
    except Exception as exc:  # noqa: BLE001
        failures.append(f"kept values: {type(exc).__name__}: {exc}")
    for line in failures:
        print("FAIL", line)
    print(f"{n - len(failures)} passed, {len(failures)} failed in {time.time() - start:.1f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
