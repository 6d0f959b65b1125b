"""Triton source for a neuron definition's CUDA kernels, generated from its traced step.

The same graphs as the C kernels (`_codegen`): one statement per node in the definition's
order, IEEE division (`div_rn`) and square root, no FMA contraction (the launch passes
`enable_fp_fusion=False`), so + - * / and comparisons round as the reference loop does. The
backward recomputes the states of every step into a buffer, then walks back in time with one
branch per presence pattern of the state cotangents.
"""

from __future__ import annotations

import math
import re

from snnfunc import _ir
from snnfunc._fused import _codegen


_ARITH = {"add", "sub", "mul", "div", "neg", "pow", "reciprocal", "rsqrt", "sigmoid", "exp",
          "expm1", "log", "log1p", "sqrt", "abs", "tanh", "cosh", "sinh", "sin", "cos",
          "minimum", "maximum", *_ir.CLAMPS}


class _Emitter:
    def __init__(self, g, inputs, f32: bool, prefix: str):
        self.g, self.inputs, self.f32, self.p = g, inputs, f32, prefix
        self.lines: list[str] = []
        self.done: set[int] = set()
        self._scalar: dict[int, bool] = {}

    def name(self, i):
        return f"{self.p}{i}"

    def scalar(self, i) -> bool:
        """A run-time number (see the C emitter): one float64 value for every neuron."""
        if i not in self._scalar:
            op, args = self.g.nodes[i]
            if op == "input":
                out = args[0].startswith(_ir.SCALAR_INPUT)
            elif op in _ARITH:
                vals = args[:1] if op == "pow" else args
                out = any(self.g.nodes[a][0] != "const" for a in vals) and all(
                    self.g.nodes[a][0] == "const" or self.scalar(a) for a in vals)
            else:
                out = False
            self._scalar[i] = out
        return self._scalar[i]

    def arg(self, a, double):
        op, args = self.g.nodes[a]
        if op == "const" and double:
            return _lit(args[0])
        self.emit(a)
        if self.scalar(a) and not double:
            return f"{self.name(a)}.to(REAL)"
        return self.name(a)

    def div(self, a, b, double=False):
        return f"tl.math.div_rn({a}, {b})" if self.f32 and not double else f"({a}) / ({b})"

    def sqrt(self, a, double=False):
        return f"tl.sqrt_rn({a})" if self.f32 and not double else f"tl.sqrt({a})"

    def emit(self, i):
        if i in self.done:
            return
        self.done.add(i)
        op, args = self.g.nodes[i]
        n = self.name
        if op == "input":
            expr = self.inputs.get(args[0])
            if expr is not None:
                self.lines.append(f"{n(i)} = {expr}")
            return
        if op == "const":
            self.lines.append(f"{n(i)} = tl.full([BLOCK], {_lit(args[0])}, REAL)")
            return
        double = self.scalar(i)
        a = [self.arg(x, double) for x in (args if op != "pow" else args[:1])]
        d = lambda p, q: self.div(p, q, double)  # noqa: E731
        sq = lambda p: self.sqrt(p, double)  # noqa: E731
        zero = "0.0" if double else "tl.zeros([BLOCK], REAL)"
        if op in ("add", "sub", "mul"):
            expr = f"{a[0]} {dict(add='+', sub='-', mul='*')[op]} {a[1]}"
        elif op == "div":
            expr = d(a[0], a[1])
        elif op == "neg":
            expr = f"-{a[0]}"
        elif op in ("exp", "log", "abs", "sin", "cos"):
            expr = f"tl.{op}({a[0]})"
        elif op == "sqrt":
            expr = sq(a[0])
        elif op == "rsqrt":
            expr = d("1.0", sq(a[0]))
        elif op == "reciprocal":
            expr = d("1.0", a[0])
        elif op == "expm1":
            expr = f"tl.exp({a[0]}) - 1.0"
        elif op == "log1p":
            expr = f"tl.log(1.0 + {a[0]})"
        elif op == "sigmoid":
            expr = d("1.0", f"1.0 + tl.exp(-{a[0]})")
        elif op == "tanh":
            expr = f"2.0 * {d('1.0', f'1.0 + tl.exp(-2.0 * {a[0]})')} - 1.0"
        elif op == "cosh":
            expr = f"(tl.exp({a[0]}) + tl.exp(-{a[0]})) * 0.5"
        elif op == "sinh":
            expr = f"(tl.exp({a[0]}) - tl.exp(-{a[0]})) * 0.5"
        elif op == "pow":
            k, x = args[1], a[0]
            one = "1.0" if double else "tl.full([BLOCK], 1.0, REAL)"
            expr = {2.0: f"{x} * {x}", 3.0: f"{x} * {x} * {x}", 1.0: x, 0.5: sq(x),
                    -0.5: d("1.0", sq(x)), -1.0: d("1.0", x), -2.0: d("1.0", f"{x} * {x}"),
                    0.0: one}.get(k, f"tl.exp({k!r} * tl.log({x}))")
        elif op in ("minimum", "maximum", "clamp_min_v", "clamp_max_v"):  # b at a tie
            expr = _select(a[0], a[1], "<" if op in ("minimum", "clamp_max_v") else ">")
        elif op == "clamp_v":
            expr = _select(_select(a[0], a[1], ">"), a[2], "<")
        elif op == "clamp_min":
            expr = f"tl.where({a[1]} != {a[1]}, {a[1]}, tl.where({a[0]} < {a[1]}, {a[1]}, {a[0]}))"
        elif op == "clamp_max":
            expr = f"tl.where({a[1]} != {a[1]}, {a[1]}, tl.where({a[0]} > {a[1]}, {a[1]}, {a[0]}))"
        elif op == "clamp":
            lo = f"tl.where({a[0]} < {a[1]}, {a[1]}, {a[0]})"
            expr = (f"tl.where({a[1]} != {a[1]}, {a[1]}, tl.where({a[2]} != {a[2]}, {a[2]}, "
                    f"tl.where({a[2]} < {lo}, {a[2]}, {lo})))")
        elif op == "relu":
            expr = f"tl.where({a[0]} < 0.0, {zero}, {a[0]})"
        elif op == "where":
            expr = f"tl.where({a[0]}, {a[1]}, {a[2]})"
        elif op in _ir.COMPARE:
            sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[op]
            expr = f"{a[0]} {sym} {a[1]}"
        elif op in ("and", "or"):
            expr = f"{a[0]} {'&' if op == 'and' else '|'} {a[1]}"
        elif op == "not":
            expr = f"{a[0]} == 0"
        elif op == "spike":
            expr = f"tl.where({a[0]} >= 0, 1.0, 0.0).to(REAL)"
        elif op == "detach":
            expr = a[0]
        elif op == "reset_hard":
            expr = f"tl.where({a[1]} > 0, {a[2]}, {a[0]})"
        elif op == "reset_soft":
            expr = f"tl.where({a[1]} > 0, {a[0]} - {a[2]}, {a[0]})"
        else:  # pragma: no cover
            raise _ir.DefinitionError(f"the Triton emitter has no rule for {op}")
        self.lines.append(f"{n(i)} = {expr}")


