"""Adapters of neurons made from a definition: `NeuronNode` for any of them (yours made with
`snnfunc.neuron` included), and `CubaLIFNode`, `ALIFNode`, `QIFNode`, `EIFNode` for the
library's; on the stateful base every adapter shares."""

from __future__ import annotations

import torch
from torch import nn

from snnfunc._stateful import StatefulNode, pick_surrogate
from snnfunc.definition import Neuron
from snnfunc.functional.defined import DEFINITIONS
from snnfunc.surrogate import Sigmoid

__all__ = ["NeuronNode", "CubaLIFNode", "ALIFNode", "QIFNode", "EIFNode"]


class NeuronNode(StatefulNode):
    """The adapter of any neuron made from a definition (`snnfunc.neuron`): holds its state
    between calls, `reset()`, the monitor and the two step modes, like the classic nodes.

    Parameters given as numbers stay numbers; a `torch.nn.Parameter` is registered (learned
    with the module); any other tensor is a buffer.

    Args:
      neuron: a `snnfunc.Neuron`, e.g. one made with `@snnfunc.neuron`.
      v_threshold: $V_{th}$.
      v_reset: $V_{reset}$ (hard reset), or `None` for the soft reset.
      surrogate: the surrogate spike function, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset from the graph.
      step_mode: `"s"` (one step per call) or `"m"` (`[T, ...]` per call, the default).
      monitor_state: record H and spikes per step in `self.monitor`.
      surrogate_function: SpikingJelly's name for `surrogate`.
      batch_first: with `step_mode="m"`, inputs and spikes are `[B, T, ...]`.
      **parameters: the neuron's parameters and options (`tau=3.0`, `decay_input=False`).
    """

    def __init__(self, neuron, *, v_threshold=1.0, v_reset=0.0, surrogate=None,
                 detach_reset=False, step_mode="m", monitor_state=False,
                 surrogate_function=None, batch_first=False, **parameters):
        super().__init__()
        if not isinstance(neuron, Neuron):
            raise TypeError(f"neuron must be a snnfunc.Neuron (made with @snnfunc.neuron), got "
                            f"{type(neuron).__name__}")
        surrogate = pick_surrogate(Sigmoid(), surrogate=surrogate,
                                   surrogate_function=surrogate_function)
        for name in parameters:
            if name not in neuron.parameters and name not in neuron.options:
                raise TypeError(f"{type(self).__name__} got an unexpected keyword argument "
                                f"{name!r}; {neuron.name} takes {(*neuron.parameters, *neuron.options)}")
        self.neuron = neuron
        self.v_threshold = v_threshold
        self.v_reset = None if v_reset is None else float(v_reset)
        self.surrogate = surrogate
        self.detach_reset = detach_reset
        self._numbers = {}
        for name, value in parameters.items():
            if isinstance(value, nn.Parameter):
                self.register_parameter(name, value)
            elif isinstance(value, torch.Tensor):
                self.register_buffer(name, value)
            else:
                self._numbers[name] = value
        self._init_stateful(step_mode, monitor_state, batch_first)

    def _kwargs(self):
        kw = dict(self._numbers)
        for name in (*self.neuron.parameters, *self.neuron.options):
            if name not in kw and hasattr(self, name):
                kw[name] = getattr(self, name)
        return dict(kw, v_threshold=self.v_threshold, v_reset=self.v_reset,
                    surrogate=self.surrogate, detach_reset=self.detach_reset)

    def _run(self, x, state, sequence, record):
        if sequence:
            out = self.neuron(x, state, return_h=record, **self._kwargs())
        else:
            out = self.neuron.step(x, state, return_h=record, **self._kwargs())
        return out[0], out[1], (out.h if record else None)

    def extra_repr(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self._numbers.items())
        return (f"{self.neuron.name}, {kw + ', ' if kw else ''}v_threshold={self.v_threshold!r}, "
                f"v_reset={self.v_reset!r}, surrogate={self.surrogate!r}, "
                f"step_mode={self.step_mode!r}")


def _defined(name):
    return DEFINITIONS[name]


class CubaLIFNode(NeuronNode):
    """Current-based LIF neuron (synaptic current and membrane); see `snnfunc.cuba_lif`.

    Args:
      tau_syn: synaptic time constant (> 0), a number or a tensor (an `nn.Parameter` to
        learn it).
      tau_mem: membrane time constant (> 0), likewise.
      decay_input: as for `snnfunc.cuba_lif`.
      **options: `v_threshold`, `v_reset`, `surrogate`, `detach_reset`, `step_mode`,
        `monitor_state`, as for `NeuronNode`.
    """

    def __init__(self, tau_syn=2.0, tau_mem=2.0, *, decay_input=True, **options):
        super().__init__(_defined("cuba_lif"), tau_syn=tau_syn, tau_mem=tau_mem,
                         decay_input=decay_input, **options)


class ALIFNode(NeuronNode):
    """Adaptive-threshold LIF neuron; see `snnfunc.alif`.

    Args:
      tau: membrane time constant (> 0).
      tau_adapt: adaptation time constant (> 0).
      beta: threshold increase per unit of adaptation.
      decay_input: as for `snnfunc.alif`.
      **options: `v_threshold`, `v_reset`, `surrogate`, `detach_reset`, `step_mode`,
        `monitor_state`, as for `NeuronNode`.
    """

    def __init__(self, tau=2.0, tau_adapt=20.0, beta=0.5, *, decay_input=True, **options):
        super().__init__(_defined("alif"), tau=tau, tau_adapt=tau_adapt, beta=beta,
                         decay_input=decay_input, **options)


class QIFNode(NeuronNode):
    """Quadratic integrate-and-fire neuron; see `snnfunc.qif`.

    Args:
      tau: membrane time constant (> 0).
      v_c: the critical voltage.
      a0: the sharpness of the quadratic term.
      **options: `v_threshold`, `v_reset`, `surrogate`, `detach_reset`, `step_mode`,
        `monitor_state`, as for `NeuronNode`.
    """

    def __init__(self, tau=2.0, v_c=0.8, a0=1.0, **options):
        super().__init__(_defined("qif"), tau=tau, v_c=v_c, a0=a0, **options)


class EIFNode(NeuronNode):
    """Exponential integrate-and-fire neuron; see `snnfunc.eif`.

    Args:
      tau: membrane time constant (> 0).
      delta_T: the sharpness (> 0).
      theta_rh: the rheobase threshold.
      **options: `v_threshold`, `v_reset`, `surrogate`, `detach_reset`, `step_mode`,
        `monitor_state`, as for `NeuronNode`.
    """

    def __init__(self, tau=2.0, delta_T=1.0, theta_rh=0.8, **options):
        super().__init__(_defined("eif"), tau=tau, delta_T=delta_T, theta_rh=theta_rh,
                         **options)
