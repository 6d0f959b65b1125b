"""The reset every neuron shares (forward a select, backward the derivative of the blend), as
the reference loop of every definition computes it."""

from __future__ import annotations

import torch


class _Reset(torch.autograd.Function):
    """V_t from H_t and the spike S_t (the reset; used under torch.compile).

    Forward, a select: where S = 1, `v_reset` (hard) or `H - V_th` (soft); where S = 0, H
    itself, bit for bit (-0.0, inf and NaN included). Backward, the derivative of the blend
    `H (1 - S) + V_reset S` (hard) or `H - V_th S` (soft): dV/dH = 1 - S or 1,
    dV/dS = V_reset - H or -V_th, dV/dV_th = -S. The same expressions as the fused kernels.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(h, r, th, v_reset):
        if v_reset is None:
            return torch.where(r > 0, h - th, h)
        return torch.where(r > 0, v_reset, h)

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, r, th, v_reset = inputs
        ctx.save_for_backward(h, r, th)
        ctx.v_reset = v_reset

    @staticmethod
    def backward(ctx, g):
        h, r, th = ctx.saved_tensors
        need_h, need_r, need_th = ctx.needs_input_grad[:3]
        fire = r > 0
        if ctx.v_reset is None:
            gh = g
            gr = g * -th if need_r else None
            gth = torch.where(fire, -g, 0.0).sum_to_size(th.shape) if need_th else None
        else:
            gh = torch.where(fire, 0.0, g) if need_h else None
            gr = g * (ctx.v_reset - h) if need_r else None
            gth = None
        return gh, gr, gth, None


class _ResetForwardAD(_Reset):
    """The reset with a forward-mode rule (eager mode; Dynamo refuses a custom `jvp`)."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        _Reset.setup_context(ctx, inputs, output)
        ctx.save_for_forward(*inputs[:3])

    @staticmethod
    def jvp(ctx, th_, tr, tth, _):
        h, r, th = ctx.saved_tensors
        fire = r > 0
        if ctx.v_reset is None:
            out = torch.zeros_like(h) if th_ is None else th_
            if tr is not None:
                out = out + tr * -th
            if tth is not None:
                out = out - torch.where(fire, tth, 0.0)
            return out
        out = torch.zeros_like(h) if th_ is None else torch.where(fire, 0.0, th_)
        if tr is not None:
            out = out + tr * (ctx.v_reset - h)
        return out


def reset(h, s, v_threshold, v_reset, detach_reset: bool):
    """V_t from H_t and S_t: hard (`v_reset` a number) or soft (`None`) reset."""
    r = s.detach() if detach_reset else s
    if torch.compiler.is_compiling():
        return _Reset.apply(h, r, v_threshold, v_reset)
    return _ResetForwardAD.apply(h, r, v_threshold, v_reset)
