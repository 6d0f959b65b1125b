"""The CUDA path without a GPU: the Triton kernels generated from the neuron definitions are
registered as torch.library ops with vmap rules, run under Triton's interpreter against the
reference loop, and compile for an H100/H200 (sm_90) down to PTX and cubin, with IEEE
division and no FMA contraction in the forward (the bit-exactness promise). Running them on
a GPU: see test_cuda_equals_reference."""

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton not installed: the CUDA kernels need it")

from snnfunc._backends.triton import host as _generated_triton  # noqa: E402
from snnfunc._kernel import dispatch  # noqa: E402
from registry import ENTRIES, leaves  # noqa: E402


def _compile(fn, signature, constexprs):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=fn, signature={**signature, **{k: "constexpr" for k in constexprs}},
                    constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(enable_fp_fusion=False))


def test_ops_registered_with_vmap_rules():
    for name in ("defined_forward_cuda", "defined_backward_cuda"):
        op = getattr(torch.ops.snnfunc, name)
        assert op.default is not None
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"snnfunc::{name}", "FuncTorchBatched")


def test_every_kernel_variant_under_the_interpreter():
    """Every Triton kernel variant runs (TRITON_INTERPRET=1, on CPU tensors) through the
    public functions and equals the reference: the classic four with every option and
    surrogate, every other neuron of the test registry with a sample, float32 and float64,
    T in {1, 7, 33}, N in {1, 5, 300}, edge values, unused outputs."""
    script = Path(__file__).with_name("triton_interpreter_cases.py")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed, 0 failed" in proc.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ENTRIES)
@pytest.mark.parametrize("number", [False, True], ids=["tensor-parameters", "number-parameters"])
def test_cuda_equals_reference(name, number):
    from test_fused import OPTIONS

    # the classic four with every option set, the others (test_generated_neurons_on_cuda_...
    # runs them too) with two
    options = OPTIONS if ENTRIES[name].classic else OPTIONS[:2]
    for opts, dtype in itertools.product(options, (torch.float32, torch.float64)):
        _compare_cuda(name, opts, dtype, number)


def _compare_cuda(name, opts, dtype, number):
    """Python-number parameters (tau=1.7) round and divide the same way on both paths."""
    e = ENTRIES[name]
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(37, 3, 50, generator=g, dtype=torch.float64) * 1.4).to(dtype).cuda().requires_grad_(True)
    p = None
    if e.first is not None and not number:
        p = torch.full((50,), e.params[e.first]).to(dtype).cuda().requires_grad_(True)
    fused = e(x, None, p, impl="fused", return_h=True, **opts)
    ref = e(x, None, p, impl="reference", return_h=True, **opts)
    for a, b in zip([fused.spikes, fused.h, *leaves(fused[1])], [ref.spikes, ref.h, *leaves(ref[1])]):
        if e.exact:
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    inputs = [x] + ([p] if isinstance(p, torch.Tensor) else [])
    a = torch.autograd.grad(fused.spikes.sum() + leaves(fused[1])[0].sum(), inputs)
    b = torch.autograd.grad(ref.spikes.sum() + leaves(ref[1])[0].sum(), inputs)
    for u, w in zip(a, b):
        torch.testing.assert_close(u, w, rtol=1e-4, atol=1e-4)
    assert dispatch.available("cuda")


