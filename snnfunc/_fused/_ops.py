"""The fused multi-step neuron as two `torch.library` custom ops (forward, backward), each
with a fake kernel (`torch.compile` sees one node whose cost does not grow with T) and a
`vmap` rule, tied together by one autograd.Function that works under `torch.func`.

Shapes: sequence tensors are `[T, *S]`; step tensors (`v0`, `p`, `th`) are `[*S]`
or hold a single value shared by every neuron (then nothing per neuron is materialised).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import torch
from torch import Tensor

from snnfunc import surrogate as _sg
from snnfunc._fused import _cpu

KINDS = {"if": 0, "lif": 1, "plif": 2, "rif": 3}

# built-in surrogates the kernels compute themselves: type -> (id, parameters)
_SURROGATE_IDS = {
    _sg.Sigmoid: (0, lambda s: (s.alpha, 0.0, 0.0)),
    _sg.BilinearLeakyReLU: (1, lambda s: (s.a, s.b, s.c)),
    _sg.SignSwish: (2, lambda s: (s.beta, 0.0, 0.0)),
    _sg.ATan: (3, lambda s: (s.alpha, 0.0, 0.0)),
    _sg.PiecewiseQuadratic: (4, lambda s: (s.alpha, 0.0, 0.0)),
    _sg.PiecewiseExp: (5, lambda s: (s.alpha, 0.0, 0.0)),
    _sg.SoftSign: (6, lambda s: (s.alpha, 0.0, 0.0)),
    _sg.Erf: (7, lambda s: (s.alpha, 0.0, 0.0)),
    _sg.SuperSpike: (8, lambda s: (s.alpha, 0.0, 0.0)),
    _sg.PiecewiseLeakyReLU: (9, lambda s: (s.w, s.c, 0.0)),
    _sg.Rect: (10, lambda s: (s.alpha, 0.0, 0.0)),
    _sg.Triangle: (11, lambda s: (s.alpha, 0.0, 0.0)),
    _sg.StraightThrough: (12, lambda s: (0.0, 0.0, 0.0)),
}


_DECAY_OPTIONAL = (KINDS["lif"], KINDS["plif"])  # the kinds with a decay_input option


# --------------------------------------------------------------------------- argument checks
# The ops are public (torch.ops.snnfunc.*): they check every argument before a kernel reads
# a byte, so no call can read out of bounds or reinterpret memory.


def _device_ok(t: Tensor, device_type: str) -> bool:
    if device_type == "cuda":  # Triton's interpreter runs the CUDA kernels on CPU tensors
        return t.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    return t.device.type == device_type


def _check_seq(name, t, x):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.dtype != x.dtype or t.device != x.device or t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense {x.dtype} tensor on {x.device} like x, got "
                         f"{t.dtype} on {t.device} ({t.layout})")
    if t.shape != x.shape:
        raise ValueError(f"{name} must have x's shape {tuple(x.shape)}, got {tuple(t.shape)}")


def _check_step(name, t, x, *, shared_ok=True):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.dtype != x.dtype or t.device != x.device or t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense {x.dtype} tensor on {x.device} like x, got "
                         f"{t.dtype} on {t.device} ({t.layout})")
    step = x.shape[1:]
    if t.shape != step and not (shared_ok and t.numel() == 1):
        raise ValueError(f"{name} must have shape {tuple(step)} (one step of x)"
                         f"{' or hold one value' if shared_ok else ''}, got {tuple(t.shape)}")


def check_forward(x, v0, p, th, scalars, kind, decay_input, hard, want_h, device_type):
    """Raises a clear error for any argument the forward kernels cannot take."""
    if not isinstance(x, Tensor) or x.dtype not in (torch.float32, torch.float64):
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a float32 or float64 tensor, got {got}")
    if x.dim() < 1 or x.layout != torch.strided:
        raise ValueError(f"x must be a dense tensor [T, ...], got {x.dim()}-d ({x.layout})")
    if not _device_ok(x, device_type):
        raise ValueError(f"this op runs on {device_type} tensors, x is on {x.device}")
    if kind not in KINDS.values():
        raise ValueError(f"kind must be one of {sorted(KINDS.values())} {tuple(KINDS)}, got {kind}")
    for name, flag in (("decay_input", decay_input), ("hard", hard), ("want_h", want_h)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    if not decay_input and kind not in _DECAY_OPTIONAL:
        raise ValueError(f"decay_input=False applies to lif and plif only, not kind {kind}")
    _check_step("v0", v0, x)
    _check_step("th", th, x)
    if p is None:
        if kind != KINDS["if"]:
            raise ValueError(f"kind {kind} needs its parameter p (tau, k or w), got None")
    else:
        _check_step("p", p, x)
    if (not isinstance(scalars, Tensor) or scalars.dtype != torch.float64
            or scalars.shape != (4,) or not (scalars.device == x.device or device_type == "cpu"
                                             and scalars.device.type == "cpu")):
        raise ValueError(f"scalars must be a float64 tensor of 4 values (v_rest and the "
                         f"surrogate's a, b, c) on {x.device}")


def check_backward(x, v0, p, th, gs, gv, gh, sg, scalars, kind, decay_input, hard,
                   detach_reset, sg_id, need_p, need_th, device_type):
    """Raises a clear error for any argument the backward kernels cannot take."""
    check_forward(x, v0, p, th, scalars, kind, decay_input, hard, False, device_type)
    for name, t in (("gs", gs), ("gh", gh)):  # None: that output is unused
        if t is not None:
            _check_seq(name, t, x)
    if gv is not None:
        _check_step("gv", gv, x, shared_ok=False)
    if gs is None and gv is None and gh is None:
        raise ValueError("the backward op needs at least one of gs, gv and gh")
    for name, flag in (("detach_reset", detach_reset), ("need_p", need_p), ("need_th", need_th)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    ids = sorted(i for i, _ in _SURROGATE_IDS.values())
    if sg is None:
        if sg_id not in ids:
            raise ValueError(f"sg_id must be a built-in surrogate's id {ids[0]}..{ids[-1]}, or "
                             f"-1 with sg, the surrogate derivative per step; got {sg_id}")
    else:
        if sg_id != -1:
            raise ValueError(f"sg_id must be -1 when sg is given, got {sg_id}")
        _check_seq("sg", sg, x)
    if need_p and p is None:
        raise ValueError("need_p=True needs p")


def surrogate_id(surrogate) -> int:
    """The kernels' number for a built-in surrogate; -1 for any other (computed in torch)."""
    entry = _SURROGATE_IDS.get(type(surrogate))
    return -1 if entry is None else entry[0]


