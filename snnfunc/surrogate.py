r"""Surrogate spike functions.

A spike function computes the Heaviside step in the forward pass,

.. math::
    \Theta(x) = \begin{cases} 1, & x \ge 0 \\ 0, & x < 0 \end{cases}

returned in the input's floating dtype, and uses the derivative :math:`g'(x)` of a smooth
primitive :math:`g` in place of :math:`\Theta'(x)` when differentiating. Every surrogate is a
small frozen dataclass: equal and hashable when its parameters are equal, so ``torch.compile``
guards on it cheaply. All of them share one spike function, so each works under
``loss.backward()``, ``torch.func.grad``/``vjp``/``jacrev``, forward mode
(``torch.func.jvp``/``jacfwd``), ``torch.func.vmap`` (including ``vmap(grad(f))``) and
``torch.compile(fullgraph=True)``.

A new surrogate needs only its derivative::

    @dataclasses.dataclass(frozen=True)
    class Gaussian(snnfunc.surrogate.Surrogate):
        sigma: float = 0.5

        def derivative(self, x):
            return torch.exp(-0.5 * (x / self.sigma) ** 2) / (self.sigma * math.sqrt(2 * math.pi))
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
    """Θ(x) forward, ``grad * surrogate.derivative(x)`` backward (used under torch.compile)."""

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
        return grad_output * ctx.surrogate.derivative(x), None


class _SpikeForwardAD(_Spike):
    """The same spike function with a forward-mode rule (used in eager mode).

    Dynamo refuses autograd.Functions that define ``jvp``, so ``spike`` picks this one only
    outside ``torch.compile``.
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
        return x_tangent * ctx.surrogate.derivative(x)


def spike(x: torch.Tensor, surrogate: "Surrogate") -> torch.Tensor:
    """Θ(x) in ``x.dtype``, differentiated as ``surrogate.derivative(x)``."""
    if torch.compiler.is_compiling():
        return _Spike.apply(x, surrogate)
    return _SpikeForwardAD.apply(x, surrogate)


