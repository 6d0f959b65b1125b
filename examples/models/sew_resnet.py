"""SEW-ResNet-18 (Fang et al., NeurIPS 2021) for CIFAR-size inputs, built from snnfunc's adapters.

    import sys; sys.path.insert(0, "examples/models")
    from sew_resnet import sew_resnet18_cifar
    net = sew_resnet18_cifar(num_classes=10)          # IF neurons, ATan, detached reset
    logits = net(images.unsqueeze(0).repeat(4, 1, 1, 1, 1)).mean(0)   # T = 4: [T, B, 10] -> [B, 10]
    snnfunc.nn.reset_net(net)                          # between batches
    net = sew_resnet18_cifar(num_classes=10, low_memory=True)  # the same, in less memory

Spike-element-wise residual blocks: ``out = SN(BN(conv(SN(BN(conv(x)))))) + identity``
(``cnf="ADD"``), the identity a spiking 1x1 convolution where the shape changes. Every
layer takes time-major sequences ``[T, B, C, H, W]``: convolutions, batch norms and pooling
run on all steps at once through ``snnfunc.nn.TimeDistributed`` (time folded into the
batch), each neuron is an adapter in multi-step mode (one fused kernel over the T steps).

The CIFAR adjustments of the ImageNet network: the stem is a 3x3 convolution of stride 1
(not 7x7 of stride 2) and there is no max-pool after it, so a 32x32 image keeps 32x32 in the
first stage (32, 16, 8, 4 over the four stages).

``low_memory=True``: the same outputs and gradients bit for bit, in less memory: each batch
norm and the neuron after it run again in the backward pass (``snnfunc.memory.recompute``),
so that a training step keeps the convolution's output alone, not also batch norm's output
(the neuron's input); the downsampling branch (1x1 convolution, batch norm, neuron) keeps
nothing but its input, which the block's first convolution keeps anyway. Together with
``snnfunc.memory.packed_spikes()`` (spikes kept as bits, the blocks' sums of spikes as
bytes: ``snnfunc.memory.spike_counts``) it is what ``bench_networks.py`` measures as ``low
memory``. Under ``torch.compile`` the recomputation is left to the compiler.

The module names are SpikingJelly 2.0's (``spikingjelly.activation_based.model.sew_resnet``);
the only difference in the state dict is the ``.layer`` of each ``TimeDistributed``:
``load_spikingjelly_state_dict`` maps one onto the other.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from snnfunc import memory
from snnfunc import nn as snn
from snnfunc import surrogate

TD = snn.TimeDistributed


def if_node() -> nn.Module:
    """The SEW paper's neuron: IF, ATan surrogate, reset detached from the graph."""
    return snn.IFNode(surrogate=surrogate.ATan(), detach_reset=True, step_mode="m")


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def spiking(layers, x, low_memory: bool):
    """``layers`` (batch norm and a neuron, or a whole branch) on ``x``; with ``low_memory``
    run again in the backward pass instead of keeping what they keep for it (eager only:
    under ``torch.compile`` the compiler decides what is kept)."""
    if low_memory and not torch.compiler.is_compiling():
        return memory.recompute(nn.Sequential(*layers), x)
    for layer in layers:
        x = layer(x)
    return x