def _select(a, b, c):
    """torch.minimum (`c` "<") or maximum (">"): NaN wins, then `b` at a tie."""
    return (f"tl.where({a} != {a}, {a}, tl.where({b} != {b}, {b}, "
            f"tl.where({a} {c} {b}, {a}, {b})))")


def _lit(v):
    return ("float('nan')" if math.isnan(v) else ("1e400" if v > 0 else "-1e400")
            if math.isinf(v) else repr(v))


def _inputs(neuron, states_from):
    exprs = {"x": "tl.load(x_ptr + at, mask=mask).to(REAL)", "v_threshold": "TH",
             "v_rest": "vr"}
    for k, n in enumerate(neuron.states):
        exprs[f"state:{n}"] = states_from.format(k=k)
    for k, n in enumerate(neuron.parameters):
        exprs[f"param:{n}"] = f"P{k}"
    return exprs


def _signature(neuron, extra_ptrs, shared=True):
    K, M = len(neuron.states), len(neuron.parameters)
    ptrs = ["x_ptr", "th_ptr", "sc_ptr", *(f"st{k}_ptr" for k in range(K)),
            *(f"par{k}_ptr" for k in range(M)), *extra_ptrs]
    flags = ["TH_SHARED: tl.constexpr", *(f"ST{k}_SHARED: tl.constexpr" for k in range(K)),
             *(f"PAR{k}_SHARED: tl.constexpr" for k in range(M))]
    return ", ".join([*ptrs, "T", "N", *flags, "BLOCK: tl.constexpr"])


def _loads(neuron, real):
    K, M = len(neuron.states), len(neuron.parameters)
    out = ["offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)", "mask = offs < N",
           "TH = _load(th_ptr, offs, mask, TH_SHARED).to(REAL)",
           "vr = tl.load(sc_ptr).to(REAL)"]
    out += [f"S{k} = _load(st{k}_ptr, offs, mask, ST{k}_SHARED).to(REAL)" for k in range(K)]
    out += [f"P{k} = _load(par{k}_ptr, offs, mask, PAR{k}_SHARED).to(REAL)" for k in range(M)]
    return out


