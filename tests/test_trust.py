"""Nothing runs code chosen by data: the registered ops take neuron and surrogate names, and a
crafted name imports nothing and calls nothing; a saved graph loads in a fresh process once the
module that defines its neuron is imported. Every adapter pickles, deep-copies and saves."""

import copy
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import snnfunc
from snnfunc import nn as snn
from snnfunc import surrogate as S
from snnfunc._backends.c import build, host
from snnfunc._kernel import cache, surrogates
from registry import refractory, two_state_leaky

# --------------------------------------------------------------------------- crafted tokens


@pytest.fixture
def trap(tmp_path, monkeypatch):
    """A module that leaves a mark when imported, on sys.path: a token naming it must not
    import it, and `subprocess.run` named by a token must not run."""
    mark = tmp_path / "imported"
    (tmp_path / "snn_trap.py").write_text(textwrap.dedent(f"""
        open({str(mark)!r}, "w").write("imported")
        def thing(*args, **kwargs):
            open({str(mark)!r}, "w").write("called")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("snn_trap", None)
    yield mark
    assert not mark.exists(), "a crafted token ran code"
    assert "snn_trap" not in sys.modules


NEURON_NAMES = ["snn_trap:thing", "snn_trap", "subprocess:run", "os:system", "builtins:eval"]


def _surrogate_tokens(mark):
    return [
        json.dumps(["subprocess", "run", [["args", f"touch {mark}"], ["shell", True]]]),  # old form
        json.dumps(["subprocess:run", [["args", f"touch {mark}"], ["shell", True]], [], "x"]),
        json.dumps(["snn_trap:thing", [], [], "x"]),
        json.dumps(["os:system", [["command", f"touch {mark}"]], [], ""]),
        json.dumps(["snnfunc.surrogate:Sigmoid", [["alpha", {"__import__": "os"}]], [], "x"]),
        "snn_trap:thing",
        "",
    ]


def _forward_args(x, neuron="snnfunc:lif"):
    return (x, [torch.zeros(x.shape[1:])], [torch.full((), 2.0)], torch.ones(()),
            torch.zeros(1, dtype=torch.float64), neuron, "decay_input=1", True, False)


def _backward_args(x, neuron="snnfunc:lif", surrogate=None, scalars=None):
    surrogate = surrogates.surrogate_token(S.Sigmoid()) if surrogate is None else surrogate
    scalars = torch.tensor([0.0, 4.0], dtype=torch.float64) if scalars is None else scalars
    return (x, [torch.zeros(x.shape[1:])], [torch.full((), 2.0)], torch.ones(()),
            torch.ones_like(x), None, None, [None], scalars, neuron, "decay_input=1",
            surrogate, True, False, [False, False, False], [None])


@pytest.mark.parametrize("name", NEURON_NAMES)
def test_a_crafted_neuron_name_imports_nothing(trap, name):
    x = torch.rand(3, 4)
    for op in (torch.ops.snnfunc.defined_forward, host.forward_fn):
        with pytest.raises(ValueError, match="no neuron definition named .* is registered"):
            op(*_forward_args(x, name))
    with pytest.raises(ValueError, match="no neuron definition named .* is registered"):
        torch.ops.snnfunc.defined_backward(*_backward_args(x, name))
    with pytest.raises(ValueError, match="no neuron definition named"):  # the fake kernel too
        with torch._subclasses.FakeTensorMode(allow_non_fake_inputs=True):
            torch.ops.snnfunc.defined_forward(*_forward_args(x, name))


def test_a_crafted_surrogate_token_imports_and_calls_nothing(trap):
    x = torch.rand(3, 4)
    for token in _surrogate_tokens(trap):
        with pytest.raises(ValueError, match="surrogate"):
            torch.ops.snnfunc.defined_backward(*_backward_args(x, surrogate=token))
        with pytest.raises(ValueError, match="surrogate"):
            with torch._subclasses.FakeTensorMode(allow_non_fake_inputs=True):
                torch.ops.snnfunc.defined_backward(*_backward_args(x, surrogate=token))


def test_a_token_of_a_registered_class_checks_its_fields(trap):
    x = torch.rand(3, 4)
    bad = [json.dumps(["snnfunc.surrogate:Sigmoid", [["alpha", 2.0], ["beta", 1.0]], [], "x"]),
           json.dumps(["snnfunc.surrogate:Sigmoid", [], ["alpha", "zeta"], "x"]),
           json.dumps(["snnfunc.surrogate:Sigmoid", [["alpha", 2.0]], [], "0123"])]
    for token in bad:
        with pytest.raises(ValueError, match="surrogate"):
            torch.ops.snnfunc.defined_backward(*_backward_args(x, surrogate=token))


@pytest.mark.parametrize("name", NEURON_NAMES)
def test_a_crafted_name_reaches_nothing_through_the_recurrent_ops(trap, name):
    x, w = torch.rand(3, 2, 4), torch.zeros(4, 4)  # (T = 3: 2 kept states, the first and last)
    st, one = [torch.zeros(2, 4)], torch.ones(())
    sc = torch.tensor([0.0, 4.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="no neuron definition named"):
        torch.ops.snnfunc.rnn_forward(x, st, None, w, None, [one], one, sc[:1], name,
                                      "decay_input=1", True, None, False, 16, False)
    good = surrogates.surrogate_token(S.Sigmoid())
    with pytest.raises(ValueError, match="no neuron definition named"):
        torch.ops.snnfunc.rnn_backward(x, st, [x[:2]], w, [one], one, sc, x, [None], name,
                                       "decay_input=1", True, good, False, False, [False] * 2,
                                       False, 1, 16)
    for token in _surrogate_tokens(trap):
        with pytest.raises(ValueError, match="surrogate"):
            torch.ops.snnfunc.rnn_backward(x, st, [x[:2]], w, [one], one, sc, x, [None],
                                           "snnfunc:lif", "decay_input=1", True, token, False,
                                           False, [False] * 2, False, 1, 16)


_CUDA_OPS_SCRIPT = """
import json, sys, torch
sys.path.insert(0, {tmp!r})
import snnfunc
from snnfunc import surrogate as S
from snnfunc._backends.triton import host as T
from snnfunc._kernel import surrogates
x = torch.rand(3, 4)
z, one = torch.zeros(4), torch.ones(())
sc = torch.tensor([0.0, 4.0], dtype=torch.float64)
good = surrogates.surrogate_token(S.Sigmoid())
refused = 0
for name in {names!r}:
    try:
        T.defined_forward_cuda(x, [z], [one], one, sc[:1], name, "decay_input=1", True, False)
    except ValueError as e:
        refused += "no neuron definition named" in str(e)
    try:
        T.defined_backward_cuda(x, [z], [one], one, x, None, None, [None], sc, name,
                                "decay_input=1", good, True, False, [False] * 3, [None])
    except ValueError as e:
        refused += "no neuron definition named" in str(e)
for token in {tokens!r}:
    try:
        T.defined_backward_cuda(x, [z], [one], one, x, None, None, [None], sc, "snnfunc:lif",
                                "decay_input=1", token, True, False, [False] * 3, [None])
    except ValueError as e:
        refused += "surrogate" in str(e)
# and a good call runs under the interpreter
s = T.defined_forward_cuda(x, [z], [one], one, sc[:1], "snnfunc:lif", "decay_input=1", True,
                           False)[0]
assert torch.equal(s, snnfunc.lif(x, tau=1.0, impl="reference").spikes)
print("refused", refused, "snn_trap" in sys.modules)
"""


def test_crafted_tokens_reach_nothing_through_the_cuda_ops(trap, tmp_path):
    pytest.importorskip("triton", reason="Triton not installed: the CUDA ops need it")
    tokens = _surrogate_tokens(trap)
    code = _CUDA_OPS_SCRIPT.format(tmp=str(tmp_path), names=NEURON_NAMES, tokens=tokens)
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"refused {2 * len(NEURON_NAMES) + len(tokens)} False" in proc.stdout


# --------------------------------------------------------------------------- saved graphs

_USER_MODULE = """
import torch, snnfunc
from snnfunc import surrogate as S


@snnfunc.neuron(positive=("tau",))
def leaky(x, v, *, tau=2.0, v_rest):
    return v + (x - (v - v_rest)) / tau


class Net(torch.nn.Module):
    def forward(self, x):
        return leaky(x, tau=3.0, surrogate=S.ATan(3.0)).spikes
"""


def test_an_exported_graph_loads_once_its_neuron_module_is_imported(tmp_path):
    (tmp_path / "user_neurons.py").write_text(_USER_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        import user_neurons

        x = torch.rand(6, 5) * 2
        ep = torch.export.export(user_neurons.Net(), (x,))
        torch.export.save(ep, str(tmp_path / "net.pt2"))
        torch.save(x, tmp_path / "x.pt")
        expected = user_neurons.Net()(x)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("user_neurons", None)
    torch.save(expected, tmp_path / "expected.pt")
    code = f"""
import sys, torch, snnfunc
ep = torch.export.load({str(tmp_path / 'net.pt2')!r})
x = torch.load({str(tmp_path / 'x.pt')!r})
try:
    ep.module()(x)
except ValueError as e:
    print("refused:", e)
sys.path.insert(0, {str(tmp_path)!r})
import user_neurons
out = ep.module()(x)
print("equal:", torch.equal(out, torch.load({str(tmp_path / 'expected.pt')!r})))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=str(tmp_path.parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("refused: no neuron definition named 'user_neurons:leaky' is registered in this "
            "process: import the module that defines it (user_neurons) first") in proc.stdout
    assert "equal: True" in proc.stdout


# --------------------------------------------------------------------------- pickling


def _adapter_classes():
    """Every module class snnfunc.nn exports but the abstract bases."""
    out = []
    for name in snn.__all__:
        obj = getattr(snn, name)
        if (isinstance(obj, type) and issubclass(obj, torch.nn.Module)
                and obj not in (snn.BaseNode, snn.StatefulNode)):
            out.append(obj)
    return out


_PARAMETER = {snn.CubaLIFNode: "tau_mem", snn.ALIFNode: "tau", snn.QIFNode: "tau",
              snn.EIFNode: "tau"}


def _make(cls, learnable):
    """An instance of an adapter class, in its multi-step mode, and an input for it."""
    x = torch.rand(5, 2, 4) * 1.5
    tau = torch.nn.Parameter(torch.tensor(2.0)) if learnable else 2.0
    if cls is snn.TimeDistributed:
        return snn.TimeDistributed(torch.nn.Linear(4, 4)), x
    if cls is snn.SpikeLinear:  # a layer without state
        return snn.SpikeLinear(4, 4), (x > 0.7).float()
    if cls is snn.Recurrent:
        if learnable:
            return snn.Recurrent(4, snnfunc.plif, w=torch.nn.Parameter(torch.full((4,), 0.5))), x
        return snn.Recurrent(4, two_state_leaky), x
    if cls is snn.NeuronNode:
        return snn.NeuronNode(two_state_leaky, tau=tau), x
    if cls in _PARAMETER:
        return cls(step_mode="m", **{_PARAMETER[cls]: tau}), x
    return cls(step_mode="m"), x  # the classic four (PLIF and RIF learn w)


def _state(m):
    return getattr(m, "state", getattr(m, "v", None))


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a.detach(), b.detach())
    if isinstance(a, tuple):
        return type(a) is type(b) and all(_same(p, q) for p, q in zip(a, b))
    return a == b


@pytest.mark.parametrize("cls", _adapter_classes(), ids=lambda c: c.__name__)
@pytest.mark.parametrize("live", [False, True], ids=["at-rest", "live-state"])
@pytest.mark.parametrize("learnable", [False, True], ids=["fixed", "learnable"])
def test_every_adapter_pickles_copies_and_saves(cls, live, learnable, tmp_path):
    m, x = _make(cls, learnable)
    if live:
        m(x.requires_grad_(True))  # the state now carries the graph of this call
        st = _state(m)
        if cls not in (snn.TimeDistributed, snn.SpikeLinear):
            assert any(t.grad_fn is not None for t in torch.utils._pytree.tree_leaves(st))
    expected_state = _state(m)
    for copied in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert type(copied) is cls
        assert _same(_state(copied), expected_state)
        for t in torch.utils._pytree.tree_leaves(_state(copied)):
            if isinstance(t, torch.Tensor):
                assert t.grad_fn is None, "a copy holds the original's autograd graph"
        for (n, p), (n2, p2) in zip(m.named_parameters(), copied.named_parameters()):
            assert n == n2 and torch.equal(p, p2) and p2.requires_grad
    torch.save(m, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert type(loaded) is cls and _same(_state(loaded), expected_state)
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    fresh, _ = _make(cls, learnable)
    fresh.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    for key, value in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    for model in (loaded, fresh):  # both run, and as the original does from the same state
        if hasattr(model, "reset"):
            model.reset()
    if hasattr(m, "reset"):
        m.reset()
        assert torch.equal(loaded(x), m(x))


def test_a_neuron_pickles_as_its_definition():
    for nrn in (two_state_leaky, snnfunc.functional.defined._alif,
                snnfunc.functional.neurons._lif):
        assert pickle.loads(pickle.dumps(nrn)) is nrn
        assert copy.deepcopy(nrn) is nrn


# --------------------------------------------------------------------------- kernels


def test_one_backward_kernel_per_surrogate_kind():
    """An annealed surrogate width compiles nothing after its first value."""
    x = torch.rand(6, 3, 5, requires_grad=True)
    before = None
    for alpha in (1.0, 1.5, 2.25, 3.0, 4.5):
        for sg in (S.Sigmoid(alpha), S.ATan(alpha), S.Rect(alpha)):
            out = snnfunc.lif(x, surrogate=sg, impl="fused")
            (g,) = torch.autograd.grad(out.spikes.sum() + out.v.sum(), x)
            ref = snnfunc.lif(x, surrogate=sg, impl="reference")
            (r,) = torch.autograd.grad(ref.spikes.sum() + ref.v.sum(), x)
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
        builds = host.backward_lib.cache_info().misses
        assert before is None or builds == before, "a new alpha built a new kernel"
        before = builds


def test_the_kernel_cache_on_disk_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNFUNC_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "MAX_FILES", 3)
    triton = [tmp_path / f"snnfunc_triton_{k}.py" for k in range(3)]
    for f in triton:  # another backend's kernels, older than every C kernel
        f.write_text("kernel = None\n")
        os.utime(f, (1, 1))
    for k in range(6):  # six distinct sources: six builds into the empty cache
        build.build(build._PROBE + f"int snn_cache_test_{k}(void) {{ return {k}; }}\n")
        assert len([f for f, _ in cache.cache_files() if f.suffix == ".so"]) <= 3
    kept = [f.name for f, _ in cache.cache_files()]
    assert len(kept) == 6 and all(f.exists() for f in triton)  # each backend within its bound
    assert "kernel cache: 6 kernels" in snnfunc.info(file=io.StringIO())
    monkeypatch.setenv("SNNFUNC_CACHE_MAX_MB", str(1e-6))  # the size bound counts every kernel
    assert cache.evict() == 6 and not cache.cache_files()
    assert cache.evict() == 0  # an empty cache


def test_the_precompiled_headers_change_no_kernel(tmp_path, monkeypatch):
    """The intrinsics header parsed once (`build._header`) makes a kernel's build faster, not the
    kernel: its library is the same byte for byte; and a broken precompiled header falls back
    to a build without it."""
    cc, flags = build.compiler(), list(build._FLAGS)
    if build.error() is not None:
        pytest.skip(f"needs a C compiler (gcc) for the kernels: {build.error()}")
    monkeypatch.setattr(build, "PCH_AFTER", 0)
    header = build._header(cc, flags)  # the cache's, made here where it has none yet
    if header is None:
        pytest.skip(f"needs gcc (precompiled headers are gcc's; the compiler here: {cc})")
    from snnfunc._backends.c import skeleton
    from snnfunc._core import registry

    lif = registry.lookup("snnfunc:lif")
    src = tmp_path / "kernel.c"  # a backward with the kernel's own e^x (<immintrin.h>)
    src.write_text(skeleton.backward_source(
        lif, {"decay_input": True}, hard=True, detach=False,
        surrogate_derivative=surrogates.derivative_rule_for(
            surrogates.surrogate_token(S.Sigmoid()), False),
        has_gs=True, has_gh=False, has_gv=(True,), need=(True, True, True), dtype="float32"))
    built = []
    for name, with_header in (("a.so", header), ("b.so", None)):
        cmd = build.command(cc, flags, str(src), str(tmp_path / name), with_header)
        # -Winvalid-pch: gcc says so where it reads the header's text instead
        proc = subprocess.run([cmd[0], "-Winvalid-pch", *cmd[1:]], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"needs gcc with -march=native: {proc.stderr[-500:]}")
        assert ".gch" not in proc.stderr, proc.stderr[-2000:]
        built.append((tmp_path / name).read_bytes())
    assert built[0] == built[1]
    # a precompiled header cut short: gcc refuses it, the build goes on without it
    monkeypatch.setenv("SNNFUNC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "_pch", {})
    folder = build.pch_folder(cc, flags)
    folder.mkdir(parents=True)
    (folder / "snnfunc_sys.h").write_text(build._PCH_HEADER)
    (folder / "snnfunc_sys.h.gch").write_bytes((Path(header + ".gch")).read_bytes()[:1 << 20])
    proc = subprocess.run(build.command(cc, flags, str(src), str(tmp_path / "c.so"),
                                        str(folder / "snnfunc_sys.h")),
                          capture_output=True, text=True)
    assert proc.returncode != 0  # what the build below falls back from
    lib = build.build(build._PROBE + "int snn_pch_test(void) { return 7; }\n")
    assert lib.snn_pch_test() == 7
    assert build._pch[str(folder)] == str(folder / "snnfunc_sys.h")


# --------------------------------------------------------------------------- definitions


def _refuse(match, charge, **kw):
    with pytest.raises(snnfunc.DefinitionError, match=match):
        snnfunc.neuron(charge, **kw)


def test_definitions_the_generator_cannot_keep_exact_are_refused():
    def plus_equals(x, v, *, tau=2.0):
        v += x / tau
        return v

    def times_equals(x, v):
        v *= 0.5
        return v + x

    def number_state(x, i, v):
        return 0.0, v + x

    def mask_membrane(x, v):
        return v > x

    def relu_in_place(x, v):
        return torch.nn.functional.relu(v + x, inplace=True)

    def mixed_bounds(x, v, *, lo=0.0):
        return torch.clamp(v + x, min=lo, max=1.0)

    _refuse(r"in-place operator \+=", plus_equals)
    _refuse(r"in-place operator \*=", times_equals)
    _refuse(r"new value of state 'i' is the number 0.0.*full_like", number_state)
    _refuse(r"new value of state 'v' is a comparison \(a mask\)", mask_membrane)
    _refuse(r"relu\(inplace=True\)", relu_in_place)
    _refuse("both bounds as numbers or both as values", mixed_bounds)
    _refuse(r"on_spike's new value of state 'a' is the number 1.0",
            lambda x, v, a: (v + x, a), on_spike=lambda s, v, a: {"a": 1.0})
    _refuse("the threshold is a comparison", lambda x, v: v + x,
            threshold=lambda v, *, v_threshold: v > v_threshold)


def _registered():
    from snnfunc._core import registry

    return registry.registered()


@pytest.mark.parametrize("nrn", _registered(), ids=lambda n: n.name)
def test_the_reference_loop_never_changes_its_inputs(nrn):
    x = torch.rand(4, 3) * 2
    state = tuple(torch.rand(3) for _ in nrn.states)
    params = {n: torch.full((3,), 0.5 if d is None else float(d) or 0.5)
              for n, d in nrn.parameters.items()}
    before = [t.clone() for t in (x, *state, *params.values())]
    arg = state[0] if nrn.State is None else nrn.State(*state)
    nrn(x, arg, impl="reference", **params)
    nrn.step(x[0], arg, **params)
    for t, b in zip((x, *state, *params.values()), before):
        assert torch.equal(t, b), "the reference loop changed an argument"


def test_a_clamp_at_its_bound_differentiates_as_torch():
    x = 1.5 * torch.rand(32, 4, 10, dtype=torch.float64)
    grads = []
    for impl in ("fused", "reference"):
        t_ref = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
        xs = x.clone().requires_grad_(True)
        out = refractory(xs, t_ref=t_ref, impl=impl)
        loss = out.spikes.sum() + out.state.v.sum() + out.state.r.sum()
        grads.append(torch.autograd.grad(loss, (xs, t_ref)))
    for fused, ref in zip(*grads):
        torch.testing.assert_close(fused, ref)
