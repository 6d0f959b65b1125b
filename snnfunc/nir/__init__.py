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

import copy
import dataclasses
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


def to_nir(module: nn.Module, sample_input: torch.Tensor | None = None, *, dt: float = 1.0,
           exact_threshold: bool = True, per_neuron: bool = True, time_major: bool | None = None):
    """Export `module` to a `nir.NIRGraph`.

    Args:
      module: a `torch.nn.Sequential` (nested ones and `snnfunc.nn.TimeDistributed` too) of
        `Linear`, `Conv1d`, `Conv2d`, `Flatten`, `AvgPool2d`, `Identity`, `Dropout` and the
        adapters `IFNode`, `LIFNode`, `PLIFNode`, `RIFNode`, and `snnfunc.recurrent.Recurrent`
        layers (neuron `if_`, `lif`, `plif`, `rif` or `cuba_lif`, no bias: written as the
        neuron node `<name>` and a `Linear` `<name>.w_rec` from its spikes back into it);
        or one such layer; or a `NIRNetwork` that `from_nir` built (written back flat, with
        its current weights).
      sample_input: a time-major `[T, batch, ...]` input, or one step of it, `[batch, ...]`
        (what snnTorch's and Norse's exporters take: `to_nir(net, x[0])`); its step shape and
        dtype fix the graph's shapes and the dtype of the written parameters. Nothing is run on
        the neurons and no adapter state changes. Optional for a `NIRNetwork` (then only
        its dtype is used, the network's own by default).
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
    if isinstance(module, NIRNetwork):
        return _export_network(nir, module, sample_input)
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
            if _is_recurrent(layer):  # the neuron, and its spikes back through the weight
                neuron, w_rec = _export_recurrent(nir, name, layer, x, dt, exact_threshold,
                                                  per_neuron)
                nodes[name], nodes[f"{name}.w_rec"] = neuron, w_rec
                edges += [(prev, name), (name, f"{name}.w_rec"), (f"{name}.w_rec", name)]
                prev = name
                continue
            node, x = _export_layer(nir, name, layer, x, dt, exact_threshold, per_neuron)
            if node is None:
                continue
            nodes[name] = node
            edges.append((prev, name))
            prev = name
    nodes["output"] = nir.Output(output_type=np.array(x.shape[1:]))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False)


def _export_network(nir, net, sample_input):
    """An imported `NIRNetwork` as a flat `nir.NIRGraph` of its current parameters."""
    if sample_input is not None:
        if not isinstance(sample_input, torch.Tensor) or not sample_input.is_floating_point():
            raise ValueError("sample_input must be a floating tensor (it sets the dtype of the "
                             "written parameters) or None for a NIRNetwork")
        dtype = sample_input.dtype
    else:
        dtype = next(iter(net.buffers()), next(iter(net.parameters()), torch.zeros(()))).dtype
    np_dtype = _np(torch.zeros((), dtype=dtype)).dtype

    def arr(t):
        a = _np(t.to(dtype))
        return a if a.ndim else np_dtype.type(a)  # nir.write stores 0-d values as scalars

    nodes = {}
    for name in net.node_names:
        if name in net.passes:
            continue
        key, original = net._keys.get(name), net._nir_nodes[name]
        layer = None if key is None else net.layers[key]
        if isinstance(layer, nn.Linear):
            w = arr(layer.weight)
            node = nir.Linear(weight=w) if layer.bias is None else nir.Affine(weight=w, bias=arr(layer.bias))
        elif isinstance(layer, snn.TimeDistributed) and isinstance(layer.layer, (nn.Conv1d, nn.Conv2d)):
            node = dataclasses.replace(original, weight=arr(layer.layer.weight),
                                       bias=arr(layer.layer.bias))
        elif isinstance(layer, _Neuron):
            node = getattr(nir, layer.kind)(**{f: arr(getattr(layer, f)) for f in layer.fields})
        elif isinstance(layer, _Scale):
            node = nir.Scale(scale=arr(layer.scale))
        elif isinstance(layer, _Threshold):
            node = nir.Threshold(threshold=arr(layer.threshold))
        else:  # Input, Output and the nodes without learned values, as imported
            node = copy.deepcopy(original)
        nodes[name] = node
    edges = list(net.edges)
    for p in net.node_names:  # a nested graph's Input/Output: connect around it
        if p not in net.passes:
            continue
        if (p, p) in edges:
            raise ValueError(f"node {p!r}: a nested graph's Input or Output with an edge to "
                             f"itself has no flat NIR form")
        ins = [src for src, dst in edges if dst == p]
        flat = []
        for src, dst in edges:
            if src == p:
                flat.extend((a, dst) for a in ins)
            elif dst != p:
                flat.append((src, dst))
        edges = flat
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False)


def _float64(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _neuron_kind(node):
    for cls, kind in ((snn.IFNode, "if"), (snn.LIFNode, "lif"), (snn.PLIFNode, "plif"),
                      (snn.RIFNode, "rif")):
        if isinstance(node, cls):
            return kind
    return getattr(node, "kind", None)


def _is_recurrent(layer):
    cls = type(layer)
    return cls.__name__ == "Recurrent" and cls.__module__ == "snnfunc.recurrent"


def _export_recurrent(nir, name, layer, x, dt, exact_threshold, per_neuron):
    """A `snnfunc.recurrent.Recurrent`: its neuron node and the recurrent `Linear`."""
    import inspect
    import types

    where = f"layer {name!r} (Recurrent)"
    kinds = {snnfunc.if_: "if", snnfunc.lif: "lif", snnfunc.plif: "plif", snnfunc.rif: "rif"}
    if hasattr(snnfunc, "cuba_lif"):
        kinds[snnfunc.cuba_lif] = "cuba_lif"
    kind = kinds.get(layer.neuron)
    if kind is None:
        raise TypeError(f"{where}: its neuron {getattr(layer.neuron, '__name__', layer.neuron)!r} "
                        f"has no NIR node; if_, lif, plif, rif and cuba_lif export")
    if layer.bias is not None and bool((layer.bias != 0).any()):
        raise ValueError(
            f"{where}: the recurrent bias b is added at every step, the first included, but a "
            f"NIR back edge carries zero at the first step, so the graph would miss b there; "
            f"build the layer with bias=False (a bias belongs in the Linear before it)")
    options = {k: v.default for k, v in inspect.signature(layer.neuron).parameters.items()
               if v.default is not inspect.Parameter.empty}
    options.update(layer.neuron_kwargs)
    options.update({k: p for k, p in layer.named_parameters(recurse=False)
                    if k not in ("weight", "bias")})
    spec = types.SimpleNamespace(kind=kind, **options)
    neuron = _export_neuron(nir, where, spec, x, dt, exact_threshold, per_neuron)
    return neuron, nir.Linear(weight=_np(layer.weight.to(x.dtype)))


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
    theta = _float64(node.v_threshold).astype(np_dtype)
    if exact_threshold:
        theta = np.nextafter(theta, np.asarray(-np.inf, dtype=np_dtype))
    params = dict(v_threshold=theta, v_reset=node.v_reset)

    kind = _neuron_kind(node)
    if kind == "if":
        cls, params["r"] = nir.IF, 1.0 / dt
    elif kind == "lif":
        tau = _float64(node.tau)
        cls = nir.LIF
        params.update(tau=tau * dt, r=1.0 if node.decay_input else tau, v_leak=node.v_reset)
    elif kind == "cuba_lif":  # I += (X - I)/tau_syn is NIR's synapse with w_in = 1 (or tau_syn)
        tau_syn, tau_mem = _float64(node.tau_syn), _float64(node.tau_mem)
        cls = nir.CubaLIF
        params.update(tau_syn=tau_syn * dt, tau_mem=tau_mem * dt,
                      w_in=1.0 if node.decay_input else tau_syn,
                      r=1.0 if node.decay_input else tau_mem, v_leak=node.v_reset)
    elif kind == "plif":
        w = torch.as_tensor(node.w).detach().to("cpu", torch.float64)
        k = w if node.parametrization == "reciprocal" else torch.sigmoid(w)
        _broadcast_param(where, "w", k, shape)
        k = k.numpy()
        if not (k > 0).all():
            raise ValueError(f"{where}: 1/tau must be > 0 to export as a NIR LIF; got min "
                             f"{k.min()}")
        cls = nir.LIF
        params.update(tau=dt / k, r=1.0 if node.decay_input else 1.0 / k, v_leak=node.v_reset)
    elif kind == "rif":
        w = torch.as_tensor(node.w).detach().to("cpu", torch.float64)
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


def _flatten_graph(nir, graph, prefix=""):
    """The graph with nested `NIRGraph` nodes inlined.

    Returns `(nodes, edges, passes)`: nodes by their full name (a nested node is
    `"<subgraph>.<node>"`), edges between full names in the file's order, and the names of the
    nested graphs' own Input and Output nodes, which pass their summed input on unchanged.
    """
    nodes, edges, passes, ends = {}, [], set(), {}

    def add(name, node):
        if name in nodes:
            raise ValueError(f"node {name!r}: two nodes have this name once nested graphs are "
                             f"inlined (a node of that name and a node of a subgraph); rename one")
        nodes[name] = node

    for name, node in graph.nodes.items():
        full = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            inner, inner_edges, inner_passes = _flatten_graph(nir, node, full + ".")
            ins = [f"{full}.{n}" for n, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [f"{full}.{n}" for n, v in node.nodes.items() if isinstance(v, nir.Output)]
            ends[name] = (ins, outs)
            for n, v in inner.items():
                add(n, v)
            edges += inner_edges
            passes |= inner_passes | set(ins) | set(outs)
        else:
            add(full, node)

    def resolve(end, edge, role):
        if end in ends:  # an edge to or from a whole subgraph: its one Input or Output
            ins, outs = ends[end]
            which = outs if role == "source" else ins
            if len(which) != 1:
                kind = "Output" if role == "source" else "Input"
                raise ValueError(
                    f"edge {edge!r}: the subgraph {prefix}{end!r} has {len(which)} {kind} nodes "
                    f"{which}; name one of them in the edge ('{end}.<node>')")
            return which[0]
        full = f"{prefix}{end}"
        if full not in nodes:
            raise ValueError(f"edge {edge!r} names an unknown node {full!r}")
        return full

    for edge in graph.edges:
        src, dst = edge
        edges.append((resolve(src, edge, "source"), resolve(dst, edge, "destination")))
    return nodes, edges, passes


def _walk(names, edges, roots):
    """Depth-first walk from `roots`, then from every node not reached (by name), following
    edges in order. Returns the reverse postorder (a topological order once back edges are
    dropped) and the indices of the back edges (those that reach a node on the current path)."""
    succ = {n: [] for n in names}
    for i, (src, dst) in enumerate(edges):
        succ[src].append((dst, i))
    state, post, back = {}, [], set()
    for root in [*roots, *sorted(names, key=str)]:
        if root in state:
            continue
        state[root] = "open"
        stack = [(root, iter(succ[root]))]
        while stack:
            node, it = stack[-1]
            for dst, i in it:
                if state.get(dst) == "open":
                    back.add(i)
                elif dst not in state:
                    state[dst] = "open"
                    stack.append((dst, iter(succ[dst])))
                    break
            else:
                stack.pop()
                state[node] = "done"
                post.append(node)
    return post[::-1], back


def _components(names, edges):
    """Strongly connected components (Tarjan), in a topological order of the components."""
    succ = {n: [] for n in names}
    for src, dst in edges:
        succ[src].append(dst)
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]
    for root in names:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            for dst in it:
                if dst not in index:
                    index[dst] = low[dst] = counter[0]
                    counter[0] += 1
                    stack.append(dst)
                    on.add(dst)
                    work.append((dst, iter(succ[dst])))
                    break
                if dst in on:
                    low[node] = min(low[node], index[dst])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        n = stack.pop()
                        on.discard(n)
                        comp.append(n)
                        if n == node:
                            break
                    comps.append(comp)
    return comps[::-1]


class NIRNetwork(nn.Module):
    """A NIR graph as a module over `[T, batch, ...]` (built by `from_nir`).

    A node with several incoming edges gets their sum. Nested `NIRGraph` nodes are inlined
    (their nodes are named `"<subgraph>.<node>"`). Nodes outside cycles run over the whole
    sequence at once, in a topological order; each cycle runs step by step, its nodes in a fixed
    order, and an edge that closes a cycle (a back edge) carries its source's value from the
    previous step, zero at step 0. The back edges are those a depth-first walk finds reaching a
    node on its current path; the walk starts at the Input nodes (by name), then at any node not
    reached (by name), and follows edges in the graph's order.

    Attributes:
      input_names: the Input nodes, in the graph's order.
      output_names: the Output nodes, in the graph's order.
      back_edges: the edges `(source, destination)` that carry the previous step's value.
    """

    def __init__(self, graph, dt: float, surrogate: Surrogate):
        super().__init__()
        nir = _nir()
        self.dt = dt
        nodes, edges, passes = _flatten_graph(nir, graph)
        self.node_names = list(nodes)
        self.input_names = [n for n, v in nodes.items() if isinstance(v, nir.Input) and n not in passes]
        self.output_names = [n for n, v in nodes.items() if isinstance(v, nir.Output) and n not in passes]
        if not self.input_names or not self.output_names:
            raise ValueError(f"the graph needs at least one Input and one Output node; it has "
                             f"inputs {self.input_names} and outputs {self.output_names}")
        for src, dst in edges:
            if dst in self.input_names:
                raise ValueError(f"edge {(src, dst)!r} leads into the Input node {dst!r}")
            if src in self.output_names:
                raise ValueError(f"edge {(src, dst)!r} leaves the Output node {src!r}")
        order, back = _walk(list(nodes), edges, sorted(self.input_names, key=str))
        position = {n: i for i, n in enumerate(order)}
        self.back_edges = [edges[i] for i in sorted(back)]
        self.edges, self.passes = list(edges), passes
        self._preds = {n: [] for n in nodes}  # (source, is a back edge) in edge order
        for i, (src, dst) in enumerate(edges):
            self._preds[dst].append((src, i in back))
        for n in order:
            if n not in self.input_names and not self._preds[n]:
                raise ValueError(f"node {n!r} has no incoming edge")
        self._blocks = []  # (False, [name]) over the whole sequence or (True, names) per step
        for comp in _components(order, edges):
            cyclic = len(comp) > 1 or any(src == dst == comp[0] for src, dst in edges)
            self._blocks.append((cyclic, sorted(comp, key=position.get)))
        self._out_shapes = {n: _output_shape(nir, v) for n, v in nodes.items()}
        self._nir_nodes = {n: copy.deepcopy(v) for n, v in nodes.items()
                           if n in passes or isinstance(v, (nir.Input, nir.Output))}
        self.layers = nn.ModuleDict()
        self._keys = {}
        for i, name in enumerate(order):
            if name in self._nir_nodes:
                continue
            key = f"n{i}_" + "".join(c if c.isalnum() else "_" for c in str(name))
            self._keys[name] = key
            self.layers[key] = _import_node(nir, name, nodes[name], dt, surrogate)
            self._nir_nodes[name] = copy.deepcopy(nodes[name])

    def forward(self, x_seq):
        """Run the graph over a sequence, from rest.

        Args:
          x_seq: the Input node's values, time-major `[T, batch, ...]`, in the dtype the
            network was imported with; for a graph with several Input nodes, a dict from
            their names to such tensors (one T and batch for all).

        Returns:
          The Output node's values, `[T, batch, ...]`; for several Output nodes, a dict from
            their names to their values.
        """
        values = self._inputs(x_seq)
        first = next(iter(values.values()))
        steps, batch = first.shape[0], first.shape[1]
        for per_step, names in self._blocks:
            if per_step:
                self._run_steps(names, values, steps, batch, first)
                continue
            (name,) = names
            if name in self.input_names:
                continue
            x = self._sum(name, [values[src] for src, _ in self._preds[name]])
            key = self._keys.get(name)
            values[name] = x if key is None else self.layers[key](x)
        if len(self.output_names) == 1:
            return values[self.output_names[0]]
        return {n: values[n] for n in self.output_names}

    def _inputs(self, x_seq):
        if isinstance(x_seq, torch.Tensor):
            if len(self.input_names) != 1:
                raise ValueError(f"the graph has Input nodes {self.input_names}: pass a dict "
                                 f"from these names to [T, batch, ...] tensors")
            x_seq = {self.input_names[0]: x_seq}
        if not isinstance(x_seq, dict) or set(x_seq) != set(self.input_names):
            got = sorted(map(str, x_seq)) if isinstance(x_seq, dict) else type(x_seq).__name__
            raise ValueError(f"x_seq must be a tensor [T, batch, ...] or a dict from the Input "
                             f"nodes {self.input_names} to such tensors; got {got}")
        lead = None
        for name, x in x_seq.items():
            if not isinstance(x, torch.Tensor) or x.dim() < 2:
                raise ValueError(f"the value of Input {name!r} must be a time-major tensor "
                                 f"[T, batch, ...]")
            if lead is not None and tuple(x.shape[:2]) != lead:
                raise ValueError(f"the Input values have different [T, batch]: {lead} and "
                                 f"{tuple(x.shape[:2])} (Input {name!r})")
            lead = tuple(x.shape[:2])
        return dict(x_seq)

    @staticmethod
    def _sum(name, terms):
        x = terms[0]
        for other in terms[1:]:
            x = x + other
        return x

    def _run_steps(self, names, values, steps, batch, like):
        """One cycle, step by step: back edges read the previous step (nothing at step 0)."""
        if steps == 0:
            raise ValueError(f"the cycle through {names} needs T >= 1 steps")
        inside = set(names)
        states = dict.fromkeys(names)
        outs = {n: [] for n in names}
        prev = None
        for t in range(steps):
            cur = {}
            for name in names:
                terms = []
                for src, is_back in self._preds[name]:
                    if src not in inside:
                        terms.append(values[src][t])
                    elif not is_back:
                        terms.append(cur[src])
                    elif prev is not None:
                        terms.append(prev[src])
                if not terms:  # only back edges, at step 0: their zero
                    src = self._preds[name][0][0]
                    shape = self._out_shapes[src]
                    if shape is None:
                        raise ValueError(f"node {name!r} reads only back edges, and the shape of "
                                         f"{src!r}'s output (zero at step 0) is not known")
                    terms.append(like.new_zeros((batch, *shape)))
                x = self._sum(name, terms)
                key = self._keys.get(name)
                if key is None:
                    y = x
                else:
                    layer = self.layers[key]
                    if hasattr(layer, "run"):
                        y, states[name] = layer.run(x.unsqueeze(0), states[name])
                        y = y[0]
                    else:
                        y = layer(x.unsqueeze(0))[0]
                cur[name] = y
                outs[name].append(y)
            prev = cur
        for name in names:
            values[name] = torch.stack(outs[name])


def _output_shape(nir, node):
    """A node's output shape from its NIR type, or None where it is not known."""
    out = getattr(node, "output_type", None)
    if isinstance(node, nir.Input):
        out = {"output": node.input_type.get("input")} if isinstance(node.input_type, dict) else None
    if not isinstance(out, dict) or len(out) != 1:
        return None
    shape = np.asarray(next(iter(out.values())))
    if shape.ndim != 1 or shape.size == 0 or not (shape > 0).all():
        return None
    return tuple(int(s) for s in shape)


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
    if kind == "Delay":
        return _Delay(_delay_steps(where, node.delay, dt))
    if kind in ("IF", "LIF", "LI", "I", "CubaLIF", "CubaLI"):
        return _Neuron(kind, node, dt, surrogate)
    raise TypeError(f"{where}: from_nir does not support NIR {kind} nodes")


