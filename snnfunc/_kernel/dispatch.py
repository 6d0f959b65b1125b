"""From a neuron call to its kernels: whether they apply (else the reference loop runs), the
call record and the scalars, and the autograd Function that runs them.

`run` returns the fused result, or `None` where the fused path does not apply:
- the kernels take float16, bfloat16 (computed in float32), float32 and float64, on a device
  with a registered backend that can run here (a C compiler for the CPU, Triton and a GPU
  for CUDA);
- forward-mode AD (`torch.func.jvp`, `jacfwd`, `torch.autograd.forward_ad`) has no rule
  through the fused op;
- a surrogate whose derivative is not elementwise torch code cannot be compiled in (then it
  is evaluated in torch, where the neuron fires at `v_threshold`);
- `T = 0` needs no kernel.

`impl="fused"` raises a `ValueError` saying which of these fails instead of falling back.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import functools
import logging

import torch
from torch._C._functorch import TransformType, get_interpreter_stack

from snnfunc._core.compile import constant_result
from snnfunc._kernel import backends
from snnfunc._kernel.autograd import DefinedNeuron
from snnfunc._kernel.call import DTYPES, CallRecord, options_string
from snnfunc._kernel.surrogates import surrogate_plan, why_not_surrogate
from snnfunc.surrogate import Surrogate

_log = logging.getLogger("snnfunc")


def available(device="cpu") -> bool:
    """Whether fused kernels can run on `device` here."""
    return backends.error(torch.device(device).type) is None


def _forward_ad_active() -> bool:
    if any(i.key() == TransformType.Jvp for i in get_interpreter_stack() or ()):
        return True
    return torch.autograd.forward_ad._current_level >= 0



fallbacks: collections.Counter = collections.Counter()
"""Why `impl="auto"` calls ran the reference loop in this process (eager calls only);
`snnfunc.info()` shows it."""


def _fell_back(reason: str) -> None:
    if torch.compiler.is_compiling():
        return
    if reason not in fallbacks:
        _log.debug("snnfunc: impl='auto' runs the reference loop: %s", reason)
    fallbacks[reason] += 1


# torch.compile runs the functions marked `constant_result` below at trace time on Python
# constants. Dynamo hands them an object as it is from torch 2.13 (guarded on its id); torch
# 2.11's takes no instance of a frozen dataclass, and reads a surrogate's floats as symbolic
# numbers under dynamic=True: there they take the surrogate's id, guarded the same way. One
# made inside the compiled function is then Dynamo's stand-in, without its fields: such a call
# runs the reference loop (which reads the fields through Dynamo).
_BY_ID = torch.__version__ < "2.13"


def _constant(surrogate):
    """The surrogate as the functions marked `constant_result` below take it."""
    return id(surrogate) if _BY_ID and torch.compiler.is_compiling() else surrogate


def _object(arg):
    # the object of an id: alive, as the caller that took its id holds it during the call
    return ctypes.cast(arg, ctypes.py_object).value if type(arg) is int else arg


@constant_result
def _stand_in(arg) -> bool:
    """Whether the surrogate is Dynamo's stand-in for one made inside the compiled function
    (handed as it is, or by id on torch 2.11), whose fields are not set on it (it would read
    the class's defaults)."""
    surrogate = _object(arg)
    if not isinstance(surrogate, Surrogate):
        return type(arg) is int
    names = [f.name for f in dataclasses.fields(surrogate)]
    state = getattr(surrogate, "__dict__", None)
    if state is None:  # (__slots__)
        return not all(hasattr(surrogate, n) for n in names)
    return not all(n in state for n in names)


def _surrogate(arg):
    """The surrogate `_constant` gave."""
    if _stand_in(arg):  # (why_not tells first)
        raise TypeError("a surrogate made inside the compiled function")
    return _object(arg)


@constant_result
def _token(arg) -> tuple:
    """(token, run-time numbers): constants to torch.compile."""
    plan = surrogate_plan(_surrogate(arg))
    return plan.token, plan.values


@constant_result
def _reason(arg) -> str:
    return why_not_surrogate(_surrogate(arg)) or ""


def surrogate_reason(surrogate) -> str:
    return _reason(_constant(surrogate))


def _plan(surrogate, compiling=None):
    """`(token, run-time numbers, reason or "")` of the surrogate, or None for Dynamo's
    stand-in of one made inside the compiled function. Eager calls read the cached plan (no
    stand-in outside Dynamo); compiled ones go through the constant functions above.
    `compiling`: `torch.compiler.is_compiling()`, where the caller has it."""
    if not (torch.compiler.is_compiling() if compiling is None else compiling):
        plan = surrogate_plan(surrogate)
        return plan.token, plan.values, plan.reason or ""
    arg = _constant(surrogate)
    if _stand_in(arg):
        return None
    return (*_token(arg), _reason(arg))


def why_not(x_seq, surrogate, neuron=None, plan=False, compiling=None) -> str | None:
    """Why the generated kernels cannot take this call, or None when they can (`plan`: the
    surrogate's `_plan`, `compiling`: `torch.compiler.is_compiling()`, where the caller has
    them)."""
    compiling = torch.compiler.is_compiling() if compiling is None else compiling
    if x_seq.dtype not in DTYPES:
        return f"the fused kernels take float16, bfloat16, float32 and float64, not {x_seq.dtype}"
    device_error = backends.error(x_seq.device.type)
    if device_error is not None:
        return device_error
    if x_seq.shape[0] == 0:
        return "T = 0"
    if not compiling and _forward_ad_active():
        return "forward-mode AD (jvp, jacfwd) has no rule through the fused op"
    plan = _plan(surrogate, compiling) if plan is False else plan
    if plan is None:
        return (f"torch {torch.__version__}'s torch.compile does not hand the kernels a surrogate "
                f"made inside the compiled function (make it outside to use them)")
    reason = plan[2]
    if reason and neuron is not None and neuron.threshold is not None:
        return reason + ", and the neuron's threshold is not v_threshold"
    return None


_apply = super(torch.autograd.Function, DefinedNeuron).apply
_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


_CPU = torch.device("cpu")


def _scalars(x_seq, v_reset, values=(), plain=None):
    """The op's float64 scalars (v_rest, then the surrogate's run-time numbers) as a tensor:
    one per set of values in eager calls (`plain`: `backends.plain_context()`, where the
    caller has it)."""
    device = x_seq.device
    device = device if device.type == "cuda" else _CPU
    v = 0.0 if v_reset is None else v_reset
    plain = backends.plain_context() if plain is None else plain
    if not isinstance(v, (float, int)) or not plain:  # (a traced or fake tensor
        return new_scalars(device, v, values)  # must not be cached)
    return _cached_scalars(device, repr(float(v)), values)  # repr: -0.0 and 0.0 apart


@functools.lru_cache(maxsize=64)
def _cached_scalars(device, text, values):
    return new_scalars(device, float(text), values)


def new_scalars(device, v, values=()):
    zero = torch.full((1,), -0.0, dtype=torch.float64, device=device)  # -0.0 + v is v, even -0.0
    if not values:
        return zero + v
    return torch.cat([zero + v, torch.tensor(values, dtype=torch.float64, device=device)])


def record(neuron, x_seq, opts, *, v_reset, surrogate, detach_reset, want_h=False,
           want_states=False, keep=None, plan=None, plain=None):
    """The call record of a neuron call and its scalars (v_rest and the surrogate's run-time
    numbers, a float64 tensor on the device the kernels read it from); `plan`: the
    surrogate's `_plan`, `plain`: `backends.plain_context()`, where the caller has them."""
    token, values, reason = _plan(surrogate) if plan is None else plan
    in_torch = bool(reason)
    cfg = CallRecord(neuron.name, options_string(opts), v_reset is not None, detach_reset,
                     want_h, token, len(neuron.states), want_states, in_torch, keep)
    return cfg, _scalars(x_seq, v_reset, values, plain)


def run(neuron, x_seq, states, params, opts, *, v_threshold, v_reset, surrogate, detach_reset,
        return_h, force, return_states=False):
    """The fused neuron `(spikes, h or None, states, traces or None)`, or None where it does
    not apply."""
    compiling = torch.compiler.is_compiling()
    plan = _plan(surrogate, compiling)
    reason = why_not(x_seq, surrogate, neuron, plan, compiling)
    if reason is not None:
        if force:
            raise ValueError(f"impl='fused' is not available: {reason}; use impl='auto'")
        _fell_back(reason)
        return None
    tensors = (*states, *(params[n] for n in neuron.parameters))
    grad = torch.is_grad_enabled() and any(t.requires_grad
                                           for t in (x_seq, v_threshold, *tensors))
    keep = None
    if grad and backends.BACKENDS[x_seq.device.type].keeps:
        # the forward keeps values for the backward of the gradients wanted now (the
        # backward computes them again where it is asked for more)
        keep = (*(params[n].requires_grad for n in neuron.parameters),
                v_threshold.requires_grad, *(t.requires_grad for t in states))
    context = not compiling and backends.plain_context()
    plain = (context and type(x_seq) is torch.Tensor
             and backends.BACKENDS[x_seq.device.type].direct
             and not any(map(_wrapped, (x_seq, v_threshold, *tensors))))
    cfg, scalars = record(neuron, x_seq, opts, v_reset=v_reset, surrogate=surrogate,
                          detach_reset=detach_reset, want_h=return_h or return_states,
                          want_states=return_states, keep=keep, plan=plan, plain=context)
    if not grad and (plain or compiling):
        # nothing to differentiate: the op itself (no graph to record; Dynamo would pass the
        # Function's apply a context its forward does not take)
        out = DefinedNeuron.forward(x_seq, v_threshold, scalars, cfg, *tensors)
    elif plain:
        # Function.apply without its binding of default arguments (inspect.signature)
        out = _apply(x_seq, v_threshold, scalars, cfg, *tensors)
    else:
        out = DefinedNeuron.apply(x_seq, v_threshold, scalars, cfg, *tensors)
    k = len(states)
    s, h, st, tr = out[0], out[1], tuple(out[2:2 + k]), tuple(out[2 + k:2 + 2 * k])
    return s, (h if return_h or return_states else None), st, (tr if return_states else None)