_PRELUDE = '''"""Generated by snnfunc from the neuron definition {name} (do not edit)."""
import triton
import triton.language as tl

REAL = tl.{real}


@triton.jit
def _to_bf16(v):
    u = v.to(tl.uint32, bitcast=True)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    r = tl.where((u & 0x7FFFFFFF) > 0x7F800000, 0x7FC0, r)
    return r.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _load(ptr, offs, mask, SHARED: tl.constexpr):
    if SHARED:
        return tl.load(ptr + offs * 0, mask=mask)
    return tl.load(ptr + offs, mask=mask)

'''


def _indent(lines, n):
    return "\n".join(" " * n + line for line in lines)


def _rounding(text: str, dtype: str) -> str:
    """Stores to bfloat16 round to nearest even with integer operations (`_to_bf16`), which
    Triton's interpreter computes exactly too (its float conversion truncates)."""
    if dtype == "bfloat16":
        text = re.sub(r"tl\.store\((\w+) \+ (.*?), (.*)\.to\(\1\.dtype\.element_ty@RND@\), mask=mask\)",
                      r"tl.store(\1 + \2, _to_bf16(\3), mask=mask)", text)
    return text.replace("@RND@", "")


def forward_source(neuron, opts, *, hard, want_h, dtype, want_trace=False):
    return _rounding(_forward_source(neuron, opts, hard=hard, want_h=want_h, dtype=dtype,
                                     want_trace=want_trace), dtype)


def backward_source(neuron, opts, *, dtype, **kw):  # kw: as _backward_source
    return _rounding(_backward_source(neuron, opts, dtype=dtype, **kw), dtype)


def _forward_source(neuron, opts, *, hard, want_h, dtype, want_trace=False):
    f32 = _codegen.IO_TYPES[dtype][1] == "float"
    g, ids, outs = neuron.trace(opts, hard=hard, detach_reset=False)
    K = len(neuron.states)
    em = _Emitter(g, _inputs(neuron, "S{k}"), f32, "n")
    for i in [outs["s"], outs["h"], *outs["states"]]:
        em.emit(i)
    body = em.lines + [f"tl.store(s_ptr + at, {em.name(outs['s'])}.to(s_ptr.dtype.element_ty@RND@), mask=mask)"]
    if want_h:
        body.append(f"tl.store(h_ptr + at, {em.name(outs['h'])}.to(h_ptr.dtype.element_ty@RND@), mask=mask)")
    body += [f"S{k} = {em.name(o)}" for k, o in enumerate(outs["states"])]
    if want_trace:  # the states after every step, in the compute type
        body += [f"tl.store(tr{k}_ptr + at, S{k}, mask=mask)" for k in range(K)]
    ends = [f"tl.store(out{k}_ptr + offs, S{k}, mask=mask)" for k in range(K)]  # compute type
    sig = _signature(neuron, ["s_ptr", "h_ptr", *(f"out{k}_ptr" for k in range(K)),
                              *(f"tr{k}_ptr" for k in range(K))])
    return (_PRELUDE.format(name=neuron.name, real="float32" if f32 else "float64") + f"""
@triton.jit
def kernel({sig}):
{_indent(_loads(neuron, f32), 4)}
    for t in range(T):
        at = tl.cast(t, tl.int64) * N + offs
{_indent(body, 8)}
{_indent(ends, 4)}
""")


