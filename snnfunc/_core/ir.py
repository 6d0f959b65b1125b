"""The elementwise IR a neuron definition is traced into.

A definition is ordinary Python over torch elementwise operations. Called with `Sym` values
instead of tensors, each operation appends one node to a `Graph` (one operation per node, in
the definition's order), so the emitter (`snnfunc._kernel.emit`) can write it out in any backend's
spelling statement by statement. Its reverse-mode derivative is `snnfunc._core.vjp`.
"""

from __future__ import annotations

import math
import numbers

import torch

# op -> (number of value arguments, result kind); "real" values are floating, "bool" masks
UNARY = {"neg", "exp", "expm1", "log", "log1p", "sqrt", "rsqrt", "abs", "sigmoid", "tanh",
         "cosh", "sinh", "reciprocal", "sin", "cos"}
BINARY = {"add", "sub", "mul", "div", "minimum", "maximum"}
COMPARE = {"lt", "le", "gt", "ge", "eq", "ne"}
LOGIC = {"and", "or"}
# clamp_min/clamp_max/clamp/relu keep torch's semantics: with number bounds (a Python number
# in the reference: constants, v_rest, a surrogate's field) x unless strictly outside a bound,
# so -0.0 and NaN are kept; with value bounds (tensors in the reference: x, states,
# parameters) `*_v`: as torch's vectorised CPU kernel, maximum(x, lo) then minimum(., hi),
# the bound at a ±0 tie (torch's scalar remainder loop keeps x there, so torch itself differs
# between elements). A NaN bound gives NaN. Their derivatives are the installed torch's (to
# 2.14 the whole gradient at a bound, none at relu's 0; see snnfunc._core.vjp).
CLAMPS = {"clamp_min", "clamp_max", "clamp", "clamp_min_v", "clamp_max_v", "clamp_v", "relu"}
SCALAR_INPUT = "sparam:"  # a run-time number (a surrogate's field), not one per neuron
NUMBER_INPUTS = ("v_rest", SCALAR_INPUT)  # inputs that are Python numbers in the reference
SPECIAL = {"input", "const", "pow", "where", "not", "spike", "detach", "reset_hard",
           "reset_soft", "cast"}


class DefinitionError(TypeError):
    """A definition uses something the kernel generator cannot emit."""


class Graph:
    """A straight-line program of elementwise nodes `(op, args)`; args are node ids, except
    the value of a `const`, the name of an `input` and the exponent of a `pow`."""

    def __init__(self, where: str = "the definition"):
        self.nodes: list[tuple[str, tuple]] = []
        self.kinds: list[str] = []
        self.where = where
        self._consts: dict = {}

    def add(self, op, *args, kind="real") -> int:
        self.nodes.append((op, args))
        self.kinds.append(kind)
        return len(self.nodes) - 1

    def sym(self, op, *args, kind="real") -> "Sym":
        return Sym(self, self.add(op, *args, kind=kind))

    def const(self, value) -> int:
        key = (float(value), math.copysign(1.0, float(value)))
        if key not in self._consts or math.isnan(value):
            self._consts[key] = self.add("const", float(value))
        return self._consts[key]

    def input(self, name: str) -> "Sym":
        return self.sym("input", name)

    def value(self, v, what: str) -> int:
        """The node id of a traced value: a Sym of this graph or a Python number."""
        if isinstance(v, Sym):
            if v.graph is not self:
                raise DefinitionError(f"{self.where}: a value from another trace was used")
            return v.id
        if isinstance(v, bool):
            raise DefinitionError(f"{self.where}: {what} is the bool {v}; use a number")
        if isinstance(v, numbers.Real):
            return self.const(v)
        if isinstance(v, torch.Tensor):
            raise DefinitionError(
                f"{self.where}: {what} is a torch.Tensor captured from outside the definition; "
                f"pass it as a parameter of the neuron instead")
        raise DefinitionError(f"{self.where}: {what} is a {type(v).__name__}, not a number "
                              f"or a value of the definition")


def _real(g: Graph, v, what) -> int:
    i = g.value(v, what)
    if g.kinds[i] != "real":
        raise DefinitionError(f"{g.where}: {what} is a comparison (a mask); use torch.where to "
                              f"turn a mask into numbers")
    return i


