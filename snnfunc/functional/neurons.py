r"""The four neurons as pure functions of explicit state.

Every neuron does, per time step, in this order (charge, fire, reset):

$$H_t = f(V_{t-1}, X_t), \qquad S_t = \Theta(H_t - V_{th}),$$

$$V_t = \begin{cases} V_{reset} & \text{if } S_t = 1 \text{ (hard reset: v_reset a number)} \\
H_t - V_{th} & \text{if } S_t = 1 \text{ (soft reset: v_reset = None)} \\
H_t & \text{if } S_t = 0 \end{cases}$$

A neuron that does not fire keeps $H_t$ exactly (NaN, infinities and -0.0 included). The
backward pass differentiates the blend $H_t(1 - S_t) + V_{reset} S_t$ (hard) or
$H_t - V_{th} S_t$ (soft), with the surrogate's $g'(H_t - V_{th})$ in place of $\Theta'$.
The charge $f$ is the only thing that differs between neurons. With `detach_reset=True`
the spike in the reset is detached from the graph (the gradient still flows through the fire).

Shapes: `x_seq` is time-major, `[T, *shape]`, and the state has one step's shape: a 2-d
`[T, N]` is N neurons over T steps, and a 1-d `[T]` is one neuron over T steps (its state 0-d),
not one step of T neurons (for one step use the `*_step` functions or `x.unsqueeze(0)`).
`batch_first=True` takes `[B, T, ...]`, read in place. Any view is read without a copy where
its layout allows: an input expanded over T (`x.expand(T, ...)`, a static encoder's output
repeated), a slice of time, a batch-first tensor; a step whose values are scattered (a
transposed feature dimension) is copied once.
"""

from __future__ import annotations

import math

import torch

from snnfunc.definition import keywords_listed, neuron
from snnfunc._core import checks as _checks
from snnfunc._core.reset import reset
from snnfunc._core.results import (NeuronOutput, NeuronOutputWithH, StepOutput,
                                   StepOutputWithH)
from snnfunc.surrogate import Sigmoid

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
__reexported__ = (reset,)  # the reset the reference loops use lives in _core


# --------------------------------------------------------------------------- the definitions
# Each neuron is its charge, H_t from V_{t-1} and X_t; the fire and the reset are the same for
# all of them. The reference loop, the step functions and the fused kernels come from these.


@neuron(name="snnfunc:if")
def _if(x, v):
    return v + x


@neuron(positive=("tau",), name="snnfunc:lif")
def _lif(x, v, *, tau=2.0, decay_input=True, v_rest):
    if decay_input:
        return v + (x - (v - v_rest)) / tau
    return v - (v - v_rest) / tau + x


@neuron(name="snnfunc:plif")
def _plif(x, v, *, w, decay_input=True, v_rest):  # w is k here, after the parametrization
    if decay_input:
        return v + (x - (v - v_rest)) * w
    return v - (v - v_rest) * w + x


@neuron(name="snnfunc:rif")
def _rif(x, v, *, w, v_rest):
    return v + w * (v - v_rest) + x


DEFINITIONS = {"if": _if, "lif": _lif, "plif": _plif, "rif": _rif}
"""SpikingFlow's four neurons as definitions, by kind."""


# --------------------------------------------------------------------------- argument handling


def _sigmoid(w: float) -> float:
    """The logistic sigmoid of a number, without overflow for any w."""
    if w >= 0:
        return 1.0 / (1.0 + math.exp(-w))
    e = math.exp(w)
    return e / (1.0 + e)


def plif_k(w, parametrization):
    """PLIF's k = 1/tau from `w` and its parametrization."""
    if parametrization not in _PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {_PARAMETRIZATIONS}, got {parametrization!r}"
        )
    if parametrization == "reciprocal" or w is None:
        return w
    if isinstance(w, torch.Tensor):
        return torch.sigmoid(w)
    if _checks.is_number(w) and not math.isnan(w):
        return _sigmoid(float(w))
    return w  # rejected with a clear message by _prepare


def _multi(kind, x_seq, v, params, *, impl, **options):
    return DEFINITIONS[kind](x_seq, v, impl=impl, **params, **options)


def _single(kind, x, v, params, **options):
    return DEFINITIONS[kind].step(x, v, **params, **options)


# --------------------------------------------------------------------------- public API


