"""Layers around the neurons: `TimeDistributed` (per-sample layers over `[T, batch, ...]`)
and `reset_net`."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TimeDistributed", "reset_net"]


def reset_net(net: nn.Module) -> None:
    """Call `reset()` on every module inside `net` that has one (SpikingFlow's `reset_net`)."""
    for module in net.modules():
        reset = getattr(module, "reset", None)
        if callable(reset):
            reset()


class TimeDistributed(nn.Module):
    """Runs per-sample layers (`Conv2d`, `BatchNorm2d`, `MaxPool2d`, ...) on every step of
    a `[T, batch, ...]` sequence at once, by folding time into the batch.

    `TimeDistributed(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8))` maps `[T, B, 1, H, W]` to
    `[T, B, 8, H-2, W-2]`. Layers that already accept extra leading dimensions (`Linear`)
    need no wrapper. Batch norm statistics are then taken over time and batch together.
    """

    def __init__(self, *layers: nn.Module):
        super().__init__()
        if not layers or not all(isinstance(m, nn.Module) for m in layers):
            raise TypeError("TimeDistributed takes one or more torch.nn.Module layers")
        self.layer = layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 2:
            raise ValueError("x_seq must be a time-major tensor [T, batch, ...]")
        y = self.layer(x_seq.flatten(0, 1))
        return y.unflatten(0, x_seq.shape[:2])
