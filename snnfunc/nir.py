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
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import torch
from torch import nn

import snnfunc
from snnfunc import nn as snn
from snnfunc.surrogate import Sigmoid, Surrogate, spike

__all__ = ["to_nir", "from_nir", "NIRNetwork"]


def _nir():
    try:
        import nir
    except ImportError as err:  # pragma: no cover - exercised only without nir
        raise ImportError(
            "snnfunc.nir needs the 'nir' package: pip install \"snnfunc[nir]\" (or pip install nir)"
        ) from err
    return nir


def _check_dt(dt) -> float:
    if not isinstance(dt, numbers.Real) or isinstance(dt, bool) or not dt > 0 or not math.isfinite(dt):
        raise ValueError(f"dt must be a positive finite number (the Euler step), got {dt!r}")
    return float(dt)


# ----------------------------------------------------------------------------------- export


def to_nir(module: nn.Module, sample_input: torch.Tensor, *, dt: float = 1.0,
           exact_threshold: bool = True, per_neuron: bool = True, time_major: bool | None = None):
    """Export `module` to a `nir.NIRGraph`.

    Args:
      module: a `torch.nn.Sequential` (nested ones and `snnfunc.nn.TimeDistributed` too) of
        `Linear`, `Conv1d`, `Conv2d`, `Flatten`, `AvgPool2d`, `Identity`, `Dropout` and the
        adapters `IFNode`, `LIFNode`, `PLIFNode`, `RIFNode`; or one such layer.
      sample_input: a time-major `[T, batch, ...]` input, or one step of it, `[batch, ...]`
        (what snnTorch's and Norse's exporters take: `to_nir(net, x[0])`); its step shape and
        dtype fix the graph's shapes and the dtype of the written parameters. Nothing is run on
        the neurons and no adapter state changes.
      dt: the Euler step the graph's time constants are written for.
      exact_threshold: write the threshold as the largest float below `v_threshold`, so NIR's
        strict `>` fires exactly where snnfunc's `>=` does (see the module docs).
      per_neuron: write every neuron parameter with one value per neuron (what most NIR
        consumers expect). `False` keeps each parameter's own shape: a number becomes a 0-d
        value (stored as a NumPy scalar, which `nir.write` can write and `nir.read` reads
        back), a per-channel tensor stays `[C, 1, 1]`.
      time_major: whether `sample_input` is `[T, batch, ...]` (True) or one step (False).
        `None` reads it from the rank the first `Linear`, `Conv1d`, `Conv2d` or `AvgPool2d`
        needs (past neurons, `Identity` and `Dropout`): one step is 2-d `[batch, features]`,
        3-d or 4-d `[batch, channels, ...]`. Where no such layer comes first (a `Flatten`,
        only neurons), a 2-d sample is one step and any other time-major.

    Returns:
      The `nir.NIRGraph`, with one `Input` and one `Output` node.

    Raises:
      ValueError: a layer NIR cannot represent exactly (soft reset, RIF with w > 0, ...),
        named in the message.
      TypeError: a layer type that has no NIR node (max pooling, batch norm, ...).
    """
    nir = _nir()
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(sample_input, torch.Tensor) or sample_input.dim() < 2 \
            or not sample_input.is_floating_point() or sample_input.shape[0] < 1:
        raise ValueError(
            "sample_input must be a floating tensor, time-major [T, batch, ...] with T >= 1 or "
            "one step [batch, ...], got "
            + (f"shape {tuple(sample_input.shape)}, dtype {sample_input.dtype}"
               if isinstance(sample_input, torch.Tensor) else type(sample_input).__name__))
    for flag, value in (("exact_threshold", exact_threshold), ("per_neuron", per_neuron)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    if time_major is not None and not isinstance(time_major, bool):
        raise TypeError(f"time_major must be True, False or None, got {time_major!r}")
    dt = _check_dt(dt)

    layers = list(_leaves(module, ""))
    if time_major is None:
        time_major = not _is_one_step(layers, sample_input)
    x = sample_input[0] if time_major else sample_input
    nodes = {"input": nir.Input(input_type=np.array(x.shape[1:]))}
    edges, prev = [], "input"
    with torch.no_grad():
        for name, layer in layers:
            node, x = _export_layer(nir, name, layer, x, dt, exact_threshold, per_neuron)
            if node is None:
                continue
            nodes[name] = node
            edges.append((prev, name))
            prev = name
    nodes["output"] = nir.Output(output_type=np.array(x.shape[1:]))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False)


