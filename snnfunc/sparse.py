"""Layers that skip the zeros of their input: spikes are mostly 0.

- `SpikeLinear(in_features, out_features)`: `torch.nn.Linear` (the same parameters, state
  dict and result to rounding) whose product adds, for each row of the input, the columns of
  the weight where the input is not 0, instead of multiplying by every value. On one core of
  a Zen 1 EPYC, with SHD's shape (16000 rows of 700 inputs, to 256), the forward and the
  weight's gradient take 0.10x the dense product's time at 1% non-zeros, 0.28x at 5%, 0.5x at
  10% and 0.9x at 20% (`benchmarks/bench_sparse.py`). Any input is taken: where more than a
  fifth of its first 64 rows' values are non-zero, or the weight or the output's gradient
  holds an infinity or NaN (where the dense product's `0 * inf` gives NaN), ATen's dense
  product computes it.
- `linear(x, weight, bias)`: the same product as a function (`SpikeLinear`'s forward;
  `snnfunc.rnn`'s `sparse_input=True`).

The products run as two registered ops, `snnfunc::spike_linear(x, weight, bias)` and
`snnfunc::spike_linear_weight_grad(x, g)` (with autograd, fake kernels for `torch.compile` and
`vmap` rules), by a backend's kernel (`KERNELS`: the C backend's for float32 and float64 on the
CPU), else by ATen.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SpikeLinear", "linear"]

KERNELS: dict = {}
"""The ops' own kernels by device type, which a backend registers (the C backend for "cpu"):
`(runs(t) -> bool, forward(x, weight, bias) -> out | None, weight_grad(x, g) -> gW | None)` on
2-d tensors of one dtype whose rows are contiguous, checked by the ops below; None where ATen's
dense product should compute it."""

STEPPERS: dict = {}
"""`stepper(weight, bias) -> run(x, out) -> bool` by device type, which a backend registers:
the forward kernel of `KERNELS` for many inputs of one weight (transposed once), False where
ATen's dense product should compute it."""

_MAX_K = 1 << 20  # the kernels list one chunk of rows' values at a time (at most 2^20)


def _check(name: str, t, dims: int, dtype=None, device=None):
    if (not isinstance(t, Tensor) or t.layout != torch.strided or t.dim() != dims
            or not t.is_floating_point()):
        got = (type(t).__name__ if not isinstance(t, Tensor) else
               f"{tuple(t.shape)} {t.dtype} {t.layout}")
        raise ValueError(f"{name} must be a {dims}-d floating-point strided tensor, got {got}")
    if dtype is not None and (t.dtype != dtype or t.device != device):
        raise ValueError(f"{name} must have x's dtype and device ({dtype}, {device}), got "
                         f"{t.dtype}, {t.device}")


def _kernel(x: Tensor):
    k = KERNELS.get(x.device.type)
    if k is None or not k[0](x) or x.shape[1] > _MAX_K:
        return None
    return k


def _rows(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


@torch.library.custom_op("snnfunc::spike_linear", mutates_args=())
def _spike_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """`x @ weight.T + bias` for `x` [M, K], `weight` [N, K], `bias` [N] or None, adding the
    weight's columns where `x` is not 0 (a backend's kernel), else ATen's product."""
    _check("x", x, 2)
    _check("weight", weight, 2, x.dtype, x.device)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must be [out_features, {x.shape[1]}] for x of shape "
                         f"{tuple(x.shape)}, got {tuple(weight.shape)}")
    if bias is not None:
        _check("bias", bias, 1, x.dtype, x.device)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")
    k = _kernel(x)
    out = k[1](_rows(x), weight, bias) if k is not None else None
    return out if out is not None else torch.nn.functional.linear(x, weight, bias)


@_spike_linear.register_fake
def _(x, weight, bias):
    return x.new_empty((x.shape[0], weight.shape[0]))


@torch.library.custom_op("snnfunc::spike_linear_weight_grad", mutates_args=())
def _spike_linear_weight_grad(x: Tensor, g: Tensor) -> Tensor:
    """`g.T @ x` [N, K] for `x` [M, K] and `g` [M, N]: the weight's gradient of
    `spike_linear`, adding the rows of `g` where `x` is not 0 (a backend's kernel), else ATen's
    product."""
    _check("x", x, 2)
    _check("g", g, 2, x.dtype, x.device)
    if g.shape[0] != x.shape[0]:
        raise ValueError(f"g must have x's {x.shape[0]} rows, got {tuple(g.shape)}")
    k = _kernel(x)
    out = k[2](_rows(x), _rows(g)) if k is not None else None
    return out if out is not None else g.t() @ x


@_spike_linear_weight_grad.register_fake
def _(x, g):
    return x.new_empty((g.shape[1], x.shape[1]))


def _linear_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _linear_backward(ctx, g):
    x, weight = ctx.saved_tensors
    gw = (torch.ops.snnfunc.spike_linear_weight_grad(x, g.contiguous())
          if ctx.needs_input_grad[1] else None)
    del x  # unpacked from bits under packed_spikes(): gone before the input's gradient is made
    gx = g @ weight if ctx.needs_input_grad[0] else None
    gb = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return gx, gw, gb


