"""What the neurons return: NamedTuples of tensors (they cross `vmap` and `torch.compile`).

One state `v`: `NeuronOutput(spikes, v)` over a sequence, `StepOutput(spike, v)` for one step;
several states: `StatesOutput(spikes, state)` and `StepStatesOutput(spike, state)`, `state` the
neuron's state NamedTuple. `...WithH` adds `h`, the membrane after charge and before reset;
`TraceOutput` the state after every step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class NeuronOutput(NamedTuple):
    """Result of a multi-step neuron: `spikes` `[T, *shape]` and the final state `v`."""

    spikes: torch.Tensor
    v: torch.Tensor


class NeuronOutputWithH(NamedTuple):
    """`NeuronOutput` plus `h` `[T, *shape]`, the voltage after charge and before reset."""

    spikes: torch.Tensor
    v: torch.Tensor
    h: torch.Tensor


class StepOutput(NamedTuple):
    """Result of one time step: `spike` and the next state `v`."""

    spike: torch.Tensor
    v: torch.Tensor


class StepOutputWithH(NamedTuple):
    """`StepOutput` plus `h`, the voltage after charge and before reset."""

    spike: torch.Tensor
    v: torch.Tensor
    h: torch.Tensor


class StatesOutput(NamedTuple):
    """Result of a multi-step neuron with several states: `spikes` `[T, *shape]` and the
    final `state`, the neuron's state NamedTuple (for example `CubaLIFState(i, v)`)."""

    spikes: torch.Tensor
    state: tuple


class StatesOutputWithH(NamedTuple):
    """`StatesOutput` plus `h` `[T, *shape]`, the membrane after charge and before reset."""

    spikes: torch.Tensor
    state: tuple
    h: torch.Tensor


class TraceOutput(NamedTuple):
    """Result with `return_states=True`: `spikes`, the final `state`, `h` (all `[T, *shape]`
    but the state) and `trace`, the state after every step (a tensor `[T, *shape]` for a
    neuron with the one state `v`, else the state NamedTuple of `[T, *shape]` tensors)."""

    spikes: torch.Tensor
    state: object
    h: torch.Tensor
    trace: object


class StepStatesOutput(NamedTuple):
    """Result of one step of a neuron with several states: `spike` and the next `state`."""

    spike: torch.Tensor
    state: tuple


class StepStatesOutputWithH(NamedTuple):
    """`StepStatesOutput` plus `h`, the membrane after charge and before reset."""

    spike: torch.Tensor
    state: tuple
    h: torch.Tensor