def _backward_source(neuron, opts, *, hard, detach, surrogate_derivative, has_gs, has_gh,
                     has_gv, need, dtype, has_gtr=None):
    f32 = _codegen.IO_TYPES[dtype][1] == "float"
    K, M = len(neuron.states), len(neuron.parameters)
    has_gtr = tuple(has_gtr or (False,) * K)
    patterns, fix = _codegen.backward_patterns(
        neuron, opts, hard=hard, detach=detach, surrogate_derivative=surrogate_derivative,
        has_gs=has_gs, has_gh=has_gh, has_gv=has_gv, has_gtr=has_gtr)
    L, period = len(patterns), len(patterns) - fix
    # recompute the states before every step into the buffer [K, T, N]
    rg, rids, routs = neuron.trace(opts, hard=hard, detach_reset=detach)
    rem = _Emitter(rg, _inputs(neuron, "S{k}"), f32, "r")
    for o in routs["states"]:
        rem.emit(o)
    recompute = ([f"tl.store(buf_ptr + ({k} * T + tl.cast(t, tl.int64)) * N + offs, S{k}, mask=mask)" for k in range(K)]
                 + rem.lines + [f"S{k} = {rem.name(o)}" for k, o in enumerate(routs["states"])])
    init = [f"G{k} = {'tl.load(gst%d_ptr + offs, mask=mask).to(REAL)' % k if has_gv[k] else 'tl.zeros([BLOCK], REAL)'}"
            for k in range(K)]
    init += [f"GP{k} = tl.zeros([BLOCK], REAL)" for k in range(M)] + ["GTH = tl.zeros([BLOCK], REAL)"]
    branches = []
    for b, (present, _, (g, ids, outs, res, wrt)) in enumerate(patterns):
        inputs = _inputs(neuron, "tl.load(buf_ptr + ({k} * T + tl.cast(t, tl.int64)) * N + offs, mask=mask)")
        inputs["cot:s"] = "tl.load(gs_ptr + at, mask=mask).to(REAL)"
        inputs["cot:h"] = "tl.load(gh_ptr + at, mask=mask).to(REAL)"
        inputs["sg"] = "tl.load(sg_ptr + at, mask=mask).to(REAL)"
        for k in range(K):
            inputs[f"cot:state:{k}"] = f"G{k}"
        inputs.update({f"{_ir.SCALAR_INPUT}{k}": f"tl.load(sc_ptr + {k + 1})"
                       for k in range(_codegen._scalar_inputs(g))})
        em = _Emitter(g, inputs, f32, f"b{b}_")
        lines = []
        gx = res[ids["x"]]
        if gx is not None:
            em.emit(gx)
        wants = []
        for k, n in enumerate(neuron.states):
            c = res[ids[f"state:{n}"]]
            if c is not None:
                em.emit(c)
                wants.append(f"G{k} = {em.name(c)}")
        for k, n in enumerate(neuron.parameters):
            c = res[ids[f"param:{n}"]]
            if c is not None and need[k]:
                em.emit(c)
                wants.append(f"GP{k} += {em.name(c)}")
        c = res[ids["v_threshold"]]
        if c is not None and need[M]:
            em.emit(c)
            wants.append(f"GTH += {em.name(c)}")
        gxv = em.name(gx) if gx is not None else "tl.zeros([BLOCK], REAL)"
        lines = em.lines + [f"tl.store(gx_ptr + at, {gxv}.to(gx_ptr.dtype.element_ty@RND@), mask=mask)"] + wants
        branches.append((b, lines))
    walk = [f"G{k} += tl.load(gtr{k}_ptr + at, mask=mask).to(REAL)" for k in range(K) if has_gtr[k]]
    if L == 1:
        walk += branches[0][1]
    else:
        walk += ["rb = r", f"if r >= {L}:", f"    rb = {fix} + (r - {fix}) % {period}"]
        for k, (b, lines) in enumerate(branches):
            walk.append(f"{'if' if k == 0 else 'elif'} rb == {b}:")
            walk += ["    " + line for line in lines]
    ends = ["rl = T - 1"]
    if L > 1:
        ends += [f"if rl >= {L}:", f"    rl = {fix} + (rl - {fix}) % {period}"]
    for k in range(K):
        if not need[M + 1 + k]:
            continue
        ok = [b for b, (_, out, _) in enumerate(patterns) if out[k]]
        if len(ok) == L:
            ends.append(f"tl.store(gst0{k}_ptr + offs, G{k}, mask=mask)")
        elif not ok:
            ends.append(f"tl.store(gst0{k}_ptr + offs, tl.zeros([BLOCK], REAL), mask=mask)")
        else:
            cond = " or ".join(f"rl == {b}" for b in ok)
            ends += [f"G{k}_out = tl.zeros([BLOCK], REAL)", f"if {cond}:", f"    G{k}_out = G{k}",
                     f"tl.store(gst0{k}_ptr + offs, G{k}_out, mask=mask)"]
    ends += [f"tl.store(gpar{k}_ptr + offs, GP{k}, mask=mask)"
             for k in range(M) if need[k]]
    if need[M]:
        ends.append("tl.store(gth_ptr + offs, GTH, mask=mask)")
    extra = ["gs_ptr", "gh_ptr", "sg_ptr", *(f"gst{k}_ptr" for k in range(K)),
             *(f"gtr{k}_ptr" for k in range(K)), "buf_ptr", "gx_ptr",
             *(f"gst0{k}_ptr" for k in range(K)), *(f"gpar{k}_ptr" for k in range(M)), "gth_ptr"]
    return (_PRELUDE.format(name=neuron.name, real="float32" if f32 else "float64") + f"""
@triton.jit
def kernel({_signature(neuron, extra)}):
{_indent(_loads(neuron, f32), 4)}
    for t in range(T):
        at = tl.cast(t, tl.int64) * N + offs
{_indent(recompute, 8)}
{_indent(init, 4)}
    for r in range(T):
        t = T - 1 - r
        at = tl.cast(t, tl.int64) * N + offs
{_indent(walk, 8)}
{_indent(ends, 4)}
""")
