"""Composite operations written once, in primitive operations, for every backend.

A backend spells the primitive operations (arithmetic, `exp`, `log`, `sqrt`, `abs`, `sin`,
`cos`, comparisons, logic and `select`) and, natively, whichever composite ones it has a
library function for (`Spelling.native`: the C backend has libm's `expm1`, `tanh`, `pow`, ...).
Every other composite operation is lowered here, through `ops`, the emitter's handle that
binds each step to a statement and returns its name. The rules follow torch's semantics at
±0, ±inf and NaN (see tests/ir_op_table.py, run in both backends).
"""

from __future__ import annotations

import math


def _pow_table(o, x, k):
    """x ** k for the exponents torch's CPU kernel special-cases, as it computes them."""
    if k == 2.0:
        return o.mul(x, x)
    if k == 3.0:
        return o.mul(o.mul(x, x), x)
    if k == 1.0:
        return x
    if k == 0.5:
        return o.sqrt(x)
    if k == -0.5:
        return o.div(o.one(), o.sqrt(x))
    if k == -1.0:
        return o.div(o.one(), x)
    if k == -2.0:
        return o.div(o.one(), o.mul(x, x))
    if k == 0.0:
        return o.one()
    return None


def pow_(o, x, k):
    """x ** k for a number k: the table above, libm's pow where the backend has it, else
    repeated multiplication for integer k (|k| <= 64, signs of zeros and infinities kept) or
    exp(k log|x|) with C99's special cases (a negative base gives NaN, -inf gives inf or 0)."""
    out = _pow_table(o, x, k)
    if out is not None:
        return out
    if "pow" in o.native:
        return o.call("pow", x, k)
    if k == int(k) and abs(k) <= 64:
        n, acc, base = int(abs(k)), None, x
        while n:
            if n & 1:
                acc = base if acc is None else o.mul(acc, base)
            n >>= 1
            if n:
                base = o.mul(base, base)
        return acc if k > 0 else o.div(o.one(), acc)
    y = o.exp(o.mul(o.const(k), o.log(o.abs(x))))
    negative = o.logic("and", o.compare("lt", x, o.const(0.0)),
                       o.compare("ne", x, o.const(-math.inf)))
    return o.select(negative, o.const(math.nan), y)


def expm1(o, x):
    """e^x - 1 by Kahan's method: (u - 1) x / log u with u = e^x, exact where u is 1 (small x,
    ±0 kept), -1 where u - 1 is, inf at inf."""
    u = o.exp(x)
    um1 = o.sub(u, o.one())
    r = o.mul(um1, o.div(x, o.log(u)))
    r = o.select(o.compare("eq", u, o.const(math.inf)), u, r)
    r = o.select(o.compare("eq", um1, o.const(-1.0)), um1, r)
    return o.select(o.compare("eq", u, o.one()), x, r)


def log1p(o, x):
    """log(1 + x) by Kahan's method: log(u) x / (u - 1) with u = 1 + x, x where u is 1."""
    u = o.add(o.one(), x)
    r = o.mul(o.log(u), o.div(x, o.sub(u, o.one())))
    r = o.select(o.compare("eq", u, o.const(math.inf)), u, r)
    return o.select(o.compare("eq", u, o.one()), x, r)


def tanh(o, x):
    """tanh x = -e / (e + 2) with e = expm1(-2|x|), the sign of x put back (±0 kept)."""
    e = o.expm1(o.mul(o.const(-2.0), o.abs(x)))
    t = o.div(o.neg(e), o.add(e, o.const(2.0)))
    t = o.select(o.compare("lt", x, o.const(0.0)), o.neg(t), t)
    return o.select(o.compare("eq", x, o.const(0.0)), x, t)


def sinh(o, x):
    """sinh x = (expm1(x) - expm1(-x)) / 2: no cancellation near 0, ±0 kept."""
    return o.mul(o.sub(o.expm1(x), o.expm1(o.neg(x))), o.const(0.5))


def cosh(o, x):
    return o.mul(o.add(o.exp(x), o.exp(o.neg(x))), o.const(0.5))


def sigmoid(o, x):
    return o.div(o.one(), o.add(o.one(), o.exp(o.neg(x))))


def rsqrt(o, x):
    return o.div(o.one(), o.sqrt(x))


def reciprocal(o, x):
    return o.div(o.one(), x)


def select_min_max(o, a, b, cmp):
    """torch.minimum (`cmp` "lt") or maximum ("gt"): NaN wins, then b at a tie (the second
    operand, as x86's min and max instructions and torch's vectorised loop)."""
    r = o.select(o.compare(cmp, a, b), a, b)
    r = o.select(o.compare("ne", b, b), b, r)
    return o.select(o.compare("ne", a, a), a, r)


def clamp_number(o, x, lo, hi):
    """torch.clamp with number bounds: x unless strictly outside a bound (±0 and NaN kept),
    `min(max(x, lo), hi)` (so lo > hi gives hi); a NaN bound gives NaN."""
    r = x
    if lo is not None:
        r = o.select(o.compare("lt", r, lo), lo, r)
    if hi is not None:
        r = o.select(o.compare("gt", r, hi), hi, r)
    if hi is not None:
        r = o.select(o.compare("ne", hi, hi), hi, r)
    if lo is not None:
        r = o.select(o.compare("ne", lo, lo), lo, r)
    return r


def relu(o, x):
    """torch.relu: 0 where x < 0, x elsewhere (-0.0 and NaN kept)."""
    return o.select(o.compare("lt", x, o.const(0.0)), o.const(0.0), x)


def lower(o, op, args):
    """The value of a composite node `op(*args)` (args are the operands' names; `pow`'s
    second is the exponent), through `o`; None for a primitive operation."""
    if op == "pow":
        return pow_(o, args[0], args[1])
    if op in o.native:
        return o.call(op, *args)
    if op in _UNARY:
        return _UNARY[op](o, args[0])
    if op in ("minimum", "clamp_max_v"):
        return select_min_max(o, args[0], args[1], "lt")
    if op in ("maximum", "clamp_min_v"):
        return select_min_max(o, args[0], args[1], "gt")
    if op == "clamp_v":
        return select_min_max(o, select_min_max(o, args[0], args[1], "gt"), args[2], "lt")
    if op == "clamp_min":
        return clamp_number(o, args[0], args[1], None)
    if op == "clamp_max":
        return clamp_number(o, args[0], None, args[1])
    if op == "clamp":
        return clamp_number(o, *args)
    if op == "spike":  # Θ(u): 1 where u >= 0
        return o.select(o.compare("ge", args[0], o.const(0.0)), o.one(), o.const(0.0))
    if op == "reset_hard":  # h, r, v_reset: v_reset where the spike r fired
        h, r, vr = args
        return o.select(o.compare("gt", r, o.const(0.0)), vr, h)
    if op == "reset_soft":  # h, r, threshold: h - threshold where r fired
        h, r, th = args
        return o.select(o.compare("gt", r, o.const(0.0)), o.sub(h, th), h)
    if op == "detach":
        return args[0]
    return None


_UNARY = {"expm1": expm1, "log1p": log1p, "tanh": tanh, "sinh": sinh, "cosh": cosh,
          "sigmoid": sigmoid, "rsqrt": rsqrt, "reciprocal": reciprocal, "relu": relu}
