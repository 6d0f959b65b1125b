"""The recurrent layer's time loops, forward and BPTT, one kernel call a step.

The forward returns the spikes, the inputs $I_t$ and the neuron's states at the start and
every `CHUNK` steps (`checkpoints`); the backward needs $I$ and those states only. With an
input weight the forward makes $X$ from the input itself and computes $I$ over it. It
computes each chunk's states and spikes again from the state kept before it with one forward
kernel call over the chunk (the same kernel and the same values as the forward's steps),
walks back through it one step at a time, and adds the chunk's share of the weight's
gradient from its spikes. Where the backend has steppers (the C backend) a step sets a few
pointers of a kernel call checked once; elsewhere it calls the backend's functions and copies
their outputs into place.
"""

from __future__ import annotations

import torch

from snnfunc import sparse
from snnfunc._kernel import backends, ops

CHUNK = 16  # steps between the states the forward keeps (the backward's recompute)
ALIGN = {"cpu": 64}  # bytes: where new tensors' data lie (CPU 64; CUDA, and elsewhere, 512)
# The product of the last step's spikes and W reads them where a new tensor would lie: BLAS
# libraries pick their kernels by the data's alignment too (MKL's sums for a [3, 5] float64
# step that lies 120 bytes after the one before it can differ in the last bit), and the loop
# of step functions that defines the layer multiplies new tensors. A step of the spikes that
# is not at a multiple of its device's ALIGN is copied into a new tensor first.


def checkpoints(T, chunk=CHUNK):
    """How many states the forward keeps of each state variable: the initial state, the
    state after every `CHUNK`-th step and after the last (the final state is the last one
    kept). At least 2 for T >= 1, so that `torch.compile` with dynamic shapes need not ask
    whether it is 1."""
    return (T + chunk - 1) // chunk + 1


def _kept_at(t, T, chunk):
    """The index of the kept state that is the state after step `t`, or None."""
    return t // chunk + 1 if (t + 1) % chunk == 0 or t == T - 1 else None


def _step_input(x_t, s, weight, bias, buf, out, sparse_recurrent=False, rec=None):
    """$X_t + W S_{t-1} + b$ into `out`, with the operations of `x + F.linear(s, W, b)`
    (mm or addmm into `buf`, then the add), or with `sparse_recurrent` those of
    `x + snnfunc.sparse.linear(s, W, b)` (`rec`: its steps' function, into `buf`); `s` None
    gives $X_t + b$."""
    if s is None:
        if bias is None:
            if out.data_ptr() != x_t.data_ptr():  # (I_t over X_t: there already)
                out.copy_(x_t)
        else:
            torch.add(x_t, bias, out=out)
    elif sparse_recurrent:
        if rec is not None and buf is not None and s.shape == buf.shape:
            rec(s, buf)
            torch.add(x_t, buf, out=out)
        else:  # another step shape
            torch.add(x_t, sparse.linear(s, weight, bias), out=out)
    elif buf is not None and s.shape == buf.shape:
        if bias is None:
            torch.mm(s, weight.t(), out=buf)
        else:
            torch.addmm(bias, s, weight.t(), out=buf)
        torch.add(x_t, buf, out=out)
    else:  # another step shape
        torch.add(x_t, torch.nn.functional.linear(s, weight, bias), out=out)


# _UNCHECKED: a runner's first step, and each step the loops mark `check` (one a chunk: the
# step that reads or writes a kept state), go through the backend's stepper, which checks
# each tensor against the call the runner was made from; the other steps go through its
# runner, which sets the pointers without checks (about 40 microseconds a step less in
# Python). The loops hand every step views of the same contiguous tensors they made
# themselves (I, the spikes, the kept states, the traces, their own buffers), of one step's
# shape and the call's dtype and device: what the checked steps check holds for the others.


def _forward_runner(x1, state, params, th, scalars, neuron, options, hard):
    """`run(x, states, s, out)`: the neuron's forward kernel on one step `x` `[1, *S]` from
    `states`, the spikes into `s` and the states after it into `out`."""
    backend = backends.BACKENDS[x1.device.type]
    if backend.steppers is not None:
        call = ops.forward_call(x1, state, params, th, scalars, neuron, options, hard, False,
                                False, x1.device.type)
        step, unchecked, once = backend.steppers[0](call), backend.runners[0](call), [True]

        def run(x, states, s, out, check=False):
            if check or once:
                once.clear()
                step(x, states, s, out)
            else:  # (see _UNCHECKED)
                unchecked(x, states, call.params, call.th, s, out)
        return run
    forward, n = backend.forward_fn, len(state)

    def run(x, states, s, out, check=False):
        got = forward(x, states, params, th, scalars, neuron, options, hard, False, False)
        s.copy_(got[0])
        for o, g in zip(out, got[2:2 + n]):
            o.copy_(g)
    return run


