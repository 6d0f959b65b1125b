r"""The four neurons as pure functions of explicit state.

Every neuron does, per time step, in this order (charge, fire, reset):

$$H_t = f(V_{t-1}, X_t), \qquad S_t = \Theta(H_t - V_{th}),$$

$$V_t = \begin{cases} V_{reset} & \text{if } S_t = 1 \text{ (hard reset, `v_reset` a number)} \\
H_t - V_{th} & \text{if } S_t = 1 \text{ (soft reset, `v_reset=None`)} \\
H_t & \text{if } S_t = 0 \end{cases}$$

A neuron that does not fire keeps $H_t$ exactly (NaN, infinities and -0.0 included). The
backward pass differentiates the blend $H_t(1 - S_t) + V_{reset} S_t$ (hard) or
$H_t - V_{th} S_t$ (soft), with the surrogate's $g'(H_t - V_{th})$ in place of $\Theta'$.
The charge $f$ is the only thing that differs between neurons. With `detach_reset=True`
the spike in the reset is detached from the graph (the gradient still flows through the fire).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from snnfunc import memory
from snnfunc.functional import _checks
from snnfunc.surrogate import Sigmoid, Surrogate, spike

__all__ = [
    "NeuronOutput",
    "NeuronOutputWithH",
    "StepOutput",
    "StepOutputWithH",
    "if_",
    "lif",
    "plif",
    "rif",
    "if_step",
    "lif_step",
    "plif_step",
    "rif_step",
]

_PARAMETRIZATIONS = ("reciprocal", "sigmoid")
_IMPLS = ("auto", "fused", "reference")


class NeuronOutput(NamedTuple):
    """Result of a multi-step neuron: `spikes` `[T, *shape]` and the final state `v`."""

    spikes: torch.Tensor
    v: torch.Tensor


class NeuronOutputWithH(NamedTuple):
    """`NeuronOutput` plus `h` `[T, *shape]`, the voltage after charge and before reset."""

    spikes: torch.Tensor
    v: torch.Tensor
    h: torch.Tensor


class StepOutput(NamedTuple):
    """Result of one time step: `spike` and the next state `v`."""

    spike: torch.Tensor
    v: torch.Tensor


class StepOutputWithH(NamedTuple):
    """`StepOutput` plus `h`, the voltage after charge and before reset."""

    spike: torch.Tensor
    v: torch.Tensor
    h: torch.Tensor


# --------------------------------------------------------------------------- the equations


def charge(kind: str, x, v, p, v_rest: float, decay_input: bool):
    """H_t from V_{t-1} and X_t. `p` is tau (lif), k (plif), w (rif) or unused (if)."""
    if kind == "if":
        return v + x
    if kind == "lif":
        if decay_input:
            return v + (x - (v - v_rest)) / p
        return v - (v - v_rest) / p + x
    if kind == "plif":
        if decay_input:
            return v + (x - (v - v_rest)) * p
        return v - (v - v_rest) * p + x
    return v + p * (v - v_rest) + x  # rif


class _Reset(torch.autograd.Function):
    """V_t from H_t and the spike S_t (the reset; used under torch.compile).

    Forward, a select: where S = 1, `v_reset` (hard) or `H - V_th` (soft); where S = 0, H
    itself, bit for bit (-0.0, inf and NaN included). Backward, the derivative of the blend
    `H (1 - S) + V_reset S` (hard) or `H - V_th S` (soft): dV/dH = 1 - S or 1,
    dV/dS = V_reset - H or -V_th, dV/dV_th = -S. The same expressions as the fused kernels.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(h, r, th, v_reset):
        if v_reset is None:
            return torch.where(r > 0, h - th, h)
        return torch.where(r > 0, v_reset, h)

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, r, th, v_reset = inputs
        ctx.save_for_backward(h, r, th)
        ctx.v_reset = v_reset

    @staticmethod
    def backward(ctx, g):
        h, r, th = ctx.saved_tensors
        need_h, need_r, need_th = ctx.needs_input_grad[:3]
        fire = r > 0
        if ctx.v_reset is None:
            gh = g
            gr = g * -th if need_r else None
            gth = torch.where(fire, -g, 0.0).sum_to_size(th.shape) if need_th else None
        else:
            gh = torch.where(fire, 0.0, g) if need_h else None
            gr = g * (ctx.v_reset - h) if need_r else None
            gth = None
        return gh, gr, gth, None


