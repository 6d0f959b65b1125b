"""The backend-neutral emitter: a traced graph written out statement by statement, in a
backend's spelling (`Spelling`: the C and Triton backends each have one).

Each node becomes one statement, in the graph's order, named `<prefix><node>`; a composite
operation the backend does not spell natively is lowered (`lowering`) into a few statements
named `<prefix><node>_<k>`. Values are of three kinds: `real` (one per neuron, in the compute
type), `number` (one for every neuron: a surrogate's run-time field, or arithmetic on such
fields and constants, computed in double as Python computes it, and rounded where it meets a
real value, as torch rounds a Python number) and `mask` (a comparison).
"""

from __future__ import annotations

from snnfunc._core import ir as _ir
from snnfunc._kernel import lowering

# operations on numbers: a node of these over run-time numbers and constants only is a number
ARITH = {"add", "sub", "mul", "div", "neg", "pow", "reciprocal", "rsqrt", "sigmoid", "exp",
         "expm1", "log", "log1p", "sqrt", "abs", "tanh", "cosh", "sinh", "sin", "cos",
         "minimum", "maximum", *_ir.CLAMPS}
PRIMITIVE_UNARY = ("exp", "log", "sqrt", "abs", "sin", "cos")


class Spelling:
    """How a backend writes values and primitive operations (methods return expressions).

    `native`: the composite operations it spells itself with `call` (a library function);
    every other one is lowered. Subclasses define `bind`, `literal`, `to_real`, `binary`,
    `neg`, `func`, `call`, `select`, `compare`, `logic` and `logical_not`."""

    native: frozenset = frozenset()


class _Ops:
    """What a lowering rule works with: each primitive binds one statement and returns its
    name, in the kind (real or number) and context (the VJP's or not) of the node lowered."""

    def __init__(self, em: "Emitter", node: int, kind: str, vjp: bool):
        self.em, self.node, self.kind, self.vjp = em, node, kind, vjp
        self.sp = em.spelling
        self.native = em.spelling.native
        self.k = 0

    def _bind(self, expr, kind=None):
        name = f"{self.em.name(self.node)}_{self.k}"
        self.k += 1
        self.em.bind(name, expr, kind or self.kind)
        return name

    def const(self, value):
        return self.sp.literal(value, self.kind)

    def one(self):
        return self.const(1.0)

    def add(self, a, b):
        return self._bind(self.sp.binary("add", a, b, self.kind))

    def sub(self, a, b):
        return self._bind(self.sp.binary("sub", a, b, self.kind))

    def mul(self, a, b):
        return self._bind(self.sp.binary("mul", a, b, self.kind))

    def div(self, a, b):
        return self._bind(self.sp.binary("div", a, b, self.kind))

    def neg(self, a):
        return self._bind(self.sp.neg(a))

    def exp(self, a):
        return self._bind(self.sp.func("exp", a, self.kind, self.vjp))

    def log(self, a):
        return self._bind(self.sp.func("log", a, self.kind, self.vjp))

    def sqrt(self, a):
        return self._bind(self.sp.func("sqrt", a, self.kind, self.vjp))

    def abs(self, a):
        return self._bind(self.sp.func("abs", a, self.kind, self.vjp))

    def expm1(self, a):
        return self.lowered("expm1", a)

    def call(self, op, *args):
        return self._bind(self.sp.call(op, args, self.kind, self.vjp))

    def select(self, c, a, b):
        return self._bind(self.sp.select(c, a, b, self.kind))

    def compare(self, op, a, b):
        return self._bind(self.sp.compare(op, a, b), "mask")

    def logic(self, op, a, b):
        return self._bind(self.sp.logic(op, a, b), "mask")

    def lowered(self, op, *args):
        out = lowering.lower(self, op, list(args))
        assert out is not None, op
        return out