def scalars(v_rest, surrogate, device) -> Tensor:
    """The call's float constants as one CPU tensor: (V_rest, then the surrogate's a, b, c).

    A tensor rather than float arguments, so that torch.compile with dynamic floats never has
    to specialise (and recompile) on them."""
    entry = _SURROGATE_IDS.get(type(surrogate))
    params = (0.0, 0.0, 0.0) if entry is None else entry[1](surrogate)
    zero = torch.full((), -0.0, dtype=torch.float64, device=device)  # -0.0 + v is v, even -0.0
    return torch.stack([zero + v for v in (v_rest, *params)])


# --------------------------------------------------------------------------- forward op


@torch.library.custom_op("snnfunc::neuron_forward", mutates_args=())
def neuron_forward(x: Tensor, v0: Tensor, p: Optional[Tensor], th: Tensor, scalars: Tensor,
                   kind: int, decay_input: bool, hard: bool,
                   want_h: bool) -> tuple[Tensor, Tensor, Tensor]:
    check_forward(x, v0, p, th, scalars, kind, decay_input, hard, want_h, "cpu")
    x, v0, th = x.contiguous(), v0.contiguous(), th.contiguous()
    p = None if p is None else p.contiguous()
    s = x.new_empty(x.shape)
    h = x.new_empty(x.shape) if want_h else x.new_empty(0)
    v = x.new_empty(x.shape[1:])
    v_rest = scalars.tolist()[0]
    _cpu.forward(x, v0, p, th, kind, decay_input, hard, v_rest, s, h if want_h else None, v)
    return s, v, h


