"""Bad arguments get a clear error naming the argument, before any work: the public
functions, the adapters, user-defined surrogates, and the custom ops themselves (public as
torch.ops.snnfunc.*, so memory-safe for any argument)."""

import dataclasses
import logging
import subprocess
import sys

import pytest
import torch

import snnfunc
from snnfunc import nn as snn
from snnfunc import surrogate as S
from snnfunc._backends.c import build as _cpu
from snnfunc._kernel import surrogates
from conftest import CPU_KERNELS

needs_kernel = CPU_KERNELS


# --------------------------------------------------------------------------- user surrogates


@dataclasses.dataclass(frozen=True)
class Const(S.Surrogate):
    """A 0-d derivative."""

    def derivative(self, x):
        return torch.ones((), dtype=x.dtype)


@dataclasses.dataclass(frozen=True)
class PerChannel(S.Surrogate):
    """One value per channel (the last dimension), in float64 whatever x's dtype."""

    def derivative(self, x):
        return torch.linspace(0.5, 1.5, x.shape[-1], dtype=torch.float64)


@dataclasses.dataclass(frozen=True)
class Number(S.Surrogate):
    def derivative(self, x):
        return 0.25


@dataclasses.dataclass(frozen=True)
class WrongShape(S.Surrogate):
    def derivative(self, x):
        return torch.ones(7)


