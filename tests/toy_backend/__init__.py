"""A toy backend, to show (and test) that a backend is one folder and one registration: its
kernels run each neuron's definition step by step in torch, forward and (with autograd)
backward. `install()` registers it for CPU tensors in place of the C backend and returns a
function that puts the C backend back."""

import torch

from snnfunc import surrogate as _sg
from snnfunc._core.registry import lookup
from snnfunc._kernel import backends, ops, surrogates

CALLS = {"forward": 0, "backward": 0}


def _surrogate(token, scalars):
    """The surrogate a token names, its run-time fields from the scalars."""
    cls, fixed, runtime, _ = surrogates.decode(token)
    values = scalars[1:].tolist()
    return cls(**fixed, **dict(zip(runtime, values)))


def _run(c, params, th, states, x, surrogate):
    """The definition step by step: spikes, h, the final states and their traces."""
    nrn = lookup(c.neuron.name)
    v_reset = c.scalars[0].item() if c.hard else None
    names = dict(zip(nrn.parameters, params))
    spikes, hs, traces = [], [], []
    for x_t in x.unbind(0):
        s, h, states = nrn.step_values(x_t.to(states[0].dtype), states, names, v_threshold=th,
                                       v_reset=v_reset, surrogate=surrogate,
                                       detach_reset=getattr(c, "detach", False), opts=c.opts)
        spikes.append(s)
        hs.append(h)
        traces.append(states)
    return (torch.stack(spikes).to(x.dtype), torch.stack(hs).to(x.dtype), states,
            [torch.stack(t) for t in zip(*traces)])


def forward_kernel(c):
    CALLS["forward"] += 1
    compute = c.out[0].dtype
    params = [p.to(compute) for p in c.params]
    with torch.no_grad():
        s, h, final, traces = _run(c, params, c.th.to(compute), list(c.states), c.x,
                                   _sg.Sigmoid())
    c.s.copy_(s)
    if c.want_h:
        c.h.copy_(h)
    for out, v in zip(c.out, final):
        out.copy_(v.expand(out.shape))
    if c.want_states:
        for out, tr in zip(c.tr, traces):
            out.copy_(tr.expand(out.shape))


def _autograd_back_on():
    """Autograd records again inside an op's implementation (which runs below autograd)."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for name in ("AutogradFunctionality", "AutogradOther", "AutogradNestedTensor"):
        key = getattr(torch._C.DispatchKey, name, None)
        if key is not None:
            exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


def backward_kernel(c):
    CALLS["backward"] += 1
    compute = c.gx.dtype if c.gx.dtype in (torch.float32, torch.float64) else torch.float32
    surrogate = _surrogate(c.surrogate, c.scalars)
    with _autograd_back_on(), torch.enable_grad():
        step = c.x.shape[1:]
        x = c.x.detach().to(compute).requires_grad_(True)
        states = [t.detach().expand(step).clone().requires_grad_(True) for t in c.states]
        params = [t.detach().to(compute).expand(step).clone().requires_grad_(True)
                  for t in c.params]
        th = c.th.detach().to(compute).expand(step).clone().requires_grad_(True)
        s, h, final, traces = _run(c, params, th, states, x, surrogate)
        outs, cots = [], []
        for out, cot in [(s, c.gs), (h, c.gh), *zip(final, c.gstates), *zip(traces, c.gtraces)]:
            if cot is not None:
                outs.append(out)
                cots.append(cot.to(out.dtype))
        grads = torch.autograd.grad(outs, [x, *states, *params, th], cots, allow_unused=True)
    zero = lambda g, like: torch.zeros_like(like) if g is None else g  # noqa: E731
    c.gx.copy_(zero(grads[0], x))
    n, m = len(states), len(params)
    for k, out in enumerate(c.gst0):
        if out.numel():
            out.copy_(zero(grads[1 + k], states[k]))
    for k, out in enumerate(c.gpar):
        if out.numel():
            out.copy_(zero(grads[1 + n + k], params[k]))
    if c.gth.numel():
        c.gth.copy_(zero(grads[1 + n + m], th))


forward_op, backward_op, forward_fn, backward_fn = ops.define(
    "_toy", forward_kernel, backward_kernel, device_type="cpu")


def install():
    """Registers the toy backend for CPU tensors; returns what puts the previous one back."""
    previous = backends.BACKENDS["cpu"]
    backends.register("cpu", backends.Backend(
        "toy", lambda: (forward_op, backward_op, forward_fn, backward_fn), lambda: None))
    return lambda: backends.register("cpu", previous)