def input_current(x_seq, input_weight, sparse_input):
    r"""$X = x W_{in}^\top$ `[T, ..., N]` for the input `x_seq` `[T, ..., M]`: the product of
    `torch.nn.functional.linear`, or with `sparse_input` snnfunc.sparse's (`SpikeLinear`'s)."""
    if sparse_input:
        return sparse.linear(x_seq, input_weight)
    return torch.nn.functional.linear(x_seq, input_weight)


def forward(x_seq, state, s0, weight, bias, params, th, scalars, neuron, options, hard,
            input_weight=None, sparse_input=False, chunk=CHUNK, sparse_recurrent=False):
    """Spikes `[T, ...]`, the inputs $I$ `[T, ...]` and the kept states (`checkpoints(T)`
    of each state variable). With `input_weight`, `x_seq` is the input `[T, ..., M]` and
    $X$ = `input_current(x_seq, ...)`, which $I$ is computed over (one step at a time: $I_t$
    needs $X_t$ only)."""
    if input_weight is not None:
        x_seq = input_current(x_seq, input_weight, sparse_input).contiguous()
        I = x_seq  # the layer's own: I_t over X_t
    else:
        I = x_seq.new_empty(x_seq.shape)
    T, step = x_seq.shape[0], x_seq.shape[1:]
    spikes = x_seq.new_empty(x_seq.shape)
    kept = [p.new_empty((checkpoints(T, chunk), *step)) for p in state]
    for k, p in zip(kept, state):
        k[0].copy_(p)
    st = [k[0] for k in kept]
    pong = [[p.new_empty(step) for p in st] for _ in range(2)]
    buf = x_seq.new_empty(step) if x_seq.dim() == 3 else None
    rec = sparse.linear_steps(weight, bias) if sparse_recurrent and buf is not None else None
    fresh = None  # the last step's spikes where they lie unlike a new tensor (ALIGN)
    xs, I1, S1 = x_seq.unbind(0), I.split(1), spikes.split(1)
    run = None
    s = s0
    align = ALIGN.get(x_seq.device.type, 512)
    for t in range(T):
        if t and s.data_ptr() % align:
            fresh = s.clone() if fresh is None else fresh.copy_(s)
            s = fresh
        _step_input(xs[t], s, weight, bias, buf, I[t], sparse_recurrent, rec)
        if run is None:
            run = _forward_runner(I1[0], st, params, th, scalars, neuron, options, hard)
        j = _kept_at(t, T, chunk)
        out = pong[t % 2] if j is None else [k[j] for k in kept]
        run(I1[t], st, S1[t], out, check=j is not None)
        st, s = out, spikes[t]
    return spikes, I, kept


def _backward_runner(first, params, th, scalars, neuron, options, surrogate, hard,
                     detach_reset, need):
    """`run(x, states, gs, gstates, gx, gst0, gpar)`: the neuron's one-step VJP, `gx` and the
    initial states' `gst0` into place, and the parameters' and threshold's gradients
    (`gpar`, a list of m + 1 tensors, empty where not needed) returned (reused buffers)."""
    backend = backends.BACKENDS[first[0].device.type]
    n, m = len(first[1]), len(params)
    if backend.steppers is not None:
        x, states, gs, gstates = first
        call = ops.backward_call(x, states, params, th, gs, None, None, gstates, scalars,
                                 neuron, options, surrogate, hard, detach_reset, need, [None] * n,
                                 x.device.type)
        step, unchecked, once = backend.steppers[1](call), backend.runners[1](call), [True]
        gpar = [*call.gpar, call.gth]

        def run(x, states, gs, gstates, gx, gst0, check=False):
            if check or once:
                once.clear()
                step(x, states, gs, gstates, gx, gst0, gpar[:m], gpar[m])
            else:  # (see _UNCHECKED)
                unchecked(x, states, call.params, call.th, gs, gstates, gx, gst0, gpar[:m],
                          gpar[m])
            return gpar
        return run
    backward = backend.backward_fn

    def run(x, states, gs, gstates, gx, gst0, check=False):
        got = backward(x, states, params, th, gs, None, None, gstates, scalars, neuron, options,
                       surrogate, hard, detach_reset, need, [None] * n)
        gx.copy_(got[0])
        for o, g in zip(gst0, got[1:1 + n]):
            o.copy_(g)
        return got[1 + n:]
    return run


def _add_weight_grad(g_w, g_I, spikes, groups):
    """`g_w[k] += g_I_k^T S_k` over the steps and rows of group `k` (the rows `[*, N]` of a
    step are `groups` blocks, one per `vmap` member), in `g_w`'s dtype."""
    N = g_I.shape[-1]
    g, s = g_I.to(g_w.dtype), spikes.to(g_w.dtype)
    if groups == 1:  # the rows of g_I where a spike is (snnfunc.sparse's product)
        g_w[0].add_(torch.ops.snnfunc.spike_linear_weight_grad(s.reshape(-1, N), g.reshape(-1, N)))
    else:  # [L, G * B, N] -> [G, L * B, N]
        L = g.shape[0]
        per = lambda t: t.reshape(L, groups, -1, N).transpose(0, 1).reshape(groups, -1, N)  # noqa: E731
        g_w.baddbmm_(per(g).transpose(1, 2), per(s))