def _delay_steps(where, delay, dt):
    d = np.asarray(delay, dtype=np.float64) / dt
    steps = np.rint(d)
    if not np.isfinite(d).all() or (d < 0).any() or \
            (np.abs(d - steps) > 1e-6 * np.maximum(1.0, steps)).any():
        bad = d[~(np.isfinite(d) & (d >= 0) & (np.abs(d - steps) <= 1e-6 * np.maximum(1.0, steps)))]
        raise ValueError(f"{where}: a delay runs as a whole number of steps >= 0, delay / dt; "
                         f"got delay / dt = {bad.flatten()[:4].tolist()} at dt = {dt}")
    return torch.from_numpy(steps.astype(np.int64))


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
        self.fields = fields
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
        return self.run(x)[0]

    def run(self, x, state=None):
        """The node over `x` `[T, batch, ...]` from `state` (`None`: rest); returns
        `(output, state)`, the state to continue from (a pair `(current, membrane)` for the
        Cuba nodes)."""
        kind, dt, dtype = self.kind, self.dt, x.dtype
        opts = dict(surrogate=self.surrogate)
        if kind in ("CubaLIF", "CubaLI"):  # synaptic current first: I += dt/tau_syn (0 - I + w_in S)
            i_state, state = (None, None) if state is None else state
            syn = snnfunc.plif(self.w_in.to(dtype) * x, i_state, w=dt / self.tau_syn.to(dtype),
                               v_reset=0.0, v_threshold=math.inf, return_h=True, **opts)
            out, state = self._membrane(kind[4:], syn.h, state, self.tau_mem, opts)
            return out, (syn.v, state)
        return self._membrane(kind, x, state, getattr(self, "tau", None), opts)

    def _membrane(self, kind, x, v, tau, opts):
        dt, dtype = self.dt, x.dtype
        if kind == "I":
            out = snnfunc.if_((dt * self.r.to(dtype)) * x, v, v_reset=0.0, v_threshold=math.inf,
                              return_h=True, **opts)
            return out.h, out.v
        if kind == "IF":
            x = (dt * self.r.to(dtype)) * x
            if self.v_rest is not None:
                out = snnfunc.if_(x, v, v_reset=self.v_rest,
                                  v_threshold=_above(self.v_threshold, dtype), **opts)
                return out.spikes, out.v
            # shifted variable U = V - v_reset
            v_reset = self.v_reset.to(dtype)
            out = snnfunc.if_(x, v, v_reset=0.0, **opts,
                              v_threshold=_above(self.v_threshold.to(dtype) - v_reset, dtype))
            return out.spikes, out.v
        k = dt / tau.to(dtype)
        x = self.r.to(dtype) * x
        spiking = kind == "LIF"
        if self.v_rest is not None:
            thr = _above(self.v_threshold, dtype) if spiking else math.inf
            out = snnfunc.plif(x, v, w=k, v_reset=self.v_rest, v_threshold=thr,
                               return_h=not spiking, **opts)
            return (out.spikes if spiking else out.h), out.v
        # shifted variable U = V - base with base = v_reset (LIF) or v_leak (LI)
        base = (self.v_reset if spiking else self.v_leak).to(dtype)
        c = self.v_leak.to(dtype) - base
        thr = _above(self.v_threshold.to(dtype) - base, dtype) if spiking else math.inf
        u = c.expand(x.shape[1:]) if v is None else v
        out = snnfunc.plif(x + c, u, w=k, v_reset=0.0, v_threshold=thr, return_h=not spiking,
                           **opts)
        return (out.spikes if spiking else out.h + base), out.v


class _Delay(nn.Module):
    """NIR Delay: y_t = x_{t-d} with d = delay / dt whole steps per neuron, 0 before the start."""

    def __init__(self, steps: torch.Tensor):
        super().__init__()
        self.register_buffer("steps", steps)
        self.depth = int(steps.max()) if steps.numel() else 0

    def forward(self, x):
        return self.run(x)[0]

    def run(self, x, state=None):
        """Over `x` `[T, batch, ...]` after the last `depth` inputs `state` (`None`: zeros);
        returns `(output, state)`."""
        depth = self.depth
        if depth == 0:
            return x, None
        history = x.new_zeros((depth, *x.shape[1:])) if state is None else state
        z = torch.cat([history, x])
        t = torch.arange(x.shape[0], device=x.device).view(-1, *[1] * (x.dim() - 1))
        index = (depth + t - self.steps.to(x.device)).expand(x.shape)
        return z.gather(0, index), z[z.shape[0] - depth:]


def _single_value(t: torch.Tensor):
    flat = t.flatten()
    if flat.numel() and bool((flat == flat[0]).all()):
        return float(flat[0])
    return None