def _positive(obj, *names):
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"{type(obj).__name__}: {name} must be a real number, got {type(value).__name__}"
            )
        if not value > 0:
            raise ValueError(f"{type(obj).__name__}: {name} must be > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """Base class: subclass it as a frozen dataclass and define :meth:`derivative`.

    Calling a surrogate on a tensor returns the spike :math:`\\Theta(x)`.
    """

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """g'(x), the gradient used in place of the Heaviside step's. Element-wise, in torch ops."""
        raise TypeError(
            f"{type(self).__name__} must define derivative(self, x): the surrogate gradient g'(x)"
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return spike(x, self)


@dataclasses.dataclass(frozen=True)
class Sigmoid(Surrogate):
    r""":math:`g'(x) = \alpha\,\mathrm{sg}(\alpha x)\,(1 - \mathrm{sg}(\alpha x))`, sg the logistic
    sigmoid. Peak :math:`\alpha/4` at 0 (the seed used ``alpha=1``)."""

    alpha: float = 4.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        sg = torch.sigmoid(self.alpha * x)
        return self.alpha * sg * (1 - sg)


@dataclasses.dataclass(frozen=True)
class BilinearLeakyReLU(Surrogate):
    r""":math:`g'(x) = a` if :math:`-c \le x \le c`, else :math:`b`."""

    a: float = 1.0
    b: float = 0.01
    c: float = 0.5

    def __post_init__(self):
        _positive(self, "c")

    def derivative(self, x):
        inside = (x >= -self.c) & (x <= self.c)
        return torch.where(inside, torch.full_like(x, self.a), torch.full_like(x, self.b))


@dataclasses.dataclass(frozen=True)
class SignSwish(Surrogate):
    r""":math:`g'(x) = \beta\,(2 - \beta x \tanh(\beta x / 2)) / (1 + \cosh(\beta x))`."""

    beta: float = 5.0

    def __post_init__(self):
        _positive(self, "beta")

    def derivative(self, x):
        bx = self.beta * x
        return self.beta * (2 - bx * torch.tanh(bx / 2)) / (1 + torch.cosh(bx))


@dataclasses.dataclass(frozen=True)
class ATan(Surrogate):
    r""":math:`g'(x) = (\alpha/2) / (1 + (\pi \alpha x / 2)^2)`."""

    alpha: float = 2.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x) ** 2)


@dataclasses.dataclass(frozen=True)
class PiecewiseQuadratic(Surrogate):
    r""":math:`g'(x) = \alpha - \alpha^2 |x|` if :math:`|x| \le 1/\alpha`, else 0."""

    alpha: float = 1.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        ax = x.abs()
        return torch.where(ax <= 1 / self.alpha, self.alpha - self.alpha**2 * ax, torch.zeros_like(x))


@dataclasses.dataclass(frozen=True)
class PiecewiseExp(Surrogate):
    r""":math:`g'(x) = (\alpha/2)\exp(-\alpha |x|)`."""

    alpha: float = 1.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return (self.alpha / 2) * torch.exp(-self.alpha * x.abs())


@dataclasses.dataclass(frozen=True)
class SoftSign(Surrogate):
    r""":math:`g'(x) = 1 / (2\alpha (1/\alpha + |x|)^2)`."""

    alpha: float = 2.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return 1 / (2 * self.alpha * (1 / self.alpha + x.abs()) ** 2)


@dataclasses.dataclass(frozen=True)
class Erf(Surrogate):
    r""":math:`g'(x) = (\alpha/\sqrt{\pi}) \exp(-(\alpha x)^2)`."""

    alpha: float = 2.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return (self.alpha / math.sqrt(math.pi)) * torch.exp(-((self.alpha * x) ** 2))


@dataclasses.dataclass(frozen=True)
class SuperSpike(Surrogate):
    r""":math:`g'(x) = 1 / (\alpha |x| + 1)^2` (Zenke & Ganguli 2018), peak 1.

    Equals snnTorch's ``fast_sigmoid(slope=alpha)`` and Norse's ``superspike`` with the same
    ``alpha``.
    """

    alpha: float = 10.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return 1 / (self.alpha * x.abs() + 1) ** 2


FastSigmoid = SuperSpike


@dataclasses.dataclass(frozen=True)
class PiecewiseLeakyReLU(Surrogate):
    r""":math:`g'(x) = 1/(2w)` if :math:`|x| < w`, else :math:`c`."""

    w: float = 1.0
    c: float = 0.01

    def __post_init__(self):
        _positive(self, "w")

    def derivative(self, x):
        return torch.where(x.abs() < self.w, torch.full_like(x, 1 / (2 * self.w)), torch.full_like(x, self.c))


@dataclasses.dataclass(frozen=True)
class Rect(Surrogate):
    r"""Rectangular window: :math:`g'(x) = 1/\alpha` if :math:`|x| < \alpha/2`, else 0 (Wu et al. 2018)."""

    alpha: float = 1.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return torch.where(x.abs() < self.alpha / 2, torch.full_like(x, 1 / self.alpha), torch.zeros_like(x))


@dataclasses.dataclass(frozen=True)
class Triangle(Surrogate):
    r""":math:`g'(x) = \max(0, 1 - |x|/\alpha)/\alpha`, a triangle of unit area and half-width
    :math:`\alpha`."""

    alpha: float = 1.0

    def __post_init__(self):
        _positive(self, "alpha")

    def derivative(self, x):
        return torch.clamp(1 - x.abs() / self.alpha, min=0) / self.alpha


@dataclasses.dataclass(frozen=True)
class StraightThrough(Surrogate):
    r""":math:`g'(x) = 1`: the gradient passes through the step unchanged."""

    def derivative(self, x):
        return torch.ones_like(x)
