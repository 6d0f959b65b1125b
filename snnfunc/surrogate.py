r"""Surrogate spike functions.

A spike function computes the Heaviside step in the forward pass,

$$\Theta(x) = \begin{cases} 1, & x \ge 0 \\ 0, & x < 0 \end{cases}$$

returned in the input's floating dtype, and uses the derivative $g'(x)$ of a smooth
primitive $g$ in place of $\Theta'(x)$ when differentiating. Every surrogate is a
small frozen dataclass: equal and hashable when its parameters are equal, so `torch.compile`
guards on it cheaply. All of them share one spike function, so each works under
`loss.backward()`, `torch.func.grad`/`vjp`/`jacrev`, forward mode
(`torch.func.jvp`/`jacfwd`), `torch.func.vmap` (including `vmap(grad(f))`) and
`torch.compile(fullgraph=True)`.

A new surrogate needs only its derivative:

    @dataclasses.dataclass(frozen=True)
    class Gaussian(snnfunc.surrogate.Surrogate):
        sigma: float = 0.5

        def derivative(self, x):
            z = x / self.sigma
            return torch.exp(-0.5 * z**2) / (self.sigma * math.sqrt(2 * math.pi))
"""

from __future__ import annotations

import dataclasses
import math

import torch

__all__ = [
    "Surrogate",
    "spike",
    "Sigmoid",
    "BilinearLeakyReLU",
    "SignSwish",
    "ATan",
    "PiecewiseQuadratic",
    "PiecewiseExp",
    "SoftSign",
    "Erf",
    "SuperSpike",
    "FastSigmoid",
    "PiecewiseLeakyReLU",
    "Rect",
    "Triangle",
    "StraightThrough",
]


class _Spike(torch.autograd.Function):
    """Θ(x) forward, `grad * surrogate.derivative(x)` backward (used under torch.compile)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, surrogate):
        return (x >= 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, surrogate = inputs
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * derivative(ctx.surrogate, x), None


class _SpikeForwardAD(_Spike):
    """The same spike function with a forward-mode rule (used in eager mode).

    Dynamo refuses autograd.Functions that define `jvp`, so `spike` picks this one only
    outside `torch.compile`.
    """

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, surrogate = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        ctx.surrogate = surrogate

    @staticmethod
    def jvp(ctx, x_tangent, _):
        (x,) = ctx.saved_tensors
        return x_tangent * derivative(ctx.surrogate, x)


def derivative(surrogate: "Surrogate", x: torch.Tensor) -> torch.Tensor:
    """`surrogate.derivative(x)` as a tensor of `x`'s shape and dtype.

    A derivative may return a number, a 0-d tensor, a tensor that broadcasts to `x` (one
    value per channel, say) or another floating dtype; every path uses it broadcast to `x`
    and cast to `x.dtype`. Anything else is an error naming the surrogate.
    """
    d = surrogate.derivative(x)
    name = type(surrogate).__name__
    if isinstance(d, (int, float)) and not isinstance(d, bool):
        return torch.full_like(x, d)
    if not isinstance(d, torch.Tensor) or not (d.is_floating_point() or d.dtype == torch.bool):
        got = d.dtype if isinstance(d, torch.Tensor) else type(d).__name__
        raise TypeError(f"{name}.derivative(x) must return a floating tensor or a number, got {got}")
    if d.shape != x.shape:
        try:
            d = d.expand(x.shape)
        except RuntimeError:
            raise ValueError(
                f"{name}.derivative(x) returned shape {tuple(d.shape)}, which does not broadcast "
                f"to x's shape {tuple(x.shape)}") from None
    if d.device != x.device:
        raise ValueError(f"{name}.derivative(x) returned a tensor on {d.device}, x is on {x.device}")
    return d.to(x.dtype)


def spike(x: torch.Tensor, surrogate: "Surrogate") -> torch.Tensor:
    """Θ(x) in `x.dtype`, differentiated as `surrogate.derivative(x)`."""
    if torch.compiler.is_compiling():
        return _Spike.apply(x, surrogate)
    return _SpikeForwardAD.apply(x, surrogate)


def _real(obj, *names):
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"{type(obj).__name__}: {name} must be a real number, got {type(value).__name__}"
            )
        if not abs(value) < math.inf:  # math.isfinite, traceable on torch 2.11's symbolic
            # floats too (a default's, made in a function compiled with dynamic=True)
            raise ValueError(f"{type(obj).__name__}: {name} must be finite, got {value!r}")


def _positive(obj, *names):
    _real(obj, *names)
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ValueError(f"{type(obj).__name__}: {name} must be > 0, got {value!r}")


_REGISTRY: dict[str, type] = {}


def registered(name: str) -> type:
    """The surrogate class registered under `name` (`module:qualname`): every subclass of
    `Surrogate` is, when its class statement runs. Nothing is imported for a name: a class
    that is not registered in this process is an error naming the module to import."""
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        module = name.rpartition(":")[0] if isinstance(name, str) else ""
        raise ValueError(f"no surrogate class named {name!r} is registered in this process: "
                         f"import the module that defines it{f' ({module})' if module else ''} "
                         f"first")
    return cls


def name_of(cls: type) -> str:
    """The name a surrogate class is registered under."""
    return f"{cls.__module__}:{cls.__qualname__}"


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """Base class: subclass it as a frozen dataclass and define `derivative`.

    Calling a surrogate on a tensor returns the spike $\\Theta(x)$. Every subclass is
    registered by its module and qualified name when its class statement runs (a saved graph
    names its surrogate so; the kernels never import anything from a name).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[name_of(cls)] = cls  # a redefinition (a notebook cell run again) replaces

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """g'(x), the gradient used in place of the Heaviside step's. Element-wise, in torch ops."""
        raise TypeError(
            f"{type(self).__name__} must define derivative(self, x): the surrogate gradient g'(x)"
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return spike(x, self)


@dataclasses.dataclass(frozen=True)
class Sigmoid(Surrogate):
    r"""$g'(x) = \alpha\,\mathrm{sg}(\alpha x)\,(1 - \mathrm{sg}(\alpha x))$, sg the logistic
    sigmoid. Peak $\alpha/4$ at 0 (SpikingFlow used `alpha=1`)."""

    alpha: float = 4.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        sg = torch.sigmoid(self.alpha * x)
        return self.alpha * sg * (1 - sg)


@dataclasses.dataclass(frozen=True)
class BilinearLeakyReLU(Surrogate):
    r"""$g'(x) = a$ if $-c \le x \le c$, else $b$."""

    a: float = 1.0
    b: float = 0.01
    c: float = 0.5

    def __post_init__(self):
        _real(self, "a", "b")
        _positive(self, "c")

    def derivative(self, x):
        inside = (x >= -self.c) & (x <= self.c)
        return torch.where(inside, torch.full_like(x, self.a), torch.full_like(x, self.b))


@dataclasses.dataclass(frozen=True)
class SignSwish(Surrogate):
    r"""$g'(x) = \beta\,(2 - \beta x \tanh(\beta x / 2)) / (1 + \cosh(\beta x))$."""

    beta: float = 5.0

    def __post_init__(self):
        _positive(self, "beta")

    def derivative(self, x):
        bx = self.beta * x
        return self.beta * (2 - bx * torch.tanh(bx / 2)) / (1 + torch.cosh(bx))


@dataclasses.dataclass(frozen=True)
class ATan(Surrogate):
    r"""$g'(x) = (\alpha/2) / (1 + (\pi \alpha x / 2)^2)$."""

    alpha: float = 2.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x) ** 2)


