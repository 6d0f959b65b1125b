"""Shapes a user means: batch-first inputs (`batch_first=True` on the neuron functions, rnn and
the adapters, read in place), inputs that are views (expanded over T, transposed) read by the
kernels without a copy, channels-last steps read in place and returned channels-last, and a
single-step adapter given what is a sequence."""

import warnings

import pytest
import torch

import snnfunc
from conftest import CPU_KERNELS
from registry import NEURONS
from snnfunc import nn as snn
from snnfunc._kernel.ops import x_rows

B, T, N = 3, 6, 4


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_batch_first_equals_time_major(name):
    multi, _, make = NEURONS[name]
    kw = make(N)
    torch.manual_seed(0)
    x = (2.5 * torch.rand(B, T, N, dtype=torch.float64)).requires_grad_(True)
    out = multi(x, batch_first=True, return_h=True, **kw)
    xt = x.detach().transpose(0, 1).contiguous().requires_grad_(True)
    ref = multi(xt, return_h=True, **kw)
    assert out.spikes.shape == (B, T, N) and torch.equal(out.spikes, ref.spikes.transpose(0, 1))
    assert torch.equal(out.h, ref.h.transpose(0, 1))
    (g,) = torch.autograd.grad(out.spikes.sum() + out.h.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.spikes.sum() + ref.h.sum(), xt)
    torch.testing.assert_close(g, g_ref.transpose(0, 1))


@CPU_KERNELS
@pytest.mark.parametrize("view", ["batch-first", "expanded over T", "time slice", "transposed"])
def test_views_are_read_in_place_and_equal_the_reference(view):
    torch.manual_seed(1)
    base = 2 * torch.rand(B, T, N)
    x = {"batch-first": base.transpose(0, 1), "expanded over T": base[:, 0].expand(T, B, N),
         "time slice": base.transpose(0, 1)[1:5], "transposed": base.permute(1, 2, 0)}[view]
    read = x_rows(x)[0]
    if view != "transposed":  # rows of contiguous values: read as they are
        assert read.data_ptr() == x.data_ptr() and read.stride() == x.stride()
    else:  # a step of scattered values: one contiguous copy
        assert read.is_contiguous()
    leaf = x.detach().requires_grad_(True) if view != "expanded over T" else None
    arg = leaf if leaf is not None else x
    out = snnfunc.lif(arg, tau=2.0, impl="fused")
    ref = snnfunc.lif(x.contiguous(), tau=2.0, impl="reference")
    assert torch.equal(out.spikes, ref.spikes) and torch.equal(out.v, ref.v)
    if leaf is not None:
        (g,) = torch.autograd.grad(out.spikes.sum() + out.v.sum(), leaf)
        xc = x.detach().contiguous().requires_grad_(True)
        r = snnfunc.lif(xc, tau=2.0, impl="reference")
        (g_ref,) = torch.autograd.grad(r.spikes.sum() + r.v.sum(), xc)
        torch.testing.assert_close(g, g_ref)


def _channels_last(x):
    """`[T, B, C, H, W]` with every step channels-last (channels innermost in memory)."""
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


