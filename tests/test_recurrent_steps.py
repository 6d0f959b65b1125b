"""The recurrent operator's time loops over many steps: the forward keeps the states at the
start and every CHUNK steps, the backward computes each chunk's states again from them; with
the C backend's steppers (a kernel call checked once, its pointers set every step) and with
the backend's plain functions, spikes and states equal the loop of step functions bit for
bit and gradients to rounding."""

import contextlib

import pytest
import torch
from test_recurrent import FAST, loop

import snnfunc
from snnfunc import surrogate as S
from snnfunc._kernel import backends, ops
from snnfunc.recurrent import RecurrentState, rnn, steps
from snnfunc.recurrent import operator as R

B, N = 3, 6
LONG = 2 * steps.CHUNK + 5


@pytest.fixture(params=["steppers", "backend functions"])
def path(request, monkeypatch):
    backend = backends.BACKENDS["cpu"]
    assert backend.steppers is not None  # the C backend has them
    if request.param == "backend functions":
        monkeypatch.setattr(backend, "_steppers", None)
    return request.param


def parts(u):
    return [u] if isinstance(u, torch.Tensor) else list(u)


def run_both(name, T, state=None, detach=False, seed=0):
    multi, step, make = FAST[name]
    torch.manual_seed(seed)
    kw = make()
    x = (4.0 * torch.rand(T, B, N, dtype=torch.float64)).requires_grad_()
    w = (0.6 * torch.randn(N, N, dtype=torch.float64)).requires_grad_()
    b = (0.1 * torch.randn(N, dtype=torch.float64)).requires_grad_()
    out = rnn(x, state, weight=w, bias=b, neuron=multi, detach_recurrent=detach, impl="op", **kw)
    ref = loop(x, step, w, b, *(state or (None, None)), detach=detach, **kw)
    wrt = [x, w, b, *(p for p in kw.values() if isinstance(p, torch.Tensor))]
    if state is not None:
        wrt += [*parts(state.neuron), state.spikes]
    return out, ref, wrt


def check(out, ref, wrt):
    assert torch.equal(out.spikes, ref[0]) and out.spikes.mean() < 1
    assert out.spikes.shape[0] < steps.CHUNK or out.spikes.mean() > 0
    assert all(torch.equal(a, c) for a, c in zip(parts(out.state.neuron), parts(ref[1])))
    g = torch.Generator().manual_seed(1)
    r = torch.randn(out.spikes.shape, generator=g, dtype=out.spikes.dtype)
    loss = lambda s, u: (s * r).sum() + sum(p.sum() for p in parts(u))  # noqa: E731
    got = torch.autograd.grad(loss(out.spikes, out.state.neuron), wrt, allow_unused=True)
    want = torch.autograd.grad(loss(ref[0], ref[1]), wrt, allow_unused=True)
    for a, c in zip(got, want):
        if c is None:
            assert a is None or not a.abs().sum()
        else:
            torch.testing.assert_close(a, c)


@pytest.mark.parametrize("name", ["alif", "user neuron", "cuba_lif per-neuron", "plif sigmoid"])
@pytest.mark.parametrize("T", [1, 2, steps.CHUNK, steps.CHUNK + 1, LONG])
def test_every_chunking_equals_the_loop(name, T, path):
    check(*run_both(name, T))


@pytest.mark.parametrize("detach", [False, True], ids=["", "detach_recurrent"])
def test_long_sequence_from_a_given_state(detach, path):
    torch.manual_seed(7)
    u0 = snnfunc.ALIFState(torch.rand(B, N, dtype=torch.float64, requires_grad=True),
                           torch.rand(N, dtype=torch.float64, requires_grad=True))
    s0 = (torch.rand(B, N, dtype=torch.float64) < 0.5).double().requires_grad_()
    check(*run_both("alif", LONG, RecurrentState(u0, s0), detach))


