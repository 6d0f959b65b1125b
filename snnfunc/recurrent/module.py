"""The recurrent layer as a stateful module: `Recurrent`, over `rnn`."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from snnfunc._stateful import StatefulNode
from snnfunc.functional import lif
from snnfunc.recurrent.layer import _RESERVED, rnn

__all__ = ["Recurrent"]


class Recurrent(StatefulNode):
    r"""A recurrent spiking layer that holds its state between calls; see `rnn`.

    $I_t = X_t + W S_{t-1} + b$ with a learnable $W$ `[features, features]` and $b$,
    initialised as `torch.nn.Linear(features, features)` is, then the neuron. The input is the
    feed-forward current (put a `torch.nn.Linear(in, features)` before it). Like snnTorch's
    `RLeaky(beta, all_to_all=True, linear_features=features)` or SpikingJelly's
    `LinearRecurrentContainer(neuron, features, features)`.

    State (`self.state`, a `RecurrentState`, or `None` at rest) carries over between calls
    until `reset()` (which `snnfunc.nn.reset_net` calls). Under `torch.func.functional_call` or
    a `torch.func` transform the module starts from the state it holds and leaves it unchanged.

    Args:
      features: $N$, the number of neurons.
      neuron: the neuron function (`snnfunc.lif` by default; any neuron of the library).
      bias: learn a bias $b$ of the recurrent map.
      detach_recurrent: detach the spikes fed back from the graph.
      step_mode: `"m"` (default): `forward` takes `[T, B, N]`; `"s"`: one step `[B, N]`.
      batch_first: with `step_mode="m"`, inputs and spikes are `[B, T, N]`.
      **neuron_kwargs: the neuron's options (`tau=2.0`, `surrogate=ATan()`, ...). A
        `torch.nn.Parameter` among them (PLIF's `w`) is registered as a parameter of this
        module under its option's name.
    """

    def __init__(self, features: int, neuron: Callable = lif, *, bias: bool = True,
                 detach_recurrent: bool = False, step_mode: str = "m", batch_first: bool = False,
                 **neuron_kwargs):
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be a positive int, got {features!r}")
        if not callable(neuron):
            raise TypeError(f"neuron must be a neuron function such as snnfunc.lif, got "
                            f"{type(neuron).__name__}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        if not isinstance(detach_recurrent, bool):
            raise TypeError(f"detach_recurrent must be True or False, got {detach_recurrent!r}")
        for name in (*_RESERVED, "weight", "bias"):
            if name in neuron_kwargs:
                raise TypeError(f"{name}= is not a neuron option of Recurrent")
        self.features, self.neuron = features, neuron
        self.detach_recurrent = detach_recurrent
        self.weight = nn.Parameter(torch.empty(features, features))
        self.bias = nn.Parameter(torch.empty(features)) if bias else None
        self._params = []
        for name, value in list(neuron_kwargs.items()):
            if isinstance(value, nn.Parameter):
                self.register_parameter(name, value)
                self._params.append(name)
                del neuron_kwargs[name]
        self.neuron_kwargs = neuron_kwargs
        self.reset_parameters()
        self._init_stateful(step_mode, False, batch_first)

    def reset_parameters(self) -> None:
        """Weight and bias drawn as `torch.nn.Linear` draws them."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.features)
            nn.init.uniform_(self.bias, -bound, bound)

    def _run(self, x, state, sequence, record):
        x_seq = x if sequence else x[None]
        kwargs = dict(self.neuron_kwargs, **{name: getattr(self, name) for name in self._params})
        out = rnn(x_seq, state, weight=self.weight, bias=self.bias, neuron=self.neuron,
                  detach_recurrent=self.detach_recurrent, **kwargs)
        return (out.spikes if sequence else out.spikes[0]), out.state, None

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.neuron_kwargs.items())
        name = getattr(self.neuron, "__name__", repr(self.neuron))
        return (f"{self.features}, neuron={name}, bias={self.bias is not None}, "
                f"detach_recurrent={self.detach_recurrent}, step_mode={self.step_mode!r}{options}")
