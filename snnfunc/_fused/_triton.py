"""The CUDA kernels: Triton programs that loop over T inside the kernel (one launch forward,
one backward), registered with `torch.library.triton_op` so that `torch.compile` sees the
kernels themselves. Same contract as the CPU kernel in `neuron.c`: the forward uses the
reference's operations in its order (IEEE division, no FMA contraction), so spikes and
voltages equal the unrolled loop bit for bit; the backward recomputes H from the input.

Importing this module needs Triton; running it needs a CUDA device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from snnfunc._fused import _ops

_BLOCK = 256
_OPTIONS = dict(enable_fp_fusion=False)  # no FMA contraction: the reference rounds each op


def error() -> str | None:
    if not torch.cuda.is_available():
        return "CUDA is not available"
    return None


@triton.jit
def _div(a, b):
    if a.dtype == tl.float32:
        return tl.math.div_rn(a, b)  # IEEE division, not Triton's approximate default
    return a / b


@triton.jit
def _charge(x, v, p, vr, KIND: tl.constexpr, DECAY: tl.constexpr):
    if KIND == 0:
        h = v + x
    elif KIND == 1:
        if DECAY:
            h = v + _div(x - (v - vr), p)
        else:
            h = v - _div(v - vr, p) + x
    elif KIND == 2:
        if DECAY:
            h = v + (x - (v - vr)) * p
        else:
            h = v - (v - vr) * p + x
    else:
        tl.static_assert(KIND == 3, "unknown neuron kind")
        h = v + p * (v - vr) + x
    return h


@triton.jit
def _reset(h, th, vr, HARD: tl.constexpr):
    fire = (h - th) >= 0
    if HARD:
        return tl.where(fire, vr, h)
    return tl.where(fire, h - th, h)


@triton.jit
def _surrogate(u, a, b, c, SG: tl.constexpr):
    one = 1.0
    if SG == 0:  # Sigmoid
        s = one / (one + tl.exp(-a * u))
        g = a * s * (one - s)
    elif SG == 1:  # BilinearLeakyReLU
        g = tl.where((u >= -c) & (u <= c), tl.zeros_like(u) + a, tl.zeros_like(u) + b)
    elif SG == 2:  # SignSwish
        y = tl.abs(a * u)
        e = tl.exp(-y)
        g = a * (2.0 - y * ((one - e) / (one + e))) / (one + (one / e + e) / 2.0)
    elif SG == 3:  # ATan
        z = 1.5707963267948966 * a * u
        g = (a / 2.0) / (one + z * z)
    elif SG == 4:  # PiecewiseQuadratic
        m = tl.abs(u)
        g = tl.where(m <= one / a, a - a * a * m, tl.zeros_like(u))
    elif SG == 5:  # PiecewiseExp
        g = a / 2.0 * tl.exp(-a * tl.abs(u))
    elif SG == 6:  # SoftSign
        d = one / a + tl.abs(u)
        g = one / (2.0 * a * d * d)
    elif SG == 7:  # Erf
        z = a * u
        g = a / 1.7724538509055160 * tl.exp(-z * z)
    elif SG == 8:  # SuperSpike
        d = a * tl.abs(u) + one
        g = one / (d * d)
    elif SG == 9:  # PiecewiseLeakyReLU
        g = tl.where(tl.abs(u) < a, tl.zeros_like(u) + one / (2.0 * a), tl.zeros_like(u) + b)
    elif SG == 10:  # Rect
        g = tl.where(tl.abs(u) < a / 2.0, tl.zeros_like(u) + one / a, tl.zeros_like(u))
    elif SG == 11:  # Triangle
        r = one - tl.abs(u) / a
        g = tl.where(r < 0, tl.zeros_like(u), r) / a  # NaN stays NaN, as torch.where
    else:
        tl.static_assert(SG == 12, "unknown surrogate id")  # StraightThrough
        g = tl.zeros_like(u) + one
    return g


@triton.jit
def _load_step(ptr, offs, mask, SHARED: tl.constexpr):
    if SHARED:
        return tl.load(ptr + offs * 0, mask=mask)
    return tl.load(ptr + offs, mask=mask)


@triton.jit
def _load_steps(v0_ptr, p_ptr, th_ptr, offs, mask, V0_SHARED: tl.constexpr,
                P_SHARED: tl.constexpr, TH_SHARED: tl.constexpr):
    return (_load_step(v0_ptr, offs, mask, V0_SHARED), _load_step(p_ptr, offs, mask, P_SHARED),
            _load_step(th_ptr, offs, mask, TH_SHARED))


@triton.jit
def _forward_kernel(x_ptr, v0_ptr, p_ptr, th_ptr, sc_ptr, s_ptr, h_ptr, v_ptr, T, N,
                    V0_SHARED: tl.constexpr, P_SHARED: tl.constexpr, TH_SHARED: tl.constexpr,
                    KIND: tl.constexpr, DECAY: tl.constexpr, HARD: tl.constexpr,
                    WANT_H: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v, p, th = _load_steps(v0_ptr, p_ptr, th_ptr, offs, mask, V0_SHARED, P_SHARED, TH_SHARED)
    vr = tl.load(sc_ptr).to(v.dtype)
    for t in range(T):
        at = tl.cast(t, tl.int64) * N + offs
        x = tl.load(x_ptr + at, mask=mask)
        h = _charge(x, v, p, vr, KIND, DECAY)  # charge
        fire = (h - th) >= 0  # fire
        tl.store(s_ptr + at, fire.to(v.dtype), mask=mask)
        if WANT_H:
            tl.store(h_ptr + at, h, mask=mask)
        v = _reset(h, th, vr, HARD)  # reset
    tl.store(v_ptr + offs, v, mask=mask)


@triton.jit
def _backward_kernel(x_ptr, v0_ptr, p_ptr, th_ptr, sc_ptr, gs_ptr, gv_ptr, gh_ptr, sg_ptr,
                     hbuf_ptr, gx_ptr, gv0_ptr, gp_ptr, gth_ptr, T, N,
                     V0_SHARED: tl.constexpr, P_SHARED: tl.constexpr,
                     TH_SHARED: tl.constexpr, KIND: tl.constexpr, DECAY: tl.constexpr,
                     HARD: tl.constexpr, DETACH: tl.constexpr, SG: tl.constexpr,
                     HAS_GS: tl.constexpr, HAS_GV: tl.constexpr, HAS_GH: tl.constexpr,
                     HAS_SG: tl.constexpr, NEED_P: tl.constexpr, NEED_TH: tl.constexpr,
                     BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v0, p, th = _load_steps(v0_ptr, p_ptr, th_ptr, offs, mask, V0_SHARED, P_SHARED, TH_SHARED)
    vr = tl.load(sc_ptr).to(v0.dtype)
    a = tl.load(sc_ptr + 1).to(v0.dtype)
    b = tl.load(sc_ptr + 2).to(v0.dtype)
    c = tl.load(sc_ptr + 3).to(v0.dtype)
    v = v0
    for t in range(T):  # recompute H
        at = tl.cast(t, tl.int64) * N + offs
        h = _charge(tl.load(x_ptr + at, mask=mask), v, p, vr, KIND, DECAY)
        tl.store(hbuf_ptr + at, h, mask=mask)
        v = _reset(h, th, vr, HARD)
    # an absent gradient (HAS_GS/HAS_GV false: that output is unused) leaves its terms out,
    # as autograd does in the reference (0 * inf would be NaN where the reference has a number);
    # zeros are tl.zeros_like, never 0 * x, which is NaN where x is inf or NaN
    if HAS_GV:
        g = tl.load(gv_ptr + offs, mask=mask)
        last = T  # dL/dV_t reaches step t < last
    else:
        g = tl.zeros_like(v0)
        last = T - 1
    gp = tl.zeros_like(v0)
    gth = tl.zeros_like(v0)
    for r in range(T):
        t = T - 1 - r
        at = tl.cast(t, tl.int64) * N + offs
        h = tl.load(hbuf_ptr + at, mask=mask)
        if t > 0:
            vp = _reset(tl.load(hbuf_ptr + at - N, mask=mask), th, vr, HARD)
        else:
            vp = v0
        u = h - th
        fire = u >= 0
        if HAS_SG:
            sg = tl.load(sg_ptr + at, mask=mask)
        else:
            sg = _surrogate(u, a, b, c, SG)
        live = t < last
        zero = tl.zeros_like(g)
        if DETACH:
            through_reset = zero
        elif HARD:
            through_reset = tl.where(live, g * (vr - h), zero)
        else:
            through_reset = tl.where(live, g * (-th), zero)
        if HAS_GS:
            gsg = (tl.load(gs_ptr + at, mask=mask) + through_reset) * sg
        elif DETACH:
            gsg = zero
        else:
            gsg = tl.where(live, through_reset * sg, zero)
        if HARD:
            gh = gsg + tl.where(live, tl.where(fire, zero, g), zero)
        else:
            gh = gsg + tl.where(live, g, zero)
        if HAS_GH:
            gh += tl.load(gh_ptr + at, mask=mask)
        if HARD:
            gth += -gsg
        else:
            gth += -gsg - tl.where(live & fire, g, zero)
        if KIND == 0:
            gx = gh
            g = gh
        elif KIND == 1:
            q = _div(gh, p)
            gx = q if DECAY else gh
            g = gh - q
            if NEED_P:
                if DECAY:
                    gp += _div(-q * (tl.load(x_ptr + at, mask=mask) - (vp - vr)), p)
                else:
                    gp += _div(q * (vp - vr), p)
        elif KIND == 2:
            q = gh * p
            gx = q if DECAY else gh
            g = gh - q
            if NEED_P:
                if DECAY:
                    gp += gh * (tl.load(x_ptr + at, mask=mask) - (vp - vr))
                else:
                    gp += -gh * (vp - vr)
        else:
            gx = gh
            g = gh + gh * p
            if NEED_P:
                gp += gh * (vp - vr)
        tl.store(gx_ptr + at, gx, mask=mask)
    tl.store(gv0_ptr + offs, g, mask=mask)
    if NEED_P:
        tl.store(gp_ptr + offs, gp, mask=mask)
    if NEED_TH:
        tl.store(gth_ptr + offs, gth, mask=mask)


def _grid(N):
    return (triton.cdiv(max(N, 1), _BLOCK),)


@triton_op("snnfunc::neuron_forward_cuda", mutates_args=())
def neuron_forward_cuda(x: Tensor, v0: Tensor, p: Tensor | None, th: Tensor, scalars: Tensor,
                        kind: int, decay_input: bool, hard: bool,
                        want_h: bool) -> tuple[Tensor, Tensor, Tensor]:
    _ops.check_forward(x, v0, p, th, scalars, kind, decay_input, hard, want_h, "cuda")
    x, v0, th = x.contiguous(), v0.contiguous(), th.contiguous()
    p = th if p is None else p.contiguous()
    T, N = x.shape[0], x[0].numel()
    s = x.new_empty(x.shape)
    h = x.new_empty(x.shape if want_h else (0,))
    v = x.new_empty(x.shape[1:])
    wrap_triton(_forward_kernel)[_grid(N)](
        x, v0, p, th, scalars, s, h, v, T, N, V0_SHARED=v0.numel() == 1,
        P_SHARED=p.numel() == 1, TH_SHARED=th.numel() == 1, KIND=kind, DECAY=decay_input,
        HARD=hard, WANT_H=want_h, BLOCK=_BLOCK, **_OPTIONS)
    return s, v, h


@triton_op("snnfunc::neuron_backward_cuda", mutates_args=())
def neuron_backward_cuda(x: Tensor, v0: Tensor, p: Tensor | None, th: Tensor, gs: Tensor | None,
                         gv: Tensor | None, gh: Tensor | None, sg: Tensor | None, scalars: Tensor,
                         kind: int, decay_input: bool, hard: bool, detach_reset: bool,
                         sg_id: int, need_p: bool,
                         need_th: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _ops.check_backward(x, v0, p, th, gs, gv, gh, sg, scalars, kind, decay_input, hard,
                        detach_reset, sg_id, need_p, need_th, "cuda")
    x, v0, th = (t.contiguous() for t in (x, v0, th))
    p = th if p is None else p.contiguous()
    T, N = x.shape[0], x[0].numel()
    step = x.shape[1:]
    hbuf = x.new_empty(x.shape)
    gx = x.new_empty(x.shape)
    gv0 = x.new_empty(step)
    gp = x.new_empty(step if need_p else (0,))
    gth = x.new_empty(step if need_th else (0,))
    wrap_triton(_backward_kernel)[_grid(N)](
        x, v0, p, th, scalars, x if gs is None else gs.contiguous(),
        v0 if gv is None else gv.contiguous(), x if gh is None else gh.contiguous(),
        x if sg is None else sg.contiguous(), hbuf, gx, gv0, gv0 if gp.numel() == 0 else gp,
        gv0 if gth.numel() == 0 else gth, T, N, V0_SHARED=v0.numel() == 1,
        P_SHARED=p.numel() == 1, TH_SHARED=th.numel() == 1, KIND=kind, DECAY=decay_input,
        HARD=hard, DETACH=detach_reset, SG=max(sg_id, 0), HAS_GS=gs is not None,
        HAS_GV=gv is not None, HAS_GH=gh is not None,
        HAS_SG=sg is not None, NEED_P=need_p, NEED_TH=need_th, BLOCK=_BLOCK, **_OPTIONS)
    return gx, gv0, gp, gth


_ops.register_vmap_rules(neuron_forward_cuda, neuron_backward_cuda)
