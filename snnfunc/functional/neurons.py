r"""The four neurons as pure functions of explicit state.

Every neuron does, per time step, in this order (the spec: charge, fire, reset):

.. math::
    H_t = f(V_{t-1}, X_t), \qquad
    S_t = \Theta(H_t - V_{th}), \qquad
    V_t = \begin{cases} H_t (1 - S_t) + V_{reset} S_t & \text{hard reset (``v_reset`` a number)} \\
                        H_t - V_{th} S_t & \text{soft reset (``v_reset=None``)} \end{cases}

The charge :math:`f` is the only thing that differs between neurons. With ``detach_reset=True``
the spike in the reset is detached from the graph (the gradient still flows through the fire).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

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
    """Result of a multi-step neuron: ``spikes`` ``[T, *shape]`` and the final state ``v``."""

    spikes: torch.Tensor
    v: torch.Tensor


class NeuronOutputWithH(NamedTuple):
    """``NeuronOutput`` plus ``h`` ``[T, *shape]``, the voltage after charge and before reset."""

    spikes: torch.Tensor
    v: torch.Tensor
    h: torch.Tensor


class StepOutput(NamedTuple):
    """Result of one time step: ``spike`` and the next state ``v``."""

    spike: torch.Tensor
    v: torch.Tensor


class StepOutputWithH(NamedTuple):
    """``StepOutput`` plus ``h``, the voltage after charge and before reset."""

    spike: torch.Tensor
    v: torch.Tensor
    h: torch.Tensor


# --------------------------------------------------------------------------- the equations


def charge(kind: str, x, v, p, v_rest: float, decay_input: bool):
    """H_t from V_{t-1} and X_t. ``p`` is tau (lif), k (plif), w (rif) or unused (if)."""
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


def fire_reset(h, v_threshold, v_reset, surrogate: Surrogate, detach_reset: bool):
    """(S_t, V_t) from H_t."""
    s = spike(h - v_threshold, surrogate)  # fire
    r = s.detach() if detach_reset else s
    if v_reset is None:
        v = h - r * v_threshold  # soft reset
    else:
        v = h * (1 - r) + v_reset * r  # hard reset
    return s, v


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
    v = _checks.check_state(v, x, step_shape, rest, what)
    v_reset = None if v_reset is None else float(v_reset)
    return v, p, v_threshold, v_reset


def _plif_k(w, parametrization):
    if parametrization not in _PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {_PARAMETRIZATIONS}, got {parametrization!r}"
        )
    if parametrization == "reciprocal" or w is None:
        return w
    if isinstance(w, torch.Tensor):
        return torch.sigmoid(w)
    if _checks._is_number(w):
        return 1.0 / (1.0 + math.exp(-w))
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
            return out
    return reference(kind, x_seq, v, p, **options)


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

_COMMON_ARGS = r"""
      v_threshold: :math:`V_{th}`; a number or a tensor broadcastable to one time step.
      v_reset: :math:`V_{reset}` for a hard reset; ``None`` selects the soft reset
        (subtract :math:`V_{th}`), and then :math:`V_r = 0` in the charge.
      surrogate: the spike function's surrogate gradient, a :class:`snnfunc.surrogate.Surrogate`.
      detach_reset: detach the spike in the reset from the graph.
      return_h: also return ``h``, the voltage after charge and before reset at every step."""

_MULTI_TAIL = r"""
      impl: ``"auto"`` (default) runs the fused kernel where it applies and the unrolled loop
        elsewhere (forward-mode AD, for example); ``"fused"`` and ``"reference"`` force one.

    Returns:
      ``NeuronOutput(spikes, v)``, or ``NeuronOutputWithH(spikes, v, h)`` with ``return_h``:
      ``spikes`` (and ``h``) ``[T, *shape]`` in ``x_seq.dtype``, ``v`` of shape ``shape``, the
      state to pass to the next call. For ``T = 0`` spikes are empty and ``v`` is V_0.
    """

_STEP_TAIL = r"""

    Returns:
      ``StepOutput(spike, v)``, or ``StepOutputWithH(spike, v, h)`` with ``return_h``.
    """


def _doc(text, tail):
    def wrap(fn):
        fn.__doc__ = text.replace("{COMMON}", _COMMON_ARGS) + tail
        return fn

    return wrap


@_doc(r"""Integrate-and-fire neuron over a time-major sequence.

    .. math::
        H_t = V_{t-1} + X_t

    then fire and reset as described in :mod:`snnfunc.functional`. Semantically::

        for x in x_seq:
            s, v = if_step(x, v, ...)

    Args:
      x_seq: input increments X, shape ``[T, *shape]``, floating dtype.
      v: V_0, broadcastable to ``shape``; ``None`` means the resting value
        (``v_reset``, or 0 with soft reset).{COMMON}""", _MULTI_TAIL)
def if_(x_seq, v=None, *, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
        detach_reset=False, return_h=False, impl="auto"):
    return _multi("if", x_seq, v, None, name=None, v_threshold=v_threshold, v_reset=v_reset,
                  surrogate=surrogate, detach_reset=detach_reset, decay_input=True,
                  return_h=return_h, impl=impl)


@_doc(r"""Leaky integrate-and-fire neuron over a time-major sequence.

    With :math:`V_r` = ``v_reset`` (0 for soft reset):

    .. math::
        H_t = V_{t-1} + \tfrac{1}{\tau}\big(X_t - (V_{t-1} - V_r)\big)
        \quad\text{or, with ``decay_input=False``,}\quad
        H_t = V_{t-1} - \tfrac{1}{\tau}(V_{t-1} - V_r) + X_t

    then fire and reset. Semantically::

        for x in x_seq:
            s, v = lif_step(x, v, tau=tau, ...)

    Args:
      x_seq: input increments X, shape ``[T, *shape]``, floating dtype.
      v: V_0, broadcastable to ``shape``; ``None`` means the resting value.
      tau: membrane time constant :math:`\tau`; a number > 0 or a tensor broadcastable to
        ``shape`` (per layer, channel or neuron), differentiable.
      decay_input: whether the input is divided by :math:`\tau` too.{COMMON}""", _MULTI_TAIL)
def lif(x_seq, v=None, *, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
        surrogate=Sigmoid(), detach_reset=False, return_h=False, impl="auto"):
    return _multi("lif", x_seq, v, tau, name="tau", v_threshold=v_threshold, v_reset=v_reset,
                  surrogate=surrogate, detach_reset=detach_reset, decay_input=decay_input,
                  return_h=return_h, impl=impl, positive=True)


@_doc(r"""Parametric LIF neuron (learnable time constant) over a time-major sequence.

    With :math:`k = w` (``parametrization="reciprocal"``, the seed's: ``w`` holds
    :math:`1/\tau`) or :math:`k = \mathrm{sigmoid}(w)` (``"sigmoid"``, Fang et al. 2021, which
    keeps :math:`\tau = 1/k > 1`):

    .. math::
        H_t = V_{t-1} + k\big(X_t - (V_{t-1} - V_r)\big)
        \quad\text{or, with ``decay_input=False``,}\quad
        H_t = V_{t-1} - k(V_{t-1} - V_r) + X_t

    then fire and reset. Semantically::

        for x in x_seq:
            s, v = plif_step(x, v, w=w, ...)

    Args:
      x_seq: input increments X, shape ``[T, *shape]``, floating dtype.
      v: V_0, broadcastable to ``shape``; ``None`` means the resting value.
      w: the parameter, usually an ``nn.Parameter``; a number or a tensor broadcastable to
        ``shape``.
      parametrization: ``"reciprocal"`` or ``"sigmoid"``, how ``w`` gives :math:`k = 1/\tau`.
      decay_input: whether the input is scaled by :math:`k` too.{COMMON}""", _MULTI_TAIL)
def plif(x_seq, v=None, *, w, parametrization="reciprocal", decay_input=True, v_threshold=1.0,
         v_reset=0.0, surrogate=Sigmoid(), detach_reset=False, return_h=False, impl="auto"):
    return _multi("plif", x_seq, v, _plif_k(w, parametrization), name="w",
                  v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                  detach_reset=detach_reset, decay_input=decay_input, return_h=return_h,
                  impl=impl)


@_doc(r"""Recurrent IF neuron (learnable self-weight) over a time-major sequence.

    .. math::
        H_t = V_{t-1} + w\,(V_{t-1} - V_r) + X_t

    (forward Euler of :math:`\dot V = w(V - V_r) + RI`; ``w`` does not scale the input), then
    fire and reset. Semantically::

        for x in x_seq:
            s, v = rif_step(x, v, w=w, ...)

    Args:
      x_seq: input increments X, shape ``[T, *shape]``, floating dtype.
      v: V_0, broadcastable to ``shape``; ``None`` means the resting value.
      w: the self-connection weight; a number or a tensor broadcastable to ``shape``.{COMMON}""",
      _MULTI_TAIL)
def rif(x_seq, v=None, *, w, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
        detach_reset=False, return_h=False, impl="auto"):
    return _multi("rif", x_seq, v, w, name="w", v_threshold=v_threshold, v_reset=v_reset,
                  surrogate=surrogate, detach_reset=detach_reset, decay_input=True,
                  return_h=return_h, impl=impl)


@_doc(r"""One time step of :func:`if_`: :math:`H = V + X`, then fire and reset.

    Args:
      x: the input increment of this step, any shape, floating dtype.
      v: the state before this step, broadcastable to ``x``; ``None`` means rest.{COMMON}""",
      _STEP_TAIL)
def if_step(x, v=None, *, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
            detach_reset=False, return_h=False):
    return _single("if", x, v, None, name=None, v_threshold=v_threshold, v_reset=v_reset,
                   surrogate=surrogate, detach_reset=detach_reset, decay_input=True,
                   return_h=return_h)


@_doc(r"""One time step of :func:`lif`.

    Args:
      x: the input increment of this step, any shape, floating dtype.
      v: the state before this step, broadcastable to ``x``; ``None`` means rest.
      tau: membrane time constant, a number > 0 or a tensor broadcastable to ``x``.
      decay_input: whether the input is divided by :math:`\tau` too.{COMMON}""", _STEP_TAIL)
def lif_step(x, v=None, *, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
             surrogate=Sigmoid(), detach_reset=False, return_h=False):
    return _single("lif", x, v, tau, name="tau", v_threshold=v_threshold, v_reset=v_reset,
                   surrogate=surrogate, detach_reset=detach_reset, decay_input=decay_input,
                   return_h=return_h, positive=True)


@_doc(r"""One time step of :func:`plif`.

    Args:
      x: the input increment of this step, any shape, floating dtype.
      v: the state before this step, broadcastable to ``x``; ``None`` means rest.
      w: the parameter giving :math:`k = 1/\tau` through ``parametrization``.
      parametrization: ``"reciprocal"`` (k = w) or ``"sigmoid"`` (k = sigmoid(w)).
      decay_input: whether the input is scaled by :math:`k` too.{COMMON}""", _STEP_TAIL)
def plif_step(x, v=None, *, w, parametrization="reciprocal", decay_input=True,
              v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(), detach_reset=False,
              return_h=False):
    return _single("plif", x, v, _plif_k(w, parametrization), name="w",
                   v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                   detach_reset=detach_reset, decay_input=decay_input, return_h=return_h)


@_doc(r"""One time step of :func:`rif`.

    Args:
      x: the input increment of this step, any shape, floating dtype.
      v: the state before this step, broadcastable to ``x``; ``None`` means rest.
      w: the self-connection weight, a number or a tensor broadcastable to ``x``.{COMMON}""",
      _STEP_TAIL)
def rif_step(x, v=None, *, w, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
             detach_reset=False, return_h=False):
    return _single("rif", x, v, w, name="w", v_threshold=v_threshold, v_reset=v_reset,
                   surrogate=surrogate, detach_reset=detach_reset, decay_input=True,
                   return_h=return_h)
