"""A surrogate as the kernels take it: a token naming its class and fields, and its numeric
fields as run-time numbers.

A surrogate travels to the backward op as a token, the JSON of
  [class name, [[field, value], ...] (fixed in the kernel), [field, ...] (run-time), digest]:
its numeric fields are run-time numbers (`scalars[1:]`, read by the kernel like a parameter),
so every alpha shares one kernel; the digest of its traced derivative tells two classes of one
name apart (a class defined again). The class comes from the registry of surrogate classes
(`snnfunc.surrogate.registered`): nothing is imported or called from a token.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

from snnfunc import surrogate as _sg
from snnfunc._core import ir

_SURROGATES: dict[str, object] = {}  # token -> an instance seen in this process


@dataclasses.dataclass(frozen=True)
class SurrogatePlan:
    """How the kernels take a surrogate: its token and its run-time numbers (float64), or
    `reason`, why its derivative cannot be compiled in (then computed in torch)."""

    token: str
    values: tuple
    reason: str | None


def surrogate_plan(surrogate) -> SurrogatePlan:
    try:
        return _cached_plan(surrogate)
    except TypeError:  # a surrogate that cannot be hashed
        return _plan(surrogate)


def surrogate_token(surrogate) -> str:
    """A string naming a surrogate (its class and fields), for the backward op's schema."""
    return surrogate_plan(surrogate).token


@functools.lru_cache(maxsize=256)
def _cached_plan(surrogate) -> SurrogatePlan:
    return _plan(surrogate)


_JSON_SCALARS = (bool, int, float, str, type(None))


def _plan(surrogate) -> SurrogatePlan:
    cls = type(surrogate)
    name = _sg.name_of(cls)
    fields = [[f.name, getattr(surrogate, f.name)] for f in dataclasses.fields(surrogate)]
    numbers_ = [n for n, v in fields if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for runtime in (numbers_, []):  # run-time numbers where the derivative allows, else fixed
        fixed = [[n, v] for n, v in fields if n not in runtime]
        try:
            graph, _ = _trace_derivative(cls, dict(fixed), runtime)
        except Exception as exc:  # noqa: BLE001  (anything a user's derivative may raise)
            reason = (f"the surrogate {cls.__name__}'s derivative cannot be compiled into the "
                      f"kernel ({exc})")
            continue
        reason = None
        break
    else:
        fixed, runtime, graph = fields, [], None
    if not all(isinstance(v, _JSON_SCALARS) for _, v in fixed):
        reason = reason or (f"the surrogate {cls.__name__} has a field that is not a number, "
                            f"bool, string or None")
        fixed = [[n, repr(v)] for n, v in fixed]
    token = json.dumps([name, fixed, runtime, _digest(graph)])
    _SURROGATES.setdefault(token, surrogate)
    values = tuple(float(getattr(surrogate, n)) for n in runtime)
    return SurrogatePlan(token, values, reason)


def _digest(graph) -> str:
    if graph is None:
        return ""
    return hashlib.sha256(repr(graph.nodes).encode()).hexdigest()[:16]


def _trace_derivative(cls, fixed: dict, runtime: list):
    """The surrogate's derivative g'(u) traced into a graph, with its `runtime` fields as
    run-time numbers: `(graph, node of g'(u))`."""
    g = ir.Graph(f"surrogate {cls.__name__}")
    u = g.add("input", "u")
    node = _derivative_node(cls, fixed, runtime, g, u)
    return g, node


def _derivative_node(cls, fixed, runtime, g, u):
    obj = object.__new__(cls)  # no __init__: fields are set, not validated (they were)
    for n, v in fixed.items():
        object.__setattr__(obj, n, v)
    for k, n in enumerate(runtime):
        object.__setattr__(obj, n, g.sym("input", f"{ir.SCALAR_INPUT}{k}"))
    old, g.where = g.where, f"surrogate {cls.__name__}"
    try:
        d = obj.derivative(ir.Sym(g, u))
        i = g.value(d, f"{cls.__name__}.derivative(x)")
        if g.kinds[i] != "real":
            raise ir.DefinitionError("derivative(x) returned a mask")
        return i
    finally:
        g.where = old


def decode(token: str):
    """`(class, fixed fields, run-time fields, digest)` of a token, checked; the class from
    the registry."""
    try:
        name, fixed, runtime, digest = json.loads(token)
        fixed = {str(n): v for n, v in fixed}
        ok = (isinstance(name, str) and isinstance(digest, str)
              and all(isinstance(v, _JSON_SCALARS) for v in fixed.values())
              and all(isinstance(n, str) for n in runtime))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"surrogate must be a token made by snnfunc (a surrogate class's name "
                         f"and fields), got {token!r}")
    cls = _sg.registered(name)
    names = {f.name for f in dataclasses.fields(cls)}
    if set(fixed) | set(runtime) != names or set(fixed) & set(runtime):
        raise ValueError(f"surrogate {token!r} does not give the fields of {name}, "
                         f"{sorted(names)}")
    return cls, fixed, list(runtime), digest


def surrogate_of(token: str):
    """The surrogate a token names: an instance seen in this process, or one made from its
    registered class and fields (a saved graph in a fresh process)."""
    if token not in _SURROGATES:
        cls, fixed, runtime, _ = decode(token)
        if runtime:
            raise ValueError(f"surrogate {token!r} leaves {runtime} to run-time numbers")
        _SURROGATES[token] = cls(**fixed)
    return _SURROGATES[token]


def why_not_surrogate(surrogate) -> str | None:
    """Why the surrogate's derivative cannot be compiled into a kernel, or None."""
    return surrogate_plan(surrogate).reason


def derivative_rule_for(token: str, has_sg: bool):
    """How the kernel gets g'(u): from the `sg` tensor, or the surrogate's traced derivative
    (its run-time fields read from `scalars[1:]`)."""
    if has_sg:
        return lambda g, u: g.add("input", "sg")
    cls, fixed, runtime, digest = decode(token)
    if not digest:
        raise ValueError(f"the surrogate {cls.__name__}'s derivative cannot be compiled into "
                         f"the kernel: pass sg, its derivative at every step")
    graph, _ = _trace_derivative(cls, fixed, runtime)
    if _digest(graph) != digest:
        raise ValueError(f"the surrogate class {cls.__name__} registered in this process is not "
                         f"the one the token was made from (it was defined again)")

    def rule(g, u):
        return _derivative_node(cls, fixed, runtime, g, u)

    return rule


@functools.lru_cache(maxsize=256)
def scalar_count(token: str) -> int:
    """How many numbers `scalars` holds with this surrogate: v_rest, then its run-time fields
    (kept for tokens that decode: a registered class stays registered)."""
    return 1 + len(decode(token)[2])