@dataclasses.dataclass(frozen=True)
class PiecewiseQuadratic(Surrogate):
    r"""$g'(x) = \alpha - \alpha^2 |x|$ if $|x| \le 1/\alpha$, else 0."""

    alpha: float = 1.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        ax = x.abs()
        return torch.where(ax <= 1 / self.alpha, self.alpha - self.alpha**2 * ax, torch.zeros_like(x))


@dataclasses.dataclass(frozen=True)
class PiecewiseExp(Surrogate):
    r"""$g'(x) = (\alpha/2)\exp(-\alpha |x|)$."""

    alpha: float = 1.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return (self.alpha / 2) * torch.exp(-self.alpha * x.abs())


@dataclasses.dataclass(frozen=True)
class SoftSign(Surrogate):
    r"""$g'(x) = 1 / (2\alpha (1/\alpha + |x|)^2)$."""

    alpha: float = 2.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return 1 / (2 * self.alpha * (1 / self.alpha + x.abs()) ** 2)


@dataclasses.dataclass(frozen=True)
class Erf(Surrogate):
    r"""$g'(x) = (\alpha/\sqrt{\pi}) \exp(-(\alpha x)^2)$."""

    alpha: float = 2.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return (self.alpha / math.sqrt(math.pi)) * torch.exp(-((self.alpha * x) ** 2))


@dataclasses.dataclass(frozen=True)
class SuperSpike(Surrogate):
    r"""$g'(x) = 1 / (\alpha |x| + 1)^2$ (Zenke & Ganguli 2018), peak 1.

    Equals snnTorch's `fast_sigmoid(slope=alpha)`, and Norse 1.1's `superspike` at
    `alpha=1` (Norse's backward is $1/(|x| + 1)^2$ whatever its alpha).
    """

    alpha: float = 10.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return 1 / (self.alpha * x.abs() + 1) ** 2


FastSigmoid = SuperSpike
"""snnTorch's name (`fast_sigmoid`) for `SuperSpike`: the same class."""


@dataclasses.dataclass(frozen=True)
class PiecewiseLeakyReLU(Surrogate):
    r"""$g'(x) = 1/(2w)$ if $|x| < w$, else $c$."""

    w: float = 1.0
    c: float = 0.01

    def __post_init__(self):
        _real(self, "c")
        _positive(self, "w")

    def derivative(self, x):
        return torch.where(x.abs() < self.w, torch.full_like(x, 1 / (2 * self.w)), torch.full_like(x, self.c))


@dataclasses.dataclass(frozen=True)
class Rect(Surrogate):
    r"""Rectangular window: $g'(x) = 1/\alpha$ if $|x| < \alpha/2$, else 0 (Wu et al. 2018)."""

    alpha: float = 1.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return torch.where(x.abs() < self.alpha / 2, torch.full_like(x, 1 / self.alpha), torch.zeros_like(x))


@dataclasses.dataclass(frozen=True)
class Triangle(Surrogate):
    r"""$g'(x) = \max(0, 1 - |x|/\alpha)/\alpha$, a triangle of unit area and half-width
    $\alpha$."""

    alpha: float = 1.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        r = 1 - x.abs() / self.alpha
        return torch.where(r < 0, 0.0, r) / self.alpha  # NaN stays NaN


@dataclasses.dataclass(frozen=True)
class StraightThrough(Surrogate):
    r"""$g'(x) = 1$: the gradient passes through the step unchanged."""

    def derivative(self, x):
        return torch.ones_like(x)
