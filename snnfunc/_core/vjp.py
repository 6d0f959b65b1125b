"""Reverse mode on the IR: `vjp` appends the nodes of a graph's vector-Jacobian product.

A cotangent that no gradient reaches is *absent* (None), not zero, and the terms it would
enter are left out, as autograd leaves out the nodes no gradient reaches. Every rule is
torch's derivative of the operation, ties and bounds included (tests/ir_op_table.py).
"""

from __future__ import annotations

import torch

from snnfunc._core.ir import CLAMPS, DefinitionError, Graph

# torch's derivative of clamp at its bounds: up to torch 2.14 the whole gradient to x at a
# bound; from torch 2.15 (pytorch/pytorch#191142) minimum-norm subgradients, none at a number
# bound and maximum's/minimum's half at a tie with a value bound. The kernels follow the torch
# installed, as its reference loop does.
MIN_NORM_CLAMP = torch.__version__ >= "2.15"


def _depends(g: Graph, wrt: set[int]) -> list[bool]:
    """For each node, whether it depends on one of the `wrt` nodes (differentiably)."""
    dep = [False] * len(g.nodes)
    for i, (op, args) in enumerate(g.nodes):
        if i in wrt:
            dep[i] = True
        elif op in ("input", "const", "detach") or g.kinds[i] == "bool":
            dep[i] = False
        elif op == "pow":
            dep[i] = dep[args[0]]
        elif op == "where":
            dep[i] = dep[args[1]] or dep[args[2]]
        else:
            dep[i] = any(dep[a] for a in args)
    return dep


