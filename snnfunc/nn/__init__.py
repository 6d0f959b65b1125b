"""Stateful adapters: SpikingFlow's class interface (its `softbp` neurons: `IFNode`,
`LIFNode`, `PLIFNode`, `RIFNode`), adapters of every neuron made from a definition
(`NeuronNode`, `CubaLIFNode`, `ALIFNode`, `QIFNode`, `EIFNode`), the recurrent layer
(`Recurrent`), `TimeDistributed`, `reset_net`, and `SpikeLinear` (`torch.nn.Linear` that
skips the zeros of its input, `snnfunc.sparse`).

An adapter holds its state between calls and nothing else: every computation is one call into
`snnfunc.functional` (the equations are documented there). All of them share one base,
`StatefulNode`: the state, `reset()`, the monitor, the two step modes (`step_mode="s"`:
`forward(x)` is one time step; `"m"`: `forward(x_seq)` runs `[T, ...]`), and the rule that
keeps them pure: state is written back only in a plain call, not under
`torch.func.functional_call` or a `torch.func` transform.
"""

from snnfunc._stateful import StatefulNode
from snnfunc.nn.layers import TimeDistributed, reset_net
from snnfunc.nn.neurons import ALIFNode, CubaLIFNode, EIFNode, NeuronNode, QIFNode
from snnfunc.nn.spikingflow import BaseNode, IFNode, LIFNode, PLIFNode, RIFNode
from snnfunc.recurrent import Recurrent
from snnfunc.sparse import SpikeLinear

__all__ = ["StatefulNode", "BaseNode", "IFNode", "LIFNode", "PLIFNode", "RIFNode", "NeuronNode",
           "CubaLIFNode", "ALIFNode", "QIFNode", "EIFNode", "Recurrent", "TimeDistributed",
           "reset_net", "SpikeLinear"]