@keywords_listed
def if_(x_seq, v=None, *, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
        detach_reset=False, return_h=False, return_states=False, batch_first=False, impl="auto"):
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
      return_states: also return the state after every step: `TraceOutput(spikes, state, h,
        trace)`.
      batch_first: `x_seq` is `[B, T, ...]` (read in place, no copy); the sequences
        returned are `[B, T, ...]` too.
      impl: `"auto"` (default) runs the fused kernel where it applies and the unrolled loop
        elsewhere (forward-mode AD, for example; `snnfunc.info()` says which applies here);
        `"fused"` and `"reference"` force one.

    Returns:
      `NeuronOutput(spikes, v)`, or `NeuronOutputWithH(spikes, v, h)` with `return_h`:
        `spikes` (and `h`) `[T, *shape]` in `x_seq.dtype`, `v` of shape `shape`, the state
        to pass to the next call. For `T = 0` spikes are empty and `v` is $V_0$.
    """
    return _multi("if", x_seq, v, {}, v_threshold=v_threshold, v_reset=v_reset,
                  surrogate=surrogate, detach_reset=detach_reset, return_h=return_h,
                  return_states=return_states,
                  batch_first=batch_first, impl=impl)


@keywords_listed
def lif(x_seq, v=None, *, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
        surrogate=Sigmoid(), detach_reset=False, return_h=False, return_states=False, batch_first=False, impl="auto"):
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
      return_states: also return the state after every step: `TraceOutput(spikes, state, h,
        trace)`.
      batch_first: `x_seq` is `[B, T, ...]` (read in place, no copy); the sequences
        returned are `[B, T, ...]` too.
      impl: `"auto"` (default) runs the fused kernel where it applies and the unrolled loop
        elsewhere (forward-mode AD, for example; `snnfunc.info()` says which applies here);
        `"fused"` and `"reference"` force one.

    Returns:
      `NeuronOutput(spikes, v)`, or `NeuronOutputWithH(spikes, v, h)` with `return_h`:
        `spikes` (and `h`) `[T, *shape]` in `x_seq.dtype`, `v` of shape `shape`, the state
        to pass to the next call. For `T = 0` spikes are empty and `v` is $V_0$.
    """
    return _multi("lif", x_seq, v, dict(tau=tau, decay_input=decay_input),
                  v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                  detach_reset=detach_reset, return_h=return_h,
                  return_states=return_states,
                  batch_first=batch_first, impl=impl)


@keywords_listed
def plif(x_seq, v=None, *, w, parametrization="reciprocal", decay_input=True, v_threshold=1.0,
         v_reset=0.0, surrogate=Sigmoid(), detach_reset=False, return_h=False,
         return_states=False, batch_first=False, impl="auto"):
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
      return_states: also return the state after every step: `TraceOutput(spikes, state, h,
        trace)`.
      batch_first: `x_seq` is `[B, T, ...]` (read in place, no copy); the sequences
        returned are `[B, T, ...]` too.
      impl: `"auto"` (default) runs the fused kernel where it applies and the unrolled loop
        elsewhere (forward-mode AD, for example; `snnfunc.info()` says which applies here);
        `"fused"` and `"reference"` force one.

    Returns:
      `NeuronOutput(spikes, v)`, or `NeuronOutputWithH(spikes, v, h)` with `return_h`:
        `spikes` (and `h`) `[T, *shape]` in `x_seq.dtype`, `v` of shape `shape`, the state
        to pass to the next call. For `T = 0` spikes are empty and `v` is $V_0$.
    """
    return _multi("plif", x_seq, v, dict(w=plif_k(w, parametrization), decay_input=decay_input),
                  v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                  detach_reset=detach_reset, return_h=return_h,
                  return_states=return_states,
                  batch_first=batch_first, impl=impl)


@keywords_listed
def rif(x_seq, v=None, *, w, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
        detach_reset=False, return_h=False, return_states=False, batch_first=False, impl="auto"):
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
      return_states: also return the state after every step: `TraceOutput(spikes, state, h,
        trace)`.
      batch_first: `x_seq` is `[B, T, ...]` (read in place, no copy); the sequences
        returned are `[B, T, ...]` too.
      impl: `"auto"` (default) runs the fused kernel where it applies and the unrolled loop
        elsewhere (forward-mode AD, for example; `snnfunc.info()` says which applies here);
        `"fused"` and `"reference"` force one.

    Returns:
      `NeuronOutput(spikes, v)`, or `NeuronOutputWithH(spikes, v, h)` with `return_h`:
        `spikes` (and `h`) `[T, *shape]` in `x_seq.dtype`, `v` of shape `shape`, the state
        to pass to the next call. For `T = 0` spikes are empty and `v` is $V_0$.
    """
    return _multi("rif", x_seq, v, dict(w=w), v_threshold=v_threshold, v_reset=v_reset,
                  surrogate=surrogate, detach_reset=detach_reset, return_h=return_h,
                  return_states=return_states,
                  batch_first=batch_first, impl=impl)


@keywords_listed
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
    return _single("if", x, v, {}, v_threshold=v_threshold, v_reset=v_reset,
                   surrogate=surrogate, detach_reset=detach_reset, return_h=return_h)


@keywords_listed
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
    return _single("lif", x, v, dict(tau=tau, decay_input=decay_input),
                   v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                   detach_reset=detach_reset, return_h=return_h)


@keywords_listed
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
    return _single("plif", x, v, dict(w=plif_k(w, parametrization), decay_input=decay_input),
                   v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                   detach_reset=detach_reset, return_h=return_h)


@keywords_listed
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
    return _single("rif", x, v, dict(w=w), v_threshold=v_threshold, v_reset=v_reset,
                   surrogate=surrogate, detach_reset=detach_reset, return_h=return_h)