def _bool(g: Graph, v, what) -> int:
    i = g.value(v, what)
    if g.kinds[i] != "bool":
        raise DefinitionError(f"{g.where}: {what} must be a comparison such as `v > 0`")
    return i


def _graph_of(*values) -> Graph:
    for v in values:
        if isinstance(v, Sym):
            return v.graph
    raise DefinitionError("no traced value among the arguments")


def _binary(op, a, b):
    g = _graph_of(a, b)
    return g.sym(op, _real(g, a, f"the first operand of {op}"),
                 _real(g, b, f"the second operand of {op}"))


def _unary(op, a):
    g = _graph_of(a)
    return g.sym(op, _real(g, a, f"the operand of {op}"))


def _compare(op, a, b):
    g = _graph_of(a, b)
    return g.sym(op, _real(g, a, f"the first operand of {op}"),
                 _real(g, b, f"the second operand of {op}"), kind="bool")


def _pow(a, b):
    g = _graph_of(a, b)
    if isinstance(b, Sym) or not isinstance(b, numbers.Real) or isinstance(b, bool):
        raise DefinitionError(f"{g.where}: x ** y needs a number y (an exponent that is a "
                              f"value of the definition cannot be emitted; write exp(y * log(x)))")
    if isinstance(a, Sym):
        return g.sym("pow", _real(g, a, "the base of **"), float(b))
    raise DefinitionError(f"{g.where}: a number ** a value cannot be emitted; write exp(y * log(c))")


def _where(c, a, b):
    g = _graph_of(c, a, b)
    return g.sym("where", _bool(g, c, "torch.where's condition"),
                 _real(g, a, "torch.where's second argument"),
                 _real(g, b, "torch.where's third argument"))


def _clamp(a, min=None, max=None):
    g = _graph_of(a, min, max)
    if min is None and max is None:
        raise DefinitionError(f"{g.where}: torch.clamp needs min or max")
    if min is not None and max is not None and isinstance(min, Sym) != isinstance(max, Sym):
        raise DefinitionError(f"{g.where}: torch.clamp takes both bounds as numbers or both as "
                              f"values of the definition (torch refuses a mix)")
    x = _real(g, a, "the operand of clamp")
    bounds = [_real(g, b, f"clamp's {n}") for b, n in ((min, "min"), (max, "max")) if b is not None]
    op = "clamp_min" if max is None else "clamp_max" if min is None else "clamp"
    if not all(is_number(g, b) for b in bounds):
        op += "_v"
    return g.sym(op, x, *bounds)


def is_number(g: Graph, i: int) -> bool:
    """Whether node `i` is a Python number in the reference loop (one value for every neuron:
    a constant, v_rest, a surrogate's field, or arithmetic on those)."""
    op, args = g.nodes[i]
    if op == "const":
        return True
    if op == "input":
        return args[0].startswith(NUMBER_INPUTS)
    if op in UNARY | BINARY | {"pow"} and g.kinds[i] == "real":
        return all(is_number(g, a) for a in (args[:1] if op == "pow" else args))
    return False


def _relu(a, inplace=False):
    if inplace:
        raise DefinitionError(f"{_graph_of(a).where}: relu(inplace=True) changes its operand; "
                              f"a definition computes new values")
    return _unary("relu", a)


def _const_sym(a, value):
    g = _graph_of(a)
    if isinstance(value, Sym):  # a run-time number, broadcast to every neuron
        return Sym(g, _real(g, value, "full_like's value"))
    return Sym(g, g.const(value))


def _logic(op, a, b):
    g = _graph_of(a, b)
    return g.sym(op, _bool(g, a, f"an operand of {op}"), _bool(g, b, f"an operand of {op}"),
                 kind="bool")


def _div(a, b, rounding_mode=None):
    if rounding_mode is not None:
        raise DefinitionError(f"{_graph_of(a, b).where}: torch.div(rounding_mode=...) cannot be "
                              f"emitted")
    return _binary("div", a, b)


def _add(a, b, alpha=1):
    return _binary("add", a, b if alpha == 1 else b * alpha)


def _sub(a, b, alpha=1):
    return _binary("sub", a, b if alpha == 1 else b * alpha)


