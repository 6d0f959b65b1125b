"""A backend is one folder and one registration: a toy backend (tests/toy_backend, the
definition run step by step in torch) registered for CPU tensors, and the neuron functions
run on it, forward and backward, equal to the C kernels."""

import pytest
import torch

import snnfunc
from conftest import CPU_KERNELS
from snnfunc import surrogate as S


@CPU_KERNELS
@pytest.mark.parametrize("neuron,kw", [
    (snnfunc.lif, dict(tau=2.0, surrogate=S.ATan(2.5))),
    (snnfunc.alif, dict(tau=2.0, beta=0.4, v_reset=None)),
    (snnfunc.cuba_lif, dict(tau_syn=1.5, detach_reset=True)),
], ids=["lif", "alif", "cuba_lif"])
def test_the_neuron_functions_run_on_a_registered_backend(neuron, kw):
    import toy_backend

    torch.manual_seed(0)
    x = (2 * torch.rand(6, 3, 5, dtype=torch.float64)).requires_grad_(True)
    results = []
    for backend in ("c", "toy"):
        restore = toy_backend.install() if backend == "toy" else (lambda: None)
        try:
            before = dict(toy_backend.CALLS)
            out = neuron(x, impl="fused", return_h=True, **kw)
            state = out[1] if isinstance(out[1], torch.Tensor) else sum(out[1])
            (g,) = torch.autograd.grad(out.spikes.sum() + (state * 0.5).sum() + out.h.sum(), x)
            results.append((out.spikes, out.h, g))
            ran = {k: toy_backend.CALLS[k] - before[k] for k in before}
            assert ran == ({"forward": 1, "backward": 1} if backend == "toy"
                           else {"forward": 0, "backward": 0})
        finally:
            restore()
    (s_c, h_c, g_c), (s_t, h_t, g_t) = results
    assert torch.equal(s_c, s_t) and torch.equal(h_c, h_t)
    torch.testing.assert_close(g_c, g_t)
