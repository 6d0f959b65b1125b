"""Adapters under torch.compile(fullgraph=True): one compile for a whole training run with
reset_net between batches, in both step modes, equal to eager in losses and gradients."""

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from snnfunc import nn as snn

pytestmark = pytest.mark.compile


def _net(step_mode):
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), snn.LIFNode(2.0, 0.5, step_mode=step_mode),
        torch.nn.Linear(8, 3),
        snn.PLIFNode(param_shape=(3,), v_threshold=0.3, step_mode=step_mode))


def _train(forward, net, batches):
    losses, grads = [], []
    for x, y in batches:
        net.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(x).sum(0), y)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in net.parameters()])
        snn.reset_net(net)
    return losses, grads


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_three_batches_compile_once_and_equal_eager(step_mode):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(5, 4, 6, generator=g) * 2, torch.randint(0, 3, (4,), generator=g))
               for _ in range(3)]
    net = _net(step_mode)

    def run(x_seq):
        if step_mode == "m":
            return net(x_seq)
        return torch.stack([net(x) for x in x_seq.unbind(0)])  # a Python loop over T

    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(run, backend=counter, fullgraph=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        c_losses, c_grads = _train(compiled, net, batches)
    assert counter.frame_count == 1
    e_losses, e_grads = _train(run, net, batches)
    torch.testing.assert_close(torch.stack(c_losses), torch.stack(e_losses))
    for gc_, ge in zip(c_grads, e_grads):
        for a, b in zip(gc_, ge):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in e_grads[0])
    assert net[1].v == net[1].v_rest  # reset after the last batch


def test_a_channels_last_network_compiles_whole_and_stays_channels_last():
    """Channels-last steps are permuted (views) for the fused op and back, traced in one graph."""
    torch._dynamo.reset()
    torch.manual_seed(2)
    TD = snn.TimeDistributed
    net = torch.nn.Sequential(
        TD(torch.nn.Conv2d(2, 4, 3, padding=1)), snn.PLIFNode(2.0, step_mode="m"),
        TD(torch.nn.MaxPool2d(2)), TD(torch.nn.Conv2d(4, 4, 3, padding=1)),
        snn.IFNode(step_mode="m")).to(memory_format=torch.channels_last)
    x = (3 * torch.rand(3, 2, 6, 6, 2)).permute(0, 1, 4, 2, 3)  # [T, B, C, H, W], channels-last steps
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    outs, grads = [], []
    for forward in (compiled, net):
        snn.reset_net(net)
        net.zero_grad()
        out = forward(x)
        (out * torch.arange(out.numel()).view(out.shape).cos()).sum().backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in net.parameters()])
    assert outs[0].stride() == outs[1].stride() and outs[1].permute(0, 1, 3, 4, 2).is_contiguous()
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