_F = torch.nn.functional
_TORCH = {
    torch.add: _add, torch.Tensor.add: _add, torch.Tensor.__add__: _add,
    torch.sub: _sub, torch.Tensor.sub: _sub, torch.Tensor.__sub__: _sub,
    torch.mul: lambda a, b: _binary("mul", a, b), torch.Tensor.mul: lambda a, b: _binary("mul", a, b),
    torch.div: _div, torch.true_divide: _div, torch.Tensor.div: _div,
    torch.neg: lambda a: _unary("neg", a), torch.negative: lambda a: _unary("neg", a),
    torch.square: lambda a: _pow(a, 2), torch.pow: _pow, torch.Tensor.pow: _pow,
    torch.minimum: lambda a, b: _binary("minimum", a, b),
    torch.maximum: lambda a, b: _binary("maximum", a, b),
    torch.where: _where, torch.clamp: _clamp, torch.clip: _clamp, torch.Tensor.clamp: _clamp,
    torch.relu: _relu, _F.relu: _relu, torch.clamp_min: lambda a, min: _clamp(a, min=min),
    torch.clamp_max: lambda a, max: _clamp(a, max=max),
    torch.full_like: lambda a, value, **kw: _const_sym(a, value),
    torch.zeros_like: lambda a, **kw: _const_sym(a, 0.0),
    torch.ones_like: lambda a, **kw: _const_sym(a, 1.0),
    torch.lt: lambda a, b: _compare("lt", a, b), torch.le: lambda a, b: _compare("le", a, b),
    torch.gt: lambda a, b: _compare("gt", a, b), torch.ge: lambda a, b: _compare("ge", a, b),
    torch.logical_and: lambda a, b: _logic("and", a, b),
    torch.logical_or: lambda a, b: _logic("or", a, b),
    torch.sigmoid: lambda a: _unary("sigmoid", a), _F.sigmoid: lambda a: _unary("sigmoid", a),
    torch.tanh: lambda a: _unary("tanh", a), _F.tanh: lambda a: _unary("tanh", a),
}
for _name in UNARY - {"neg", "sigmoid", "tanh"}:
    _TORCH[getattr(torch, _name)] = (lambda op: lambda a: _unary(op, a))(_name)


def _in_place(op: str):
    def refuse(self, other):
        raise DefinitionError(f"{self.graph.where}: the in-place operator {op}= changes the "
                              f"value it is applied to (the caller's tensor in the reference "
                              f"loop); write `v = v {op} ...` instead")
    return refuse


def state_value(g: Graph, v, what: str) -> int:
    """The node of a value the definition returns as a state (or the threshold): a real value
    of this trace, never a Python number (the reference loop needs a tensor) or a mask."""
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        raise DefinitionError(f"{g.where}: {what} is the number {v!r}, not a value computed from "
                              f"the inputs; write torch.full_like(v, {v!r})")
    return _real(g, v, what)