@CPU_KERNELS
@pytest.mark.parametrize("name", sorted(NEURONS))
def test_channels_last_steps_are_read_in_place_and_stay_channels_last(name, monkeypatch):
    import snnfunc._kernel.ops as ops

    multi, _, make = NEURONS[name]
    kw = make(5)  # per-neuron parameters of shape [W]: broadcast along the last dimension
    params = [v.requires_grad_(True) for v in kw.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    torch.manual_seed(4)
    x = 2.5 * torch.rand(T, 2, 3, 4, 5, dtype=torch.float64)
    cl = _channels_last(x)
    assert not cl.is_contiguous() and torch.equal(cl, x)
    reads = []

    def spy(t):
        out = x_rows(t)
        reads.append(out[0].data_ptr() == t.data_ptr())
        return out

    monkeypatch.setattr(ops, "x_rows", spy)
    a = x.clone().requires_grad_(True)
    b = cl.detach().requires_grad_(True)
    ref = multi(a, return_h=True, return_states=True, **kw)
    out = multi(b, return_h=True, return_states=True, **kw)
    assert reads == [True, True]  # neither input copied for the kernels
    assert out.spikes.stride() == cl.stride() and out.h.stride() == cl.stride()
    assert torch.equal(out.spikes, ref.spikes) and torch.equal(out.h, ref.h)
    for got, want in zip(torch.utils._pytree.tree_leaves((out.state, out.trace)),
                         torch.utils._pytree.tree_leaves((ref.state, ref.trace))):
        assert torch.equal(got, want)
    loss = lambda o: (o.spikes * x.cos()).sum() + (o.h * x.sin()).sum()  # noqa: E731
    g, *gp = torch.autograd.grad(loss(out), [b, *params])
    g_ref, *gp_ref = torch.autograd.grad(loss(multi(a, return_h=True, **kw)), [a, *params])
    assert g.stride() == cl.stride()
    torch.testing.assert_close(g, g_ref)
    torch.testing.assert_close(gp, gp_ref)  # summed over the neurons in another order


def test_an_adapter_on_channels_last_steps_holds_its_state_channels_last():
    torch.manual_seed(5)
    x = 2 * torch.rand(T, 2, 3, 4, 5)
    a, b = (snn.PLIFNode(2.0, parametrization="sigmoid", step_mode="m") for _ in range(2))
    for chunk in x.split(3):  # the state carried over between two calls
        out = b(_channels_last(chunk))
        assert out.stride() == _channels_last(chunk).stride()
        assert torch.equal(out, a(chunk))
    assert torch.equal(a.v, b.v) and b.v.stride() == _channels_last(x)[0].stride()


def test_rnn_and_the_adapters_take_batch_first():
    torch.manual_seed(2)
    x = 2 * torch.rand(B, T, N)
    w = 0.5 * torch.randn(N, N)
    out = snnfunc.rnn(x, weight=w, batch_first=True)
    ref = snnfunc.rnn(x.transpose(0, 1), weight=w)
    assert torch.equal(out.spikes, ref.spikes.transpose(0, 1)) and out.state.spikes.shape == (B, N)
    for make in (lambda bf: snn.LIFNode(2.0, step_mode="m", batch_first=bf),
                 lambda bf: snn.CubaLIFNode(batch_first=bf),
                 lambda bf: snn.Recurrent(N, batch_first=bf)):
        torch.manual_seed(3)
        a = make(True)
        torch.manual_seed(3)
        b = make(False)
        assert torch.equal(a(x), b(x.transpose(0, 1)).transpose(0, 1))
    with pytest.raises(ValueError, match=r"\[B, T, N\] with batch_first=True"):
        snnfunc.rnn(torch.rand(T, N), weight=w, batch_first=True)


def test_a_single_step_adapter_given_a_sequence_says_how_to_switch():
    node = snn.LIFNode(2.0, step_mode="s")
    node(torch.rand(B, N))
    with pytest.raises(ValueError, match="single-step mode.*step_mode='m'"):
        node(torch.rand(T, B, N))
    fresh = snn.LIFNode(2.0)  # SpikingFlow's default single-step mode, at rest
    with pytest.warns(UserWarning, match="reads this 3-d input .* as one time step"):
        fresh(torch.rand(T, B, N))
    fresh.reset()
    with warnings.catch_warnings():  # once per adapter
        warnings.simplefilter("error")
        fresh(torch.rand(T, B, N))
        snn.LIFNode(2.0, step_mode="s")(torch.rand(T, B, N))  # meant: no warning


def test_a_one_dimensional_input_is_one_neuron_over_time():
    """Documented: x_seq [T] is one neuron (a 0-d state) over T steps."""
    x = torch.tensor([0.6, 0.6, 0.6, 0.0])
    out = snnfunc.if_(x)
    assert out.spikes.tolist() == [0.0, 1.0, 0.0, 0.0] and out.v.shape == ()