def backward(I, state, kept, weight, params, th, scalars, g_spikes, g_states, neuron,
             options, hard, surrogate, detach_reset, detach_recurrent, need, want_w=False,
             groups=1, chunk=CHUNK, reuse=False):
    """BPTT, one step's VJP per kernel call in reverse, chunk by chunk: `[g_I, *g_state0,
    *g_params, g_th, g_w]`, the parameters' and threshold's per neuron and summed over T (empty
    where not needed); with `want_w` the weight's gradient, the sum of `g_I[t + 1]^T S[t]`, per
    group of rows, `[groups, N, N]` in the compute dtype (from the spikes each chunk computes
    again: the forward keeps no spikes), else empty. With `reuse`, `g_I` is written over `I`
    (each step's after its step is done with it): the caller owns `I` and needs it no more."""
    fwd = backends.BACKENDS[I.device.type].forward_fn
    T, n, m = I.shape[0], len(state), len(params)
    C, step = checkpoints(T, chunk), I.shape[1:]
    I, g_spikes = I.contiguous(), g_spikes.contiguous()
    kept = [k.contiguous() for k in kept]  # (a vmap rule may hand them expanded)
    g_I = I if reuse else I.new_empty(I.shape)
    gtmp = I.new_empty((1, *I.shape[1:])) if reuse else None  # a step's g_I, then over I_t
    g_st = [None if g is None else g[C - 1].contiguous() for g in g_states]
    # the kept states before the last are outputs too; their cotangents are usually absent
    # or zero (rnn returns the last state only): then nothing to add at their steps
    g_before = any(g is not None and bool(g[:-1].any()) for g in g_states)
    I1, gs1, gx1, gs_steps = I.split(1), g_spikes.split(1), g_I.split(1), g_spikes.unbind(0)
    pong = [[p.new_empty(step) for p in state] for _ in range(2)]
    gbuf = I.new_empty(step) if I.dim() == 3 else None
    need_op = [*need, *[True] * n]  # every step's state cotangent carries on to the one before
    acc = [None] * (m + 1)
    N = I.shape[-1]
    g_w = I.new_zeros((groups, N, N), dtype=state[0].dtype) if want_w else I.new_empty(0)
    runs = {}  # one runner for the last step (its state cotangents may be absent), one after
    for c in range(C - 2, -1, -1):
        t0, t1 = c * chunk, min((c + 1) * chunk, T)
        start = [k[c] for k in kept]
        again = fwd(I[t0:t1], start, params, th, scalars, neuron, options, hard, False, True)
        traces = again[2 + n:2 + 2 * n]
        for t in range(t1 - 1, t0 - 1, -1):
            if t == T - 1 or detach_recurrent:
                gs = gs1[t]
            elif gbuf is not None:  # S_t feeds I_{t+1} = X + S_t W^T + b
                gs = torch.addmm(gs_steps[t], g_I[t + 1], weight, out=gbuf).unsqueeze(0)
            else:
                gs = (gs_steps[t] + g_I[t + 1] @ weight).unsqueeze(0)
            j = _kept_at(t, T, chunk)
            if g_before and t < T - 1 and j is not None:
                g_st = [a if g is None else a + g[j] for a, g in zip(g_st, g_states)]
            st = start if t == t0 else [tr[t - t0 - 1] for tr in traces]
            key = t == T - 1
            if key not in runs:
                # (made on copies of this step's states: a runner's call keeps its tensors,
                # and these are views of the chunk's traces, which go when the chunk is done)
                runs[key] = _backward_runner((I1[t], [p.clone() for p in st], gs, g_st), params,
                                             th, scalars, neuron, options, surrogate, hard,
                                             detach_reset, need_op)
            out = pong[t % 2]
            grads = runs[key](I1[t], st, gs, g_st, gx1[t] if gtmp is None else gtmp, out,
                              check=t == t0)
            if gtmp is not None:
                gx1[t].copy_(gtmp)
            g_st = out
            for j in range(m + 1):
                if need[j]:
                    acc[j] = grads[j].clone() if acc[j] is None else acc[j].add_(grads[j])
        end = min(t1, T - 1)  # S_t with t < T - 1 feeds I_{t+1}
        if want_w and end > t0:
            _add_weight_grad(g_w, g_I[t0 + 1:end + 1], again[0][:end - t0], groups)
        again = traces = start = None  # let this chunk's go before the next one's are computed
    if g_before:  # the first kept state is the initial state
        g_st = [a if g is None else a + g[0] for a, g in zip(g_st, g_states)]
    return [g_I, *g_st, *(I.new_empty(0) if a is None else a for a in acc), g_w]
