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
    feed-forward current (put a `torch.nn.Linear(in, features)` before it), or, with
    `in_features`, the input itself and $X = x W_{in}^\top$ with a learnable
    `input_weight` $W_{in}$ `[features, in_features]` (initialised as
    `torch.nn.Linear(in_features, features)`'s weight is): the layer then computes $I$ in the
    place of $X$, one `[T, B, features]` tensor less alive at its peak than with a
    `torch.nn.Linear` before it. Like snnTorch's
    `RLeaky(beta, all_to_all=True, linear_features=features)` or SpikingJelly's
    `LinearRecurrentContainer(neuron, features, features)`; with `in_features`, like Norse's
    `LIFRecurrent(in_features, features)` or `torch.nn.RNN`.

    State (`self.state`, a `RecurrentState`, or `None` at rest) carries over between calls
    until `reset()` (which `snnfunc.nn.reset_net` calls). Under `torch.func.functional_call` or
    a `torch.func` transform the module starts from the state it holds and leaves it unchanged.

    Args:
      features: $N$, the number of neurons.
      neuron: the neuron function (`snnfunc.lif` by default; any neuron of the library).
      in_features: $M$, the size of an input the layer takes itself through its
        `input_weight`; `None` (default): the input is $X$, `[..., features]`.
      sparse_input: with `in_features`, the input is mostly 0 (spikes): its product as
        `snnfunc.nn.SpikeLinear` computes it (`rnn`'s `sparse_input`).
      sparse_recurrent: the recurrent product over the spikes as `SpikeLinear` computes it
        (`rnn`'s `sparse_recurrent`).
      bias: learn a bias $b$ of the recurrent map.
      detach_recurrent: detach the spikes fed back from the graph.
      step_mode: `"m"` (default): `forward` takes `[T, B, N]`; `"s"`: one step `[B, N]`.
      batch_first: with `step_mode="m"`, inputs and spikes are `[B, T, N]`.
      **neuron_kwargs: the neuron's options (`tau=2.0`, `surrogate=ATan()`, ...). A
        `torch.nn.Parameter` among them (PLIF's `w`) is registered as a parameter of this
        module under its option's name.
    """

    def __init__(self, features: int, neuron: Callable = lif, *, in_features: int | None = None,
                 sparse_input: bool = False, sparse_recurrent: bool = False, bias: bool = True,
                 detach_recurrent: bool = False,
                 step_mode: str = "m", batch_first: bool = False, **neuron_kwargs):
        super().__init__()
        for name, value in (("features", features), ("in_features", in_features)):
            if value is None and name == "in_features":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(sparse_input, bool):
            raise TypeError(f"sparse_input must be True or False, got {sparse_input!r}")
        if not isinstance(sparse_recurrent, bool):
            raise TypeError(f"sparse_recurrent must be True or False, got {sparse_recurrent!r}")
        if sparse_input and in_features is None:
            raise TypeError("sparse_input=True goes with in_features (the input product it "
                            "makes sparse); without it, put a snnfunc.nn.SpikeLinear before "
                            "the layer")
        if not callable(neuron):
            raise TypeError(f"neuron must be a neuron function such as snnfunc.lif, got "
                            f"{type(neuron).__name__}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        if not isinstance(detach_recurrent, bool):
            raise TypeError(f"detach_recurrent must be True or False, got {detach_recurrent!r}")
        for name in (*_RESERVED, "weight", "bias", "input_weight"):
            if name in neuron_kwargs:
                raise TypeError(f"{name}= is not a neuron option of Recurrent")
        self.features, self.neuron = features, neuron
        self.in_features, self.sparse_input = in_features, sparse_input
        self.sparse_recurrent = sparse_recurrent
        self.detach_recurrent = detach_recurrent
        self.weight = nn.Parameter(torch.empty(features, features))
        self.input_weight = (None if in_features is None else
                             nn.Parameter(torch.empty(features, in_features)))
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
        """Weights and bias drawn as `torch.nn.Linear` draws them."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.input_weight is not None:
            nn.init.kaiming_uniform_(self.input_weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.features)
            nn.init.uniform_(self.bias, -bound, bound)

    def _run(self, x, state, sequence, record):
        x_seq = x if sequence else x[None]
        kwargs = dict(self.neuron_kwargs, **{name: getattr(self, name) for name in self._params})
        out = rnn(x_seq, state, weight=self.weight, bias=self.bias,
                  input_weight=self.input_weight, sparse_input=self.sparse_input,
                  sparse_recurrent=self.sparse_recurrent,
                  neuron=self.neuron, detach_recurrent=self.detach_recurrent, **kwargs)
        return (out.spikes if sequence else out.spikes[0]), out.state, None

    def __setstate__(self, state):  # a layer pickled before it could hold an input weight
        super().__setstate__(state)
        self.__dict__.setdefault("in_features", None)
        self.__dict__.setdefault("sparse_input", False)
        self.__dict__.setdefault("sparse_recurrent", False)
        if "input_weight" not in self._parameters:
            self.__dict__.setdefault("input_weight", None)

    def _state_step(self, step):
        if self.in_features is None or not len(step):
            return step
        return torch.Size((*step[:-1], self.features))  # the input's [..., M] to [..., N]

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.neuron_kwargs.items())
        name = getattr(self.neuron, "__name__", repr(self.neuron))
        inputs = ("" if self.in_features is None else
                  f", in_features={self.in_features}, sparse_input={self.sparse_input}")
        if self.sparse_recurrent:
            inputs += ", sparse_recurrent=True"
        return (f"{self.features}, neuron={name}{inputs}, bias={self.bias is not None}, "
                f"detach_recurrent={self.detach_recurrent}, step_mode={self.step_mode!r}{options}")