def _is_one_step(layers, sample):
    """Whether `sample` is one step `[batch, ...]`, by the rank its first fixed layer needs."""
    ranks = ((nn.Linear, 2), (nn.Conv1d, 3), (nn.Conv2d, 4), (nn.AvgPool2d, 4))
    for _, layer in layers:
        for cls, rank in ranks:
            if isinstance(layer, cls):
                return sample.dim() == rank
        if not isinstance(layer, (snn.BaseNode, nn.Identity, nn.Dropout)):
            break
    return sample.dim() == 2  # [T, batch] alone would have no features


def _leaves(module, prefix):
    if isinstance(module, snn.TimeDistributed):  # the layers see one step [B, ...] here
        module = module.layer
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}.{name}" if prefix else name)
    else:
        yield prefix or type(module).__name__.lower(), module


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", copy=True).numpy()


def _export_layer(nir, name, layer, x, dt, exact_threshold, per_neuron):
    where = f"layer {name!r} ({type(layer).__name__})"
    if isinstance(layer, (nn.Identity, nn.Dropout)):
        return None, x
    if isinstance(layer, snn.BaseNode):
        return _export_neuron(nir, where, layer, x, dt, exact_threshold, per_neuron), x
    if isinstance(layer, nn.Linear):
        w = _np(layer.weight)
        node = nir.Linear(weight=w) if layer.bias is None else nir.Affine(weight=w, bias=_np(layer.bias))
        return node, layer(x)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        if layer.padding_mode != "zeros":
            raise ValueError(f"{where}: NIR convolutions pad with zeros; got padding_mode="
                             f"{layer.padding_mode!r}")
        conv = nir.Conv1d if isinstance(layer, nn.Conv1d) else nir.Conv2d
        bias = np.zeros(layer.out_channels, dtype=_np(layer.weight).dtype) if layer.bias is None \
            else _np(layer.bias)
        padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
        spatial = tuple(x.shape[2:])
        node = conv(input_shape=spatial[0] if conv is nir.Conv1d else spatial,
                    weight=_np(layer.weight), stride=tuple(layer.stride), padding=padding,
                    dilation=tuple(layer.dilation), groups=layer.groups, bias=bias)
        return node, layer(x)
    if isinstance(layer, nn.Flatten):
        start, end = layer.start_dim, layer.end_dim
        start = start if start >= 0 else start + x.dim()
        end = end if end >= 0 else end + x.dim()
        if start == 0:
            raise ValueError(f"{where}: flattening the batch dimension is not a per-sample "
                             f"operation NIR can express; use start_dim >= 1")
        # dims of one sample (no batch); end_dim negative, as snnTorch and Sinabs write it
        return nir.Flatten(input_type={"input": np.array(x.shape[1:])}, start_dim=start - 1,
                           end_dim=end - x.dim()), layer(x)
    if isinstance(layer, nn.AvgPool2d):
        if layer.ceil_mode or layer.divisor_override is not None or (
                not layer.count_include_pad and _pair(layer.padding) != (0, 0)):
            raise ValueError(f"{where}: NIR's AvgPool2d has no ceil_mode, divisor_override or "
                             f"count_include_pad=False with padding")
        stride = layer.kernel_size if layer.stride is None else layer.stride
        return nir.AvgPool2d(kernel_size=np.array(_pair(layer.kernel_size)),
                             stride=np.array(_pair(stride)),
                             padding=np.array(_pair(layer.padding))), layer(x)
    if isinstance(layer, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        raise TypeError(f"{where}: NIR has no max pooling; use AvgPool2d to export")
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"{where}: NIR has no batch norm; fold it into the layer before it "
                        f"(torch.nn.utils.fusion.fuse_conv_bn_eval / fuse_linear_bn_eval)")
    raise TypeError(
        f"{where}: not exportable. to_nir exports nn.Sequential networks of Linear, Conv1d, "
        f"Conv2d, Flatten, AvgPool2d, Identity, Dropout and snnfunc.nn IFNode, LIFNode, "
        f"PLIFNode, RIFNode")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _export_neuron(nir, where, node, x, dt, exact_threshold, per_neuron):
    shape = tuple(x.shape[1:])
    np_dtype = _np(x.new_zeros(())).dtype
    if node.v_reset is None:
        raise ValueError(
            f"{where}: the soft reset (v_reset=None) subtracts v_threshold on a spike, but NIR's "
            f"IF and LIF reset to v_reset; the network cannot be exported exactly. Use a hard "
            f"reset (v_reset=<number>)")
    theta = np.asarray(node.v_threshold, dtype=np_dtype)
    if exact_threshold:
        theta = np.nextafter(theta, np.asarray(-np.inf, dtype=np_dtype))
    params = dict(v_threshold=theta, v_reset=node.v_reset)

    if isinstance(node, snn.IFNode):
        cls, params["r"] = nir.IF, 1.0 / dt
    elif isinstance(node, snn.LIFNode):
        tau = float(node.tau)
        cls = nir.LIF
        params.update(tau=tau * dt, r=1.0 if node.decay_input else tau, v_leak=node.v_reset)
    elif isinstance(node, snn.PLIFNode):
        w = node.w.detach().to("cpu", torch.float64)
        k = w if node.parametrization == "reciprocal" else torch.sigmoid(w)
        _broadcast_param(where, "w", k, shape)
        k = k.numpy()
        if not (k > 0).all():
            raise ValueError(f"{where}: 1/tau must be > 0 to export as a NIR LIF; got min "
                             f"{k.min()}")
        cls = nir.LIF
        params.update(tau=dt / k, r=1.0 if node.decay_input else 1.0 / k, v_leak=node.v_reset)
    elif isinstance(node, snn.RIFNode):
        w = node.w.detach().to("cpu", torch.float64)
        _broadcast_param(where, "w", w, shape)
        w = w.numpy()
        if (w == 0).all():
            cls, params["r"] = nir.IF, 1.0 / dt
        elif (w < 0).all():
            cls = nir.LIF
            params.update(tau=-dt / w, r=-1.0 / w, v_leak=node.v_reset)
        else:
            raise ValueError(
                f"{where}: RIF's self-weight w is a leak only when w < 0 (NIR LIF with tau = "
                f"-dt/w) and an IF when w = 0; got w in [{w.min()}, {w.max()}], which NIR cannot "
                f"express")
    else:
        raise TypeError(f"{where}: unknown neuron adapter")

    # one value per neuron, or (per_neuron=False) the parameters' common shape
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    common = shape if per_neuron else np.broadcast_shapes(*(a.shape for a in arrays.values()))
    out = {}
    for k, a in arrays.items():
        a = np.broadcast_to(a, common).astype(np_dtype)
        # nir.write compresses every array, which h5py refuses for 0-d ones: a scalar is stored
        out[k] = a if a.ndim else np_dtype.type(a)
    return cls(**out)


