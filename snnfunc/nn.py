"""Stateful adapters with SpikingFlow's class interface (its `softbp` neurons): `IFNode`,
`LIFNode`, `PLIFNode`, `RIFNode`, `reset_net`.

An adapter holds the membrane state between calls and nothing else: every computation is one
call into `snnfunc.functional` (the equations are documented there).

- `step_mode="s"` (default, SpikingFlow's): `forward(dv)` is one time step.
- `step_mode="m"`: `forward(x_seq)` runs a whole `[T, ...]` sequence in one call.

State carries over between calls until `reset()`. It is written back (and the monitor
records) only in a plain call: under `torch.func.functional_call` or a `torch.func` transform
(`grad`, `vmap`, `jvp`, ...) the adapter starts from the state it holds and leaves it
unchanged, so such a call is a pure function of its parameters and input.

The surrogate gradient is `surrogate=` (SpikingFlow's name `pulse_soft=` works too).
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from snnfunc import functional as F
from snnfunc._core.checks import _is_number, check_surrogate
from snnfunc.surrogate import Sigmoid, Surrogate

__all__ = ["BaseNode", "IFNode", "LIFNode", "PLIFNode", "RIFNode", "NeuronNode", "CubaLIFNode",
           "ALIFNode", "QIFNode", "EIFNode", "Recurrent", "TimeDistributed", "reset_net"]

_STEP_MODES = ("s", "m")


def _inside_functional_call() -> bool:
    """True while torch.func.functional_call runs a module (it is on the call stack)."""
    code = _functional_call_code()
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _functional_call_code():
    from torch.nn.utils import stateless

    return stateless._functional_call.__code__


def _graph_was_freed(v: torch.Tensor, budget: int = 32) -> bool:
    """Whether a backward pass already freed the graph behind ``v``: the nearest nodes of
    snnfunc's own Functions (spike, reset, fused neuron) lost their saved tensors. Looks at a
    few nodes only (the last steps of the call that made ``v``)."""
    todo, seen = [v.grad_fn], set()
    while todo and len(seen) < budget:
        node = todo.pop(0)
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(type(node), "saved_tensors"):  # a torch.autograd.Function's node
            try:
                node.saved_tensors
            except RuntimeError:
                return True
        todo.extend(fn for fn, _ in node.next_functions)
    return False


def _numpy_copy(t: torch.Tensor):
    t = t.detach()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        t = t.float()
    return t.to("cpu", copy=True).numpy()


class BaseNode(nn.Module):
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
    """

    def __init__(self, v_threshold=1.0, v_reset=0.0, pulse_soft=Sigmoid(), monitor_state=False,
                 *, detach_reset=False, step_mode="s", surrogate=None):
        super().__init__()
        if not _is_number(v_threshold):
            raise TypeError(f"v_threshold must be a number, got {type(v_threshold).__name__}")
        if v_reset is not None and not _is_number(v_reset):
            raise TypeError(f"v_reset must be a number or None, got {type(v_reset).__name__}")
        check_surrogate("pulse_soft", pulse_soft)
        if surrogate is not None:
            check_surrogate("surrogate", surrogate)
            if pulse_soft != Sigmoid() and pulse_soft != surrogate:
                raise TypeError("give the surrogate once: surrogate= or pulse_soft= (its "
                                "SpikingFlow name), not both")
            pulse_soft = surrogate
        for name, flag in (("monitor_state", monitor_state), ("detach_reset", detach_reset)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if step_mode not in _STEP_MODES:
            raise ValueError(f"step_mode must be 's' or 'm', got {step_mode!r}")
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.pulse_soft = pulse_soft
        self.detach_reset = detach_reset
        self.step_mode = step_mode
        self.v = self.v_rest
        self.monitor = {"v": [], "s": []} if monitor_state else False

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step `dv` (`step_mode="s"`) or a sequence `[T, ...]` (`"m"`); returns spikes."""
        multi, single = self._functions()
        record = self.monitor is not False
        v = self._state_for(x)
        if self.step_mode == "s":
            out = single(x, v, return_h=record, **self._options())
            spikes = out.spike
        else:
            out = multi(x, v, return_h=record, **self._options())
            spikes = out.spikes
        if self._writes_state(out.v):
            self.v = out.v
            if record:
                self._record(out.h, spikes)
        return spikes

    def _state_for(self, x):
        """The held state as the functions take it, checked against this input first."""
        v = self.v
        if not isinstance(v, torch.Tensor):
            return None if v == self.v_rest else x.new_full((), float(v))
        if not isinstance(x, torch.Tensor) or torch.compiler.is_compiling():
            return v  # the functions say what is wrong with x
        step = x.shape[1:] if self.step_mode == "m" else x.shape
        name = type(self).__name__
        try:
            fits = torch.broadcast_shapes(v.shape, step) == step
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"{name} holds a state v of shape {tuple(v.shape)} from an earlier input, which "
                f"does not fit this input's step shape {tuple(step)} (a new batch size?): call "
                f"reset() on it, or snnfunc.nn.reset_net(net), between batches")
        if _graph_was_freed(v):
            raise RuntimeError(
                f"{name} holds a state v whose graph a backward pass has already freed: call "
                f"reset() (or snnfunc.nn.reset_net(net)) between batches, or detach the state "
                f"(node.v = node.v.detach()) to continue the sequence (truncated BPTT)")
        return v

    @staticmethod
    def _writes_state(v: torch.Tensor) -> bool:
        if torch.compiler.is_compiling():
            return True
        if torch._C._functorch.is_functorch_wrapped_tensor(v):
            return False
        return not _inside_functional_call()

    @torch.compiler.disable
    def _record(self, h, spikes):
        if self.step_mode == "s":
            self.monitor["v"].append(_numpy_copy(h))
            self.monitor["s"].append(_numpy_copy(spikes))
        else:
            self.monitor["v"].extend(_numpy_copy(h))
            self.monitor["s"].extend(_numpy_copy(spikes))

    # -- state

    def reset(self) -> None:
        """State back to the resting value, monitor emptied; parameters untouched."""
        self.v = self.v_rest
        if self.monitor is not False:
            self.monitor = {"v": [], "s": []}

    def set_monitor(self, monitor_state: bool = True) -> None:
        """Switch recording on (an empty monitor) or off (`self.monitor = False`)."""
        if not isinstance(monitor_state, bool):
            raise TypeError(f"monitor_state must be True or False, got {monitor_state!r}")
        if not monitor_state:
            self.monitor = False
        elif self.monitor is False:
            self.monitor = {"v": [], "s": []}

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if isinstance(self.v, torch.Tensor):
            self.v = fn(self.v)
        return self

    def __getstate__(self):
        state = dict(self.__dict__)
        if isinstance(state.get("v"), torch.Tensor):
            state["v"] = state["v"].detach()  # never copy an autograd graph
        return state

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
      detach_reset: detach the spike in the reset from the graph.
      step_mode: `"s"` (one step per call) or `"m"` (`[T, ...]` per call).
      surrogate: the surrogate spike function; the same as `pulse_soft`.
    """

    def __init__(self, tau=100.0, v_threshold=1.0, v_reset=0.0, pulse_soft=Sigmoid(),
                 monitor_state=False, *, decay_input=True, detach_reset=False, step_mode="s",
                 surrogate=None):
        super().__init__(v_threshold, v_reset, pulse_soft, monitor_state,
                         detach_reset=detach_reset, step_mode=step_mode, surrogate=surrogate)
        if not _is_number(tau):
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
      detach_reset: detach the spike in the reset from the graph.
      step_mode: `"s"` (one step per call) or `"m"` (`[T, ...]` per call).
      surrogate: the surrogate spike function; the same as `pulse_soft`.
    """

    def __init__(self, init_tau=2.0, v_threshold=1.0, v_reset=0.0, pulse_soft=Sigmoid(),
                 monitor_state=False, *, parametrization="reciprocal", param_shape=(1,),
                 decay_input=True, detach_reset=False, step_mode="s", surrogate=None):
        super().__init__(v_threshold, v_reset, pulse_soft, monitor_state,
                         detach_reset=detach_reset, step_mode=step_mode, surrogate=surrogate)
        if parametrization not in ("reciprocal", "sigmoid"):
            raise ValueError(
                f"parametrization must be 'reciprocal' or 'sigmoid', got {parametrization!r}")
        if not _is_number(init_tau):
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
      detach_reset: detach the spike in the reset from the graph.
      step_mode: `"s"` (one step per call) or `"m"` (`[T, ...]` per call).
      surrogate: the surrogate spike function; the same as `pulse_soft`.
    """

    def __init__(self, init_w=-1e-3, v_threshold=1.0, v_reset=0.0, pulse_soft=Sigmoid(),
                 monitor_state=False, *, param_shape=(1,), detach_reset=False, step_mode="s",
                 surrogate=None):
        super().__init__(v_threshold, v_reset, pulse_soft, monitor_state,
                         detach_reset=detach_reset, step_mode=step_mode, surrogate=surrogate)
        if not _is_number(init_w):
            raise TypeError(f"init_w must be a number, got {type(init_w).__name__}")
        self.w = nn.Parameter(torch.full(_param_shape(param_shape), float(init_w)))

    def _functions(self):
        return F.rif, F.rif_step

    def _options(self):
        return dict(super()._options(), w=self.w)

    def _settings(self):
        return dict(param_shape=tuple(self.w.shape), **super()._settings())


class NeuronNode(nn.Module):
    """The adapter of any neuron made from a definition (`snnfunc.neuron`): holds its state
    between calls, `reset()`, the monitor and the two step modes, like the classic nodes.

    Parameters given as numbers stay numbers; a `torch.nn.Parameter` is registered (learned
    with the module); any other tensor is a buffer.

    Args:
      neuron: a `snnfunc.Neuron`, e.g. one made with `@snnfunc.neuron`.
      v_threshold: $V_{th}$.
      v_reset: $V_{reset}$ (hard reset), or `None` for the soft reset.
      surrogate: the surrogate spike function, a `snnfunc.surrogate.Surrogate` instance.
      detach_reset: detach the spike in the reset from the graph.
      step_mode: `"s"` (one step per call) or `"m"` (`[T, ...]` per call, the default).
      monitor_state: record H and spikes per step in `self.monitor`.
      **parameters: the neuron's parameters and options (`tau=3.0`, `decay_input=False`).
    """

    def __init__(self, neuron, *, v_threshold=1.0, v_reset=0.0, surrogate=Sigmoid(),
                 detach_reset=False, step_mode="m", monitor_state=False, **parameters):
        super().__init__()
        from snnfunc.definition import Neuron

        if not isinstance(neuron, Neuron):
            raise TypeError(f"neuron must be a snnfunc.Neuron (made with @snnfunc.neuron), got "
                            f"{type(neuron).__name__}")
        if step_mode not in _STEP_MODES:
            raise ValueError(f"step_mode must be 's' or 'm', got {step_mode!r}")
        check_surrogate("surrogate", surrogate)
        for name in parameters:
            if name not in neuron.parameters and name not in neuron.options:
                raise TypeError(f"{type(self).__name__} got an unexpected keyword argument "
                                f"{name!r}; {neuron.name} takes {(*neuron.parameters, *neuron.options)}")
        self.neuron = neuron
        self.v_threshold = v_threshold
        self.v_reset = None if v_reset is None else float(v_reset)
        self.surrogate = surrogate
        self.detach_reset = detach_reset
        self.step_mode = step_mode
        self._numbers = {}
        for name, value in parameters.items():
            if isinstance(value, nn.Parameter):
                self.register_parameter(name, value)
            elif isinstance(value, torch.Tensor):
                self.register_buffer(name, value)
            else:
                self._numbers[name] = value
        self.state = None
        self.monitor = {"v": [], "s": []} if monitor_state else False

    def _kwargs(self):
        kw = dict(self._numbers)
        for name in (*self.neuron.parameters, *self.neuron.options):
            if name not in kw and hasattr(self, name):
                kw[name] = getattr(self, name)
        return dict(kw, v_threshold=self.v_threshold, v_reset=self.v_reset,
                    surrogate=self.surrogate, detach_reset=self.detach_reset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step (`step_mode="s"`) or a sequence `[T, ...]` (`"m"`); returns spikes."""
        record = self.monitor is not False
        state = self._state_for(x)
        if self.step_mode == "s":
            out = self.neuron.step(x, state, return_h=record, **self._kwargs())
        else:
            out = self.neuron(x, state, return_h=record, **self._kwargs())
        if BaseNode._writes_state(out[0]):
            self.state = out[1]
            if record:
                BaseNode._record(self, out.h, out[0])
        return out[0]

    def _state_for(self, x):
        state = self.state
        if state is None or not isinstance(x, torch.Tensor) or torch.compiler.is_compiling():
            return state
        step = x.shape[1:] if self.step_mode == "m" else x.shape
        name = type(self).__name__
        for t in (state if isinstance(state, tuple) else (state,)):
            try:
                fits = torch.broadcast_shapes(t.shape, step) == step
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(
                    f"{name} holds a state of shape {tuple(t.shape)} from an earlier input, which "
                    f"does not fit this input's step shape {tuple(step)} (a new batch size?): "
                    f"call reset() on it, or snnfunc.nn.reset_net(net), between batches")
            if _graph_was_freed(t):
                raise RuntimeError(
                    f"{name} holds a state whose graph a backward pass has already freed: call "
                    f"reset() (or snnfunc.nn.reset_net(net)) between batches, or detach the "
                    f"state to continue the sequence (truncated BPTT)")
        return state

    def reset(self) -> None:
        """State back to rest, monitor emptied; parameters untouched."""
        self.state = None
        if self.monitor is not False:
            self.monitor = {"v": [], "s": []}

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.state is not None:
            self.state = torch.utils._pytree.tree_map(fn, self.state)
        return self

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("state") is not None:  # never copy an autograd graph
            state["state"] = torch.utils._pytree.tree_map(torch.Tensor.detach, state["state"])
        return state

    def extra_repr(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self._numbers.items())
        return (f"{self.neuron.name}, {kw + ', ' if kw else ''}v_threshold={self.v_threshold!r}, "
                f"v_reset={self.v_reset!r}, surrogate={self.surrogate!r}, "
                f"step_mode={self.step_mode!r}")


def _defined(name):
    from snnfunc.functional.defined import DEFINITIONS

    return DEFINITIONS[name]


class CubaLIFNode(NeuronNode):
    """Current-based LIF neuron (synaptic current and membrane); see `snnfunc.cuba_lif`.

    Args:
      tau_syn: synaptic time constant (> 0), a number or a tensor (an `nn.Parameter` to
        learn it).
      tau_mem: membrane time constant (> 0), likewise.
      decay_input: as for `snnfunc.cuba_lif`.
      **options: `v_threshold`, `v_reset`, `surrogate`, `detach_reset`, `step_mode`,
        `monitor_state`, as for `NeuronNode`.
    """

    def __init__(self, tau_syn=2.0, tau_mem=2.0, *, decay_input=True, **options):
        super().__init__(_defined("cuba_lif"), tau_syn=tau_syn, tau_mem=tau_mem,
                         decay_input=decay_input, **options)


class ALIFNode(NeuronNode):
    """Adaptive-threshold LIF neuron; see `snnfunc.alif`.

    Args:
      tau: membrane time constant (> 0).
      tau_adapt: adaptation time constant (> 0).
      beta: threshold increase per unit of adaptation.
      decay_input: as for `snnfunc.alif`.
      **options: `v_threshold`, `v_reset`, `surrogate`, `detach_reset`, `step_mode`,
        `monitor_state`, as for `NeuronNode`.
    """

    def __init__(self, tau=2.0, tau_adapt=20.0, beta=0.5, *, decay_input=True, **options):
        super().__init__(_defined("alif"), tau=tau, tau_adapt=tau_adapt, beta=beta,
                         decay_input=decay_input, **options)


class QIFNode(NeuronNode):
    """Quadratic integrate-and-fire neuron; see `snnfunc.qif`.

    Args:
      tau: membrane time constant (> 0).
      v_c: the critical voltage.
      a0: the sharpness of the quadratic term.
      **options: `v_threshold`, `v_reset`, `surrogate`, `detach_reset`, `step_mode`,
        `monitor_state`, as for `NeuronNode`.
    """

    def __init__(self, tau=2.0, v_c=0.8, a0=1.0, **options):
        super().__init__(_defined("qif"), tau=tau, v_c=v_c, a0=a0, **options)


class EIFNode(NeuronNode):
    """Exponential integrate-and-fire neuron; see `snnfunc.eif`.

    Args:
      tau: membrane time constant (> 0).
      delta_T: the sharpness (> 0).
      theta_rh: the rheobase threshold.
      **options: `v_threshold`, `v_reset`, `surrogate`, `detach_reset`, `step_mode`,
        `monitor_state`, as for `NeuronNode`.
    """

    def __init__(self, tau=2.0, delta_T=1.0, theta_rh=0.8, **options):
        super().__init__(_defined("eif"), tau=tau, delta_T=delta_T, theta_rh=theta_rh,
                         **options)


def reset_net(net: nn.Module) -> None:
    """Call `reset()` on every module inside `net` that has one (SpikingFlow's `reset_net`)."""
    for module in net.modules():
        reset = getattr(module, "reset", None)
        if callable(reset):
            reset()


class TimeDistributed(nn.Module):
    """Runs per-sample layers (`Conv2d`, `BatchNorm2d`, `MaxPool2d`, ...) on every step of
    a `[T, batch, ...]` sequence at once, by folding time into the batch.

    `TimeDistributed(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8))` maps `[T, B, 1, H, W]` to
    `[T, B, 8, H-2, W-2]`. Layers that already accept extra leading dimensions (`Linear`)
    need no wrapper. Batch norm statistics are then taken over time and batch together.
    """

    def __init__(self, *layers: nn.Module):
        super().__init__()
        if not layers or not all(isinstance(m, nn.Module) for m in layers):
            raise TypeError("TimeDistributed takes one or more torch.nn.Module layers")
        self.layer = layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 2:
            raise ValueError("x_seq must be a time-major tensor [T, batch, ...]")
        y = self.layer(x_seq.flatten(0, 1))
        return y.unflatten(0, x_seq.shape[:2])


from snnfunc.recurrent import Recurrent  # noqa: E402  (the recurrent layer's adapter)