class Emitter:
    """Writes graph nodes as statements in `spelling`, each node once, in order.

    Args:
      g: the graph.
      spelling: the backend's `Spelling`.
      inputs: input name -> the expression that reads it (an input missing here is not
        read by this code block).
      prefix: the prefix of the statements' names.
      given: node -> an expression of its value (read, not computed: a kept value).
      vjp_from: the nodes from this one on are the VJP's (the C backend's fast e^x).
    """

    def __init__(self, g: _ir.Graph, spelling: Spelling, inputs: dict[str, str], prefix: str,
                 given: dict[int, str] | None = None, vjp_from: int | None = None):
        self.g, self.spelling, self.inputs, self.p = g, spelling, inputs, prefix
        self.given = given or {}
        self.vjp_from = vjp_from
        self.lines: list[str] = []
        self.used: set = set()  # the inputs (names) and given nodes (ids) read
        self._names: dict[int, str] = {}
        self._scalar: dict[int, bool] = {}
        self._last = ("", "", "")

    def name(self, i: int) -> str:
        """The name of node `i`'s value (after `emit(i)`)."""
        return self._names.get(i, f"{self.p}{i}")

    def bind(self, name, expr, kind):
        self.lines.append(self.spelling.bind(name, expr, kind))
        self._last = (name, expr, kind)

    def scalar(self, i: int) -> bool:
        """Whether node `i` is a number (one value for every neuron, held in double)."""
        if i not in self._scalar:
            op, args = self.g.nodes[i]
            if i in self.given:
                out = False
            elif op == "input":
                out = args[0].startswith(_ir.SCALAR_INPUT)
            elif op in ARITH:
                vals = args[:1] if op == "pow" else args
                out = any(self.g.nodes[a][0] != "const" for a in vals) and all(
                    self.g.nodes[a][0] == "const" or self.scalar(a) for a in vals)
            else:
                out = False
            self._scalar[i] = out
        return self._scalar[i]

    def arg(self, a: int, kind: str) -> str:
        """Node `a`'s value read by a node of `kind` ("real" or "number")."""
        op, args = self.g.nodes[a]
        if op == "const" and kind == "number":
            return self.spelling.literal(args[0], "number")
        self.emit(a)
        if self.scalar(a) and kind != "number":
            return self.spelling.to_real(self.name(a))
        return self.name(a)

    def emit_until(self, last: int) -> None:
        for i in range(last + 1):
            self.emit(i)

    def emit(self, i: int) -> None:
        if i in self._names:
            return
        name = f"{self.p}{i}"
        self._names[i] = name
        op, args = self.g.nodes[i]
        if i in self.given:
            self.used.add(i)
            self.bind(name, self.given[i], "real")
            return
        kind = "number" if self.scalar(i) else "real"
        if op == "input":
            expr = self.inputs.get(args[0])
            if expr is None:  # an input this code block does not have (unused here)
                del self._names[i]
                return
            self.used.add(args[0])
            self.bind(name, expr, kind)
            return
        if op == "const":
            self.bind(name, self.spelling.literal(args[0], "real"), "real")
            return
        sp = self.spelling
        a = [self.arg(x, kind) for x in (args[:1] if op == "pow" else args)]
        if op in _ir.COMPARE:
            self.bind(name, sp.compare(op, a[0], a[1]), "mask")
        elif op in _ir.LOGIC:
            self.bind(name, sp.logic(op, a[0], a[1]), "mask")
        elif op == "not":
            self.bind(name, sp.logical_not(a[0]), "mask")
        elif op in ("add", "sub", "mul", "div"):
            self.bind(name, sp.binary(op, a[0], a[1], kind), kind)
        elif op == "neg":
            self.bind(name, sp.neg(a[0]), kind)
        elif op in PRIMITIVE_UNARY:
            self.bind(name, sp.func(op, a[0], kind, self._vjp(i)), kind)
        elif op == "where":
            self.bind(name, sp.select(a[0], a[1], a[2], kind), kind)
        else:  # a composite operation: natively spelled, or lowered into a few statements
            ops = _Ops(self, i, kind, self._vjp(i))
            out = ops.lowered(op, *(a if op != "pow" else [a[0], args[1]]))
            if ops.k and self._last[0] == out:  # its last step is the node's value: named so
                self.lines[-1] = sp.bind(name, *self._last[1:])
            else:  # an operand itself (detach, x ** 1)
                self._names[i] = out

    def _vjp(self, i: int) -> bool:
        return self.vjp_from is not None and i >= self.vjp_from
