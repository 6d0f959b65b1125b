"""The kernels under autograd: one `autograd.Function` ties a backend's forward and backward
ops together, and another makes the backward op visible to `torch.func` transforms."""

from __future__ import annotations

import dataclasses

import torch

from snnfunc import surrogate as _sg
from snnfunc._kernel import backends
from snnfunc._kernel.call import CallRecord, step_tensor
from snnfunc._kernel.surrogates import surrogate_of


def _reduced(grad, like):
    """A step tensor's gradient (computed per neuron, in the compute dtype) summed over the
    dimensions `like` was broadcast along, then cast to `like`'s dtype."""
    if grad.shape != like.shape:
        grad = grad.sum() if like.numel() == 1 else grad.sum_to_size(like.shape)
        grad = grad.reshape(like.shape)
    return grad.to(like.dtype)


class DefinedNeuron(torch.autograd.Function):
    """Forward: one call of the generated kernel. Backward: one call of the generated BPTT
    kernel from the saved input, and the forward values the forward kept where the backend
    keeps them (`cfg.keep`: the last output, saved, never differentiated)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, th, scalars, cfg: CallRecord, *tensors):
        k = cfg.n_states
        shape = x.shape[1:]
        step = [step_tensor(t, x, shape) for t in (th, *tensors)]
        out = backends.ops_for(x)[0](x, step[1:1 + k], step[1 + k:], step[0], scalars,
                                    cfg.neuron, cfg.options, cfg.hard, cfg.want_h,
                                    cfg.want_states, cfg.detach,
                                    None if cfg.keep is None else list(cfg.keep))
        return tuple(out)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, th, scalars, cfg, *tensors = inputs
        ctx.save_for_backward(x, th, scalars, output[-1], *tensors)
        ctx.cfg = cfg
        if not cfg.want_h:
            ctx.mark_non_differentiable(output[1])
        if not cfg.want_states:
            ctx.mark_non_differentiable(*output[2 + cfg.n_states:-1])
        ctx.mark_non_differentiable(output[-1])  # the kept values
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, gs, gh, *rest):
        x, th, scalars, kept, *tensors = ctx.saved_tensors
        cfg = ctx.cfg
        k = cfg.n_states
        gstates = rest[:k]
        gtraces = list(rest[k:2 * k]) if cfg.want_states else [None] * k
        n_params = len(tensors) - k
        needs = ctx.needs_input_grad
        need = (*(bool(needs[4 + k + j]) for j in range(n_params)), bool(needs[1]),
                *(bool(needs[4 + j]) for j in range(k)))
        gh = gh if cfg.want_h else None
        if gs is None and gh is None and all(g is None for g in (*gstates, *gtraces)):
            return (None,) * (4 + len(tensors))
        # the values the forward kept, for the gradients it kept them for (any more wanted
        # now, and the backward op computes them again)
        if cfg.keep is not None and kept.dim() > 1 and all(
                f or not n for n, f in zip(need, cfg.keep)):
            need_op = tuple(cfg.keep)
        else:
            kept, need_op = None, need
        sg = None
        if cfg.sg_in_torch:  # its derivative is evaluated in torch, on h - th,
            # through the Function (not the bare op), so torch.func transforms can trace it
            h = DefinedNeuron.apply(x, th, scalars,
                                    dataclasses.replace(cfg, want_h=True, want_states=False,
                                                        keep=None),
                                    *tensors)[1]
            sg = _sg.derivative(surrogate_of(cfg.surrogate), h - th).contiguous()
        if torch.compiler.is_compiling() or not torch.is_grad_enabled() and backends.plain(x):
            # the op itself (no torch.func transform to see; no graph of the backward to
            # differentiate again)
            grads = backends.ops_for(x)[1](
                x, [step_tensor(t, x) for t in tensors[:k]], [step_tensor(t, x) for t in tensors[k:]],
                step_tensor(th, x), gs, gh, sg, list(gstates), scalars, cfg.neuron, cfg.options,
                cfg.surrogate, cfg.hard, cfg.detach, list(need_op), gtraces, kept)
        else:
            config = (cfg.neuron, cfg.options, cfg.surrogate, cfg.hard, cfg.detach, k, *need_op)
            grads = DefinedNeuronBackward.apply(x, step_tensor(th, x), scalars, config, gs, gh, sg,
                                                kept, *gstates, *gtraces,
                                                *(step_tensor(t, x) for t in tensors))
        gx, gst0 = grads[0], grads[1:1 + k]
        gpar, gth = grads[1 + k:1 + k + n_params], grads[1 + k + n_params]
        states, params = tensors[:k], tensors[k:]
        return (gx, _reduced(gth, th) if need[n_params] else None, None, None,
                *(_reduced(g, t) if needs[4 + j] else None
                  for j, (g, t) in enumerate(zip(gst0, states))),
                *(_reduced(g, t) if need[j] else None
                  for j, (g, t) in enumerate(zip(gpar, params))))


class DefinedNeuronBackward(torch.autograd.Function):
    """The generated BPTT kernel as a function, so that torch.func transforms see it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, th, scalars, config, gs, gh, sg, kept, *rest):
        neuron, options, surrogate, hard, detach, k = config[:6]
        need = config[6:]
        gstates, gtraces = list(rest[:k]), list(rest[k:2 * k])
        states, params = list(rest[2 * k:3 * k]), list(rest[3 * k:])
        return tuple(backends.ops_for(x)[1](x, states, params, th, gs, gh, sg, gstates, scalars,
                                           neuron, options, surrogate, hard, detach, list(need),
                                           gtraces, kept))

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "the fused neuron kernel is differentiable once; for higher-order gradients call "
            "the neuron with impl='reference'")