def _broadcast_param(where, name, value: torch.Tensor, shape):
    try:
        return torch.broadcast_to(value, shape)
    except RuntimeError:
        raise ValueError(f"{where}: {name} has shape {tuple(value.shape)}, which does not "
                         f"broadcast to the layer's neurons {shape}") from None


# ----------------------------------------------------------------------------------- import


def from_nir(graph, *, dt: float = 1.0, surrogate: Surrogate = Sigmoid(),
             dtype: torch.dtype = torch.float32) -> "NIRNetwork":
    """Build a time-major module from a `nir.NIRGraph` or a path to a NIR file.

    Args:
      graph: a `nir.NIRGraph`, or a path that `nir.read` reads.
      dt: the Euler step (see the module docs for the equations).
      surrogate: the spike function's surrogate for training the imported network.
      dtype: the floating dtype every imported weight and neuron constant is cast to,
        whatever the file stores (float64, float16 or integers); the network then runs on
        input of that dtype (`net.to(torch.float64)` changes it later, as for any module).
        Import a float64 network with `dtype=torch.float64` to get its spikes exactly.

    Returns:
      A `NIRNetwork`: `forward(x_seq)` maps `[T, batch, ...]` to the output node's
        `[T, batch, ...]`. Weights are parameters; neuron constants are buffers.
    """
    nir = _nir()
    if isinstance(graph, (str, Path)):
        # NIR's type check infers shapes from parameters and rejects 0-d (shared) ones; the
        # importer broadcasts parameters itself and needs no inferred types
        graph = nir.read(graph, type_check=False)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"graph must be a nir.NIRGraph or a path to a NIR file, got "
                        f"{type(graph).__name__}")
    if not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a snnfunc.surrogate.Surrogate, got "
                        f"{type(surrogate).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got "
                        f"{dtype!r}")
    return NIRNetwork(graph, _check_dt(dt), surrogate).to(dtype)


def _tensor(a) -> torch.Tensor:
    """A NIR array as a floating tensor (integer arrays become float64, cast later by dtype)."""
    t = torch.from_numpy(np.array(a, copy=True))
    return t if t.is_floating_point() else t.to(torch.float64)


