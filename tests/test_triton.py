"""The CUDA path without a GPU: the Triton kernels generated from the neuron definitions are
registered as torch.library ops with vmap rules, run under Triton's interpreter against the
reference loop, and compile for an H100/H200 (sm_90) down to PTX and cubin, with IEEE
division and no FMA contraction in the forward (the bit-exactness promise). Running them on
a GPU: see test_cuda_equals_reference."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton not installed: the CUDA kernels need it")

from snnfunc._backends.triton import host as _generated_triton  # noqa: E402
from snnfunc._kernel import dispatch  # noqa: E402
from conftest import NEURONS  # noqa: E402


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
    public functions and equals the reference: every neuron, option and surrogate, float32
    and float64, T in {1, 7, 33}, N in {1, 5, 300}, edge values, unused outputs."""
    script = Path(__file__).with_name("triton_interpreter_cases.py")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed, 0 failed" in proc.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", NEURONS)
@pytest.mark.parametrize("number", [False, True], ids=["tensor-parameters", "number-parameters"])
def test_cuda_equals_reference(kind, number):
    from test_fused import OPTIONS

    for opts, dtype in itertools.product(OPTIONS, (torch.float32, torch.float64)):
        _compare_cuda(kind, opts, dtype, number)


def _compare_cuda(kind, opts, dtype, number):
    """Python-number parameters (tau=1.7) round and divide the same way on both paths."""
    import snnfunc
    from conftest import call

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(37, 3, 50, generator=g, dtype=torch.float64) * 1.4).to(dtype).cuda().requires_grad_(True)
    base = {"if": None, "lif": 1.7, "plif": 0.55, "rif": -0.15}[kind]
    p = None if base is None else base if number else torch.full((50,), base)
    if isinstance(p, torch.Tensor):
        p = p.to(dtype).cuda().requires_grad_(True)
    kw = dict(opts)
    if kind in ("if", "rif"):
        kw.pop("decay_input")
    fused = call(kind, x, None, p, impl="fused", return_h=True, **kw)
    ref = call(kind, x, None, p, impl="reference", return_h=True, **kw)
    assert torch.equal(fused.spikes, ref.spikes) and torch.equal(fused.h, ref.h)
    inputs = [x] + ([p] if isinstance(p, torch.Tensor) else [])
    a = torch.autograd.grad(fused.spikes.sum() + fused.v.sum(), inputs)
    b = torch.autograd.grad(ref.spikes.sum() + ref.v.sum(), inputs)
    for u, w in zip(a, b):
        torch.testing.assert_close(u, w, rtol=1e-4, atol=1e-4)
    assert dispatch.available("cuda")


def test_every_generated_kernel_under_the_interpreter():
    """The Triton kernels generated from neuron definitions (TRITON_INTERPRET=1, on CPU
    tensors) equal the reference: every definition of test_generated's registry, option,
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
    from test_generated import NEURONS, leaves

    for name, (neuron, kwargs, exact) in NEURONS.items():
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
    rule = _generated.derivative_rule_for(_generated.surrogate_token(S.Sigmoid()), False)
    bwd = _generated_triton._load(_triton_codegen.backward_source(
        neuron, opts, hard=False, detach=False, surrogate_derivative=rule, has_gs=True,
        has_gh=False, has_gv=(True,) * len(neuron.states), need=(True,) * (len(neuron.parameters) + 1 + len(neuron.states)),
        dtype=dtype))
    for kernel in (fwd, bwd):
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
            elif arg == "buf_ptr" or arg.startswith(("gst0", "gpar", "gth")):
                sig[arg] = real
            else:
                sig[arg] = io
        k = _compile(kernel, sig, const)
        ptx = k.asm["ptx"]
        assert len(k.asm["cubin"]) > 0
        if kernel is fwd and name != "eif":  # exp's own code (libdevice, f64) uses fma
            assert "fma" not in ptx  # no contraction: the reference rounds every operation
            assert f"div.rn.f{'64' if dtype == 'float64' else '32'}" in ptx
