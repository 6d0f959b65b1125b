"""How the Triton backend writes values and operations (`snnfunc._kernel.emit.Spelling`).

IEEE division (`div_rn`) and square root (`sqrt_rn`) in float32, no FMA contraction (the
launch passes `enable_fp_fusion=False`), so `+ - * /` and comparisons round as the reference
loop does. Triton has no `expm1`, `tanh`, `pow`, ...: they are lowered (`snnfunc._kernel.
lowering`), which also runs under Triton's interpreter. Numbers are float64 scalars.

Signed zeros: Triton 3.6 compiles `-x` as `0 - x` (so `-(+0.0)` is +0.0) and a constant -0.0
(`tl.full(..., -0.0, ...)`, or a Python -0.0 meeting a tensor) as +0.0, in its compiler and
its interpreter alike. So a negation is spelled `x * -1.0`, exact (LLVM makes it a sign flip)
and -0.0 where x is +0.0, and the constant -0.0 as +0.0 times -1.0."""

from __future__ import annotations

import math

from snnfunc._kernel.emit import Spelling

_COMPARE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


def literal(v) -> str:
    """A Python literal Triton reads (an infinity overflows to inf)."""
    if math.isnan(v):
        return "float('nan')"
    if math.isinf(v):
        return "1e400" if v > 0 else "-1e400"
    return repr(v)


class TritonSpelling(Spelling):
    native = frozenset()

    def __init__(self, f32: bool):
        self.f32 = f32  # the compute type is float32 (float32, float16, bfloat16)

    def bind(self, name, expr, kind):
        return f"{name} = {expr}"

    def literal(self, value, kind):
        if value == 0 and math.copysign(1.0, value) < 0:  # -0.0, made (see above)
            return ("(tl.full([], 0.0, tl.float64) * -1.0)" if kind == "number"
                    else "(tl.full([BLOCK], 0.0, REAL) * -1.0)")
        if kind == "number":
            return literal(value)
        return f"tl.full([BLOCK], {literal(value)}, REAL)"

    def to_real(self, name):
        return f"{name}.to(REAL)"

    def binary(self, op, a, b, kind):
        if op == "div":
            return f"tl.math.div_rn({a}, {b})" if self.f32 and kind == "real" else f"({a}) / ({b})"
        return f"{a} {dict(add='+', sub='-', mul='*')[op]} {b}"

    def neg(self, a):
        return f"{a} * -1.0"  # not `-a`: Triton 3.6 subtracts from +0.0 (see above)

    def func(self, name, a, kind, vjp):
        if name == "sqrt":
            return f"tl.sqrt_rn({a})" if self.f32 and kind == "real" else f"tl.sqrt({a})"
        return f"tl.{name}({a})"

    def call(self, op, args, kind, vjp):  # pragma: no cover - nothing is native
        raise NotImplementedError(f"the Triton spelling has no native call ({op!r}): every "
                                  "operation is written out")

    def select(self, c, a, b, kind):
        return f"tl.where({c}, {a}, {b})"

    def compare(self, op, a, b):
        return f"{a} {_COMPARE[op]} {b}"

    def logic(self, op, a, b):
        return f"{a} {'&' if op == 'and' else '|'} {b}"

    def logical_not(self, a):
        return f"{a} == 0"