class NIRNetwork(nn.Module):
    """A NIR graph as a module over `[T, batch, ...]` (built by `from_nir`).

    Nodes run in topological order, each over the whole sequence; a node with several incoming
    edges gets their sum. Graphs with cycles (recurrent edges) are refused.
    """

    def __init__(self, graph, dt: float, surrogate: Surrogate):
        super().__init__()
        nir = _nir()
        kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
        inputs = [n for n, k in kinds.items() if k == "Input"]
        outputs = [n for n, k in kinds.items() if k == "Output"]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"the graph must have one Input and one Output node; it has inputs "
                             f"{inputs} and outputs {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        preds = {name: [] for name in graph.nodes}
        for src, dst in graph.edges:
            for end in (src, dst):
                if end not in graph.nodes:
                    raise ValueError(f"edge ({src!r}, {dst!r}) names an unknown node {end!r}")
            preds[dst].append(src)
        self.order = _topological(preds)
        self.preds = preds
        self.layers = nn.ModuleDict()
        self._keys = {}
        for i, name in enumerate(self.order):
            if name in (self.input_name, self.output_name):
                continue
            key = f"n{i}_" + "".join(c if c.isalnum() else "_" for c in str(name))
            self._keys[name] = key
            self.layers[key] = _import_node(nir, name, graph.nodes[name], dt, surrogate)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Run the graph over a sequence, from rest.

        Args:
          x_seq: the input node's values, time-major `[T, batch, ...]`, in the dtype the
            network was imported with.

        Returns:
          The output node's values, `[T, batch, ...]`.
        """
        if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 2:
            raise ValueError("x_seq must be a time-major tensor [T, batch, ...]")
        values = {self.input_name: x_seq}
        for name in self.order:
            if name == self.input_name:
                continue
            incoming = [values[p] for p in self.preds[name]]
            if not incoming:
                raise ValueError(f"node {name!r} has no incoming edge")
            x = incoming[0]
            for other in incoming[1:]:
                x = x + other
            values[name] = x if name == self.output_name else self.layers[self._keys[name]](x)
        return values[self.output_name]


def _topological(preds):
    order, state = [], {}

    def visit(n, path):
        if state.get(n) == "done":
            return
        if state.get(n) == "open":
            cycle = path[path.index(n):] + [n]
            raise ValueError(f"the graph has a cycle {' -> '.join(map(str, cycle))}; recurrent "
                             f"NIR graphs are not supported by from_nir")
        state[n] = "open"
        for p in preds[n]:
            visit(p, path + [n])
        state[n] = "done"
        order.append(n)

    for n in preds:
        visit(n, [])
    return order


def _import_node(nir, name, node, dt, surrogate):
    kind = type(node).__name__
    where = f"node {name!r} ({kind})"
    if kind == "Affine":
        return _dense(node.weight, node.bias)
    if kind == "Linear":
        return _dense(node.weight, None)
    if kind in ("Conv1d", "Conv2d"):
        return snn.TimeDistributed(_conv(kind, node))
    if kind == "Flatten":
        return _Flatten(int(node.start_dim), int(node.end_dim))
    if kind in ("SumPool2d", "AvgPool2d"):
        k, s, p = (tuple(int(v) for v in np.broadcast_to(np.asarray(a), (2,)))
                   for a in (node.kernel_size, node.stride, node.padding))
        pool = nn.AvgPool2d(k, s, p, divisor_override=1 if kind == "SumPool2d" else None)
        return snn.TimeDistributed(pool)
    if kind == "Scale":
        return _Scale(_tensor(node.scale))
    if kind == "Threshold":
        return _Threshold(_tensor(node.threshold), surrogate)
    if kind == "Identity":
        return nn.Identity()
    if kind in ("IF", "LIF", "LI", "I", "CubaLIF", "CubaLI"):
        return _Neuron(kind, node, dt, surrogate)
    raise TypeError(f"{where}: from_nir does not support NIR {kind} nodes")


def _dense(weight, bias):
    w = _tensor(weight)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=w.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(_tensor(bias))
    return layer


def _conv(kind, node):
    w = _tensor(node.weight)
    cls = nn.Conv1d if kind == "Conv1d" else nn.Conv2d
    nd = 1 if kind == "Conv1d" else 2

    def arg(v):
        if isinstance(v, str):
            return v
        return tuple(int(a) for a in np.broadcast_to(np.asarray(v), (nd,)))

    layer = cls(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]), stride=arg(node.stride),
                padding=arg(node.padding), dilation=arg(node.dilation), groups=int(node.groups),
                bias=True, dtype=w.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(_tensor(node.bias))
    return layer


class _Flatten(nn.Module):
    def __init__(self, start_dim, end_dim):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):  # NIR's dims exclude time and batch
        start = self.start_dim + 2 if self.start_dim >= 0 else self.start_dim
        end = self.end_dim + 2 if self.end_dim >= 0 else self.end_dim
        return x.flatten(start, end)


class _Scale(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x):
        return x * self.scale.to(x.dtype)


def _above(threshold: torch.Tensor, dtype) -> torch.Tensor:
    """The smallest value of `dtype` above `threshold`: H >= it  <=>  H > threshold."""
    t = threshold.to(dtype)
    return torch.nextafter(t, t.new_full((), math.inf))


class _Threshold(nn.Module):
    def __init__(self, threshold, surrogate):
        super().__init__()
        self.register_buffer("threshold", threshold)
        self.surrogate = surrogate

    def forward(self, x):
        return spike(x - _above(self.threshold, x.dtype), self.surrogate)


class _Neuron(nn.Module):
    """NIR IF, LIF, LI, I, CubaLIF and CubaLI by forward Euler, through snnfunc's neurons."""

    def __init__(self, kind, node, dt, surrogate):
        super().__init__()
        self.kind, self.dt, self.surrogate = kind, dt, surrogate
        get = lambda field: _tensor(getattr(node, field))  # noqa: E731
        fields = {"IF": ("r", "v_threshold", "v_reset"), "I": ("r",),
                  "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
                  "LI": ("tau", "r", "v_leak"),
                  "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
                  "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in")}[kind]
        for f in fields:
            self.register_buffer(f, get(f))
        # the exact path needs one reset value equal to the leak (see the module docs)
        self.v_rest = None
        if kind in ("LIF", "CubaLIF"):
            self.v_rest = _single_value(torch.cat([self.v_leak.flatten(), self.v_reset.flatten()]))
        elif kind in ("LI", "CubaLI"):
            self.v_rest = _single_value(self.v_leak)
        elif kind == "IF":
            self.v_rest = _single_value(self.v_reset)

    def forward(self, x):
        kind, dt, dtype = self.kind, self.dt, x.dtype
        opts = dict(surrogate=self.surrogate)
        if kind in ("CubaLIF", "CubaLI"):  # synaptic current first: I += dt/tau_syn (0 - I + w_in S)
            x = snnfunc.plif(self.w_in.to(dtype) * x, w=dt / self.tau_syn.to(dtype), v_reset=0.0,
                             v_threshold=math.inf, return_h=True, **opts).h
            kind = kind[4:]
            tau = self.tau_mem
        else:
            tau = getattr(self, "tau", None)
        if kind == "I":
            return snnfunc.if_((dt * self.r.to(dtype)) * x, v_reset=0.0, v_threshold=math.inf,
                               return_h=True, **opts).h
        if kind == "IF":
            x = (dt * self.r.to(dtype)) * x
            if self.v_rest is not None:
                return snnfunc.if_(x, v_reset=self.v_rest,
                                   v_threshold=_above(self.v_threshold, dtype), **opts).spikes
            v_reset = self.v_reset.to(dtype)
            return snnfunc.if_(x, v_reset=0.0, **opts,
                               v_threshold=_above(self.v_threshold.to(dtype) - v_reset, dtype)).spikes
        k = dt / tau.to(dtype)
        x = self.r.to(dtype) * x
        spiking = kind == "LIF"
        if self.v_rest is not None:
            thr = _above(self.v_threshold, dtype) if spiking else math.inf
            out = snnfunc.plif(x, w=k, v_reset=self.v_rest, v_threshold=thr, return_h=not spiking,
                               **opts)
            return out.spikes if spiking else out.h
        # shifted variable U = V - base with base = v_reset (LIF) or v_leak (LI)
        base = (self.v_reset if spiking else self.v_leak).to(dtype)
        c = self.v_leak.to(dtype) - base
        thr = _above(self.v_threshold.to(dtype) - base, dtype) if spiking else math.inf
        out = snnfunc.plif(x + c, c.expand(x.shape[1:]), w=k, v_reset=0.0, v_threshold=thr,
                           return_h=not spiking, **opts)
        return out.spikes if spiking else out.h + base


def _single_value(t: torch.Tensor):
    flat = t.flatten()
    if flat.numel() and bool((flat == flat[0]).all()):
        return float(flat[0])
    return None