def test_every_generated_kernel_under_the_interpreter():
    """The Triton kernels generated from neuron definitions (TRITON_INTERPRET=1, on CPU
    tensors) equal the reference: every neuron of the test registry (tests/registry.py), option,
    reset, dtype (half precision too), surrogates in turn, edge values, unused outputs."""
    script = Path(__file__).with_name("triton_generated_cases.py")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed, 0 failed" in proc.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_generated_neurons_on_cuda_equal_reference(dtype):
    for name, e in ENTRIES.items():
        neuron, kwargs, exact = e.neuron, e.params, e.exact
        g = torch.Generator().manual_seed(0)
        x = (2.5 * torch.rand(9, 3, 50, generator=g)).to(dtype).cuda().requires_grad_(True)
        fused = neuron(x, impl="fused", return_h=True, **kwargs)
        ref = neuron(x, impl="reference", return_h=True, **kwargs)
        for a, b in zip([fused.spikes, fused.h, *leaves(fused[1])], [ref.spikes, ref.h, *leaves(ref[1])]):
            if exact:
                assert torch.equal(a, b), name
            else:
                torch.testing.assert_close(a.double(), b.double(), rtol=1e-2, atol=1e-2)
        ga = torch.autograd.grad(fused.spikes.sum() + leaves(fused[1])[0].sum(), x)[0]
        gb = torch.autograd.grad(ref.spikes.sum() + leaves(ref[1])[0].sum(), x)[0]
        torch.testing.assert_close(ga.double(), gb.double(), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
@pytest.mark.parametrize("name", ["cuba_lif", "alif", "eif"])
def test_generated_kernels_compile_exact_for_sm90(name, dtype):
    """The generated Triton kernels build for an H100/H200: IEEE division, no FMA."""
    from snnfunc import surrogate as S
    from snnfunc._backends.triton import host as _generated_triton
    from snnfunc._backends.triton import skeleton as _triton_codegen
    from snnfunc._kernel import surrogates as _generated
    from snnfunc._core.definition import option_values as _option_values
    from snnfunc.functional.defined import DEFINITIONS

    neuron = DEFINITIONS[name]
    opts = next(iter(_option_values(neuron.options)))
    io = {"float32": "*fp32", "float64": "*fp64", "bfloat16": "*bf16", "float16": "*fp16"}[dtype]
    real = "*fp64" if dtype == "float64" else "*fp32"
    fwd = _generated_triton._load(_triton_codegen.forward_source(neuron, opts, hard=True,
                                                                 want_h=True, dtype=dtype))
    need = (True,) * (len(neuron.parameters) + 1 + len(neuron.states))
    keeping = _generated_triton._load(_triton_codegen.forward_source(  # kept for the backward
        neuron, opts, hard=False, want_h=False, dtype=dtype, keep=need, detach=False))
    rule = _generated.derivative_rule_for(_generated.surrogate_token(S.Sigmoid()), False)
    bwd = _generated_triton._load(_triton_codegen.backward_source(
        neuron, opts, hard=False, detach=False, surrogate_derivative=rule, has_gs=True,
        has_gh=False, has_gv=(True,) * len(neuron.states), need=need, dtype=dtype))
    for kernel in (fwd, keeping, bwd):
        sig, const = {}, {}
        for arg in kernel.arg_names:
            if arg.endswith("_SHARED"):
                const[arg] = arg.startswith("TH")
            elif arg == "BLOCK":
                const[arg] = 256
            elif arg in ("T", "N"):
                sig[arg] = "i32"
            elif arg in ("SXT", "SXR", "XC"):  # x's strides: a view read in place
                sig[arg] = "i64"
            elif arg == "sc_ptr":
                sig[arg] = "*fp64"
            elif arg == "kept_ptr" or arg.startswith(("gst0", "gpar", "gth")):
                sig[arg] = real
            else:
                sig[arg] = io
        k = _compile(kernel, sig, const)
        ptx = k.asm["ptx"]
        assert len(k.asm["cubin"]) > 0
        if kernel is fwd and name != "eif":  # exp's own code (libdevice, f64) uses fma
            assert "fma" not in ptx  # no contraction: the reference rounds every operation
            assert f"div.rn.f{'64' if dtype == 'float64' else '32'}" in ptx


_IO_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}


def _bytes_per_step(source, dtype):
    """The bytes per neuron-step a kernel's time loop moves, counted from its loads and stores
    (`snnfunc._backends.triton.traffic`); one time loop per kernel."""
    from snnfunc._backends.triton import traffic

    assert len(re.findall(r"\n    for \w+ in range\(T\):\n", source)) == 1, "one time loop"
    return traffic.total(traffic.streams(source, dtype))