@neuron_forward.register_fake
def _(x, v0, p, th, scalars, kind, decay_input, hard, want_h):
    check_forward(x, v0, p, th, scalars, kind, decay_input, hard, want_h, "cpu")
    return x.new_empty(x.shape), x.new_empty(x.shape[1:]), x.new_empty(x.shape if want_h else (0,))


# --------------------------------------------------------------------------- backward op


@torch.library.custom_op("snnfunc::neuron_backward", mutates_args=())
def neuron_backward(x: Tensor, v0: Tensor, p: Optional[Tensor], th: Tensor, gs: Optional[Tensor],
                    gv: Optional[Tensor], gh: Optional[Tensor], sg: Optional[Tensor], scalars: Tensor,
                    kind: int, decay_input: bool, hard: bool, detach_reset: bool, sg_id: int,
                    need_p: bool, need_th: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    check_backward(x, v0, p, th, gs, gv, gh, sg, scalars, kind, decay_input, hard, detach_reset,
                   sg_id, need_p, need_th, "cpu")
    x, v0, th = (t.contiguous() for t in (x, v0, th))
    p, gs, gv, gh, sg = (None if t is None else t.contiguous() for t in (p, gs, gv, gh, sg))
    gx = x.new_empty(x.shape)
    step = x.shape[1:]
    gv0 = x.new_empty(step)
    gp = x.new_empty(step if need_p else (0,))
    gth = x.new_empty(step if need_th else (0,))
    v_rest, sa, sb, sc = scalars.tolist()
    _cpu.backward(x, v0, p, th, gs, gv, gh, sg, kind, decay_input, hard, detach_reset, v_rest,
                  sg_id, sa, sb, sc, gx, gv0, gp if need_p else None, gth if need_th else None)
    return gx, gv0, gp, gth


@neuron_backward.register_fake
def _(x, v0, p, th, gs, gv, gh, sg, scalars, kind, decay_input, hard, detach_reset, sg_id,
      need_p, need_th):
    check_backward(x, v0, p, th, gs, gv, gh, sg, scalars, kind, decay_input, hard, detach_reset,
                   sg_id, need_p, need_th, "cpu")
    step = lambda need: x.new_empty(x.shape[1:] if need else (0,))  # noqa: E731
    return x.new_empty(x.shape), step(True), step(need_p), step(need_th)


# --------------------------------------------------------------------------- vmap rules
# A vmapped batch dimension becomes one more neuron dimension: sequences put it at 1,
# step tensors at 0. An unbatched sequence is expanded to the batch; an unbatched single
# value stays shared; any other step tensor is expanded to [B, *S].


def _batched_seq(t, bdim, size):
    if t is None:
        return None
    if bdim is None:
        return t.unsqueeze(1).expand(t.shape[0], size, *t.shape[1:])
    return t.movedim(bdim, 1)


def _batched_step(t, bdim, shape):
    """`shape` is [B, *S], the batched step shape."""
    if t is None:
        return None
    if bdim is None:
        return t if t.numel() == 1 else t.expand(shape)
    t = t.movedim(bdim, 0)
    if t.dim() == 1 and len(shape) > 1:  # one value per sample
        t = t.reshape(shape[0], *[1] * (len(shape) - 1))
    return t.expand(shape)


def _forward_vmap(op):
    def rule(info, in_dims, x, v0, p, th, scalars, *config):
        x = _batched_seq(x, in_dims[0], info.batch_size)
        v0, p, th = (_batched_step(t, d, x.shape[1:]) for t, d in zip((v0, p, th), in_dims[1:4]))
        s, v, h = op(x, v0, p, th, _unbatched(scalars, in_dims[4]), *config)
        return (s, v, h), (1, 0, 1 if h.dim() else None)

    return rule


def _backward_vmap(op):
    def rule(info, in_dims, x, v0, p, th, gs, gv, gh, sg, scalars, *config):
        B = info.batch_size
        x, gs, gh, sg = (_batched_seq(t, in_dims[i], B) for t, i in zip((x, gs, gh, sg), (0, 4, 6, 7)))
        step = x.shape[1:]
        v0, p, th, gv = (_batched_step(t, in_dims[i], step)
                         for t, i in zip((v0, p, th, gv), (1, 2, 3, 5)))
        gx, gv0, gp, gth = op(x, v0, p, th, gs, gv, gh, sg, _unbatched(scalars, in_dims[8]),
                              *config)
        return (gx, gv0, gp, gth), (1, 0, 0 if gp.dim() else None, 0 if gth.dim() else None)

    return rule


def _unbatched(scalars, bdim):
    if bdim is not None:
        raise ValueError("the neuron's v_reset and surrogate parameters cannot be vmapped")
    return scalars


def register_vmap_rules(forward_op, backward_op):
    """The same batching rules for the CPU ops and for the CUDA (Triton) ops."""
    torch.library.register_vmap(forward_op, _forward_vmap(forward_op))
    torch.library.register_vmap(backward_op, _backward_vmap(backward_op))


register_vmap_rules(neuron_forward, neuron_backward)


def _ops_for(device: torch.device):
    if device.type == "cuda":
        from snnfunc._fused import _triton

        return _triton.neuron_forward_cuda, _triton.neuron_backward_cuda
    return neuron_forward, neuron_backward


# --------------------------------------------------------------------------- autograd


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything about one fused call that is not a tensor (hashable: compile guards on it)."""

    kind: int
    decay_input: bool
    hard: bool
    detach_reset: bool
    want_h: bool
    surrogate: _sg.Surrogate


class FusedNeuron(torch.autograd.Function):
    """Forward: one call of the fused kernel. Backward: one call of the fused BPTT kernel,
    from the saved input (nothing else per time step is kept)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, v0, p, th, scalars, cfg: Config):
        forward_op = _ops_for(x.device)[0]
        return forward_op(x, v0, p, th, scalars, cfg.kind, cfg.decay_input, cfg.hard, cfg.want_h)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, v0, p, th, scalars, cfg = inputs
        ctx.save_for_backward(x, v0, p, th, scalars)
        ctx.cfg = cfg
        if not cfg.want_h:
            ctx.mark_non_differentiable(output[2])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, gs, gv, gh):
        x, v0, p, th, scalars = ctx.saved_tensors
        cfg = ctx.cfg
        gh = gh if cfg.want_h else None  # None: that output was unused
        sg_id = surrogate_id(cfg.surrogate)
        sg = None
        if sg_id < 0:  # a user-defined surrogate: its derivative is evaluated in torch
            # through the Function (not the bare op), so torch.func transforms can trace it
            h = FusedNeuron.apply(x, v0, p, th, scalars, dataclasses.replace(cfg, want_h=True))[2]
            sg = _sg.derivative(cfg.surrogate, h - th).contiguous()
        need_p = p is not None and ctx.needs_input_grad[2]
        need_th = ctx.needs_input_grad[3]
        gx, gv0, gp, gth = FusedNeuronBackward.apply(
            x, v0, p, th, gs, gv, gh, sg, scalars,
            (cfg.kind, cfg.decay_input, cfg.hard, cfg.detach_reset, sg_id, need_p, need_th))
        return (gx, _reduced(gv0, v0), _reduced(gp, p) if need_p else None,
                _reduced(gth, th) if need_th else None, None, None)


def _reduced(grad, like):
    """The per-neuron gradient of a step tensor that held one shared value, summed."""
    if like.numel() == 1 and grad.numel() != 1:
        return grad.sum().reshape(like.shape)
    return grad


class FusedNeuronBackward(torch.autograd.Function):
    """The BPTT kernel as a function, so that torch.func transforms see through it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, v0, p, th, gs, gv, gh, sg, scalars, config):
        backward_op = _ops_for(x.device)[1]
        return backward_op(x, v0, p, th, gs, gv, gh, sg, scalars, *config)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "the fused neuron kernel is differentiable once; for higher-order gradients call "
            "the neuron with impl='reference'")