def test_kept_states_are_the_loops_and_carry_their_cotangents(path):
    """The operator's kept states (the initial one, after every CHUNK-th step, the final one)
    equal the loop's states there bit for bit; a loss on them gets the loop's gradients."""
    torch.manual_seed(8)
    T = LONG
    x = (2.0 * torch.rand(T, B, N, dtype=torch.float64)).requires_grad_()
    w = (0.6 * torch.randn(N, N, dtype=torch.float64)).requires_grad_()
    v0 = torch.rand(B, N, dtype=torch.float64, requires_grad=True)
    kw = dict(tau=2.0, beta=0.4, surrogate=S.ATan())
    prepared, why = R.prepare(snnfunc.alif, x, kw)
    assert why is None
    a0 = torch.zeros(B, N, dtype=torch.float64)
    spikes, kept = R.run(prepared, x, [v0, a0], None, w, None, False)
    assert [k.shape[0] for k in kept] == [steps.checkpoints(T)] * 2 == [4, 4]
    u, s, want_spikes, states = snnfunc.ALIFState(v0, a0), None, [], [snnfunc.ALIFState(v0, a0)]
    for t in range(T):
        i = x[t] if s is None else x[t] + torch.nn.functional.linear(s, w)
        s, u = snnfunc.alif_step(i, u, **kw)
        want_spikes.append(s)
        if (t + 1) % steps.CHUNK == 0 or t == T - 1:
            states.append(u)
    assert torch.equal(spikes, torch.stack(want_spikes))
    for k, name in enumerate(("v", "a")):
        assert torch.equal(kept[k], torch.stack([getattr(st, name) for st in states]))
    r = torch.randn(kept[0].shape, dtype=torch.float64)
    got = torch.autograd.grad((kept[0] * r).sum() + kept[1].sum(), [x, w, v0])
    want = torch.autograd.grad((torch.stack([st.v for st in states]) * r).sum()
                               + torch.stack([st.a for st in states]).sum(), [x, w, v0])
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c)


def test_a_stepper_refuses_tensors_unlike_its_calls():
    x = 3 * torch.rand(1, B, N)
    one, sc = torch.ones(()), torch.tensor([0.0], dtype=torch.float64)
    call = ops.forward_call(x, [torch.zeros(B, N)], [torch.tensor(2.0)], one, sc, "snnfunc:lif",
                            "decay_input=1", True, False, False, "cpu")
    step = backends.BACKENDS["cpu"].steppers[0](call)
    s, out = torch.empty(1, B, N), [torch.empty(B, N)]
    step(x, [torch.zeros(B, N)], s, out)
    assert torch.equal(s, snnfunc.lif(x, tau=2.0).spikes) and 0 < s.mean() < 1
    for bad in (torch.rand(1, B, N + 1), torch.rand(1, B, N, dtype=torch.float64),
                torch.rand(1, N, B).transpose(1, 2), None):
        with pytest.raises(ValueError, match="a step must have the tensors"):
            step(bad, [torch.zeros(B, N)], s, out)
    with pytest.raises(ValueError, match="a step must have the tensors"):
        step(x, [torch.zeros(B, 1).expand(B, N)], s, out)


def test_the_loops_check_a_step_a_chunk_and_run_the_others_unchecked(monkeypatch):
    backend = backends.BACKENDS["cpu"]
    made_steppers, made_runners = backend._steppers, backend._runners
    calls = {"checked": 0, "unchecked": 0}

    def counting(make, kind):
        def wrap(c):
            f = make(c)

            def counted(*args):
                calls[kind] += 1
                return f(*args)
            return counted
        return wrap
    monkeypatch.setattr(backend, "_steppers", lambda: tuple(
        counting(m, "checked") for m in made_steppers()))
    monkeypatch.setattr(backend, "_runners", lambda: tuple(
        counting(m, "unchecked") for m in made_runners()))
    check(*run_both("alif", LONG))
    C = steps.checkpoints(LONG)
    # forward: the first step and each step that writes a kept state (C - 1); backward: the
    # first step of each chunk (C - 1) and the first step of each of its two runners (the
    # last step's, whose state cotangents may be absent, and the others')
    assert calls["checked"] == 1 + (C - 1) + (C - 1) + 2, calls
    assert calls["unchecked"] == 2 * LONG - calls["checked"], calls


