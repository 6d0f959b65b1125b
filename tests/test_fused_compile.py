"""The fused op under torch.compile: one node whatever T, no recompile when T changes."""

import subprocess
import sys

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import snnfunc
from conftest import CPU_KERNELS
from snnfunc import surrogate as S

pytestmark = [
    pytest.mark.compile,
    CPU_KERNELS,
]


def test_graph_size_does_not_grow_with_T():
    sizes = {}

    def backend(gm, example_inputs):
        sizes[example_inputs[0].shape[0]] = len(gm.graph.nodes)
        return gm.forward

    torch._dynamo.reset()
    sg = S.ATan()  # made outside: torch 2.11 hands the kernels none made inside
    f = torch.compile(lambda x: snnfunc.plif(x, w=0.5, surrogate=sg).spikes,
                      backend=backend, fullgraph=True, dynamic=False)
    for T in (4, 64):
        f(torch.rand(T, 3))
    assert sizes[4] == sizes[64] < 20, sizes


def _compiled_over_T(net, params):
    """Compiles `net(x, impl)` with a dynamic T and runs it at T = 3, 9, 40 against the
    reference loop (outputs equal, gradients to rounding); the frames compiled after each T."""
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(net, backend=counter, fullgraph=True, dynamic=True)
    frames = []
    for T in (3, 9, 40):
        x = torch.rand(T, 2, 5) * 2
        out = compiled(x)
        ref = net(x, impl="reference")
        assert torch.equal(out, ref)
        got = torch.autograd.grad(out.sum(), params)
        want = torch.autograd.grad(ref.sum(), params)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        frames.append(counter.frame_count)
    return frames, counter


def test_changing_T_does_not_recompile_and_equals_reference():
    torch._dynamo.reset()
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(5, 6), torch.nn.Linear(6, 3)
    w = torch.nn.Parameter(torch.full((3,), 0.5))

    def net(x, impl="auto"):
        s = snnfunc.lif(fc1(x), tau=2.0, v_threshold=0.3, impl=impl).spikes
        return snnfunc.plif(fc2(s), w=w, v_threshold=0.2, impl=impl).spikes

    frames, counter = _compiled_over_T(net, [fc1.weight, fc1.bias, fc2.weight, fc2.bias, w])
    # the first compile may restart its analysis once (torch 2.11 and 2.15: the defaults'
    # floats, symbolic under dynamic=True, specialized); then a new T compiles nothing
    assert frames[0] == frames[1] == frames[2] <= 2, frames


FIRST_CALL_COMPILED = """
import torch, snnfunc
from torch._dynamo.testing import CompileCounter
count = CompileCounter()
f = torch.compile(lambda x: snnfunc.lif(x, tau=2.0).spikes, backend=count, fullgraph=True,
                  dynamic=True)
for T in (3, 5, 9):
    f(torch.rand(T, 2, 4))
print(count.frame_count)
"""


def test_a_process_whose_first_neuron_call_is_compiled_compiles_it_once():
    # (a fresh process: in this one the C backend has run already) The backend's ops were
    # loaded on first use: a first call traced by Dynamo loaded them, guarded on them not
    # being loaded, and compiled again on the next call.
    out = subprocess.run([sys.executable, "-c", FIRST_CALL_COMPILED], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1", out.stdout + out.stderr


def test_neurons_made_from_definitions_compile_once_for_every_T():
    """cuba_lif and alif (generated kernels) in a network: one graph for three values of T,
    equal to the reference loop."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(5, 6), torch.nn.Linear(6, 3)
    tau = torch.nn.Parameter(torch.full((6,), 2.0))

    def net(x, impl="auto"):
        s = snnfunc.cuba_lif(fc1(x), tau_syn=tau, tau_mem=1.5, v_threshold=0.3, impl=impl).spikes
        return snnfunc.alif(fc2(s), beta=0.2, v_threshold=0.2, impl=impl).spikes

    frames, counter = _compiled_over_T(net, [fc1.weight, fc1.bias, fc2.weight, tau])
    # the first compile restarts its analysis once (Dynamo's scalar tensorification), then
    # a new T compiles nothing
    assert frames[0] == frames[1] == frames[2] <= 2, frames
    assert max(len(g.graph.nodes) for g in counter.graphs) < 80


@pytest.mark.parametrize("by_id", [False, True], ids=["as-is", "by-id"])
def test_a_surrogate_reaches_the_kernels_under_compile(monkeypatch, by_id):
    """The surrogate reaches the functions torch.compile runs at trace time as it gives it:
    the object itself, or its id (`by_id`: torch 2.11's way, tried on this torch too), where one
    made inside the compiled function runs the reference loop (impl="fused" says why)."""
    from snnfunc._kernel import dispatch

    monkeypatch.setattr(dispatch, "_BY_ID", by_id or dispatch._BY_ID)
    torch.manual_seed(0)
    x = torch.rand(6, 2, 5, requires_grad=True)
    sg = S.ATan(alpha=3.0)
    want = snnfunc.lif(x, tau=2.0, surrogate=sg)
    want_g, = torch.autograd.grad(want.spikes.sum() + want.v.sum(), x)
    calls = [lambda x, impl: snnfunc.lif(x, tau=2.0, surrogate=sg, impl=impl)]
    if dispatch._BY_ID:
        calls.append(lambda x, impl: snnfunc.lif(x, tau=2.0, surrogate=S.ATan(alpha=3.0),
                                                 impl=impl))
    for call in calls:
        torch._dynamo.reset()
        out = torch.compile(lambda x: call(x, "auto"), fullgraph=True)(x)
        assert torch.equal(out.spikes, want.spikes)
        got_g, = torch.autograd.grad(out.spikes.sum() + out.v.sum(), x)
        torch.testing.assert_close(got_g, want_g)
    if dispatch._BY_ID:
        torch._dynamo.reset()
        with pytest.raises(Exception, match="surrogate made inside the compiled function"):
            torch.compile(lambda x: calls[1](x, "fused"), fullgraph=True)(x)


def test_a_surrogate_made_inside_the_compiled_function_keeps_its_fields():
    """Dynamo hands the kernels' constant functions a stand-in for a surrogate made while it
    traces, without its fields: such a call runs the reference loop, with ATan(alpha=3)'s
    gradient, not the class default's."""
    from snnfunc import surrogate as S

    x = (torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) * 2).requires_grad_(True)

    def f(x):
        return snnfunc.lif(x, surrogate=S.ATan(alpha=3.0)).spikes

    def grad_of(out):
        return torch.autograd.grad(out.sum(), x)[0]

    want = grad_of(snnfunc.lif(x, surrogate=S.ATan(alpha=3.0), impl="reference").spikes)
    default = grad_of(snnfunc.lif(x, surrogate=S.ATan(), impl="reference").spikes)
    assert not torch.equal(want, default)
    got = grad_of(torch.compile(f, backend="aot_eager", fullgraph=True)(x))
    torch.testing.assert_close(got, want)
