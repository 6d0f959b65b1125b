"""SpikingFlow's four stateful neurons (its `softbp` neurons): `IFNode`, `LIFNode`,
`PLIFNode`, `RIFNode`, thin adapters over the functions with SpikingFlow's signatures and
defaults (`LIFNode` tau 100), on the stateful base every adapter shares.

SpikingFlow is SpikingJelly's predecessor; its `softbp` neurons are the classic stateful
interface: `forward(dv)` one step at a time, `reset()`, a `monitor`.

- `step_mode="s"` (default, SpikingFlow's): `forward(dv)` is one time step.
- `step_mode="m"`: `forward(x_seq)` runs a whole `[T, ...]` sequence in one call.

The surrogate gradient is `surrogate=` (SpikingFlow's name `pulse_soft=` and SpikingJelly's
`surrogate_function=` work too).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from snnfunc import functional as F
from snnfunc._core.checks import is_number
from snnfunc._stateful import StatefulNode, pick_surrogate
from snnfunc.surrogate import Sigmoid, Surrogate

__all__ = ["BaseNode", "IFNode", "LIFNode", "PLIFNode", "RIFNode"]


class BaseNode(StatefulNode):
    """The shared adapter: state, `reset()`, the monitor and the two step modes.

    Args:
      v_threshold: $V_{th}$.
      v_reset: $V_{reset}$ (hard reset), or `None` for the soft reset.
      pulse_soft: the surrogate spike function (SpikingFlow's name for `surrogate`).
      monitor_state: record H (voltage before reset) and spikes per step in `self.monitor`.
      detach_reset: detach the spike in the reset from the graph.
      step_mode: `"s"`: `forward` takes one step; `"m"`: `forward` takes `[T, ...]`.
      surrogate: the surrogate spike function, a `snnfunc.surrogate.Surrogate` such as
        `ATan()`; the same as `pulse_soft` (give one of them).
      surrogate_function: SpikingJelly's name for `surrogate`.
      batch_first: with `step_mode="m"`, inputs and spikes are `[B, T, ...]`.
    """

    _state_attr = "v"

    def __init__(self, v_threshold=1.0, v_reset=0.0, pulse_soft=Sigmoid(), monitor_state=False,
                 *, detach_reset=False, step_mode=None, surrogate=None, surrogate_function=None,
                 batch_first=False):
        super().__init__()
        if not is_number(v_threshold):
            raise TypeError(f"v_threshold must be a number, got {type(v_threshold).__name__}")
        if v_reset is not None and not is_number(v_reset):
            raise TypeError(f"v_reset must be a number or None, got {type(v_reset).__name__}")
        self.pulse_soft = pick_surrogate(Sigmoid(), pulse_soft=pulse_soft, surrogate=surrogate,
                                         surrogate_function=surrogate_function)
        if not isinstance(detach_reset, bool):
            raise TypeError(f"detach_reset must be True or False, got {detach_reset!r}")
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.detach_reset = detach_reset
        self._init_stateful("s" if step_mode is None else step_mode, monitor_state, batch_first,
                            explicit_step_mode=step_mode is not None)

    @property
    def v_rest(self) -> float:
        """The resting value V starts from: `v_reset`, or 0 with soft reset."""
        return 0.0 if self.v_reset is None else self.v_reset

    @property
    def surrogate(self) -> Surrogate:
        return self.pulse_soft

    # -- the neuron: subclasses say which function and which keyword arguments

    def _options(self) -> dict:
        return dict(v_threshold=self.v_threshold, v_reset=self.v_reset,
                    surrogate=self.pulse_soft, detach_reset=self.detach_reset)

    def _functions(self):
        raise TypeError(f"{type(self).__name__} must define _functions()")

    def _rest(self):
        return self.v_rest

    def _run(self, x, v, sequence, record):
        multi, single = self._functions()
        if sequence:
            out = multi(x, v, return_h=record, **self._options())
            return out.spikes, out.v, getattr(out, "h", None)
        out = single(x, v, return_h=record, **self._options())
        return out.spike, out.v, getattr(out, "h", None)

    def _state_for(self, x, step):
        """The held state as the functions take it (SpikingFlow's float at rest: None)."""
        v = self.v
        if not isinstance(v, torch.Tensor):
            return None if v == self.v_rest else x.new_full((), float(v))
        return super()._state_for(x, step)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._settings().items())

    def _settings(self) -> dict:
        return dict(v_threshold=self.v_threshold, v_reset=self.v_reset,
                    pulse_soft=self.pulse_soft, detach_reset=self.detach_reset,
                    step_mode=self.step_mode, monitor=self.monitor is not False)


class IFNode(BaseNode):
    """Integrate-and-fire neuron, $H_t = V_{t-1} + X_t$; see `snnfunc.if_`.

    Args: as `BaseNode`: `v_threshold`, `v_reset`, `pulse_soft`, `monitor_state`, and
    keyword-only `detach_reset`, `step_mode`, `surrogate`.
    """

    def _functions(self):
        return F.if_, F.if_step


class LIFNode(BaseNode):
    """Leaky integrate-and-fire neuron with a fixed `tau`; see `snnfunc.lif`.

    Args:
      tau: membrane time constant (> 0). The default, 100, is SpikingFlow's (`snnfunc.lif`
        defaults to 2.0, the usual value for networks trained over a few time steps).
      v_threshold: $V_{th}$.
      v_reset: $V_{reset}$ (hard reset), or `None` for the soft reset.
      pulse_soft: the surrogate spike function (SpikingFlow's name for `surrogate`).
      monitor_state: record H and spikes per step in `self.monitor`.
      decay_input: whether the input is divided by `tau` too (keyword only).
      **options: keyword only, as for `BaseNode`: `detach_reset`, `step_mode`, `surrogate`
        (`surrogate_function`), `batch_first`.
    """

    def __init__(self, tau=100.0, v_threshold=1.0, v_reset=0.0, pulse_soft=Sigmoid(),
                 monitor_state=False, *, decay_input=True, **options):
        super().__init__(v_threshold, v_reset, pulse_soft, monitor_state, **options)
        if not is_number(tau):
            raise TypeError(f"tau must be a number, got {type(tau).__name__}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau!r}")
        if not isinstance(decay_input, bool):
            raise TypeError(f"decay_input must be True or False, got {decay_input!r}")
        self.tau = float(tau)
        self.decay_input = decay_input

    def _functions(self):
        return F.lif, F.lif_step

    def _options(self):
        return dict(super()._options(), tau=self.tau, decay_input=self.decay_input)

    def _settings(self):
        return dict(tau=self.tau, decay_input=self.decay_input, **super()._settings())


def _param_shape(param_shape):
    if isinstance(param_shape, int):
        param_shape = (param_shape,)
    try:
        shape = tuple(int(d) for d in param_shape)
    except TypeError:
        raise TypeError(f"param_shape must be a tuple of ints, got {param_shape!r}") from None
    if any(d < 1 for d in shape):
        raise ValueError(f"param_shape must have positive sizes, got {shape}")
    return shape


class PLIFNode(BaseNode):
    """Parametric LIF neuron with a learnable time constant; see `snnfunc.plif`.

    The learnable parameter is `self.w`: with `parametrization="reciprocal"` (SpikingFlow's)
    it holds $k = 1/\\tau$, initialised to `1/init_tau`; with `"sigmoid"` (Fang et al. 2021)
    $k = \\mathrm{sigmoid}(w)$, initialised to `-log(init_tau - 1)`. `self.tau` gives the
    time constant $1/k$ it amounts to.

    Args:
      init_tau: the initial time constant (> 0; > 1 for `"sigmoid"`).
      v_threshold: $V_{th}$.
      v_reset: $V_{reset}$ (hard reset), or `None` for the soft reset.
      pulse_soft: the surrogate spike function (SpikingFlow's name for `surrogate`).
      monitor_state: record H and spikes per step in `self.monitor`.
      parametrization: `"reciprocal"` or `"sigmoid"` (keyword only).
      param_shape: shape of `w`: `(1,)` shares one value per layer (SpikingFlow's), `(C,)`
        or the full step shape gives one per channel or neuron (keyword only).
      decay_input: whether the input is scaled by $k$ too (keyword only).
      **options: keyword only, as for `BaseNode`: `detach_reset`, `step_mode`, `surrogate`
        (`surrogate_function`), `batch_first`.
    """

    def __init__(self, init_tau=2.0, v_threshold=1.0, v_reset=0.0, pulse_soft=Sigmoid(),
                 monitor_state=False, *, parametrization="reciprocal", param_shape=(1,),
                 decay_input=True, **options):
        super().__init__(v_threshold, v_reset, pulse_soft, monitor_state, **options)
        if parametrization not in ("reciprocal", "sigmoid"):
            raise ValueError(
                f"parametrization must be 'reciprocal' or 'sigmoid', got {parametrization!r}")
        if not is_number(init_tau):
            raise TypeError(f"init_tau must be a number, got {type(init_tau).__name__}")
        lowest = 1.0 if parametrization == "sigmoid" else 0.0
        if not init_tau > lowest:
            raise ValueError(
                f"init_tau must be > {lowest:g} with parametrization={parametrization!r}, "
                f"got {init_tau!r}")
        if not isinstance(decay_input, bool):
            raise TypeError(f"decay_input must be True or False, got {decay_input!r}")
        init = 1.0 / init_tau if parametrization == "reciprocal" else -math.log(init_tau - 1.0)
        self.w = nn.Parameter(torch.full(_param_shape(param_shape), init))
        self.parametrization = parametrization
        self.decay_input = decay_input

    @property
    def tau(self) -> torch.Tensor:
        """The time constant $1/k$ the parameter amounts to (same shape as `w`)."""
        k = self.w if self.parametrization == "reciprocal" else torch.sigmoid(self.w)
        return 1.0 / k

    def _functions(self):
        return F.plif, F.plif_step

    def _options(self):
        return dict(super()._options(), w=self.w, parametrization=self.parametrization,
                    decay_input=self.decay_input)

    def _settings(self):
        return dict(parametrization=self.parametrization, param_shape=tuple(self.w.shape),
                    decay_input=self.decay_input, **super()._settings())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # SpikingFlow named the reciprocal parameter "tau"
        if self.parametrization == "reciprocal" and prefix + "tau" in state_dict:
            state_dict[prefix + "w"] = state_dict.pop(prefix + "tau")
        # SpikingJelly's ParametricLIFNode stores one 0-d w (sigmoid form)
        w = state_dict.get(prefix + "w")
        if isinstance(w, torch.Tensor) and w.dim() == 0 and self.w.numel() == 1:
            state_dict[prefix + "w"] = w.reshape(self.w.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class RIFNode(BaseNode):
    """Recurrent IF neuron with a learnable self-weight `w`; see `snnfunc.rif`.

    Args:
      init_w: the initial self-connection weight (SpikingFlow's default -1e-3: a slow leak).
      v_threshold: $V_{th}$.
      v_reset: $V_{reset}$ (hard reset), or `None` for the soft reset.
      pulse_soft: the surrogate spike function (SpikingFlow's name for `surrogate`).
      monitor_state: record H and spikes per step in `self.monitor`.
      param_shape: shape of `w` (keyword only), as for `PLIFNode`.
      **options: keyword only, as for `BaseNode`: `detach_reset`, `step_mode`, `surrogate`
        (`surrogate_function`), `batch_first`.
    """

    def __init__(self, init_w=-1e-3, v_threshold=1.0, v_reset=0.0, pulse_soft=Sigmoid(),
                 monitor_state=False, *, param_shape=(1,), **options):
        super().__init__(v_threshold, v_reset, pulse_soft, monitor_state, **options)
        if not is_number(init_w):
            raise TypeError(f"init_w must be a number, got {type(init_w).__name__}")
        self.w = nn.Parameter(torch.full(_param_shape(param_shape), float(init_w)))

    def _functions(self):
        return F.rif, F.rif_step

    def _options(self):
        return dict(super()._options(), w=self.w)

    def _settings(self):
        return dict(param_shape=tuple(self.w.shape), **super()._settings())
