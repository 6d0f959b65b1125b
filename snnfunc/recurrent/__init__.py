r"""Recurrent spiking layers: a neuron whose previous spikes feed back into its input.

For an input sequence $X_1, \dots, X_T$ (shape `[T, B, N]`), a recurrent map $W$ (a weight
matrix `[N, N]` with an optional bias $b$, or any callable) and a neuron, every step computes

$$I_t = X_t + W S_{t-1} + b, \qquad (S_t, U_t) = \mathrm{neuron}(I_t, U_{t-1}),$$

where $U$ is the neuron's state (a tensor, or a NamedTuple of tensors for neurons with several
state variables) and $S_0 = 0$ unless given (so the first step's input is $X_1 + b$). This is
snnTorch's `RLeaky`/`RSynaptic` with `all_to_all=True` and SpikingJelly's
`LinearRecurrentContainer` around a neuron, for every neuron of snnfunc.

- `rnn(x_seq, state, weight=..., neuron=snnfunc.lif, **neuron_kwargs)` is the function: it
  returns the spikes and a `RecurrentState(neuron, spikes)` to continue from.
- `Recurrent(features, neuron=snnfunc.lif, ...)` is the stateful module (a learnable weight
  and bias, the state held between calls, `reset()`), also `snnfunc.nn.Recurrent`.

With a weight tensor (or a `torch.nn.Linear`) and a neuron made from a definition (the
library's neuron functions and those made with `snnfunc.neuron`), the whole time loop is one
custom operator, `torch.ops.snnfunc.rnn_forward`, with a BPTT backward operator
(`snnfunc.recurrent.operator`): `torch.compile` sees one node whatever T, `vmap` batches it,
and it runs the neuron's fused kernels one step at a time on every device with a backend, in
every dtype they take. Any other neuron function, or any other callable map, runs as a Python
loop of the same calls (unrolled under `torch.compile`).

Any neuron that follows the library's protocol works: `neuron(x_seq, state, **kwargs)`
returns `(spikes, state)` with `state` a tensor or a NamedTuple of tensors of the shape of one
time step, and `state=None` means rest.
"""

from snnfunc.recurrent.layer import RecurrentOutput, RecurrentState, rnn
from snnfunc.recurrent.module import Recurrent

__all__ = ["RecurrentOutput", "RecurrentState", "Recurrent", "rnn"]
