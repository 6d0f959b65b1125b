r"""Exact export to and import from NIR, the Neuromorphic Intermediate Representation.

`to_nir(module, sample_input, dt=1.0)` writes a `torch.nn.Sequential` of `torch.nn` layers
and snnfunc adapters as a `nir.NIRGraph` (the sample time-major `[T, batch, ...]` or one step
`[batch, ...]`); `from_nir(graph_or_path, dt=1.0, dtype=torch.float32)` builds a time-major
module from one. Needs the `nir` package (`pip install "snnfunc[nir]"`).

NIR's neurons are continuous-time equations; a network runs them with forward Euler at a step
`dt`, one input sample per step. With $k = dt/\tau$, one step of NIR's LIF is

$$H_t = V_{t-1} + k\,\big((v_{leak} - V_{t-1}) + r\,I_t\big),\quad
Z_t = [H_t > v_{threshold}],\quad V_t = Z_t\,v_{reset} + (1 - Z_t)\,H_t$$

which is snnfunc's charge, fire and reset with these parameters (`decay_input` picks `r`):

| snnfunc | NIR |
|---|---|
| `IFNode` | `IF(r=1/dt)` |
| `LIFNode(tau)`, decay_input=True | `LIF(tau=tau*dt, r=1, v_leak=v_reset)` |
| `LIFNode(tau)`, decay_input=False | `LIF(tau=tau*dt, r=tau, v_leak=v_reset)` |
| `PLIFNode` (k = w or sigmoid(w)) | as LIF with `tau = 1/k` (the learned value, exported) |
| `RIFNode(w)`, every w < 0 | `LIF(tau=-dt/w, r=-1/w, v_leak=v_reset)`; all w = 0: IF |
| `v_threshold` θ (fires at H ≥ θ) | `v_threshold` = the largest float below θ (fires at > θ) |
| `v_reset` (hard reset) | `v_reset` |

NIR fires at $H > v_{threshold}$, snnfunc at $H \ge \theta$. In floating point
$H \ge \theta \iff H > \mathrm{nextafter}(\theta, -\infty)$, so the export writes that
threshold (in the sample input's dtype) and the import fires at
$H \ge \mathrm{nextafter}(v_{threshold}, +\infty)$ in the dtype it runs in: both directions are
exact. `exact_threshold=False` writes θ itself (spikes then differ where $H = θ$ exactly).

Not representable, so refused with an error naming the layer: the soft reset
(`v_reset=None`: NIR resets *to* `v_reset`), a `RIFNode` with a positive or mixed-sign
self-weight, max pooling, batch norm (fold it into the layer before it first), padding other
than zeros. `detach_reset` and the surrogate only shape gradients and are not exported.

The imported module takes `[T, batch, ...]`, starts from rest at every call (`v = v_leak`
for LIF, LI and CubaLIF, `v = v_reset` for IF, 0 for the integrator and synaptic currents)
and returns the output node's `[T, batch, ...]`. Its weights are parameters of the `dtype`
given to `from_nir` (float32 by default, whatever the file stores, integers included).
Neuron parameters of any shape that broadcasts to the neurons (0-d included) are accepted.
When `v_leak` equals a single `v_reset`, the import evaluates exactly the Euler step above,
in that order; otherwise it runs in the shifted variable $U = V - v_{reset}$, equal up to
rounding. CubaLIF updates its synaptic current first,
$I_t = I_{t-1} + (dt/\tau_{syn})((0 - I_{t-1}) + w_{in} S_t)$, and drives the membrane with
$I_t$.

Graphs with cycles import: an edge that closes a cycle (a back edge, found by a depth-first
walk from the Input nodes, `NIRNetwork.back_edges`) carries its source's value from the
previous step, zero at step 0, as nirtorch and Norse run such graphs. Each cycle runs step by
step; the rest of the graph runs over the whole sequence. Nested `NIRGraph` nodes are inlined
(`"<subgraph>.<node>"`), `Delay` shifts by `delay / dt` whole steps, and a graph with several
Input or Output nodes takes and returns dicts by node name. `to_nir(imported_network)` writes
an imported network back (flat, with its current weights).
"""

from __future__ import annotations

from snnfunc.nir.export import to_nir
from snnfunc.nir.network import NIRNetwork, from_nir

# pickles written while snnfunc.nir was one module name these as snnfunc.nir._Neuron, ...
from snnfunc.nir.layers import _Delay, _Flatten, _Neuron, _Scale, _Threshold  # noqa: F401

__all__ = ["to_nir", "from_nir", "NIRNetwork"]
