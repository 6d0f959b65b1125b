"""The generated CUDA (Triton) kernels of every neuron made from a definition, run by Triton's
interpreter on CPU tensors through the public functions, against the reference loop. Run by
test_triton.py in a subprocess (TRITON_INTERPRET=1 must be set before Triton compiles):

    TRITON_INTERPRET=1 python tests/triton_generated_cases.py [--quick] [--cpu]

Every neuron of the test registry (tests/registry.py), option, reset (the hard reset's values
0.0 and -0.2 over detach_reset in turn), detach_reset and dtype
(float32, float64, and float16/bfloat16 computed in float32; every other case for the neurons
without the registry's `full`), surrogates in turn, T in {1, 7, 33} and N
in {1, 5, 300}, edge values (±0, ±inf, NaN) in some cases, losses that leave outputs unused.
Spikes, h and states by bit pattern where the definition is exact, gradients to rounding.
`--cpu` runs the same cases on the generated C kernels. Exit status 1 when anything differs.
"""

import itertools
import math
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snnfunc._kernel import backends  # noqa: E402
from snnfunc._core.definition import option_values as _option_values  # noqa: E402
from test_edge_values import bits  # noqa: E402
from registry import ENTRIES, leaves  # noqa: E402
from test_generated import SURROGATES, Gaussian  # noqa: E402

INF, NAN = math.inf, math.nan


