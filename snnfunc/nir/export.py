"""The export, `to_nir`: a `torch.nn.Sequential` of layers and snnfunc neurons, or an imported
`NIRNetwork`, written as a `nir.NIRGraph`."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from torch import nn

from snnfunc import functional
from snnfunc import nn as snn
from snnfunc.nir.common import _check_dt, _nir
from snnfunc.nir.layers import _Neuron, _Scale, _Threshold
from snnfunc.nir.network import NIRNetwork


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
        strict `>` fires exactly where snnfunc's `>=` does (see the `snnfunc.nir` docs).
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
                if layer.input_weight is not None:  # its input weight: a Linear before it
                    nodes[f"{name}.w_in"] = nir.Linear(weight=_np(layer.input_weight))
                    edges.append((prev, f"{name}.w_in"))
                    prev = f"{name}.w_in"
                    x = torch.nn.functional.linear(x, layer.input_weight.to(x.dtype))
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
    return isinstance(layer, snn.Recurrent)


def _export_recurrent(nir, name, layer, x, dt, exact_threshold, per_neuron):
    """A `snnfunc.recurrent.Recurrent`: its neuron node and the recurrent `Linear`."""
    import inspect
    import types

    where = f"layer {name!r} (Recurrent)"
    kinds = {functional.if_: "if", functional.lif: "lif", functional.plif: "plif",
             functional.rif: "rif"}
    if hasattr(functional, "cuba_lif"):
        kinds[functional.cuba_lif] = "cuba_lif"
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
                    if k not in ("weight", "bias", "input_weight")})
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