def vjp(g: Graph, cotangents: dict[int, int | None], wrt: list[int], surrogate_derivative):
    """Appends the vector-Jacobian product to `g`.

    Args:
      g: the forward graph; the new nodes reference its values.
      cotangents: output node -> the node of its cotangent, or None where it is absent.
      wrt: the nodes (inputs) to differentiate with respect to.
      surrogate_derivative: `fn(g, u) -> node`, the surrogate's g'(u) for a `spike` node.

    Returns:
      `{node: cotangent node or None}` for every node in `wrt`.
    """
    n_forward = len(g.nodes)
    dep = _depends(g, set(wrt))
    cot: dict[int, int] = {}

    def acc(i, c):
        if c is None or not dep[i]:
            return
        cot[i] = c if i not in cot else g.add("add", cot[i], c)

    for out, c in cotangents.items():
        acc(out, c)
    C = g.const
    for i in range(n_forward - 1, -1, -1):
        gi = cot.get(i)
        if gi is None:
            continue
        op, args = g.nodes[i]
        if op in ("input", "const", "detach"):
            continue
        if op == "add":
            acc(args[0], gi)
            acc(args[1], gi)
        elif op == "sub":
            acc(args[0], gi)
            if dep[args[1]]:
                acc(args[1], g.add("neg", gi))
        elif op == "mul":
            a, b = args
            if dep[a]:
                acc(a, g.add("mul", gi, b))
            if dep[b]:
                acc(b, g.add("mul", gi, a))
        elif op == "div":
            a, b = args
            if dep[a]:  # g * (1 / b): one division per block where b is a parameter
                acc(a, g.add("mul", gi, g.add("reciprocal", b)))
            if dep[b]:  # -g a / b^2
                acc(b, g.add("div", g.add("mul", g.add("neg", gi), a), g.add("mul", b, b)))
        elif op == "neg":
            acc(args[0], g.add("neg", gi))
        elif op == "exp":
            acc(args[0], g.add("mul", gi, i))
        elif op == "expm1":
            acc(args[0], g.add("mul", gi, g.add("add", i, C(1.0))))
        elif op == "log":
            acc(args[0], g.add("div", gi, args[0]))
        elif op == "log1p":
            acc(args[0], g.add("div", gi, g.add("add", args[0], C(1.0))))
        elif op == "sqrt":
            acc(args[0], g.add("div", gi, g.add("mul", C(2.0), i)))
        elif op == "rsqrt":  # -0.5 g y^3
            y3 = g.add("mul", g.add("mul", i, i), i)
            acc(args[0], g.add("mul", g.add("mul", gi, C(-0.5)), y3))
        elif op == "abs":
            a = args[0]
            sgn = g.add("where", g.add("gt", a, C(0.0), kind="bool"), C(1.0),
                        g.add("where", g.add("lt", a, C(0.0), kind="bool"), C(-1.0), C(0.0)))
            acc(a, g.add("mul", gi, sgn))
        elif op == "sigmoid":
            acc(args[0], g.add("mul", g.add("mul", gi, g.add("sub", C(1.0), i)), i))
        elif op == "tanh":
            acc(args[0], g.add("mul", gi, g.add("sub", C(1.0), g.add("mul", i, i))))
        elif op == "cosh":
            acc(args[0], g.add("mul", gi, g.add("sinh", args[0])))
        elif op == "sinh":
            acc(args[0], g.add("mul", gi, g.add("cosh", args[0])))
        elif op == "sin":
            acc(args[0], g.add("mul", gi, g.add("cos", args[0])))
        elif op == "cos":
            acc(args[0], g.add("mul", gi, g.add("neg", g.add("sin", args[0]))))
        elif op == "reciprocal":
            acc(args[0], g.add("mul", g.add("neg", gi), g.add("mul", i, i)))
        elif op == "pow":
            a, k = args
            if k == 0:
                continue
            base = a if k == 2 else g.add("pow", a, k - 1)
            acc(a, g.add("mul", g.add("mul", gi, C(k)), base))
        elif op in ("minimum", "maximum"):  # torch: half each at a tie, none to the loser
            a, b = args  # (both get the whole gradient where one is NaN)
            half = g.add("div", gi, C(2.0))
            tie = g.add("eq", a, b, kind="bool")
            if dep[a]:
                a_loses = g.add("gt" if op == "minimum" else "lt", a, b, kind="bool")
                acc(a, g.add("where", tie, half, g.add("where", a_loses, C(0.0), gi)))
            if dep[b]:
                b_loses = g.add("lt" if op == "minimum" else "gt", a, b, kind="bool")
                acc(b, g.add("where", tie, half, g.add("where", b_loses, C(0.0), gi)))
        elif op == "relu":  # torch: 0 where the result is <= 0, the gradient elsewhere (NaN)
            acc(args[0], g.add("where", g.add("le", i, C(0.0), kind="bool"), C(0.0), gi))
        elif op in CLAMPS:  # torch's clamp_backward
            _clamp_vjp(g, op, args, gi, dep, acc)
        elif op == "where":
            c, a, b = args
            if dep[a]:
                acc(a, g.add("where", c, gi, C(0.0)))
            if dep[b]:
                acc(b, g.add("where", c, C(0.0), gi))
        elif op == "spike":
            acc(args[0], g.add("mul", gi, surrogate_derivative(g, args[0])))
        elif op == "reset_hard":  # forward select(r > 0, vr, h); derivative of the blend
            h, r, vr = args
            fire = g.add("gt", r, C(0.0), kind="bool")
            if dep[h]:
                acc(h, g.add("where", fire, C(0.0), gi))
            if dep[r]:
                acc(r, g.add("mul", gi, g.add("sub", vr, h)))
        elif op == "reset_soft":  # forward select(r > 0, h - th, h); blend h - th r
            h, r, th = args
            acc(h, gi)
            if dep[r]:
                acc(r, g.add("mul", gi, g.add("neg", th)))
            if dep[th]:
                fire = g.add("gt", r, C(0.0), kind="bool")
                acc(th, g.add("where", fire, g.add("neg", gi), C(0.0)))
        else:  # pragma: no cover - every op above has a rule
            raise DefinitionError(f"no derivative rule for {op}")
    return {w: cot.get(w) for w in wrt}


def _clamp_vjp(g, op, args, gi, dep, acc):
    """torch's derivative of clamp (to torch 2.14): the whole gradient to x where it is inside
    the bounds (bounds included), to a bound where x is strictly outside it (none at a NaN)."""
    if MIN_NORM_CLAMP:
        return _clamp_vjp_min_norm(g, op, args, gi, dep, acc)
    op = op.removesuffix("_v")
    C = g.const
    x = args[0]

    def where(cond, value):
        return g.add("where", cond, value, C(0.0))

    def cmp(kind, a, b):
        return g.add(kind, a, b, kind="bool")

    if op == "clamp_min":
        lo = args[1]
        if dep[x]:
            acc(x, where(cmp("ge", x, lo), gi))
        if dep[lo]:
            acc(lo, where(cmp("lt", x, lo), gi))
    elif op == "clamp_max":
        hi = args[1]
        if dep[x]:
            acc(x, where(cmp("le", x, hi), gi))
        if dep[hi]:
            acc(hi, where(cmp("gt", x, hi), gi))
    else:
        lo, hi = args[1], args[2]
        if dep[x]:
            acc(x, where(g.add("and", cmp("ge", x, lo), cmp("le", x, hi), kind="bool"), gi))
        if dep[lo]:
            acc(lo, where(g.add("and", cmp("lt", x, lo), cmp("lt", lo, hi), kind="bool"), gi))
        if dep[hi]:
            acc(hi, where(g.add("or", cmp("gt", x, hi), cmp("lt", hi, lo), kind="bool"), gi))