@pytest.mark.parametrize("dtype, floor", [("float32", 12), ("bfloat16", 8), ("float16", 8),
                                          ("float64", 24)])
def test_lif_kernels_move_the_floor_of_bytes(dtype, floor):
    """LIF, the spikes' gradient wanted, x's only: the forward reads x and writes s and the
    kept h; the backward reads h and gs and writes gx; nothing else per neuron-step (no
    [K, T, N] buffer of recomputed states, x not read again)."""
    from snnfunc import surrogate as S
    from snnfunc._backends.triton import skeleton
    from snnfunc._core import registry
    from snnfunc._kernel import surrogates

    lif = registry.lookup("snnfunc:lif")
    rule = surrogates.derivative_rule_for(surrogates.surrogate_token(S.Sigmoid()), False)
    need = (False, False, False)
    for decay in (False, True):
        opts = dict(decay_input=decay)
        fwd = skeleton.forward_source(lif, opts, hard=True, want_h=False, dtype=dtype,
                                      keep=need)
        bwd = skeleton.backward_source(lif, opts, hard=True, detach=False,
                                       surrogate_derivative=rule, has_gs=True, has_gh=False,
                                       has_gv=(False,), need=need, dtype=dtype)
        assert "buf" not in bwd and not re.search(r"\bx_ptr \+", bwd.split("range(T)")[1])
        assert _bytes_per_step(fwd, dtype) == floor
        assert _bytes_per_step(bwd, dtype) == floor
        plain = skeleton.forward_source(lif, opts, hard=True, want_h=False, dtype=dtype)
        assert _bytes_per_step(plain, dtype) == floor - (8 if dtype == "float64" else 4)


def test_every_backward_reads_what_its_forward_kept():
    """Every built-in neuron, options, reset, detach: the forward keeping values writes each
    kept value once a step, and every backward of that need (cotangents of the spikes, h,
    the final states, their traces) reads each at most once a step and no state of the
    forward but through them: the plan checks they give every value its VJP reads."""
    import itertools as it

    from snnfunc import surrogate as S
    from snnfunc._backends.triton import skeleton
    from snnfunc._core.definition import option_values
    from snnfunc._kernel import surrogates
    from snnfunc._kernel.plan import forward_kept
    from snnfunc.functional.defined import DEFINITIONS

    rule = surrogates.derivative_rule_for(surrogates.surrogate_token(S.SignSwish()), False)
    for name, nrn in DEFINITIONS.items():
        K, M = len(nrn.states), len(nrn.parameters)
        for opts, hard, detach in it.product(list(option_values(nrn.options)), (True, False),
                                             (False, True)):
            for need in ((False,) * (M + 1 + K), (True,) * (M + 1 + K)):
                kept = forward_kept(nrn, opts, hard=hard, detach=detach, need=need)
                fwd = skeleton.forward_source(nrn, opts, hard=hard, want_h=False,
                                              dtype="float32", keep=need, detach=detach)
                assert fwd.count("tl.store(kept_ptr") == len(kept), name
                for gs, gh, gv in ((True, False, False), (False, True, False), (True, True, True)):
                    bwd = skeleton.backward_source(
                        nrn, opts, hard=hard, detach=detach, surrogate_derivative=rule,
                        has_gs=gs, has_gh=gh, has_gv=(gv,) * K, need=need, dtype="float32")
                    assert not re.search(r"\bst0_ptr", bwd) and "buf" not in bwd, name
                    walk = bwd.split("for r in range(T):")[1]
                    for branch in re.split(r"\n\s*(?:el)?if rb == \d+:", walk)[1:]:
                        for e in range(len(kept)):
                            assert branch.count(f"kept_ptr + {e} * TN") <= 1, name