_spike_linear.register_autograd(_linear_backward, setup_context=_linear_setup)


def _grad_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _grad_backward(ctx, gg):  # gW = g.T @ x: d/dx = g @ gg, d/dg = x @ gg.T
    x, g = ctx.saved_tensors
    return (g @ gg if ctx.needs_input_grad[0] else None,
            x @ gg.t() if ctx.needs_input_grad[1] else None)


_spike_linear_weight_grad.register_autograd(_grad_backward, setup_context=_grad_setup)


def _batched(t, dim, size):
    if t is None:
        return None
    return t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)


@torch.library.register_vmap("snnfunc::spike_linear")
def _(info, in_dims, x, weight, bias):  # a batch of products: ATen's, with the batch first
    x, w = _batched(x, in_dims[0], info.batch_size), _batched(weight, in_dims[1], info.batch_size)
    out = torch.matmul(x, w.transpose(-1, -2))
    if bias is not None:
        out = out + _batched(bias, in_dims[2], info.batch_size).unsqueeze(-2)
    return out, 0


@torch.library.register_vmap("snnfunc::spike_linear_weight_grad")
def _(info, in_dims, x, g):
    x, g = _batched(x, in_dims[0], info.batch_size), _batched(g, in_dims[1], info.batch_size)
    return torch.matmul(g.transpose(-1, -2), x), 0


def _plain(t) -> bool:
    """A tensor whose values can be read here (not a functorch wrapper, a fake or a
    subclass)."""
    return (t is None or type(t) in (Tensor, torch.nn.Parameter)
            and not torch._C._functorch.is_functorch_wrapped_tensor(t))


class SpikeLinear(torch.nn.Linear):
    """`torch.nn.Linear` for inputs that are mostly 0 (spikes): the same parameters, state dict
    and initialisation, `y = x @ weight.T + bias` over the last dimension of `x` of any
    shape (`[T, B, in_features]` too), computed by adding the weight's columns where `x` is
    not 0 (`snnfunc::spike_linear`), its gradients with the weight's by adding the rows of the
    output's gradient where `x` is not 0. Results agree with `torch.nn.Linear`'s to rounding
    (the sums are taken in another order); inputs with many non-zeros run ATen's dense product.

    Under `torch.func` transforms (`grad`, `vmap`, `jvp`, ...), in forward-mode AD, under
    autocast and for dtypes or devices without a kernel it is `torch.nn.Linear` itself; under
    `torch.compile` the op is one node of the graph.
    """

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`SpikeLinear`'s product as a function: `torch.nn.functional.linear(x, weight, bias)`
    computed by `snnfunc::spike_linear` where it applies (see `SpikeLinear`), else by
    `torch.nn.functional.linear` itself."""
    if not _takes(x, weight, bias):
        return torch.nn.functional.linear(x, weight, bias)
    rows = math.prod(x.shape[:-1])
    y = torch.ops.snnfunc.spike_linear(x.reshape(rows, weight.shape[1]), weight, bias)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def linear_steps(weight: Tensor, bias: Tensor | None = None):
    """`run(x, out)`: `linear(x, weight, bias)` into `out` (`[M, N]`, contiguous) for plain 2-d
    inputs `x` `[M, K]` (rows contiguous) of one weight, the same values as `linear`'s: the
    backend's kernel with the weight prepared once (a recurrent layer's steps), else ATen's
    product, as `snnfunc::spike_linear` chooses."""
    make = STEPPERS.get(weight.device.type)
    kernel = KERNELS.get(weight.device.type)
    step = None
    if (make is not None and kernel is not None and kernel[0](weight)
            and weight.shape[1] <= _MAX_K and _plain(weight) and _plain(bias)):
        step = make(weight, bias)

    def run(x: Tensor, out: Tensor) -> None:
        if step is None or x.dtype != weight.dtype or not step(x, out):
            if bias is None:
                torch.mm(x, weight.t(), out=out)
            else:
                torch.addmm(bias, x, weight.t(), out=out)
    return run


def _takes(x, weight, bias) -> bool:
    if not (isinstance(x, Tensor) and isinstance(weight, Tensor) and x.layout == torch.strided
            and x.dim() >= 1 and weight.dim() == 2 and x.shape[-1] == weight.shape[1]
            and x.dtype == weight.dtype and x.device == weight.device and x.is_floating_point()
            and weight.layout == torch.strided):
        return False  # ATen's linear says what is wrong, or computes what it can
    if torch.is_autocast_enabled(x.device.type):
        return False  # autocast's dtype for linear, as torch.nn.Linear has it
    if torch.compiler.is_compiling():
        return True
    return (torch.autograd.forward_ad._current_level < 0
            and all(_plain(t) for t in (x, weight, bias))
            and KERNELS.get(x.device.type) is not None)
