"""`snnfunc.info()` and `python -m snnfunc` say what runs here, and why not."""

import io
import os
import subprocess
import sys

import torch

import snnfunc
from snnfunc._kernel import backends, dispatch


def test_info_reports_versions_paths_and_fallbacks():
    before = dispatch.fallbacks.copy()
    x = torch.rand(3, 4)  # forward mode has no rule through the fused op: the loop runs
    torch.func.jvp(lambda x: snnfunc.lif(x).v, (x,), (torch.ones_like(x),))
    buf = io.StringIO()
    text = snnfunc.info(file=buf)
    assert buf.getvalue().rstrip("\n") == text
    assert f"torch   {torch.__version__}" in text and "snnfunc 0.1.0" in text
    cpu = backends.error("cpu")
    assert ("cpu:  available" in text) == (cpu is None)
    reason = "forward-mode AD (jvp, jacfwd) has no rule through the fused op"
    assert dispatch.fallbacks[reason] == before[reason] + 1
    assert f"x {reason}" in text
    if not torch.cuda.is_available():
        assert "cuda: not available:" in text


def test_python_m_snnfunc_without_a_compiler_says_why(tmp_path):
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"), SNNFUNC_CACHE=str(tmp_path))
    code = ("import runpy, torch, snnfunc; x = torch.rand(3, 4, requires_grad=True); "
            "assert 'Stack' in type(snnfunc.lif(x).spikes.grad_fn).__name__; "  # the loop ran
            "runpy.run_module('snnfunc', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cpu:  not available: building the fused CPU kernel failed" in proc.stdout
    assert "1 x building the fused CPU kernel failed" in proc.stdout


def test_import_is_cheap_and_complete():
    """`import snnfunc` reaches snnfunc.nn and snnfunc.nir, and loads neither torch.compile's
    machinery nor Triton (seconds) until something compiles or runs on a GPU."""
    code = ("import sys, snnfunc; snnfunc.nn.LIFNode; snnfunc.nn.Recurrent; "
            "heavy = [m for m in ('torch._dynamo', 'torch._inductor', 'triton') if m in sys.modules]; "
            "print('heavy', heavy); snnfunc.nir.to_nir; print('nir', 'snnfunc.nir' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nir True" in proc.stdout
    if not torch.cuda.is_available():  # (a GPU registers the Triton ops at import)
        assert "heavy []" in proc.stdout, proc.stdout


def test_the_compile_marks_are_torchs():
    """snnfunc marks functions for torch.compile without importing Dynamo: with the very mark
    torch.compiler.assume_constant_result sets (a torch that changes it fails here)."""
    from snnfunc._core.compile import constant_result

    def f():
        return 1

    def g():
        return 1

    torch.compiler.assume_constant_result(f)
    constant_result(g)
    marks = {k for k in vars(f) if "dynamo" in k}
    assert marks and marks == {k for k in vars(g) if "dynamo" in k}


def test_info_names_the_instruction_set_of_the_built_kernels():
    """The ISA line comes from a library built as the kernels are, so it is what they use:
    on an x86-64 CPU whose flags list avx2 (avx512f), the kernels target AVX2 (AVX-512)."""
    from snnfunc._backends.c import build

    text = snnfunc.info(file=io.StringIO())
    isa = build.isa()
    if backends.error("cpu") is not None:
        assert isa is None and "cpu instruction set: -" in text
        return
    assert f"cpu instruction set: {isa} on {build.cpu_name()}" in text
    flags = next((line.split() for line in build._cpu_id().splitlines()
                  if line.startswith("flags")), [])
    if "generic build" not in isa and "avx512f" in flags and "avx512vl" in flags:
        assert isa.startswith("AVX-512")
    elif "generic build" not in isa and "avx2" in flags:
        assert isa.startswith("AVX2")
