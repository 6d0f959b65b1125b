"""Every operation of the kernels' IR, as a user writes it in a definition, with one state
each: `OPS[name] = (fn(r, x) -> r's new value, exact)`. `TABLE` is one neuron whose states
are these (and the membrane `v`), so one kernel per dtype runs all of them; with
`v_threshold=inf` and `detach_reset=True` it never fires, and the gradient of its final
states is the operations' own derivative. `exact`: the forward is a correctly rounded IEEE
operation (or a selection), equal bit for bit to torch's; the others are libm functions
within an ulp or two of torch's. Used by test_ir_ops.py and, on the Triton kernels, by
triton_interpreter_cases.py."""

import inspect

import torch
import torch.nn.functional as F

import snnfunc

OPS = {
    # arithmetic: both operands (x is the second or the first)
    "add": (lambda r, x: r + x, True), "radd": (lambda r, x: x + r, True),
    "sub": (lambda r, x: r - x, True), "rsub": (lambda r, x: x - r, True),
    "mul": (lambda r, x: r * x, True), "rmul": (lambda r, x: x * r, True),
    "div": (lambda r, x: r / x, True), "rdiv": (lambda r, x: x / r, True),
    "neg": (lambda r, x: -r, True),
    "minimum": (lambda r, x: torch.minimum(r, x), True),
    "maximum": (lambda r, x: torch.maximum(x, r), True),
    # functions
    "exp": (lambda r, x: torch.exp(r), False), "expm1": (lambda r, x: torch.expm1(r), False),
    "log": (lambda r, x: torch.log(r), False), "log1p": (lambda r, x: torch.log1p(r), False),
    "sqrt": (lambda r, x: torch.sqrt(r), True), "rsqrt": (lambda r, x: torch.rsqrt(r), False),
    "abs": (lambda r, x: r.abs(), True), "sigmoid": (lambda r, x: torch.sigmoid(r), False),
    "tanh": (lambda r, x: torch.tanh(r), False), "cosh": (lambda r, x: torch.cosh(r), False),
    "sinh": (lambda r, x: torch.sinh(r), False),
    "reciprocal": (lambda r, x: torch.reciprocal(r), True),
    "sin": (lambda r, x: torch.sin(r), False), "cos": (lambda r, x: torch.cos(r), False),
    # powers with a number exponent
    "square": (lambda r, x: torch.square(r), True), "cube": (lambda r, x: r ** 3, True),
    "pow_half": (lambda r, x: r ** 0.5, True), "pow_m1": (lambda r, x: r ** -1, True),
    "pow_m2": (lambda r, x: r ** -2, True), "pow_m_half": (lambda r, x: r ** -0.5, False),
    "pow_1_7": (lambda r, x: r ** 1.7, False), "pow_0": (lambda r, x: r ** 0 + x, True),
    # clamps with number bounds, with value bounds (each operand's derivative), relu
    "clamp": (lambda r, x: torch.clamp(r, 0.0, 1.0), True),
    "clamp_min": (lambda r, x: r.clamp(min=0.0), True),
    "clamp_max": (lambda r, x: torch.clamp(r, max=1.0), True),
    "clamp_inverted": (lambda r, x: torch.clamp(r, 1.0, 0.5), True),
    "clamp_by_x": (lambda r, x: torch.clamp(r, min=x), True),
    "clamp_x_min": (lambda r, x: torch.clamp(x, min=r), True),
    "clamp_x_max": (lambda r, x: torch.clamp(x, max=r), True),
    "clamp_lo": (lambda r, x: torch.clamp(x, r, x + 1.0), True),
    "clamp_hi": (lambda r, x: torch.clamp(x, x - 1.0, r), True),
    "relu": (lambda r, x: torch.relu(r), True), "f_relu": (lambda r, x: F.relu(r - x), True),
    # selections, comparisons and logic
    "where_gt": (lambda r, x: torch.where(r > x, r, x), True),
    "where_le": (lambda r, x: torch.where(r <= x, x * 2.0, r), True),
    "where_eq": (lambda r, x: torch.where(r == x, r, -r), True),
    "where_ne": (lambda r, x: torch.where(r != 0.5, r, x), True),
    "where_and": (lambda r, x: torch.where((r > 0) & (x < 1), r, x), True),
    "where_or": (lambda r, x: torch.where((r < 0) | ~(x >= 1), r * x, r), True),
    "full_like": (lambda r, x: torch.where(r > 0, torch.full_like(r, 2.0), r), True),
    "zeros_ones": (lambda r, x: torch.where(r > 0, torch.zeros_like(r), torch.ones_like(r)) + r,
                   True),
    "detach": (lambda r, x: r.detach() * r, True),
}

STATES = ("v", *OPS)


def _charge(x, v, *states):
    return (v + x, *(fn(r, x) for (fn, _), r in zip(OPS.values(), states)))


_P = inspect.Parameter
_charge.__signature__ = inspect.Signature(
    [_P("x", _P.POSITIONAL_OR_KEYWORD), *(_P(n, _P.POSITIONAL_OR_KEYWORD) for n in STATES)])
_charge.__name__ = _charge.__qualname__ = "ir_op_table"

TABLE = snnfunc.neuron(_charge, name="tests:ir_op_table")

INF, NAN = float("inf"), float("nan")
VALUES = [-INF, -1.5, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, INF, NAN]


def grid(dtype):
    """x [1, N] and the initial value of every state [N]: every pair of VALUES."""
    pool = torch.tensor(VALUES, dtype=dtype)
    n = len(VALUES)
    x = pool.repeat_interleave(n)[None]
    r0 = pool.repeat(n)
    return x, r0


def run(dtype, impl):
    """`(final states, d(sum of final states)/d(initial states), d/dx)` of one step."""
    x, r0 = grid(dtype)
    x = x.clone().requires_grad_(True)
    state0 = tuple(r0.clone().requires_grad_(True) for _ in STATES)
    out = TABLE(x, TABLE.State(*state0), v_threshold=float("inf"), detach_reset=True, impl=impl)
    final = tuple(out.state)
    grads = torch.autograd.grad(sum(s.sum() for s in final), [*state0, x], allow_unused=True)
    return final, grads[:-1], grads[-1]
