"""What every stateful adapter shares (SpikingFlow's four classes, `NeuronNode` and its
subclasses, `Recurrent`): a state held between calls, `reset()`, the monitor, the two step
modes, and the rules that keep the functions pure under transforms.

State carries over between calls until `reset()`. It is written back (and the monitor
records) only in a plain call: under `torch.func.functional_call` or a `torch.func` transform
(`grad`, `vmap`, `jvp`, ...) the adapter starts from the state it holds and leaves it
unchanged, so such a call is a pure function of its parameters and input. `.to()` moves the
state with the parameters; pickling and `copy.deepcopy` copy it detached from its graph.
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch import nn
from torch.utils import _pytree

from snnfunc._core.compile import not_compiled

STEP_MODES = ("s", "m")


def _functional_call_code():
    from torch.nn.utils import stateless

    return stateless._functional_call.__code__


def inside_functional_call() -> bool:
    """True while torch.func.functional_call runs a module (it is on the call stack)."""
    code = _functional_call_code()
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def graph_was_freed(v: torch.Tensor, budget: int = 32) -> bool:
    """Whether a backward pass already freed the graph behind ``v``: the nearest nodes of
    autograd Functions lost their saved tensors. Looks at a few nodes only (the last steps of
    the call that made ``v``). Reads what they saved without unpacking it (no saved-tensor
    hook runs: a checkpointed region is not recomputed by looking)."""
    todo, seen = [v.grad_fn], set()
    while todo and len(seen) < budget:
        node = todo.pop(0)
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(type(node), "saved_tensors"):  # a torch.autograd.Function's node
            try:
                node._raw_saved_tensors
            except RuntimeError:
                return True
        todo.extend(fn for fn, _ in node.next_functions)
    return False


def _numpy_copy(t: torch.Tensor):
    t = t.detach()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16
        t = t.float()
    return t.to("cpu", copy=True).numpy()


def writes_state(t: torch.Tensor) -> bool:
    """Whether a call that made `t` writes its state back: a plain call, not one under
    `torch.func.functional_call` or a `torch.func` transform (under `torch.compile`, yes)."""
    if torch.compiler.is_compiling():
        return True
    if torch._C._functorch.is_functorch_wrapped_tensor(t):
        return False
    return not inside_functional_call()


class StatefulNode(nn.Module):
    """The base of every stateful adapter.

    A subclass defines `_run(x, state, sequence, record) -> (spikes, new state, h or None)`,
    the one call into the functions, and says where its state lives: `_state_attr` ("state",
    or "v" for SpikingFlow's classes, whose state is `node.v`) and `_rest()` (the value at
    rest: None, or SpikingFlow's float).
    """

    _state_attr = "state"

    def _init_stateful(self, step_mode, monitor_state, batch_first=False, *,
                       explicit_step_mode=True):
        if step_mode not in STEP_MODES:
            raise ValueError(f"step_mode must be 's' or 'm', got {step_mode!r}")
        for name, flag in (("monitor_state", monitor_state), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.step_mode = step_mode
        self.batch_first = batch_first
        self._explicit_step_mode = explicit_step_mode
        self.monitor = {"v": [], "s": []} if monitor_state else False
        setattr(self, self._state_attr, self._rest())

    def _rest(self):
        return None

    # -- the state

    def _held(self):
        return getattr(self, self._state_attr)

    def reset(self) -> None:
        """State back to rest, monitor emptied; parameters untouched."""
        setattr(self, self._state_attr, self._rest())
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

    def _state_for(self, x, step):
        """The held state, checked against this input's step shape `step` first."""
        state = self._held()
        if not isinstance(x, torch.Tensor) or torch.compiler.is_compiling():
            return state
        name = type(self).__name__
        for t in _pytree.tree_leaves(state):
            if not isinstance(t, torch.Tensor):
                continue
            if (self.step_mode == "s" and t.dim() >= 2 and x.dim() == t.dim() + 1
                    and tuple(self._state_step(x.shape[1:])) == tuple(t.shape)):
                raise ValueError(
                    f"{name} is in single-step mode (step_mode='s') and holds a state of "
                    f"shape {tuple(t.shape)}, but was given {tuple(x.shape)}, a sequence of "
                    f"such steps: make it with step_mode='m' for sequences [T, ...], call it "
                    f"once per step, or reset() it first if this is one step of a new shape")
            try:
                fits = torch.broadcast_shapes(t.shape, step) == step
            except RuntimeError:
                fits = False
            if not fits:
                held = " v" if self._state_attr == "v" else ""
                raise ValueError(
                    f"{name} holds a state{held} of shape {tuple(t.shape)} from an earlier input, "
                    f"which does not fit this input's step shape {tuple(step)} (a new batch "
                    f"size?): call reset() on it, or snnfunc.nn.reset_net(net), between batches")
            if graph_was_freed(t):
                held = " v" if self._state_attr == "v" else ""
                raise RuntimeError(
                    f"{name} holds a state{held} whose graph a backward pass has already freed: call "
                    f"reset() (or snnfunc.nn.reset_net(net)) between batches, or detach the "
                    f"state to continue the sequence (truncated BPTT)")
        return state

    def _warn_single_step(self, x):
        """A one-time warning where the default single-step mode is given a 3-d input at rest:
        `[T, B, N]` is then read as one step of shape `[T, B, N]`."""
        if (self.step_mode == "s" and not self._explicit_step_mode
                and isinstance(x, torch.Tensor) and x.dim() == 3
                and not torch.compiler.is_compiling() and not getattr(self, "_warned", False)):
            self._warned = True
            warnings.warn(
                f"{type(self).__name__} is in single-step mode (SpikingFlow's default, "
                f"step_mode='s') and reads this 3-d input {tuple(x.shape)} as one time step; "
                f"for a sequence [T, B, N] make it with step_mode='m' (pass step_mode='s' to "
                f"say you mean one step)", UserWarning, stacklevel=3)

    # -- the call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step (`step_mode="s"`) or a sequence `[T, ...]` (`"m"`; `[B, T, ...]` with
        `batch_first=True`, read in place); returns spikes."""
        self._warn_single_step(x)
        sequence = self.step_mode == "m"
        swap = sequence and self.batch_first and isinstance(x, torch.Tensor) and x.dim() >= 2
        if swap:
            x = x.transpose(0, 1)  # a view: the kernels read it in place
        step = (x.shape[1:] if sequence else x.shape) if isinstance(x, torch.Tensor) else None
        state = self._state_for(x, self._state_step(step) if step is not None else None)
        record = self.monitor is not False
        spikes, new_state, h = self._run(x, state, sequence, record)
        if writes_state(spikes):
            setattr(self, self._state_attr, new_state)
            if record:
                self._record(h, spikes, sequence)
        return spikes.transpose(0, 1) if swap else spikes

    def _run(self, x, state, sequence: bool, record: bool):
        raise TypeError(f"{type(self).__name__} must define _run()")

    def _state_step(self, step):
        """The shape of one step of the state for an input step of shape `step`."""
        return step

    @not_compiled
    def _record(self, h, spikes, sequence):
        if sequence:
            self.monitor["v"].extend(_numpy_copy(h))
            self.monitor["s"].extend(_numpy_copy(spikes))
        else:
            self.monitor["v"].append(_numpy_copy(h))
            self.monitor["s"].append(_numpy_copy(spikes))

    # -- moving and copying

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        state = self._held()
        if state is not None:
            setattr(self, self._state_attr, _pytree.tree_map(
                lambda t: fn(t) if isinstance(t, torch.Tensor) else t, state))
        return self

    def __getstate__(self):
        out = dict(self.__dict__)
        state = out.get(self._state_attr)
        if state is not None:  # never copy an autograd graph
            out[self._state_attr] = _pytree.tree_map(
                lambda t: t.detach() if isinstance(t, torch.Tensor) else t, state)
        return out


def pick_surrogate(default, **names):
    """The surrogate given under one of its names (`surrogate=`; SpikingFlow's `pulse_soft=`,
    SpikingJelly's `surrogate_function=`): a `Surrogate` instance, given once. A name left at
    None (or `pulse_soft` left at its default, `Sigmoid()`) is not given; none: `default`."""
    from snnfunc._core.checks import check_surrogate
    from snnfunc.surrogate import Sigmoid

    given = {n: v for n, v in names.items()
             if v is not None and not (n == "pulse_soft" and v == Sigmoid())}
    for n, v in given.items():
        check_surrogate(n, v)
    if len(set(given.values())) > 1:
        raise TypeError(f"give the surrogate once: {', '.join(f'{n}=' for n in given)} name "
                        f"the same argument (surrogate=)")
    return next(iter(given.values()), default)