@needs_kernel
@pytest.mark.parametrize("sg", [Const(), PerChannel(), Number()], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_a_derivative_that_is_not_a_full_tensor_is_broadcast_and_cast(sg, dtype):
    x = (torch.rand(6, 4, 5, dtype=dtype) * 1.5).requires_grad_(True)
    w = torch.full((5,), 0.5, dtype=dtype, requires_grad=True)
    grads = []
    for impl in ("fused", "reference"):
        out = snnfunc.plif(x, w=w, surrogate=sg, impl=impl)
        grads.append(torch.autograd.grad(out.spikes.sum() + out.v.sum(), (x, w)))
    for a, b in zip(*grads):
        assert a.dtype == dtype and torch.isfinite(a).all()
        torch.testing.assert_close(a, b)
    # per-sample gradients of the fused path, through vmap
    f = lambda x: snnfunc.plif(x, w=0.5, surrogate=sg).spikes.sum()  # noqa: E731
    per = torch.func.vmap(torch.func.grad(f), in_dims=1, out_dims=1)(x.detach())
    ref = torch.func.vmap(torch.func.grad(
        lambda x: snnfunc.plif(x, w=0.5, surrogate=sg, impl="reference").spikes.sum()), in_dims=1, out_dims=1)(x.detach())
    torch.testing.assert_close(per, ref)


@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_a_derivative_of_the_wrong_shape_names_the_surrogate(impl):
    x = torch.rand(4, 3, requires_grad=True)
    out = snnfunc.lif(x, surrogate=WrongShape(), impl=impl)
    with pytest.raises(ValueError, match="WrongShape.derivative"):
        out.spikes.sum().backward()


# --------------------------------------------------------------------------- the public functions


def test_a_number_for_the_state_suggests_the_parameter():
    x = torch.rand(4, 3)
    with pytest.raises(TypeError, match=r"tau=2\.0"):
        snnfunc.lif(x, 2.0)
    with pytest.raises(TypeError, match=r"w=0\.5"):
        snnfunc.plif(x, 0.5, w=0.5)
    with pytest.raises(TypeError, match=r"torch\.tensor\(0\.5\)"):
        snnfunc.if_(x, 0.5)
    with pytest.raises(TypeError, match=r"tau=2\.0"):
        snnfunc.lif_step(x[0], 2.0)
    out = snnfunc.lif(x, torch.tensor(0.5))  # a 0-d tensor state shared by every neuron
    assert out.v.shape == (3,)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_tensor_tau_that_is_not_positive_is_refused(bad):
    x = torch.rand(4, 3)
    tau = torch.tensor([2.0, bad, 3.0], requires_grad=True)
    with pytest.raises(ValueError, match="tau must be > 0"):
        snnfunc.lif(x, tau=tau)
    with pytest.raises(ValueError, match="tau must be > 0"):
        snnfunc.lif_step(x[0], tau=tau)
    with pytest.raises(ValueError, match="tau must be > 0"):
        snnfunc.lif(x, tau=bad)
    # inside transforms the values are not read (that would sync a GPU or break a graph)
    out = torch.func.vmap(lambda t: snnfunc.lif(x, tau=t, impl="reference").spikes)(tau.detach()[None].expand(2, 3))
    assert out.shape == (2, 4, 3)


def test_a_large_negative_sigmoid_parameter_does_not_overflow():
    x = torch.rand(4, 3, dtype=torch.float64)
    out = snnfunc.plif(x, w=-710.0, parametrization="sigmoid", return_h=True)
    assert torch.isfinite(out.h).all() and (out.h[0] - x[0] * 1e-300).abs().max() < 1e-300
    assert snnfunc.plif(x, w=800.0, parametrization="sigmoid").spikes.shape == x.shape


def test_sparse_input_is_refused_with_its_layout():
    x = torch.rand(4, 3).to_sparse()
    with pytest.raises(TypeError, match="x_seq must be a dense.*sparse_coo"):
        snnfunc.lif(x)
    with pytest.raises(TypeError, match="v must be a dense"):
        snnfunc.lif(torch.rand(4, 3), torch.rand(3).to_sparse())


def test_a_surrogate_class_instead_of_an_instance():
    with pytest.raises(TypeError, match=r"got the class Sigmoid; pass an instance, Sigmoid\(\)"):
        snnfunc.lif(torch.rand(4, 3), surrogate=S.Sigmoid)
    with pytest.raises(TypeError, match=r"got the class ATan"):
        snn.LIFNode(2.0, surrogate=S.ATan)


@pytest.mark.parametrize("make,err,name", [
    (lambda: S.BilinearLeakyReLU(a="x"), TypeError, "a must be a real number"),
    (lambda: S.BilinearLeakyReLU(b=None), TypeError, "b must be a real number"),
    (lambda: S.PiecewiseLeakyReLU(c="x"), TypeError, "c must be a real number"),
    (lambda: S.Sigmoid(float("nan")), ValueError, "alpha must be finite"),
    (lambda: S.BilinearLeakyReLU(a=float("inf")), ValueError, "a must be finite"),
])
def test_every_surrogate_field_is_checked(make, err, name):
    with pytest.raises(err, match=name):
        make()


# --------------------------------------------------------------------------- the adapters


def test_adapter_takes_surrogate_or_pulse_soft():
    assert snn.LIFNode(2.0, surrogate=S.ATan()).surrogate == S.ATan()
    assert snn.PLIFNode(surrogate=S.Erf()).pulse_soft == S.Erf()
    assert snn.RIFNode(pulse_soft=S.Erf(), surrogate=S.Erf()).surrogate == S.Erf()
    with pytest.raises(TypeError, match="give the surrogate once"):
        snn.IFNode(pulse_soft=S.ATan(), surrogate=S.Erf())


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_adapter_state_that_no_longer_fits_says_reset(step_mode):
    node = snn.LIFNode(2.0, step_mode=step_mode)
    shape = (5, 8, 3) if step_mode == "m" else (8, 3)
    node(torch.rand(shape))
    with pytest.raises(ValueError, match=r"LIFNode holds a state v of shape \(8, 3\).*reset\(\)"):
        node(torch.rand(shape[:-2] + (4, 3)))
    node.reset()
    assert node(torch.rand(shape[:-2] + (4, 3))).shape[-2:] == (4, 3)


@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("impl_half", [False, True], ids=["fused", "reference"])
def test_adapter_state_from_a_freed_graph_says_reset(step_mode, impl_half):
    fc = torch.nn.Linear(3, 4)
    node = snn.PLIFNode(step_mode=step_mode)
    dtype = torch.float16 if impl_half else torch.float32  # float16 runs the reference loop
    fc, node = fc.to(dtype), node.to(dtype)
    x = torch.rand(5, 2, 3, dtype=dtype)
    run = (lambda x: node(fc(x))) if step_mode == "m" else (lambda x: torch.stack([node(fc(xt)) for xt in x]))
    run(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"PLIFNode holds a state v whose graph.*reset\(\)"):
        run(x)
    node.v = node.v.detach()  # truncated BPTT: continue from the state without its graph
    run(x).sum().backward()


# --------------------------------------------------------------------------- the custom ops


def _fwd_args(**change):
    x = torch.rand(6, 8)
    args = dict(x=x, states=[torch.zeros(8)], params=[torch.full((8,), 2.0)], th=torch.ones(()),
                scalars=torch.zeros(1, dtype=torch.float64), neuron="snnfunc:lif",
                options="decay_input=1", hard=True, want_h=True)
    args.update(change)
    return args


BAD_FORWARD = [
    (dict(x=torch.ones(6, 8, dtype=torch.int64)), TypeError, "x must be a float16, bfloat16"),
    (dict(states=[torch.zeros(8, dtype=torch.float64)]), ValueError, "v must be a dense torch.float32"),
    (dict(states=[torch.zeros(3)]), ValueError, r"v must have shape \(8,\)"),
    (dict(states=[torch.zeros(8), torch.zeros(8)]), ValueError, r"states must hold 1 tensors \('v',\)"),
    (dict(params=[torch.zeros(9)]), ValueError, r"tau must have shape \(8,\)"),
    (dict(params=[]), ValueError, r"params must hold 1 tensors \('tau',\)"),
    (dict(th=torch.zeros(2, 4)), ValueError, r"th must have shape \(8,\)"),
    (dict(neuron="nowhere:nothing"), ValueError, "no neuron definition named 'nowhere:nothing'"),
    (dict(options="decay_input=2"), ValueError, "options must be name=0 or name=1"),
    (dict(options=""), ValueError, r"options must give \('decay_input',\)"),
    (dict(scalars=torch.zeros(0, dtype=torch.float64)), ValueError, "scalars must be"),
    (dict(scalars=torch.zeros(1, 1, dtype=torch.float64)), ValueError, "scalars must be"),
    (dict(scalars=torch.zeros(1)), ValueError, "scalars must be"),
    (dict(x=torch.rand(6, 8).to_sparse()), ValueError, "dense"),
    (dict(x=torch.tensor(1.0)), ValueError, "x must be a dense tensor"),
    (dict(keep=[True]), ValueError, "keep must hold 3 bools"),
]


@needs_kernel
@pytest.mark.parametrize("change,err,match", BAD_FORWARD, ids=[m for _, _, m in BAD_FORWARD])
def test_forward_op_checks_every_argument(change, err, match):
    with pytest.raises(err, match=match):
        torch.ops.snnfunc.defined_forward(**_fwd_args(**change))
    with pytest.raises(err, match=match):  # the fake kernel too: torch.compile fails early
        with torch._subclasses.FakeTensorMode(allow_non_fake_inputs=True):
            torch.ops.snnfunc.defined_forward(**_fwd_args(**change))


def _bwd_args(**change):
    f = _fwd_args()
    x = f["x"]
    args = dict(x=x, states=f["states"], params=f["params"], th=f["th"], gs=torch.ones_like(x),
                gh=None, sg=None, gstates=[torch.ones(8)],
                scalars=torch.tensor([0.0, 4.0], dtype=torch.float64),  # v_rest, Sigmoid's alpha
                neuron="snnfunc:lif", options="decay_input=1",
                surrogate=surrogates.surrogate_token(S.Sigmoid()), hard=True,
                detach=False, need=[True, True, True], gtraces=[None])
    args.update(change)
    return args


BAD_BACKWARD = [
    (dict(gs=torch.ones(5, 8)), ValueError, r"gs must have x's shape"),
    (dict(gh=torch.ones(6, 8, dtype=torch.float64)), ValueError, "gh must be a dense torch.float32"),
    (dict(sg=torch.ones(8)), ValueError, r"sg must have x's shape"),
    (dict(gstates=[torch.ones(())]), ValueError, r"gstates\[v\] must have shape \(8,\)"),
    (dict(gstates=[None, None]), ValueError, "gstates must hold 1 entries"),
    (dict(gs=None, gstates=[None]), ValueError, "at least one of gs, gh, gstates and gtraces"),
    (dict(gtraces=[None, None]), ValueError, "gtraces must hold 1 entries"),
    (dict(gtraces=[torch.ones(6, 8, dtype=torch.float64)]), ValueError, "gtraces.v. must be a dense torch.float32"),
    (dict(need=[True]), ValueError, "need must hold 3 bools"),
    (dict(surrogate="Sigmoid"), ValueError, "surrogate must be a token made by snnfunc"),
    (dict(scalars=torch.zeros(1, dtype=torch.float64)), ValueError,
     "scalars must hold 2 values for this surrogate"),
    # the values the forward kept for this need: LIF keeps 2 ([2, T, *S]) for every gradient
    (dict(kept=torch.zeros(1, 6, 8)), ValueError, r"kept must have shape \(2, 6, 8\)"),
    (dict(kept=torch.zeros(2, 6)), ValueError, r"kept must have shape \(2, 6, 8\)"),
    (dict(kept=torch.zeros(2, 6, 8, dtype=torch.float64)), ValueError,
     "kept must be a dense torch.float32"),
    (dict(kept=torch.zeros(2, 6, 8, dtype=torch.float64).to_sparse()), ValueError,
     "kept must be a dense"),
]


@needs_kernel
@pytest.mark.parametrize("change,err,match", BAD_BACKWARD, ids=[m for _, _, m in BAD_BACKWARD])
def test_backward_op_checks_every_argument(change, err, match):
    with pytest.raises(err, match=match):
        torch.ops.snnfunc.defined_backward(**_bwd_args(**change))


@needs_kernel
def test_a_backend_that_keeps_no_values_returns_none():
    """The C backend computes the kept values again from x in cache: asked to keep them, its
    forward returns an empty last output, and its backward checks a `kept` given and reads
    x as ever."""
    out = torch.ops.snnfunc.defined_forward(**_fwd_args(keep=[True, True, True]))
    assert out[-1].numel() == 0
    args = _bwd_args()
    a = torch.ops.snnfunc.defined_backward(**args, kept=torch.full((2, 6, 8), float("nan")))
    b = torch.ops.snnfunc.defined_backward(**args)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


@needs_kernel
def test_ops_are_registered_at_import_and_an_exported_graph_loads_in_a_fresh_process(tmp_path):
    class Net(torch.nn.Module):
        def forward(self, x):
            return snnfunc.lif(x, tau=2.0).spikes

    x = torch.rand(5, 2, 3) * 2
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(Net(), (x,)), path)
    torch.save(x, tmp_path / "x.pt")
    code = f"""
import torch, snnfunc
from snnfunc._backends.c import build as _cpu
assert hasattr(torch.ops.snnfunc, "defined_forward") and hasattr(torch.ops.snnfunc, "defined_backward")
assert not _cpu._libs  # registered, not yet built
x = torch.load({str(tmp_path / 'x.pt')!r})
out = torch.export.load({str(path)!r}).module()(x)
assert torch.equal(out, snnfunc.lif(x, tau=2.0, impl="reference").spikes)
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


@needs_kernel
def test_the_first_build_says_so(tmp_path, monkeypatch, caplog):
    """Compiling kernels (a second or so each, once per machine) is announced once per
    process, not silent."""
    monkeypatch.setenv("SNNFUNC_CACHE", str(tmp_path))
    monkeypatch.setattr(_cpu, "_announced", [])
    source = "int snn_run(void *j, int b, int n) { (void)j; (void)b; (void)n; return 7; }\n"
    with caplog.at_level(logging.WARNING, logger="snnfunc"):
        lib = _cpu.build(source)
    assert lib.snn_run(None, 0, 1) == 7
    assert list(tmp_path.glob("snnfunc_gen_*.so")) and "compiling fused neuron kernels" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="snnfunc"):
        _cpu.build(source.replace("7", "8"))  # another kernel in the same process: silent
    assert caplog.text == ""
