r"""Neurons built from one definition each (`snnfunc.neuron`): current-based LIF, adaptive
threshold LIF, quadratic and exponential integrate-and-fire.

Same units as the other neurons: threshold 1, rest `v_reset` (0), one step of time; an input
of about 1 per step makes each of them fire. Each definition below is all there is of the
neuron: the reference loop, the step function and the fused kernels come from it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from snnfunc.definition import keywords_listed, neuron
from snnfunc.surrogate import Sigmoid

__all__ = ["CubaLIFState", "ALIFState", "cuba_lif", "cuba_lif_step", "alif", "alif_step",
           "qif", "qif_step", "eif", "eif_step"]


class CubaLIFState(NamedTuple):
    """State of `cuba_lif`: the synaptic current `i` and the membrane `v`."""

    i: torch.Tensor
    v: torch.Tensor


class ALIFState(NamedTuple):
    """State of `alif`: the membrane `v` and the threshold adaptation `a`."""

    v: torch.Tensor
    a: torch.Tensor


# --------------------------------------------------------------------------- definitions


@neuron(positive=("tau_syn", "tau_mem"), name="snnfunc:cuba_lif", state_type=CubaLIFState)
def _cuba_lif(x, i, v, *, tau_syn=2.0, tau_mem=2.0, decay_input=True, v_rest):
    if decay_input:
        i = i + (x - i) / tau_syn
        v = v + (i - (v - v_rest)) / tau_mem
    else:
        i = i - i / tau_syn + x
        v = v - (v - v_rest) / tau_mem + i
    return i, v


def _alif_threshold(v, a, *, v_threshold, beta=0.5):
    return v_threshold + beta * a


def _alif_on_spike(s, v, a):
    return {"a": a + s}


@neuron(threshold=_alif_threshold, on_spike=_alif_on_spike, positive=("tau", "tau_adapt"),
        name="snnfunc:alif", state_type=ALIFState)
def _alif(x, v, a, *, tau=2.0, tau_adapt=20.0, decay_input=True, v_rest):
    a = a - a / tau_adapt
    if decay_input:
        v = v + (x - (v - v_rest)) / tau
    else:
        v = v - (v - v_rest) / tau + x
    return v, a


@neuron(positive=("tau",), name="snnfunc:qif")
def _qif(x, v, *, tau=2.0, v_c=0.8, a0=1.0, v_rest):
    return v + (x + a0 * (v - v_rest) * (v - v_c)) / tau


@neuron(positive=("tau", "delta_T"), name="snnfunc:eif")
def _eif(x, v, *, tau=2.0, delta_T=1.0, theta_rh=0.8, v_rest):
    return v + (x + v_rest - v + delta_T * torch.exp((v - theta_rh) / delta_T)) / tau


# --------------------------------------------------------------------------- public API

@keywords_listed
def cuba_lif(x_seq, state=None, *, tau_syn=2.0, tau_mem=2.0, decay_input=True, v_threshold=1.0,
             v_reset=0.0, surrogate=Sigmoid(), detach_reset=False, return_h=False,
             return_states=False, batch_first=False, impl="auto"):
    r"""Current-based LIF neuron (NIR's CubaLIF, snnTorch's `Synaptic`) over a sequence.

    A synaptic current $I$ integrates the input and charges the membrane:

    $$I_t = I_{t-1} + \tfrac{1}{\tau_{syn}}(X_t - I_{t-1}), \qquad
    H_t = V_{t-1} + \tfrac{1}{\tau_{mem}}\big(I_t - (V_{t-1} - V_r)\big)$$

    or, with `decay_input=False`, $I_t = I_{t-1} - I_{t-1}/\tau_{syn} + X_t$ and
    $H_t = V_{t-1} - (V_{t-1} - V_r)/\tau_{mem} + I_t$; then fire and reset $V$.

    Args:
      x_seq: input $X$, shape `[T, *shape]`, floating dtype.
      state: `CubaLIFState(i, v)` of tensors broadcastable to `shape`; `None` (or a field
        `None`) means rest: $I = 0$, $V = V_r$.
      tau_syn: synaptic time constant $\tau_{syn}$, a number > 0 or a tensor broadcastable
        to `shape`.
      tau_mem: membrane time constant $\tau_{mem}$, likewise.
      decay_input: whether the input is scaled by $1/\tau_{syn}$ and the current by
        $1/\tau_{mem}$.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to one time step.
      v_reset: $V_{reset}$ for a hard reset (and $V_r$); `None` selects the soft reset and
        $V_r = 0$.
      surrogate: the surrogate gradient, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the membrane after charge and before reset at every step.
      return_states: also return the state after every step: `TraceOutput(spikes, state, h,
        trace)`.
      batch_first: `x_seq` is `[B, T, ...]` (read in place, no copy); the sequences
        returned are `[B, T, ...]` too.
      impl: `"auto"`, `"fused"` or `"reference"`, as for `snnfunc.lif`.

    Returns:
      `StatesOutput(spikes, state)`, or `StatesOutputWithH(spikes, state, h)` with
        `return_h`: `spikes` `[T, *shape]`, `state` the final `CubaLIFState`.
    """
    return _cuba_lif(x_seq, state, tau_syn=tau_syn, tau_mem=tau_mem, decay_input=decay_input,
                     v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                     detach_reset=detach_reset, return_h=return_h,
                     return_states=return_states,
                  batch_first=batch_first, impl=impl)


@keywords_listed
def cuba_lif_step(x, state=None, *, tau_syn=2.0, tau_mem=2.0, decay_input=True,
                  v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(), detach_reset=False,
                  return_h=False):
    r"""One time step of `cuba_lif`.

    Args:
      x: the input of this step, any shape, floating dtype.
      state: `CubaLIFState(i, v)` before this step; `None` means rest.
      tau_syn: synaptic time constant, a number > 0 or a tensor broadcastable to `x`.
      tau_mem: membrane time constant, likewise.
      decay_input: as for `cuba_lif`.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to `x`.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset.
      surrogate: the surrogate gradient, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the membrane after charge and before reset.

    Returns:
      `StepStatesOutput(spike, state)`, or `StepStatesOutputWithH(spike, state, h)`.
    """
    return _cuba_lif.step(x, state, tau_syn=tau_syn, tau_mem=tau_mem, decay_input=decay_input,
                          v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                          detach_reset=detach_reset, return_h=return_h)


@keywords_listed
def alif(x_seq, state=None, *, tau=2.0, tau_adapt=20.0, beta=0.5, decay_input=True,
         v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(), detach_reset=False, return_h=False,
         return_states=False, batch_first=False, impl="auto"):
    r"""Adaptive-threshold LIF neuron (Bellec et al. 2018; Norse's `LSNN`) over a sequence.

    An adaptation $A$ decays, raises the threshold and jumps by 1 at each spike:

    $$A'_t = A_{t-1} - A_{t-1}/\tau_{adapt}, \qquad
    H_t = V_{t-1} + \tfrac{1}{\tau}\big(X_t - (V_{t-1} - V_r)\big),$$

    $$S_t = \Theta\big(H_t - (V_{th} + \beta A'_t)\big), \qquad A_t = A'_t + S_t,$$

    and $V$ resets as for `lif` (the soft reset subtracts the adapted threshold). With
    `decay_input=False`, $H_t = V_{t-1} - (V_{t-1} - V_r)/\tau + X_t$.

    Args:
      x_seq: input $X$, shape `[T, *shape]`, floating dtype.
      state: `ALIFState(v, a)` of tensors broadcastable to `shape`; `None` means rest
        ($V = V_r$, $A = 0$).
      tau: membrane time constant $\tau$, a number > 0 or a tensor broadcastable to `shape`.
      tau_adapt: adaptation time constant $\tau_{adapt}$, likewise.
      beta: how much one unit of adaptation raises the threshold, $\beta$.
      decay_input: whether the input is divided by $\tau$ too.
      v_threshold: $V_{th}$, the threshold without adaptation.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset.
      surrogate: the surrogate gradient, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset and in the adaptation's jump.
      return_h: also return `h`, the membrane after charge and before reset.
      return_states: also return the state after every step: `TraceOutput(spikes, state, h,
        trace)`.
      batch_first: `x_seq` is `[B, T, ...]` (read in place, no copy); the sequences
        returned are `[B, T, ...]` too.
      impl: `"auto"`, `"fused"` or `"reference"`, as for `snnfunc.lif`.

    Returns:
      `StatesOutput(spikes, state)` (or with `h`): `state` the final `ALIFState`.
    """
    return _alif(x_seq, state, tau=tau, tau_adapt=tau_adapt, beta=beta, decay_input=decay_input,
                 v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                 detach_reset=detach_reset, return_h=return_h,
                 return_states=return_states,
                  batch_first=batch_first, impl=impl)


@keywords_listed
def alif_step(x, state=None, *, tau=2.0, tau_adapt=20.0, beta=0.5, decay_input=True,
              v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(), detach_reset=False,
              return_h=False):
    r"""One time step of `alif`.

    Args:
      x: the input of this step, any shape, floating dtype.
      state: `ALIFState(v, a)` before this step; `None` means rest.
      tau: membrane time constant.
      tau_adapt: adaptation time constant.
      beta: threshold increase per unit of adaptation.
      decay_input: as for `alif`.
      v_threshold: $V_{th}$ without adaptation.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset.
      surrogate: the surrogate gradient.
      detach_reset: detach the spike in the reset and in the jump.
      return_h: also return `h`.

    Returns:
      `StepStatesOutput(spike, state)`, or with `h`.
    """
    return _alif.step(x, state, tau=tau, tau_adapt=tau_adapt, beta=beta,
                      decay_input=decay_input, v_threshold=v_threshold, v_reset=v_reset,
                      surrogate=surrogate, detach_reset=detach_reset, return_h=return_h)


@keywords_listed
def qif(x_seq, v=None, *, tau=2.0, v_c=0.8, a0=1.0, v_threshold=1.0, v_reset=0.0,
        surrogate=Sigmoid(), detach_reset=False, return_h=False, return_states=False, batch_first=False,
        impl="auto"):
    r"""Quadratic integrate-and-fire neuron (SpikingJelly's `QIFNode`) over a sequence.

    $$H_t = V_{t-1} + \tfrac{1}{\tau}\big(X_t + a_0 (V_{t-1} - V_r)(V_{t-1} - V_c)\big)$$

    then fire and reset. Above the critical voltage $V_c$ the membrane accelerates by itself.

    Args:
      x_seq: input $X$, shape `[T, *shape]`, floating dtype.
      v: $V_0$, a tensor broadcastable to `shape`; `None` means rest ($V_r$).
      tau: membrane time constant $\tau > 0$; a number or a tensor broadcastable to `shape`.
      v_c: the critical voltage $V_c$.
      a0: the sharpness $a_0$ of the quadratic term.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to one time step.
      v_reset: $V_{reset}$ for a hard reset (and the rest $V_r$); `None` selects the soft
        reset and $V_r = 0$.
      surrogate: the surrogate gradient, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the voltage after charge and before reset.
      return_states: also return the state after every step: `TraceOutput(spikes, state, h,
        trace)`.
      batch_first: `x_seq` is `[B, T, ...]` (read in place, no copy); the sequences
        returned are `[B, T, ...]` too.
      impl: `"auto"`, `"fused"` or `"reference"`, as for `snnfunc.lif`.

    Returns:
      `NeuronOutput(spikes, v)`, or `NeuronOutputWithH(spikes, v, h)` with `return_h`.
    """
    return _qif(x_seq, v, tau=tau, v_c=v_c, a0=a0, v_threshold=v_threshold, v_reset=v_reset,
                surrogate=surrogate, detach_reset=detach_reset, return_h=return_h,
                return_states=return_states,
                  batch_first=batch_first, impl=impl)


@keywords_listed
def qif_step(x, v=None, *, tau=2.0, v_c=0.8, a0=1.0, v_threshold=1.0, v_reset=0.0,
             surrogate=Sigmoid(), detach_reset=False, return_h=False):
    r"""One time step of `qif`.

    Args:
      x: the input of this step, any shape, floating dtype.
      v: the state before this step; `None` means rest.
      tau: membrane time constant.
      v_c: the critical voltage.
      a0: the sharpness of the quadratic term.
      v_threshold: $V_{th}$.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset.
      surrogate: the surrogate gradient.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`.

    Returns:
      `StepOutput(spike, v)`, or `StepOutputWithH(spike, v, h)`.
    """
    return _qif.step(x, v, tau=tau, v_c=v_c, a0=a0, v_threshold=v_threshold, v_reset=v_reset,
                     surrogate=surrogate, detach_reset=detach_reset, return_h=return_h)


@keywords_listed
def eif(x_seq, v=None, *, tau=2.0, delta_T=1.0, theta_rh=0.8, v_threshold=1.0, v_reset=0.0,
        surrogate=Sigmoid(), detach_reset=False, return_h=False, return_states=False, batch_first=False,
        impl="auto"):
    r"""Exponential integrate-and-fire neuron (SpikingJelly's `EIFNode`) over a sequence.

    $$H_t = V_{t-1} + \tfrac{1}{\tau}\Big(X_t + V_r - V_{t-1}
    + \Delta_T \exp\big(\tfrac{V_{t-1} - \theta_{rh}}{\Delta_T}\big)\Big)$$

    then fire and reset. The exponential term takes over near the rheobase $\theta_{rh}$.

    Args:
      x_seq: input $X$, shape `[T, *shape]`, floating dtype.
      v: $V_0$, a tensor broadcastable to `shape`; `None` means rest ($V_r$).
      tau: membrane time constant $\tau > 0$; a number or a tensor broadcastable to `shape`.
      delta_T: the sharpness $\Delta_T > 0$.
      theta_rh: the rheobase threshold $\theta_{rh}$.
      v_threshold: $V_{th}$; a number or a tensor broadcastable to one time step.
      v_reset: $V_{reset}$ for a hard reset (and the rest $V_r$); `None` selects the soft
        reset and $V_r = 0$.
      surrogate: the surrogate gradient, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`, the voltage after charge and before reset.
      return_states: also return the state after every step: `TraceOutput(spikes, state, h,
        trace)`.
      batch_first: `x_seq` is `[B, T, ...]` (read in place, no copy); the sequences
        returned are `[B, T, ...]` too.
      impl: `"auto"`, `"fused"` or `"reference"`, as for `snnfunc.lif`.

    Returns:
      `NeuronOutput(spikes, v)`, or `NeuronOutputWithH(spikes, v, h)` with `return_h`.
    """
    return _eif(x_seq, v, tau=tau, delta_T=delta_T, theta_rh=theta_rh, v_threshold=v_threshold,
                v_reset=v_reset, surrogate=surrogate, detach_reset=detach_reset,
                return_h=return_h, return_states=return_states,
                  batch_first=batch_first, impl=impl)


@keywords_listed
def eif_step(x, v=None, *, tau=2.0, delta_T=1.0, theta_rh=0.8, v_threshold=1.0, v_reset=0.0,
             surrogate=Sigmoid(), detach_reset=False, return_h=False):
    r"""One time step of `eif`.

    Args:
      x: the input of this step, any shape, floating dtype.
      v: the state before this step; `None` means rest.
      tau: membrane time constant.
      delta_T: the sharpness.
      theta_rh: the rheobase threshold.
      v_threshold: $V_{th}$.
      v_reset: $V_{reset}$ for a hard reset; `None` selects the soft reset.
      surrogate: the surrogate gradient.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return `h`.

    Returns:
      `StepOutput(spike, v)`, or `StepOutputWithH(spike, v, h)`.
    """
    return _eif.step(x, v, tau=tau, delta_T=delta_T, theta_rh=theta_rh, v_threshold=v_threshold,
                     v_reset=v_reset, surrogate=surrogate, detach_reset=detach_reset,
                     return_h=return_h)


DEFINITIONS = {"cuba_lif": _cuba_lif, "alif": _alif, "qif": _qif, "eif": _eif}
"""The built-in neurons made from definitions, by public name."""
