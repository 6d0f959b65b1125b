"""torch.compile(fullgraph=True) of functional networks: equal to eager, no graph break.

Compiling is slow on 2 cores, so this file holds few, small graphs."""

import pytest
import torch

import snnfunc
from snnfunc import surrogate as S

pytestmark = pytest.mark.compile


class TwoLayer(torch.nn.Module):
    """Linear -> LIF -> Linear -> PLIF, written with the pure functions."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 8)
        self.fc2 = torch.nn.Linear(8, 3)
        self.w = torch.nn.Parameter(torch.tensor([0.5, 0.4, 0.6]))

    def forward(self, x_seq):
        s1 = snnfunc.lif(self.fc1(x_seq), tau=2.0, v_threshold=0.3, surrogate=S.ATan()).spikes
        out = snnfunc.plif(self.fc2(s1), w=self.w, v_reset=None, v_threshold=0.2, return_h=True)
        return out.spikes, out.h


def test_two_layer_network_compiled_equals_eager():
    torch._dynamo.reset()
    net = TwoLayer()
    x = torch.rand(4, 5, 6) * 2
    compiled = torch.compile(net, fullgraph=True)

    def run(f):
        net.zero_grad()
        spikes, h = f(x)
        (spikes.sum() + (h**2).mean()).backward()
        return spikes.detach(), h.detach(), [p.grad.clone() for p in net.parameters()]

    s_e, h_e, g_e = run(net)
    s_c, h_c, g_c = run(compiled)
    assert torch.equal(s_e, s_c)
    torch.testing.assert_close(h_e, h_c)
    for a, b in zip(g_e, g_c):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert s_e.sum() > 0 and any(g.abs().sum() > 0 for g in g_e)
