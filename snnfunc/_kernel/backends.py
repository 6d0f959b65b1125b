"""The backend table: for each device type, the backend whose kernels run there.

A backend is a folder (`snnfunc/_backends/c`, `.../triton`) that registers itself on import:
its spelling of the operations, its kernels' skeletons and its host code stay inside it; the
rest of the library reaches its kernels only through `ops_for`. Like Inductor's
`register_backend_for_device`.
"""

from __future__ import annotations

import typing

import torch
from torch import Tensor

from snnfunc._core.compile import constant_result


class Backend:
    """The kernels of one device type.

    Args:
      name: a short name (`"c"`, `"triton"`).
      ops: `() -> (forward op, backward op, forward function, backward function)`: its
        registered ops (`snnfunc._kernel.ops.define`) and the same without the dispatcher
        (called directly in plain eager calls where `direct`). Called once, when the backend
        is first used: registering a backend's ops may cost time (Triton's do).
      error: `() -> str | None`, why its kernels cannot run here (no compiler, no device).
      direct: whether plain eager calls may bypass the dispatcher (tens of microseconds a
        call less).
      keeps: whether its backward reads the forward values its forward keeps (its ops made
        with `ops.define(..., keeps=True)`): the autograd Function then asks the forward for
        them where a gradient is wanted and saves them. A backend that computes them again
        from x (in cache: the C backend) keeps none.
      steppers: `() -> (forward stepper, backward stepper)`, or None: each takes a checked
        call (`ops.ForwardCall`, `ops.BackwardCall`) and returns a function that runs its
        kernel again on new tensors of the same shapes and layouts (the recurrent layer's
        steps: the kernel found and its arguments filled once).
      runners: the same without the checks of each step's tensors, for callers that key
        on their shapes, dtypes and strides (`snnfunc._kernel.cached`), or None.
    """

    def __init__(self, name: str, ops: typing.Callable, error: typing.Callable[[], str | None],
                 direct: bool = False, keeps: bool = False,
                 steppers: typing.Callable | None = None,
                 runners: typing.Callable | None = None):
        self.name, self._ops, self.error, self.direct = name, ops, error, direct
        self.keeps, self._steppers, self._runners = keeps, steppers, runners
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            self._loaded = tuple(self._ops())
        return self._loaded

    @property
    def forward(self):
        return self._load()[0]

    @property
    def backward(self):
        return self._load()[1]

    @property
    def forward_fn(self):
        return self._load()[2]

    @property
    def backward_fn(self):
        return self._load()[3]

    @property
    def steppers(self):
        """`(forward stepper, backward stepper)`, or None where the backend has none."""
        return None if self._steppers is None else self._steppers()

    @property
    def runners(self):
        """`(forward runner, backward runner)`, or None where the backend has none."""
        return None if self._runners is None else self._runners()


BACKENDS: dict[str, Backend] = {}
_MISSING: dict[str, str] = {}


def register(device_type: str, backend: Backend) -> None:
    """Makes `backend` the one that runs on `device_type` tensors."""
    BACKENDS[device_type] = backend
    _MISSING.pop(device_type, None)


def missing(device_type: str, reason: str) -> None:
    """Records why no backend for `device_type` could be registered here."""
    if device_type not in BACKENDS:
        _MISSING[device_type] = reason


@constant_result
def error(device_type: str) -> str | None:
    """Why no kernel can run on `device_type` here, or None; a constant to torch.compile."""
    backend = BACKENDS.get(device_type)
    if backend is None:
        return _MISSING.get(device_type, f"no fused kernel for device {device_type}")
    return backend.error()


def plain_context() -> bool:
    """Nothing above this call sees or traces the ops: no compile or export, no torch.func
    transform, no dispatch or function mode (a fake tensor mode), no TorchScript trace."""
    return (not torch.compiler.is_compiling() and not torch._C._is_tracing()
            and not torch._C._are_functorch_transforms_active()
            and torch._C._len_torch_dispatch_stack() == 0
            and not torch._C._is_torch_function_mode_enabled())


def plain(x) -> bool:
    """An eager call on plain tensors in a plain context, on a backend that takes direct
    calls: its ops' functions may be called without the dispatcher."""
    backend = BACKENDS.get(x.device.type) if type(x) is Tensor else None
    return backend is not None and backend.direct and plain_context()


def ops_for(x):
    """The forward and backward ops for tensors like `x`."""
    backend = BACKENDS[x.device.type]
    if backend.direct and type(x) is Tensor and plain_context():
        return backend.forward_fn, backend.backward_fn
    return backend.forward, backend.backward