class BasicBlock(nn.Module):
    """Two spiking 3x3 convolutions and the spike-element-wise sum with the identity."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 neuron: Callable[[], nn.Module] = if_node, cnf: str = "ADD",
                 low_memory: bool = False):
        super().__init__()
        if cnf not in ("ADD", "AND", "IAND"):
            raise ValueError(f"cnf must be 'ADD', 'AND' or 'IAND', got {cnf!r}")
        self.conv1, self.bn1, self.sn1 = TD(conv3x3(inplanes, planes, stride)), TD(nn.BatchNorm2d(planes)), neuron()
        self.conv2, self.bn2, self.sn2 = TD(conv3x3(planes, planes)), TD(nn.BatchNorm2d(planes)), neuron()
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = TD(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(planes))
            self.downsample_sn = neuron()
        self.cnf, self.low_memory = cnf, low_memory

    def forward(self, x):
        out = spiking((self.bn1, self.sn1), self.conv1(x), self.low_memory)
        out = spiking((self.bn2, self.sn2), self.conv2(out), self.low_memory)
        identity = x if self.downsample is None else spiking(
            (self.downsample, self.downsample_sn), x, self.low_memory)
        # counts of spikes: kept as bytes where a layer keeps them under packed_spikes()
        if self.cnf == "ADD":
            return memory.spike_counts(identity + out)
        if self.cnf == "AND":
            return memory.spike_counts(identity * out)
        return memory.spike_counts(identity * (1.0 - out))  # IAND


class SEWResNet(nn.Module):
    """A SEW-ResNet over ``[T, B, 3, H, W]``; returns the logits of every step ``[T, B, classes]``."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes: int = 10,
                 neuron: Callable[[], nn.Module] = if_node, cnf: str = "ADD",
                 zero_init_residual: bool = False, low_memory: bool = False):
        super().__init__()
        self.low_memory = low_memory
        self.conv1, self.bn1, self.sn1 = TD(conv3x3(3, 64)), TD(nn.BatchNorm2d(64)), neuron()
        self.inplanes = 64
        self.layer1 = self._make_layer(64, layers[0], 1, neuron, cnf, low_memory)
        self.layer2 = self._make_layer(128, layers[1], 2, neuron, cnf, low_memory)
        self.layer3 = self._make_layer(256, layers[2], 2, neuron, cnf, low_memory)
        self.layer4 = self._make_layer(512, layers[3], 2, neuron, cnf, low_memory)
        self.avgpool = TD(nn.AdaptiveAvgPool2d((1, 1)))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's and SpikingJelly's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.layer.weight, 0)

    def _make_layer(self, planes, blocks, stride, neuron, cnf, low_memory):
        layers = [BasicBlock(self.inplanes, planes, stride, neuron, cnf, low_memory)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, 1, neuron, cnf, low_memory)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() != 5:
            raise ValueError(f"x_seq must be [T, B, 3, H, W], got shape {tuple(x_seq.shape)}")
        x = spiking((self.bn1, self.sn1), self.conv1(x_seq), self.low_memory)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(2))


def sew_resnet18_cifar(num_classes: int = 10, neuron: Callable[[], nn.Module] = if_node,
                       cnf: str = "ADD", **kwargs) -> SEWResNet:
    """SEW-ResNet-18 for 32x32 inputs; ``neuron()`` makes each spiking layer (an adapter in
    multi-step mode, IF with ATan and a detached reset by default); ``low_memory=True``: the
    same function in less memory (see the module's doc)."""
    return SEWResNet((2, 2, 2, 2), num_classes, neuron, cnf, **kwargs)


def load_spikingjelly_state_dict(net: nn.Module, state_dict: dict, strict: bool = True):
    """Load the state dict of SpikingJelly's model with the same module names into `net`:
    each ``TimeDistributed``'s ``.layer`` (``.layer.0``, ``.layer.1`` when it holds several
    layers, as the downsampling convolution and batch norm) is mapped onto SpikingJelly's name."""
    ours = {key.replace(".layer.", "."): key for key in net.state_dict()}
    mapped = {}
    for key, value in state_dict.items():
        if key not in ours:
            if strict:
                raise KeyError(f"{key} of the SpikingJelly state dict has no counterpart here")
            continue
        mapped[ours[key]] = value
    return net.load_state_dict(mapped, strict=strict)


def spikingjelly_sew_resnet18_cifar(num_classes: int = 10):
    """SpikingJelly 2.0's ``sew_resnet18`` with the same CIFAR adjustments (3x3 stem of
    stride 1, no max-pool), IF neurons with ATan and a detached reset, multi-step mode: the
    network `sew_resnet18_cifar()` computes, for comparisons (needs spikingjelly).

    SpikingJelly's module imports torchvision only for ``load_state_dict_from_url`` (its
    pretrained ImageNet weights), which is torch.hub's function: where torchvision is not
    installed, that one name is provided from torch.hub for the import, and removed after."""
    import importlib.util
    import sys
    import types

    shim = {}
    if "spikingjelly.activation_based.model.sew_resnet" not in sys.modules \
            and importlib.util.find_spec("torchvision") is None:
        utils = types.ModuleType("torchvision._internally_replaced_utils")
        utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        shim = {"torchvision": types.ModuleType("torchvision"),
                "torchvision._internally_replaced_utils": utils}
        sys.modules.update(shim)
    try:
        from spikingjelly.activation_based import functional, layer, neuron
        from spikingjelly.activation_based import surrogate as sj_surrogate
        from spikingjelly.activation_based.model import sew_resnet
    finally:
        for name in shim:
            sys.modules.pop(name, None)
    net = sew_resnet.sew_resnet18(cnf="ADD", num_classes=num_classes, spiking_neuron=neuron.IFNode,
                                  surrogate_function=sj_surrogate.ATan(), detach_reset=True)
    net.conv1 = layer.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    functional.set_step_mode(net, "m")
    return net
