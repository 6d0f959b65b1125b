"""Signed zeros in the Triton kernels, on every Triton: a negation of +0.0 is -0.0 and a
constant -0.0 stays -0.0. Triton 3.6 compiles `-x` as `0 - x` and a constant -0.0 as +0.0
(its interpreter and its compiler alike), so the kernels spell neither
(`snnfunc._backends.triton.spelling`). Checked under the interpreter against the reference
loop (triton_signed_zero_cases.py), in every generated source, and compiled for an H100/H200
(sm_90) down to Triton's IR."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="Triton not installed: the CUDA kernels need it")

from snnfunc._backends.triton import host, skeleton  # noqa: E402
from snnfunc._kernel import surrogates  # noqa: E402

# a unary minus on a value: after `=`, `(`, `,` or an operator, before a name or a parenthesis
UNARY_MINUS = re.compile(r"(?:=|\(|,|[-+*/<>]=?)\s*-\s*[A-Za-z_(]")


def test_signed_zeros_under_the_interpreter_equal_the_reference():
    """Every IR operation at ±0, a neuron whose states negate and hold -0.0 (every dtype),
    and -0.0 gradients (a surrogate's negated field, a cotangent negated in a VJP), bit for
    bit against the reference loop."""
    script = Path(__file__).with_name("triton_signed_zero_cases.py")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed, 0 failed" in proc.stdout


def test_no_generated_source_negates_with_a_unary_minus():
    """The sources of the kernel-source oracle (every neuron, option, reset, dtype, gradient
    pattern, surrogate): no unary minus on a value and no -0.0 literal; negative number
    literals (`-1.5`, `-1e400`) are Python's constants and stay."""
    import test_kernel_sources as oracle

    n = 0
    for key, cfg in oracle.configs():
        if cfg["backend"] != "triton":
            continue
        n += 1
        source = oracle.render(cfg)
        for line in source.splitlines():
            code = line.split("#")[0]
            assert not UNARY_MINUS.search(code) and "-0.0" not in code, f"{key}: {line.strip()}"
    assert n > 500


def _compile_sm90(source, dtype):
    """Triton's IR (TTIR) of a generated kernel built for sm_90, shared values as flags."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = host._load(source)
    io = {"float32": "*fp32", "float64": "*fp64"}[dtype]
    sig, const = {}, {}
    for arg in kernel.arg_names:
        if arg.endswith("_SHARED"):
            const[arg] = False
        elif arg == "BLOCK":
            const[arg] = 256
        elif arg in ("T", "N"):
            sig[arg] = "i32"
        elif arg in ("SXT", "SXR", "XC"):
            sig[arg] = "i64"
        else:
            sig[arg] = "*fp64" if arg == "sc_ptr" else io
    src = ASTSource(fn=kernel, signature={**sig, **{k: "constexpr" for k in const}},
                    constexprs=const)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(enable_fp_fusion=False))
    assert len(k.asm["cubin"]) > 0
    return k.asm["ttir"]


def _check_ttir(ttir, what, minus_zero=True):
    """No subtraction from a constant +0.0; a constant -0.0 where the kernel has one."""
    zero = set(re.findall(r"(%[\w.]+) = arith\.constant (?:dense<)?0\.000000e\+00\b", ttir))
    for a in re.findall(r"arith\.subf (%[\w.]+), ", ttir):
        assert a not in zero, f"{what}: a subtraction from +0.0 ({a}), not a negation"
    if minus_zero:
        assert re.search(r"arith\.constant (?:dense<)?-0\.000000e\+00\b", ttir), \
            f"{what}: the constant -0.0 became +0.0"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_for_sm90_negation_is_no_subtraction_and_minus_zero_stays(dtype):
    """The real compiler (sm_90, no GPU needed): the mirror neuron's forward (negations, the
    constant -0.0 as a factor and as a value) and backwards (negated cotangents; a surrogate's
    run-time field negated, or times the constant -0.0, in float64) subtract nothing from a
    constant +0.0 and keep a constant -0.0."""
    from triton_signed_zero_cases import NegatedField, NegativeZeroField, mirror

    fwd = skeleton.forward_source(mirror, {}, hard=True, want_h=True, dtype=dtype)
    _check_ttir(_compile_sm90(fwd, dtype), f"forward {dtype}")
    need = (True,) * (1 + len(mirror.states))
    for sg in (NegatedField(0.0), NegativeZeroField(2.0)):
        rule = surrogates.derivative_rule_for(surrogates.surrogate_token(sg), False)
        bwd = skeleton.backward_source(mirror, {}, hard=True, detach=False,
                                       surrogate_derivative=rule, has_gs=True, has_gh=True,
                                       has_gv=(False,) * len(mirror.states), need=need,
                                       dtype=dtype)
        _check_ttir(_compile_sm90(bwd, dtype), f"backward {dtype} {type(sg).__name__}",
                    minus_zero=isinstance(sg, NegativeZeroField))  # NegatedField: none
