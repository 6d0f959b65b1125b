"""The SEW-ResNet-18 of examples/models, built from snnfunc's adapters, computes what
SpikingJelly 2.0's `sew_resnet18` (with the same CIFAR adjustments) computes with the same
weights: every spiking layer's spikes, the logits and the gradients."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from snnfunc import nn as snn

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def _sew():
    spec = importlib.util.spec_from_file_location("sew_resnet", MODELS / "sew_resnet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _spikingjelly():
    try:
        import spikingjelly.activation_based  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"spikingjelly is not importable ({exc}); pip install --no-deps spikingjelly==2.0.0")


def _record_spikes(net, kind):
    """Forward hooks that keep the output of every module of type `kind`, in call order."""
    seen = []
    for m in net.modules():
        if isinstance(m, kind):
            m.register_forward_hook(lambda mod, args, out: seen.append(out.detach().clone()))
    return seen


def test_sew_resnet18_shapes_and_reset():
    sew = _sew()
    net = sew.sew_resnet18_cifar(num_classes=10)
    x = torch.rand(2, 3, 3, 32, 32)
    out = net(x)
    assert out.shape == (2, 3, 10)
    assert sum(isinstance(m, snn.IFNode) for m in net.modules()) == 1 + 8 * 2 + 3  # stem, blocks, downsamples
    snn.reset_net(net)
    assert all(m.v == 0.0 for m in net.modules() if isinstance(m, snn.IFNode))
    with pytest.raises(ValueError, match=r"\[T, B, 3, H, W\]"):
        net(torch.rand(3, 3, 32, 32))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_sew_resnet18_equals_spikingjelly(mode):
    _spikingjelly()
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.neuron import IFNode as SJIFNode

    sew = _sew()
    torch.manual_seed(0)
    sj = sew.spikingjelly_sew_resnet18_cifar(num_classes=10)
    x = torch.rand(2, 3, 3, 32, 32)  # T = 2, batch 3
    if mode == "eval":  # running statistics of a batch, so that eval mode normalises too
        for m in sj.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 1.0
        with torch.no_grad():
            sj(torch.rand(2, 3, 3, 32, 32))
        functional.reset_net(sj)
    ours = sew.sew_resnet18_cifar(num_classes=10)
    sew.load_spikingjelly_state_dict(ours, sj.state_dict())  # strict: every key maps
    getattr(ours, mode)()
    getattr(sj, mode)()
    ours_spikes, sj_spikes = _record_spikes(ours, snn.IFNode), _record_spikes(sj, SJIFNode)

    y = torch.tensor([1, 4, 7])
    logits = ours(x)
    logits_sj = sj(x)
    functional.reset_net(sj)
    snn.reset_net(ours)

    assert len(ours_spikes) == len(sj_spikes) == 20
    for a, b in zip(ours_spikes, sj_spikes):
        assert torch.equal(a, b)  # the same spikes bit for bit
    rates = [s.mean().item() for s in ours_spikes]
    assert all(0.0 < r < 1.0 for r in rates), rates  # every layer fires, none saturates
    # the same convolutions, batch norms, pooling and linear layer on the same spikes:
    # the logits are bit for bit SpikingJelly's
    assert torch.equal(logits, logits_sj)

    loss = torch.nn.functional.cross_entropy(logits.mean(0), y)
    loss_sj = torch.nn.functional.cross_entropy(logits_sj.mean(0), y)
    loss.backward()
    loss_sj.backward()
    # the gradients agree to float rounding: the surrogate's derivative is evaluated by
    # different code (snnfunc's fused kernel, SpikingJelly's torch ops), so it rounds differently
    grads = dict(ours.named_parameters())
    names = {k.replace(".layer.", "."): k for k in grads}
    for name, p in sj.named_parameters():
        g, g_sj = grads[names[name]].grad, p.grad
        assert g is not None and g_sj is not None
        scale = g_sj.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(g, g_sj, rtol=1e-4, atol=1e-5 * scale, msg=name)


def _kept_bytes(fn):
    """The tensor memory `fn()` allocates and does not free (the profiler's record of every
    CPU allocation and free), in bytes: what a forward pass keeps for the backward pass."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cpu = torch.autograd.DeviceType.CPU
    return sum(e.nbytes() for e in prof.profiler.kineto_results.events()
               if e.name() == "[memory]" and e.device_type() == cpu)


def test_sew_resnet18_low_memory_same_gradients_less_memory():
    """low_memory=True: logits, gradients and running statistics bit for bit those of the
    plain model; its forward keeps less for the backward pass (batch norm's output and the
    downsampling branch's tensors not kept)."""
    sew = _sew()
    torch.manual_seed(0)
    plain = sew.sew_resnet18_cifar(num_classes=10)
    low = sew.sew_resnet18_cifar(num_classes=10, low_memory=True)
    low.load_state_dict(plain.state_dict())
    x = torch.rand(2, 2, 3, 16, 16)  # T = 2, batch 2
    y = torch.tensor([1, 4])
    loss, kept = {}, {}
    for net in (plain, low):
        snn.reset_net(net)
        kept[net] = _kept_bytes(lambda: loss.__setitem__(
            net, torch.nn.functional.cross_entropy(net(x).mean(0), y)))
        loss[net].backward()
    assert torch.equal(loss[plain], loss[low])
    for (name, a), b in zip(plain.named_parameters(), low.parameters()):
        assert a.grad is not None and torch.equal(a.grad, b.grad), name
    for a, b in zip(plain.buffers(), low.buffers()):
        assert torch.equal(a, b)
    # per block, of six tensors of one size (its input, two conv outputs, two batch norm
    # outputs, the first neuron's spikes) four kept, and of the downsampling branch's none
    assert kept[low] < 0.72 * kept[plain], (kept[low], kept[plain])
