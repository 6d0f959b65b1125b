"""How the C backend writes values and operations (`snnfunc._kernel.emit.Spelling`).

Built without FMA contraction or fast math, so `+ - * /` and comparisons round as the
reference loop does. libm's `expm1`, `log1p`, `tanh`, `sinh`, `cosh` and `pow` are native;
in the VJP, e^x in float comes from `VJP_EXPF` (the runtime's own vector exp on AVX-512 and AVX2, runtime/fast_exp.h)."""

from __future__ import annotations

import math

from snnfunc._kernel.emit import Spelling

_FUNCS = {"exp": "exp", "expm1": "expm1", "log": "log", "log1p": "log1p", "sqrt": "sqrt",
          "abs": "fabs", "tanh": "tanh", "cosh": "cosh", "sinh": "sinh", "sin": "sin",
          "cos": "cos"}
_BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_COMPARE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_TYPES = {"real": "REAL", "number": "double", "mask": "int"}


class CSpelling(Spelling):
    native = frozenset({"expm1", "log1p", "tanh", "sinh", "cosh", "pow"})

    def __init__(self, single: bool):
        self.single = single  # REAL is float (float32, and half precision computed in it)

    def bind(self, name, expr, kind):
        return f"const {_TYPES[kind]} {name} = {expr};"

    def literal(self, value, kind):
        t = _TYPES[kind]
        if math.isnan(value):
            return f"(({t})NAN)"
        if math.isinf(value):
            return f"(({t})INFINITY)" if value > 0 else f"(({t})-INFINITY)"
        return f"(({t}){value!r})"

    def to_real(self, name):
        return f"((REAL){name})"

    def binary(self, op, a, b, kind):
        return f"{a} {_BINARY[op]} {b}"

    def neg(self, a):
        return f"-{a}"

    def _f(self, name, kind, vjp=False):
        single = self.single and kind == "real"
        if single and vjp and name == "exp":
            return "VJP_EXPF"
        return _FUNCS[name] + ("f" if single else "")

    def func(self, name, a, kind, vjp):
        return f"{self._f(name, kind, vjp)}({a})"

    def call(self, op, args, kind, vjp):
        if op == "pow":
            x, k = args
            return f"{'powf' if self.single and kind == 'real' else 'pow'}({x}, " \
                   f"{self.literal(k, kind)})"
        return self.func(op, args[0], kind, vjp)

    def select(self, c, a, b, kind):
        return f"{c} ? {a} : {b}"

    def compare(self, op, a, b):
        return f"{a} {_COMPARE[op]} {b}"

    def logic(self, op, a, b):
        return f"{a} {'&' if op == 'and' else '|'} {b}"

    def logical_not(self, a):
        return f"!{a}"