def _clamp_vjp_min_norm(g, op, args, gi, dep, acc):
    """torch's derivative of clamp from torch 2.15. Number bounds: the gradient to x strictly
    inside them only. One value bound: maximum's (clamp_min) or minimum's (clamp_max) rule, half
    each at a tie, none to the loser, the whole to both where one is NaN. Two value bounds: x
    the whole strictly inside bounds in order, where they are equal and x at them, where x is
    NaN, or where a bound is NaN and x not beyond the other; half to x and the bound at a tie
    (bounds in order); a bound the whole where x is beyond it (bounds in order, equal ones
    included), hi the whole where the bounds are inverted."""
    C = g.const
    x = args[0]

    def where(cond, value, other=None):
        return g.add("where", cond, value, C(0.0) if other is None else other)

    def cmp(kind, a, b):
        return g.add(kind, a, b, kind="bool")

    def both(a, b):
        return g.add("and", a, b, kind="bool")

    def either(a, b):
        return g.add("or", a, b, kind="bool")

    if op in ("clamp_min", "clamp_max", "clamp"):  # number bounds (their gradients as before)
        if op == "clamp":
            lo, hi = args[1], args[2]
            if dep[x]:
                acc(x, where(both(cmp("gt", x, lo), cmp("lt", x, hi)), gi))
            if dep[lo]:
                acc(lo, where(both(cmp("lt", x, lo), cmp("lt", lo, hi)), gi))
            if dep[hi]:
                acc(hi, where(either(cmp("gt", x, hi), cmp("lt", hi, lo)), gi))
        else:
            b = args[1]
            if dep[x]:
                acc(x, where(cmp("gt" if op == "clamp_min" else "lt", x, b), gi))
            if dep[b]:
                acc(b, where(cmp("lt" if op == "clamp_min" else "gt", x, b), gi))
        return
    half = g.add("div", gi, C(2.0))
    if op in ("clamp_min_v", "clamp_max_v"):  # maximum's / minimum's rule
        b = args[1]
        tie = cmp("eq", x, b)
        if dep[x]:
            x_loses = cmp("lt" if op == "clamp_min_v" else "gt", x, b)
            acc(x, where(tie, half, where(x_loses, C(0.0), gi)))
        if dep[b]:
            b_loses = cmp("gt" if op == "clamp_min_v" else "lt", x, b)
            acc(b, where(tie, half, where(b_loses, C(0.0), gi)))
        return
    lo, hi = args[1], args[2]
    ordered, in_order = cmp("lt", lo, hi), cmp("le", lo, hi)
    if dep[x]:
        whole = either(cmp("ne", x, x), both(ordered, both(cmp("gt", x, lo), cmp("lt", x, hi))))
        whole = either(whole, both(cmp("eq", lo, hi), cmp("eq", x, lo)))
        whole = either(whole, both(cmp("ne", lo, lo), either(cmp("ne", hi, hi),
                                                             cmp("le", x, hi))))
        whole = either(whole, both(cmp("ne", hi, hi), cmp("ge", x, lo)))
        tie = both(ordered, either(cmp("eq", x, lo), cmp("eq", x, hi)))
        acc(x, where(whole, gi, where(tie, half)))
    if dep[lo]:
        acc(lo, where(both(in_order, cmp("lt", x, lo)), gi,
                      where(both(ordered, cmp("eq", x, lo)), half)))
    if dep[hi]:
        acc(hi, where(either(cmp("gt", lo, hi), both(in_order, cmp("gt", x, hi))), gi,
                      where(both(ordered, cmp("eq", x, hi)), half)))
