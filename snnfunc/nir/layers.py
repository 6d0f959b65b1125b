"""The import side's modules: what each NIR node becomes (`_import_node`) and the small modules
for the nodes torch has no layer for (`_Flatten`, `_Scale`, `_Threshold`, `_Neuron`, `_Delay`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from snnfunc import functional
from snnfunc import nn as snn
from snnfunc.surrogate import spike


def _tensor(a) -> torch.Tensor:
    """A NIR array as a floating tensor (integer arrays become float64, cast later by dtype)."""
    t = torch.from_numpy(np.array(a, copy=True))
    return t if t.is_floating_point() else t.to(torch.float64)


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
        # the exact path needs one reset value equal to the leak (see the `snnfunc.nir` docs)
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
            syn = functional.plif(self.w_in.to(dtype) * x, i_state, w=dt / self.tau_syn.to(dtype),
                                  v_reset=0.0, v_threshold=math.inf, return_h=True, **opts)
            out, state = self._membrane(kind[4:], syn.h, state, self.tau_mem, opts)
            return out, (syn.v, state)
        return self._membrane(kind, x, state, getattr(self, "tau", None), opts)

    def _membrane(self, kind, x, v, tau, opts):
        dt, dtype = self.dt, x.dtype
        if kind == "I":
            out = functional.if_((dt * self.r.to(dtype)) * x, v, v_reset=0.0, v_threshold=math.inf,
                                 return_h=True, **opts)
            return out.h, out.v
        if kind == "IF":
            x = (dt * self.r.to(dtype)) * x
            if self.v_rest is not None:
                out = functional.if_(x, v, v_reset=self.v_rest,
                                     v_threshold=_above(self.v_threshold, dtype), **opts)
                return out.spikes, out.v
            # shifted variable U = V - v_reset
            v_reset = self.v_reset.to(dtype)
            out = functional.if_(x, v, v_reset=0.0, **opts,
                                 v_threshold=_above(self.v_threshold.to(dtype) - v_reset, dtype))
            return out.spikes, out.v
        k = dt / tau.to(dtype)
        x = self.r.to(dtype) * x
        spiking = kind == "LIF"
        if self.v_rest is not None:
            thr = _above(self.v_threshold, dtype) if spiking else math.inf
            out = functional.plif(x, v, w=k, v_reset=self.v_rest, v_threshold=thr,
                                  return_h=not spiking, **opts)
            return (out.spikes if spiking else out.h), out.v
        # shifted variable U = V - base with base = v_reset (LIF) or v_leak (LI)
        base = (self.v_reset if spiking else self.v_leak).to(dtype)
        c = self.v_leak.to(dtype) - base
        thr = _above(self.v_threshold.to(dtype) - base, dtype) if spiking else math.inf
        u = c.expand(x.shape[1:]) if v is None else v
        out = functional.plif(x + c, u, w=k, v_reset=0.0, v_threshold=thr, return_h=not spiking,
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