class Sym:
    """A value of a definition being traced; supports the elementwise operations the
    generator can emit (arithmetic, comparisons, `torch.where`, `exp`, `sigmoid`, ...)."""

    __slots__ = ("graph", "id")
    __array_priority__ = 1000

    def __init__(self, graph: Graph, id: int):
        self.graph = graph
        self.id = id

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        rule = _TORCH.get(func)
        g = _graph_of(*args, *(kwargs or {}).values())
        if rule is None:
            name = getattr(func, "__name__", None) or repr(func)
            raise DefinitionError(f"{g.where}: torch.{name} cannot be emitted into a kernel "
                                  f"(supported: + - * / ** (number exponent), comparisons, &, |, "
                                  f"torch.where, minimum, maximum, clamp, clamp_min, clamp_max, relu, abs, exp, expm1, "
                                  f"log, log1p, sqrt, rsqrt, sigmoid, tanh, sinh, cosh, sin, cos, "
                                  f"reciprocal, full_like, zeros_like, ones_like)")
        try:
            return rule(*args, **(kwargs or {}))
        except TypeError as exc:
            if isinstance(exc, DefinitionError):
                raise
            raise DefinitionError(f"{g.where}: {func.__name__}: {exc}") from None

    # arithmetic
    def __add__(self, o): return _binary("add", self, o)
    def __radd__(self, o): return _binary("add", o, self)
    def __sub__(self, o): return _binary("sub", self, o)
    def __rsub__(self, o): return _binary("sub", o, self)
    def __mul__(self, o): return _binary("mul", self, o)
    def __rmul__(self, o): return _binary("mul", o, self)
    def __truediv__(self, o): return _binary("div", self, o)
    def __rtruediv__(self, o): return _binary("div", o, self)
    def __pow__(self, o): return _pow(self, o)
    def __rpow__(self, o): return _pow(o, self)
    def __neg__(self): return _unary("neg", self)
    def __pos__(self): return self
    def __abs__(self): return _unary("abs", self)

    # comparisons give masks
    def __lt__(self, o): return _compare("lt", self, o)
    def __le__(self, o): return _compare("le", self, o)
    def __gt__(self, o): return _compare("gt", self, o)
    def __ge__(self, o): return _compare("ge", self, o)
    def __eq__(self, o): return _compare("eq", self, o)  # noqa: D105
    def __ne__(self, o): return _compare("ne", self, o)
    __hash__ = None

    def __and__(self, o): return _logic("and", self, o)
    def __rand__(self, o): return _logic("and", o, self)
    def __or__(self, o): return _logic("or", self, o)
    def __ror__(self, o): return _logic("or", o, self)

    # in-place operators: a definition computes new values, it never changes its arguments
    # (in the reference loop they would change the caller's tensors)
    __iadd__ = _in_place("+")
    __isub__ = _in_place("-")
    __imul__ = _in_place("*")
    __itruediv__ = _in_place("/")
    __ifloordiv__ = _in_place("//")
    __imod__ = _in_place("%")
    __ipow__ = _in_place("**")
    __imatmul__ = _in_place("@")
    __iand__ = _in_place("&")
    __ior__ = _in_place("|")
    __ixor__ = _in_place("^")
    __ilshift__ = _in_place("<<")
    __irshift__ = _in_place(">>")

    def __invert__(self):
        return self.graph.sym("not", _bool(self.graph, self, "the operand of ~"), kind="bool")

    def __bool__(self):
        raise DefinitionError(
            f"{self.graph.where}: a definition cannot branch on a value (an `if`, `and`, `or`, "
            f"`min` or `max` of a tensor); use torch.where, torch.minimum or torch.maximum")

    def __float__(self):
        raise DefinitionError(f"{self.graph.where}: a value of the definition cannot become a "
                              f"Python number (math.* functions); use the torch functions")

    # the tensor methods definitions use
    def exp(self): return _unary("exp", self)
    def expm1(self): return _unary("expm1", self)
    def log(self): return _unary("log", self)
    def log1p(self): return _unary("log1p", self)
    def sqrt(self): return _unary("sqrt", self)
    def rsqrt(self): return _unary("rsqrt", self)
    def abs(self): return _unary("abs", self)
    def sigmoid(self): return _unary("sigmoid", self)
    def tanh(self): return _unary("tanh", self)
    def cosh(self): return _unary("cosh", self)
    def sinh(self): return _unary("sinh", self)
    def sin(self): return _unary("sin", self)
    def cos(self): return _unary("cos", self)
    def reciprocal(self): return _unary("reciprocal", self)
    def neg(self): return _unary("neg", self)
    def square(self): return _pow(self, 2)
    def relu(self): return _relu(self)
    def clamp(self, min=None, max=None): return _clamp(self, min, max)
    def clip(self, min=None, max=None): return _clamp(self, min, max)
    def clamp_min(self, min): return _clamp(self, min=min)
    def clamp_max(self, max): return _clamp(self, max=max)
    def pow(self, o): return _pow(self, o)
    def add(self, o, alpha=1): return _add(self, o, alpha)
    def sub(self, o, alpha=1): return _sub(self, o, alpha)
    def mul(self, o): return _binary("mul", self, o)
    def div(self, o, rounding_mode=None): return _div(self, o, rounding_mode)
    def detach(self): return self.graph.sym("detach", self.id)

    def __getattr__(self, name):
        raise DefinitionError(f"{self.graph.where}: .{name} cannot be emitted into a kernel")