def one_case(name, opts, kw, dtype, T, N, sg, use, edge, seed):
    e = ENTRIES[name]
    neuron, params, exact = e.neuron, e.params, e.exact
    g = torch.Generator().manual_seed(seed)
    shape = (N,) if N < 3 else (3, N // 3)
    scale = 0.4 if opts.get("decay_input") is False else 1.0
    x = (torch.rand((T, *shape), generator=g, dtype=torch.float64) * 2.5 * scale).to(dtype)
    state = [(torch.rand(shape, generator=g, dtype=torch.float64) * 0.5).to(dtype)
             for _ in neuron.states]
    if edge:
        pool = torch.tensor([0.0, -0.0, INF, -INF, NAN], dtype=dtype)
        x = torch.where(torch.rand(x.shape, generator=g) < 0.2, pool[torch.randint(5, x.shape, generator=g)], x)
        state[0] = torch.where(torch.rand(shape, generator=g) < 0.2,
                               pool[torch.randint(5, shape, generator=g)], state[0])
    params = dict(params)
    first = next(iter(params), None)
    if first is not None:
        params[first] = (params[first] * (1 + 0.2 * torch.rand(shape, generator=g, dtype=torch.float64))
                         ).to(dtype).requires_grad_(True)
    th = (0.8 + 0.4 * torch.rand(shape[-1:], generator=g, dtype=torch.float64)).to(dtype).requires_grad_(True)
    x.requires_grad_(True)
    for t in state:
        t.requires_grad_(True)
    st = state[0] if len(state) == 1 else neuron.State(*state)
    traced = seed % 4 == 1  # return_states: every state's trace, differentiated too
    call = dict(kw, v_threshold=th, surrogate=sg, **opts, **params)
    call.update(return_states=True) if traced else call.update(return_h=True)
    fused = neuron(x, st, impl="fused", **call)
    ref = neuron(x, st, impl="reference", **call)
    if "Defined" not in type(fused.spikes.grad_fn).__name__:
        return "the fused path did not run"
    outs = {"spikes": (fused.spikes, ref.spikes), "h": (fused.h, ref.h)}
    for k, (a, b) in enumerate(zip(leaves(fused[1]), leaves(ref[1]))):
        outs[f"state{k}"] = (a, b)
    if traced:
        for k, (a, b) in enumerate(zip(leaves(fused.trace), leaves(ref.trace))):
            outs[f"trace{k}"] = (a, b)
    for f, (a, b) in outs.items():
        if exact and not edge or exact and dtype in (torch.float32, torch.float64):
            if not torch.equal(bits(a), bits(b)):
                return f"{f} differs"
        elif not edge:
            try:
                half = dtype in (torch.float16, torch.bfloat16)  # one unit in the last place
                torch.testing.assert_close(a.double(), b.double(), rtol=1e-2 if half else 1e-4,
                                           atol=1e-2 if half else 1e-5)
            except AssertionError:
                return f"{f} differs beyond rounding"
    inputs = [x, th, *([params[first]] if first is not None else []), *state]
    keys = [k for k in use if k in outs] or ["spikes"]
    if traced:
        keys += [k for k in outs if k.startswith("trace")]
    w = {k: torch.randn(outs[k][1].shape, generator=g, dtype=torch.float64).to(dtype) for k in keys}

    def loss(which):
        return sum((outs[k][which] * w[k]).sum() for k in keys)

    got = torch.autograd.grad(loss(0), inputs, allow_unused=True)
    want = torch.autograd.grad(loss(1), inputs, allow_unused=True)
    tol = (dict(rtol=1e-7, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
           if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2))
    if traced and dtype == torch.float32:  # a cotangent at every step: sums in another order
        tol = dict(rtol=1e-3, atol=1e-3)
    for i, (t, a, b) in enumerate(zip(inputs, got, want)):
        a = torch.zeros_like(t) if a is None else a
        b = torch.zeros_like(t) if b is None else b
        if edge and not exact:
            continue
        try:
            torch.testing.assert_close(a, b, equal_nan=True, **tol)
        except AssertionError as exc:
            return f"grad {i}: {str(exc).splitlines()[2:4]}"
    return None


def cases(quick):
    Ts, Ns = (1, 7, 33), (1, 5, 300)
    uses = (("spikes", "h", "state0", "state1"), ("spikes",), ("state0",), ("h",), ("state1",),
            ("spikes", "state0"))
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    sgs = SURROGATES + [Gaussian()]
    i = 0
    for name, e in ENTRIES.items():
        exact = e.exact
        for opts, v_reset, detach, dtype in itertools.product(
                list(_option_values(e.neuron.options)), (0.0, -0.2, None), (False, True), dtypes):
            i += 1
            # the hard reset to 0.0 attached, to -0.2 detached (the value is an argument of
            # the same kernel): every neuron, option and dtype still runs both values
            if quick and i % 3 or not e.full and i % 2 or v_reset == (-0.2 if not detach else 0.0):
                continue
            # where the definition uses exp, a last-bit difference can flip a spike and the
            # runs part: those are compared over few steps
            T = Ts[i % 3] if exact else Ts[i % 2]
            yield (name, opts, dict(v_reset=v_reset, detach_reset=detach), dtype, T,
                   Ns[(i // 3) % 3], sgs[i % len(sgs)], uses[i % len(uses)], i % 5 == 0, i)


def main():
    quick = "--quick" in sys.argv
    if "--cpu" not in sys.argv:
        if os.environ.get("TRITON_INTERPRET") != "1":
            sys.exit("set TRITON_INTERPRET=1: the kernels must be built for Triton's interpreter")
        backends.BACKENDS["cpu"] = backends.BACKENDS["cuda"]  # CPU tensors to the Triton ops
    warnings.simplefilter("ignore")
    np.seterr(all="ignore")
    start, failures, n = time.time(), [], 0
    for case in cases(quick):
        n += 1
        try:
            err = one_case(*case)
        except Exception as exc:  # noqa: BLE001  (report every case, then fail)
            err = f"{type(exc).__name__}: {exc}"
        if err:
            failures.append(f"{case[0]} {case[1]} {case[2]} {case[3]} T={case[4]} N={case[5]} "
                            f"{case[6]} {case[7]} edge={case[8]}: {err}")
    for line in failures:
        print("FAIL", line)
    print(f"{n - len(failures)} passed, {len(failures)} failed in {time.time() - start:.1f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
