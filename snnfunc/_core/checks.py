"""Argument checks shared by the neuron functions: each raises before any work is done."""

from __future__ import annotations

import numbers

import torch

from snnfunc.surrogate import Surrogate


def is_number(value) -> bool:
    if type(value) in (float, int):  # (the common case, without the ABC's check)
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_input(name: str, x, *, sequence: bool) -> torch.Size:
    """Checks `x` and returns the shape of one time step."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}; "
                        f"convert it with {name}.to_dense()")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), "
            f"got {x.dtype}; convert it with {name}.float()"
        )
    if sequence:
        if x.dim() == 0:
            raise ValueError(
                f"{name} must be time-major with shape [T, ...]; got a 0-d tensor. "
                f"For a single time step use the *_step functions or {name}.unsqueeze(0)"
            )
        return x.shape[1:]
    return x.shape


def _check_broadcast(name: str, shape: torch.Size, step_shape: torch.Size, what: str) -> None:
    try:
        out = torch.broadcast_shapes(shape, step_shape)
    except RuntimeError:
        out = None
    if out != step_shape:
        raise ValueError(
            f"{name} has shape {tuple(shape)}, which does not broadcast to {what} "
            f"{tuple(step_shape)} (one value per layer, per channel or per neuron)"
        )


HALF = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The one half-precision rule: float16 and bfloat16 are loaded and stored in their own
    dtype and computed in float32, states held in float32 between steps (so that a sequence
    run in pieces equals the whole); float32 and float64 compute in themselves. The reference
    loop, the kernels, the ops' checks and the recurrent layer all follow it."""
    return torch.float32 if dtype in HALF else dtype


def state_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a neuron's state is held in for the input `x`: `compute_dtype(x.dtype)`."""
    return compute_dtype(x.dtype)


def upcast(params: dict, v_threshold: torch.Tensor, dtype: torch.dtype):
    """Parameters and threshold in the compute dtype of inputs of `dtype`."""
    if dtype not in HALF:
        return params, v_threshold
    return {k: p.float() for k, p in params.items()}, v_threshold.float()


def check_tensor_like(name: str, value: torch.Tensor, x: torch.Tensor, step_shape, what,
                      dtype=None):
    if value.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {value.layout}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {value.dtype}")
    if value.device != x.device:
        raise ValueError(f"{name} is on {value.device} but the input is on {x.device}")
    _check_broadcast(name, value.shape, step_shape, what)
    return value.to(x.dtype if dtype is None else dtype)


def check_state(v, x: torch.Tensor, step_shape: torch.Size, rest: float, what: str,
                parameter: str | None = None):
    """V_0 as a tensor in `x`'s dtype; None (rest) becomes a 0-d tensor shared by every
    neuron. A number is refused: `lif(x, 2.0)` is the natural slip for `tau=2.0`."""
    if v is None:
        return full(x, rest, state_dtype(x))
    if is_number(v):
        hint = (f"did you mean {parameter}={v!r}? The neuron's parameters are keyword-only. "
                if parameter else "")
        raise TypeError(
            f"v (the initial state, second positional argument) must be a tensor or None, got "
            f"the number {v!r}: {hint}For one initial value shared by every neuron pass "
            f"torch.tensor({v!r})")
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"v must be a torch.Tensor or None, got {type(v).__name__}")
    return check_tensor_like("v", v, x, step_shape, what, dtype=state_dtype(x))


def _can_inspect(value: torch.Tensor) -> bool:
    """Whether reading `value`'s contents is free: a CPU tensor, outside torch.compile and
    torch.func transforms (elsewhere the check would sync the device or break the graph)."""
    return (value.device.type == "cpu" and not torch.compiler.is_compiling()
            and not torch._C._functorch.is_functorch_wrapped_tensor(value))


def check_param(name: str, value, x: torch.Tensor, step_shape, what, *, positive=False):
    """A neuron parameter: a Python number, or a tensor that broadcasts to one step.

    A number becomes a 0-d tensor of `x`'s dtype on `x`'s device, so that every path (the
    loop, the fused kernels, CPU and CUDA) rounds it once and divides by it the same way."""
    if is_number(value):
        value = float(value)
        if positive and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
        return x.new_full((), value)
    if isinstance(value, torch.Tensor):
        value = check_tensor_like(name, value, x, step_shape, what)
        if positive and _can_inspect(value) and not bool((value.detach() > 0).all()):
            raise ValueError(f"{name} must be > 0 everywhere; it holds 0, a negative value or NaN")
        return value
    raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(value).__name__}")


def traced_number(value) -> bool:
    """A Python number torch.compile made symbolic (`dynamic=True` turns a float it reads
    from a closure or a default into a 0-d tensor input)."""
    return (isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point()
            and torch.compiler.is_compiling())


def full(x: torch.Tensor, value, dtype) -> torch.Tensor:
    """A 0-d tensor of `value` (a number, or a traced one) on `x`'s device."""
    if isinstance(value, torch.Tensor):
        return value.to(device=x.device, dtype=dtype)
    return x.new_full((), value, dtype=dtype)


def check_options(v_reset, surrogate, detach_reset, **flags):
    if v_reset is not None and not is_number(v_reset) and not traced_number(v_reset):
        raise TypeError(
            f"v_reset must be a number (hard reset) or None (soft reset), "
            f"got {type(v_reset).__name__}"
        )
    check_surrogate("surrogate", surrogate)
    for name, flag in dict(detach_reset=detach_reset, **flags).items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")


def check_surrogate(name: str, surrogate) -> None:
    if isinstance(surrogate, type) and issubclass(surrogate, Surrogate):
        raise TypeError(f"{name} got the class {surrogate.__name__}; pass an instance, "
                        f"{surrogate.__name__}()")
    if not isinstance(surrogate, Surrogate):
        raise TypeError(
            f"{name} must be a snnfunc.surrogate.Surrogate (e.g. Sigmoid()), "
            f"got {type(surrogate).__name__}"
        )