class _ResetForwardAD(_Reset):
    """The reset with a forward-mode rule (eager mode; Dynamo refuses a custom `jvp`)."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        _Reset.setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:3])

    @staticmethod
    def jvp(ctx, th_, tr, tth, _):
        h, r, th = ctx.saved_tensors
        fire = r > 0
        if ctx.v_reset is None:
            out = torch.zeros_like(h) if th_ is None else th_
            if tr is not None:
                out = out + tr * -th
            if tth is not None:
                out = out - torch.where(fire, tth, 0.0)
            return out
        out = torch.zeros_like(h) if th_ is None else torch.where(fire, 0.0, th_)
        if tr is not None:
            out = out + tr * (ctx.v_reset - h)
        return out


def reset(h, s, v_threshold, v_reset, detach_reset: bool):
    """V_t from H_t and S_t: hard (`v_reset` a number) or soft (`None`) reset."""
    r = s.detach() if detach_reset else s
    if torch.compiler.is_compiling():
        return _Reset.apply(h, r, v_threshold, v_reset)
    return _ResetForwardAD.apply(h, r, v_threshold, v_reset)


def fire_reset(h, v_threshold, v_reset, surrogate: Surrogate, detach_reset: bool):
    """(S_t, V_t) from H_t."""
    s = memory.register_spikes(spike(h - v_threshold, surrogate))  # fire
    return s, reset(h, s, v_threshold, v_reset, detach_reset)


def reference(kind, x_seq, v, p, *, v_threshold, v_reset, surrogate, detach_reset,
              decay_input, return_h):
    """The plain unrolled loop: the definition every fused path is tested against."""
    v_rest = 0.0 if v_reset is None else v_reset
    spikes, hs = [], []
    for x in x_seq.unbind(0):
        h = charge(kind, x, v, p, v_rest, decay_input)
        s, v = fire_reset(h, v_threshold, v_reset, surrogate, detach_reset)
        spikes.append(s)
        hs.append(h)
    if not spikes:  # T == 0
        empty = x_seq.new_empty(x_seq.shape)
        v = v.expand(x_seq.shape[1:])
        return NeuronOutputWithH(empty, v, empty) if return_h else NeuronOutput(empty, v)
    if return_h:
        return NeuronOutputWithH(torch.stack(spikes), v, torch.stack(hs))
    return NeuronOutput(torch.stack(spikes), v)


# --------------------------------------------------------------------------- argument handling


def _prepare(kind, x, v, p, *, name, v_threshold, v_reset, surrogate, detach_reset,
             decay_input, return_h, sequence, positive=False):
    step_shape = _checks.check_input("x_seq" if sequence else "x", x, sequence=sequence)
    _checks.check_options(v_reset, surrogate, detach_reset, decay_input=decay_input,
                          return_h=return_h)
    what = "one time step of x_seq, shape" if sequence else "the input x, shape"
    if kind != "if":
        p = _checks.check_param(name, p, x, step_shape, what, positive=positive)
    v_threshold = _checks.check_param("v_threshold", v_threshold, x, step_shape, what)
    rest = 0.0 if v_reset is None else float(v_reset)
    v = _checks.check_state(v, x, step_shape, rest, what, parameter=name)
    v_reset = None if v_reset is None else float(v_reset)
    return v, p, v_threshold, v_reset


def _sigmoid(w: float) -> float:
    """The logistic sigmoid of a number, without overflow for any w."""
    if w >= 0:
        return 1.0 / (1.0 + math.exp(-w))
    e = math.exp(w)
    return e / (1.0 + e)


def _plif_k(w, parametrization):
    if parametrization not in _PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {_PARAMETRIZATIONS}, got {parametrization!r}"
        )
    if parametrization == "reciprocal" or w is None:
        return w
    if isinstance(w, torch.Tensor):
        return torch.sigmoid(w)
    if _checks._is_number(w) and not math.isnan(w):
        return _sigmoid(float(w))
    return w  # rejected with a clear message by _prepare


def _multi(kind, x_seq, v, p, *, name, v_threshold, v_reset, surrogate, detach_reset,
           decay_input, return_h, impl, positive=False):
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    v, p, v_threshold, v_reset = _prepare(
        kind, x_seq, v, p, name=name, v_threshold=v_threshold, v_reset=v_reset,
        surrogate=surrogate, detach_reset=detach_reset, decay_input=decay_input,
        return_h=return_h, sequence=True, positive=positive)
    options = dict(v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                   detach_reset=detach_reset, decay_input=decay_input, return_h=return_h)
    if impl != "reference":
        from snnfunc import _fused

        out = _fused.run(kind, x_seq, v, p, force=impl == "fused", **options)
        if out is not None:
            memory.register_spikes(out.spikes)
            return out
    out = reference(kind, x_seq, v, p, **options)
    memory.register_spikes(out.spikes)
    return out


def _single(kind, x, v, p, *, name, v_threshold, v_reset, surrogate, detach_reset,
            decay_input, return_h, positive=False):
    v, p, v_threshold, v_reset = _prepare(
        kind, x, v, p, name=name, v_threshold=v_threshold, v_reset=v_reset,
        surrogate=surrogate, detach_reset=detach_reset, decay_input=decay_input,
        return_h=return_h, sequence=False, positive=positive)
    v_rest = 0.0 if v_reset is None else v_reset
    h = charge(kind, x, v, p, v_rest, decay_input)
    s, v = fire_reset(h, v_threshold, v_reset, surrogate, detach_reset)
    return StepOutputWithH(s, v, h) if return_h else StepOutput(s, v)


# --------------------------------------------------------------------------- public API


def if_(x_seq, v=None, *, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
        detach_reset=False, return_h=False, impl="auto"):
    r"""Integrate-and-fire neuron over a time-major sequence.

    $$H_t = V_{t-1} + X_t$$

    then fire and reset as described in `snnfunc.functional`. Semantically:
    `for x in x_seq: s, v = if_step(x, v, ...)`.

    Args:
      x_seq: input increments $X$, shape `[T, *shape]`, floating dtype.
      v: $V_0$, a tensor broadcastable to `shape`; `None` means the resting value
        (`v_reset`, or 0 with soft reset).
      v_threshold: $V_{th}$; a number or a tensor broadcastable to one time step.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset (subtract
        $V_{th}$).
      surrogate: the spike function's surrogate gradient, a `snnfunc.surrogate.Surrogate`
        instance such as `Sigmoid()`.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the voltage after charge and before reset at every step.
      impl: `"auto"` (default) runs the fused kernel where it applies and the unrolled loop
        elsewhere (forward-mode AD, for example; `snnfunc.info()` says which applies here);
        `"fused"` and `"reference"` force one.

    Returns:
      `NeuronOutput(spikes, v)`, or `NeuronOutputWithH(spikes, v, h)` with `return_h`:
        `spikes` (and `h`) `[T, *shape]` in `x_seq.dtype`, `v` of shape `shape`, the state
        to pass to the next call. For `T = 0` spikes are empty and `v` is $V_0$.
    """
    return _multi("if", x_seq, v, None, name=None, v_threshold=v_threshold, v_reset=v_reset,
                  surrogate=surrogate, detach_reset=detach_reset, decay_input=True,
                  return_h=return_h, impl=impl)


def lif(x_seq, v=None, *, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
        surrogate=Sigmoid(), detach_reset=False, return_h=False, impl="auto"):
    r"""Leaky integrate-and-fire neuron over a time-major sequence.

    With $V_r$ = `v_reset` (0 for the soft reset):

    $$H_t = V_{t-1} + \tfrac{1}{\tau}\big(X_t - (V_{t-1} - V_r)\big)$$

    or, with `decay_input=False`, $H_t = V_{t-1} - \tfrac{1}{\tau}(V_{t-1} - V_r) + X_t$;
    then fire and reset. Semantically: `for x in x_seq: s, v = lif_step(x, v, tau=tau, ...)`.

    Args:
      x_seq: input increments $X$, shape `[T, *shape]`, floating dtype.
      v: $V_0$, a tensor broadcastable to `shape`; `None` means the resting value.
      tau: membrane time constant $\tau$; a number > 0 or a tensor broadcastable to `shape`
        (per layer, channel or neuron), differentiable. Keyword only: `lif(x, 2.0)` is an
        error, write `lif(x, tau=2.0)`.
      decay_input: whether the input is divided by $\tau$ too.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to one time step.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset (subtract
        $V_{th}$), and then $V_r = 0$ in the charge.
      surrogate: the spike function's surrogate gradient, a `snnfunc.surrogate.Surrogate`
        instance such as `Sigmoid()`.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the voltage after charge and before reset at every step.
      impl: `"auto"` (default) runs the fused kernel where it applies and the unrolled loop
        elsewhere (forward-mode AD, for example; `snnfunc.info()` says which applies here);
        `"fused"` and `"reference"` force one.

    Returns:
      `NeuronOutput(spikes, v)`, or `NeuronOutputWithH(spikes, v, h)` with `return_h`:
        `spikes` (and `h`) `[T, *shape]` in `x_seq.dtype`, `v` of shape `shape`, the state
        to pass to the next call. For `T = 0` spikes are empty and `v` is $V_0$.
    """
    return _multi("lif", x_seq, v, tau, name="tau", v_threshold=v_threshold, v_reset=v_reset,
                  surrogate=surrogate, detach_reset=detach_reset, decay_input=decay_input,
                  return_h=return_h, impl=impl, positive=True)


def plif(x_seq, v=None, *, w, parametrization="reciprocal", decay_input=True, v_threshold=1.0,
         v_reset=0.0, surrogate=Sigmoid(), detach_reset=False, return_h=False, impl="auto"):
    r"""Parametric LIF neuron (learnable time constant) over a time-major sequence.

    With $k = w$ (`parametrization="reciprocal"`, SpikingFlow's form: `w` holds $1/\tau$) or
    $k = \mathrm{sigmoid}(w)$ (`"sigmoid"`, Fang et al. 2021, which keeps $\tau = 1/k > 1$):

    $$H_t = V_{t-1} + k\big(X_t - (V_{t-1} - V_r)\big)$$

    or, with `decay_input=False`, $H_t = V_{t-1} - k(V_{t-1} - V_r) + X_t$; then fire and
    reset. Semantically: `for x in x_seq: s, v = plif_step(x, v, w=w, ...)`.

    Args:
      x_seq: input increments $X$, shape `[T, *shape]`, floating dtype.
      v: $V_0$, a tensor broadcastable to `shape`; `None` means the resting value.
      w: the parameter, usually an `nn.Parameter`; a number or a tensor broadcastable to
        `shape`.
      parametrization: `"reciprocal"` or `"sigmoid"`, how `w` gives $k = 1/\tau$.
      decay_input: whether the input is scaled by $k$ too.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to one time step.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset (subtract
        $V_{th}$), and then $V_r = 0$ in the charge.
      surrogate: the spike function's surrogate gradient, a `snnfunc.surrogate.Surrogate`
        instance such as `Sigmoid()`.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the voltage after charge and before reset at every step.
      impl: `"auto"` (default) runs the fused kernel where it applies and the unrolled loop
        elsewhere (forward-mode AD, for example; `snnfunc.info()` says which applies here);
        `"fused"` and `"reference"` force one.

    Returns:
      `NeuronOutput(spikes, v)`, or `NeuronOutputWithH(spikes, v, h)` with `return_h`:
        `spikes` (and `h`) `[T, *shape]` in `x_seq.dtype`, `v` of shape `shape`, the state
        to pass to the next call. For `T = 0` spikes are empty and `v` is $V_0$.
    """
    return _multi("plif", x_seq, v, _plif_k(w, parametrization), name="w",
                  v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                  detach_reset=detach_reset, decay_input=decay_input, return_h=return_h,
                  impl=impl)


def rif(x_seq, v=None, *, w, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
        detach_reset=False, return_h=False, impl="auto"):
    r"""Recurrent IF neuron (learnable self-weight) over a time-major sequence.

    $$H_t = V_{t-1} + w\,(V_{t-1} - V_r) + X_t$$

    (forward Euler of $\dot V = w(V - V_r) + RI$; `w` does not scale the input), then fire
    and reset. Semantically: `for x in x_seq: s, v = rif_step(x, v, w=w, ...)`.

    Args:
      x_seq: input increments $X$, shape `[T, *shape]`, floating dtype.
      v: $V_0$, a tensor broadcastable to `shape`; `None` means the resting value.
      w: the self-connection weight; a number or a tensor broadcastable to `shape`.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to one time step.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset (subtract
        $V_{th}$), and then $V_r = 0$ in the charge.
      surrogate: the spike function's surrogate gradient, a `snnfunc.surrogate.Surrogate`
        instance such as `Sigmoid()`.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the voltage after charge and before reset at every step.
      impl: `"auto"` (default) runs the fused kernel where it applies and the unrolled loop
        elsewhere (forward-mode AD, for example; `snnfunc.info()` says which applies here);
        `"fused"` and `"reference"` force one.

    Returns:
      `NeuronOutput(spikes, v)`, or `NeuronOutputWithH(spikes, v, h)` with `return_h`:
        `spikes` (and `h`) `[T, *shape]` in `x_seq.dtype`, `v` of shape `shape`, the state
        to pass to the next call. For `T = 0` spikes are empty and `v` is $V_0$.
    """
    return _multi("rif", x_seq, v, w, name="w", v_threshold=v_threshold, v_reset=v_reset,
                  surrogate=surrogate, detach_reset=detach_reset, decay_input=True,
                  return_h=return_h, impl=impl)


def if_step(x, v=None, *, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
            detach_reset=False, return_h=False):
    r"""One time step of `if_`: $H = V + X$, then fire and reset.

    Args:
      x: the input increment of this step, any shape, floating dtype.
      v: the state before this step, a tensor broadcastable to `x`; `None` means rest.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to `x`.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset.
      surrogate: the surrogate gradient, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the voltage after charge and before reset.

    Returns:
      `StepOutput(spike, v)`, or `StepOutputWithH(spike, v, h)` with `return_h`.
    """
    return _single("if", x, v, None, name=None, v_threshold=v_threshold, v_reset=v_reset,
                   surrogate=surrogate, detach_reset=detach_reset, decay_input=True,
                   return_h=return_h)


def lif_step(x, v=None, *, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
             surrogate=Sigmoid(), detach_reset=False, return_h=False):
    r"""One time step of `lif`.

    Args:
      x: the input increment of this step, any shape, floating dtype.
      v: the state before this step, a tensor broadcastable to `x`; `None` means rest.
      tau: membrane time constant, a number > 0 or a tensor broadcastable to `x`.
      decay_input: whether the input is divided by $\tau$ too.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to `x`.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset.
      surrogate: the surrogate gradient, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the voltage after charge and before reset.

    Returns:
      `StepOutput(spike, v)`, or `StepOutputWithH(spike, v, h)` with `return_h`.
    """
    return _single("lif", x, v, tau, name="tau", v_threshold=v_threshold, v_reset=v_reset,
                   surrogate=surrogate, detach_reset=detach_reset, decay_input=decay_input,
                   return_h=return_h, positive=True)


def plif_step(x, v=None, *, w, parametrization="reciprocal", decay_input=True,
              v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(), detach_reset=False,
              return_h=False):
    r"""One time step of `plif`.

    Args:
      x: the input increment of this step, any shape, floating dtype.
      v: the state before this step, a tensor broadcastable to `x`; `None` means rest.
      w: the parameter giving $k = 1/\tau$ through `parametrization`.
      parametrization: `"reciprocal"` ($k = w$) or `"sigmoid"` ($k = \mathrm{sigmoid}(w)$).
      decay_input: whether the input is scaled by $k$ too.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to `x`.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset.
      surrogate: the surrogate gradient, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the voltage after charge and before reset.

    Returns:
      `StepOutput(spike, v)`, or `StepOutputWithH(spike, v, h)` with `return_h`.
    """
    return _single("plif", x, v, _plif_k(w, parametrization), name="w",
                   v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                   detach_reset=detach_reset, decay_input=decay_input, return_h=return_h)


def rif_step(x, v=None, *, w, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
             detach_reset=False, return_h=False):
    r"""One time step of `rif`.

    Args:
      x: the input increment of this step, any shape, floating dtype.
      v: the state before this step, a tensor broadcastable to `x`; `None` means rest.
      w: the self-connection weight, a number or a tensor broadcastable to `x`.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to `x`.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset.
      surrogate: the surrogate gradient, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the voltage after charge and before reset.

    Returns:
      `StepOutput(spike, v)`, or `StepOutputWithH(spike, v, h)` with `return_h`.
    """
    return _single("rif", x, v, w, name="w", v_threshold=v_threshold, v_reset=v_reset,
                   surrogate=surrogate, detach_reset=detach_reset, decay_input=True,
                   return_h=return_h)