def test_steps_of_many_neurons_run_on_torchs_threads_with_the_same_bits(monkeypatch):
    from snnfunc._backends.c import host

    rows = -(-host.PARALLEL_FROM // 64)  # one step of PARALLEL_FROM values at least
    torch.manual_seed(0)
    x = (4.0 * torch.rand(5, rows, 64)).requires_grad_()
    w = (0.1 * torch.randn(64, 64)).requires_grad_()
    chosen = []
    threads_for = host.threads_for
    monkeypatch.setattr(host, "threads_for", lambda *a: chosen.append(threads_for(*a))
                        or chosen[-1])
    runs = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for least in (host.PARALLEL_FROM, 10 ** 12):  # torch's threads, then one
            monkeypatch.setattr(host, "PARALLEL_FROM", least)
            out = rnn(x, weight=w, tau=2.0, surrogate=S.ATan(), impl="op")
            g = torch.autograd.grad(out.spikes.sum() + out.state.neuron.sum(), (x, w))
            runs.append((out.spikes, out.state.neuron, *g))
            if least != 10 ** 12:
                assert set(chosen) == {2}, chosen  # every step's kernels on both threads
                chosen.clear()
    finally:
        torch.set_num_threads(before)
    assert set(chosen) == {1}, chosen
    assert 0 < runs[0][0].mean() < 1
    for a, c in zip(runs[0], runs[1]):
        assert torch.equal(a, c)


def test_packed_spikes_packs_the_spikes_after_the_layer_and_keeps_its_gradients():
    """Under packed_spikes() the spikes a Linear after the layer saves are bits (the layer
    itself saves none), its state holds no view of them, and the gradients are the same bit
    for bit."""
    torch.manual_seed(9)
    layer = snnfunc.nn.Recurrent(N, snnfunc.alif, tau=2.0, beta=0.4, surrogate=S.ATan())
    fc = torch.nn.Linear(N, 2)
    x = 4.0 * torch.rand(LONG, B, N)

    def grads(packed):
        layer.reset()
        with snnfunc.memory.packed_spikes() if packed else contextlib.nullcontext() as stats:
            spikes = layer(x)
            loss = fc(spikes).square().sum()
        assert layer.state.spikes._base is None  # not a view of the [T, B, N] spikes
        return torch.autograd.grad(loss, [layer.weight, layer.bias, fc.weight]), stats

    plain, _ = grads(False)
    packed, stats = grads(True)
    assert stats.spike_bytes_unpacked == LONG * B * N * 4  # fc's
    assert stats.spike_bytes == -(-LONG * B * N // 8)  # 1 bit a spike
    assert all(torch.equal(a, c) for a, c in zip(plain, packed))


def test_the_layer_saves_its_inputs_not_its_spikes():
    """The fused layer keeps I [T, B, N], the states every CHUNK steps and its parameters for
    the backward, which computes the spikes again: no [T, B, N] tensor but I."""
    layer = snnfunc.nn.Recurrent(N, snnfunc.alif, tau=2.0, beta=0.4, surrogate=S.ATan())
    x = 4.0 * torch.rand(LONG, B, N)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        spikes = layer(x)
    full = [t for t in saved if t.shape == spikes.shape]
    assert len(full) == 1 and not torch.equal(full[0], spikes)  # I, not the spikes
    assert sum(t.numel() for t in saved) < 1.5 * spikes.numel()


@pytest.mark.parametrize("scale", [4.0, 1.2])  # many spikes (ATen's product), few (sparse's)
def test_the_weights_gradient_over_chunks_per_sample_and_per_member(scale, monkeypatch):
    """The weight's gradient, summed chunk by chunk from the spikes computed again: equal to
    the loop's over several chunks, and under `vmap(grad)` over members that have a batch of
    their own (groups of rows), to a loop of grads; with an initial spike tensor too."""
    from torch.func import grad, vmap

    from snnfunc import sparse

    runs, fwd, weight_grad = sparse.KERNELS["cpu"]
    ran = []  # the sparse kernel's results (None: it handed the product to ATen)
    monkeypatch.setitem(sparse.KERNELS, "cpu",
                        (runs, fwd, lambda x, g: ran.append(weight_grad(x, g)) or ran[-1]))
    torch.manual_seed(11)
    kw = dict(tau=2.0, beta=0.4, surrogate=S.ATan())
    x = scale * torch.rand(2, LONG, B, N, dtype=torch.float64)
    rate = rnn(x[0], weight=torch.zeros(N, N, dtype=torch.float64), neuron=snnfunc.alif,
               **kw).spikes.mean()
    assert (rate > 0.2) if scale > 2 else (0 < rate < 0.15)
    w = 0.3 * torch.randn(N, N, dtype=torch.float64)
    s0 = (torch.rand(B, N) < 0.5).double()

    def loss(x, w, impl):
        out = rnn(x, RecurrentState(None, s0), weight=w, neuron=snnfunc.alif, impl=impl, **kw)
        g = torch.linspace(-1, 1, out.spikes.numel(), dtype=x.dtype)
        return (out.spikes.reshape(-1) * g).sum()

    per_member = vmap(grad(loss, argnums=1), in_dims=(0, None, None))(x, w, "op")
    for v in range(2):
        want = grad(loss, argnums=1)(x[v], w, "loop")
        assert want.abs().sum() > 0
        torch.testing.assert_close(grad(loss, argnums=1)(x[v], w, "op"), want)
        torch.testing.assert_close(per_member[v], want)
    assert ran and (any(r is None for r in ran) if scale > 2
                    else all(r is not None for r in ran))
    with pytest.raises(ValueError, match="groups"):
        R.rnn_backward(x[0], [torch.zeros(B, N, dtype=torch.float64)] * 2,
                       [x[0, :4]] * 2, w, [], torch.ones((), dtype=torch.float64),
                       torch.zeros(2, dtype=torch.float64), x[0], [None, None], "snnfunc:alif",
                       "", True, "", False, False, [False], True, 2, steps.CHUNK)


def test_the_backward_writes_g_I_over_I_only_where_nothing_reads_I_again(monkeypatch):
    """A plain backward writes the input's gradient over the saved I (one [T, B, N] tensor
    less); with `retain_graph` (I read again by a second backward) or `create_graph` it does
    not. The gradients are the same bit for bit either way."""
    layer = snnfunc.nn.Recurrent(N, snnfunc.alif, tau=2.0, beta=0.4, surrogate=S.ATan())
    x = (4.0 * torch.rand(LONG, B, N)).requires_grad_()
    cot = torch.randn(LONG, B, N)
    reused = []
    backward = steps.backward
    monkeypatch.setattr(steps, "backward",
                        lambda *a, reuse=False, **k: reused.append(reuse) or backward(
                            *a, reuse=reuse, **k))

    def loss():
        layer.reset()
        return (layer(x) * cot).sum()

    plain = torch.autograd.grad(loss(), [x, layer.weight, layer.bias])
    kept = loss()
    first = torch.autograd.grad(kept, [x, layer.weight, layer.bias], retain_graph=True)
    second = torch.autograd.grad(kept, [x, layer.weight, layer.bias])
    created = torch.autograd.grad(loss(), [x, layer.weight, layer.bias], create_graph=True)
    assert reused == [True, False, True, False]
    for got in (first, second, created):
        assert all(torch.equal(a, c) for a, c in zip(plain, got))
    assert plain[0].abs().sum() > 0


def test_the_spikes_fed_back_are_multiplied_where_a_new_tensor_lies():
    """A step of [3, 5] float64 spikes lies 120 bytes after the one before it in the layer's
    spike tensor; MKL's product of a step so placed can differ in the last bit from that of a
    new tensor, which the loop of step functions multiplies (on a Zen 1 EPYC, without the
    copy, three of these twelve seeds give states a bit apart). Copied to a new tensor first, spikes
    and states are the loop's bit for bit."""
    for seed in range(12):
        torch.manual_seed(seed)
        x = 4.0 * torch.rand(40, 3, 5, dtype=torch.float64)
        w = 0.6 * torch.randn(5, 5, dtype=torch.float64)
        b = 0.1 * torch.randn(5, dtype=torch.float64)
        out = rnn(x, weight=w, bias=b, impl="op", tau=2.0)
        spikes, v = loop(x, snnfunc.lif_step, w, b, tau=2.0)
        assert torch.equal(out.spikes, spikes) and 0 < spikes.mean() < 1
        assert torch.equal(out.state.neuron, v), seed


def test_the_chunk_is_an_argument_of_the_operators():
    """`chunk` (steps between kept states) travels as an argument of both operators, so that
    a compiled graph names it (a cached graph from another chunk length does not match): any
    chunk gives the same spikes, states and gradients; a bad one, or kept states of another
    chunk, is refused before any work."""
    torch.manual_seed(12)
    x = 4.0 * torch.rand(LONG, B, N, dtype=torch.float64)
    w = 0.6 * torch.randn(N, N, dtype=torch.float64)
    prepared, _ = R.prepare(snnfunc.alif, x, dict(tau=2.0, beta=0.4, surrogate=S.ATan()))
    r = prepared.record
    zeros = [torch.zeros(B, N, dtype=torch.float64)] * 2
    common = (prepared.params, prepared.th, prepared.scalars)
    g = torch.randn(LONG, B, N, dtype=torch.float64)
    need = [False] * (len(prepared.params) + 1)  # no parameter or threshold gradients
    runs = {}
    for chunk in (steps.CHUNK, 5, 1, LONG + 3):
        spikes, I, kept = R.rnn_forward(x, zeros, None, w, None, *common, r.neuron, r.options,
                                        r.hard, None, False, chunk, False)
        assert [k.shape[0] for k in kept] == [steps.checkpoints(LONG, chunk)] * 2
        grads = R.rnn_backward(I, zeros, kept, w, *common, g, [None, None], r.neuron,
                               r.options, r.hard, r.surrogate, r.detach, False, need, True, 1,
                               chunk)
        runs[chunk] = (spikes, kept[0][-1], kept[1][-1], grads[0], grads[-1])
    first = runs[steps.CHUNK]
    assert 0 < first[0].mean() < 1
    for chunk, got in runs.items():
        assert all(torch.equal(a, c) for a, c in zip(got[:3], first[:3])), chunk
        for a, c in zip(got[3:], first[3:]):
            torch.testing.assert_close(a, c)
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        R.rnn_forward(x, zeros, None, w, None, *common, r.neuron, r.options, r.hard, None,
                      False, 0, False)
    with pytest.raises(ValueError, match="rnn_backward: states must hold"):
        R.rnn_backward(I, zeros, kept, w, *common, g, [None, None], r.neuron, r.options,
                       r.hard, r.surrogate, r.detach, False, need, True, 1, 5)
