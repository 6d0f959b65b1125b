"""snnfunc.memory: packed spikes (1 bit per saved spike, gradients bit for bit unchanged),
checkpointed chunks (exact BPTT) and truncated BPTT."""

import contextlib
import copy
import math

import pytest
import torch

import snnfunc
from snnfunc import memory
from snnfunc.memory import PackedStats
from snnfunc import nn as snn


def _stack(N=32):
    torch.manual_seed(0)
    return torch.nn.Linear(N, N), torch.nn.Linear(N, N)


def _net(fc1, fc2, impl):
    def net(x):
        s1 = snnfunc.lif(fc1(x), tau=2.0, v_threshold=0.5, impl=impl).spikes
        return snnfunc.plif(fc2(s1), w=0.5, v_threshold=0.3, impl=impl).spikes
    return net


def _grads(fn, params, ctx):
    with ctx as stats:
        loss = fn()
    return torch.autograd.grad(loss, params), stats


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_packed_spikes_gradients_are_bit_for_bit_and_spikes_take_one_bit(impl, dtype):
    T, B, N = 12, 4, 32
    fc1, fc2 = (m.to(dtype) for m in _stack(N))
    params = [*fc1.parameters(), *fc2.parameters()]
    x = torch.rand(T, B, N, dtype=dtype)
    weight = torch.randn(T, B, N, dtype=dtype)
    net = _net(fc1, fc2, impl)
    fn = lambda: (net(x) * weight).sum()  # noqa: E731
    plain, _ = _grads(fn, params, contextlib.nullcontext())
    packed, stats = _grads(fn, params, memory.packed_spikes())
    assert all(torch.equal(a, b) for a, b in zip(plain, packed))
    assert stats.spike_bytes > 0
    assert stats.spike_bytes * 8 * torch.finfo(dtype).bits // 8 <= stats.spike_bytes_unpacked + 64
    if impl == "auto" and dtype != torch.float16:
        # the stack saves each neuron's float input and the packed spikes, nothing else per step
        steps = 2 * T * B * N
        size = torch.finfo(dtype).bits // 8
        per_step = (stats.saved_bytes - x.numel() * size - fc2.weight.numel() * size
                    - weight.numel() * size) / steps
        assert per_step <= size + 0.25, per_step


@pytest.mark.parametrize("words", [True, False], ids=["8 bytes a word", "a byte at a time"])
@pytest.mark.parametrize("n", [1, 13, memory._CHUNK_BITS, 2 * memory._CHUNK_BITS + 13])
def test_bits_are_packed_a_chunk_at_a_time_as_numpy_packs_them(n, words, monkeypatch):
    """Spikes pack into the bytes numpy's packbits (little bit order) makes, a chunk of
    `_CHUNK_BITS` at a time (the last one short), and unpack to the same values; on a
    little-endian machine 8 bytes a word, elsewhere a byte at a time (both run here)."""
    np = pytest.importorskip("numpy", reason="numpy's packbits is the reference")
    monkeypatch.setattr(memory, "_LITTLE", words and memory._LITTLE)
    torch.manual_seed(n)
    for dtype in (torch.float32, torch.float16):
        spikes = (torch.rand(n) < 0.3).to(dtype)
        packed, count = memory._pack_bits(spikes)
        want = np.packbits(spikes.numpy() != 0, bitorder="little")
        assert count == n and np.array_equal(packed.numpy(), want)
        assert torch.equal(memory._unpack_bits(packed, n, (n,), dtype), spikes)
    grid = (torch.rand(3, 5, 7) < 0.5).float().transpose(0, 2)  # a view, not contiguous
    packed, count = memory._pack_bits(grid)
    assert torch.equal(memory._unpack_bits(packed, count, grid.shape, grid.dtype), grid)


def test_packed_spikes_covers_conv_pooling_matmul_and_adapters():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 4, 3, padding=1)
    lin = torch.nn.Linear(4 * 4 * 4, 5)
    node1 = snn.PLIFNode(step_mode="m", v_threshold=0.4)
    node2 = snn.LIFNode(2.0, step_mode="s", v_threshold=0.2)
    x = torch.rand(6, 3, 2, 8, 8)
    params = [*conv.parameters(), *lin.parameters(), node1.w]

    def fn():
        snn.reset_net(node1), snn.reset_net(node2)
        s = node1(snn.TimeDistributed(conv)(x))
        s = snn.TimeDistributed(torch.nn.AvgPool2d(2))(s)
        s = lin(s.flatten(2))
        out = torch.stack([node2(st) for st in s])
        return (out @ torch.randn(5, 3, generator=torch.Generator().manual_seed(1))).sum()

    plain, _ = _grads(fn, params, contextlib.nullcontext())
    packed, stats = _grads(fn, params, memory.packed_spikes())
    assert all(torch.equal(a, b) for a, b in zip(plain, packed))
    assert stats.spike_bytes * 32 <= stats.spike_bytes_unpacked + 32 * 64


def test_packed_spikes_as_a_decorator_and_under_transforms_and_compile():
    fc1, fc2 = _stack(8)
    x = torch.rand(5, 3, 8)
    net = _net(fc1, fc2, "auto")

    @memory.packed_spikes()
    def loss(x):
        return net(x).sum() + snnfunc.lif(x).spikes.sum()

    g_plain = torch.autograd.grad(net(x).sum() + snnfunc.lif(x).spikes.sum(), fc1.weight)
    assert torch.equal(torch.autograd.grad(loss(x), fc1.weight)[0], g_plain[0])
    # vmap runs under it (packing nothing of its own); torch.func.grad refuses any saved-tensor
    # hooks (torch's limitation, documented)
    f = lambda x: snnfunc.lif(x, tau=2.0).spikes  # noqa: E731
    with memory.packed_spikes():
        batched = torch.func.vmap(f, in_dims=1, out_dims=1)(x)
        with pytest.raises(RuntimeError, match="saved tensor hooks"):
            torch.func.grad(lambda x: f(x).sum())(x)
    assert torch.equal(batched, f(x))


@pytest.mark.compile
def test_packed_spikes_around_a_compiled_network():
    fc1, fc2 = _stack(8)
    x = torch.rand(5, 3, 8)
    compiled = torch.compile(_net(fc1, fc2, "auto"), fullgraph=True)
    plain = torch.autograd.grad(compiled(x).sum(), fc1.weight)[0]
    with memory.packed_spikes():
        loss = compiled(x).sum()
    assert torch.equal(torch.autograd.grad(loss, fc1.weight)[0], plain)


def _fn(w):
    def fn(x, v):
        out = snnfunc.plif(x * 2.0, v, w=w)
        return out.spikes, out.v
    return fn


@pytest.mark.parametrize("chunk", [1, 3, 8, 20])
def test_checkpointed_chunks_are_exact_bptt(chunk):
    x = torch.rand(8, 4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.full((6,), 0.4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(8, 4, 6, dtype=torch.float64)
    whole, v = _fn(w)(x, None)
    want = torch.autograd.grad((whole * weight).sum() + v.sum(), (x, w))
    y, v2 = memory.checkpointed(_fn(w), x, None, chunk=chunk)
    assert torch.equal(y, whole) and torch.equal(v2, v)
    got = torch.autograd.grad((y * weight).sum() + v2.sum(), (x, w))
    for a, b in zip(got, want):  # equal up to the order of the sum over chunks
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


def test_truncated_bptt_detaches_between_chunks():
    x = torch.rand(9, 2, 5, dtype=torch.float64)
    w = torch.full((5,), 0.4, dtype=torch.float64, requires_grad=True)
    got = []
    for y in memory.truncated_bptt(_fn(w), x, None, chunk=4):
        got.append(torch.autograd.grad(y.sum(), w)[0])
    want, v = [], None
    for xc in x.split(4):
        y, v = _fn(w)(xc, v)
        want.append(torch.autograd.grad(y.sum(), w)[0])
        v = v.detach()
    assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True])
def test_chunk_must_be_a_positive_int(chunk):
    with pytest.raises(ValueError, match="chunk"):
        memory.checkpointed(_fn(0.5), torch.rand(4, 3), chunk=chunk)
    with pytest.raises(ValueError, match="chunk"):
        next(memory.truncated_bptt(_fn(0.5), torch.rand(4, 3), chunk=chunk))


# --------------------------------------------------------------------------- layers that save less


def _bits(t):
    return t.view({torch.float32: torch.int32, torch.float64: torch.int64}[t.dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape,k,layout", [
    ((5, 3, 28, 28), 2, "contiguous"), ((7, 2, 29, 31), 3, "contiguous"),
    ((70, 2, 8, 8), 2, "contiguous"), ((3, 9, 9), 2, "contiguous"),
    ((5, 3, 28, 28), 2, "channels-last"), ((7, 2, 29, 31), 3, "channels-last"),
    ((70, 2, 8, 8), 2, "channels-last")])
@pytest.mark.parametrize("kind", ["random", "spikes", "ties and nan", "edge values"])
@pytest.mark.parametrize("path", ["C", "torch"])
def test_max_pool_is_torch_bit_for_bit_and_saves_one_byte_per_output(dtype, shape, k, kind, path,
                                                                      layout, monkeypatch):
    """Both paths (the C kernel, and torch ops where it does not run) equal ATen's pool, and
    keep a channels-last input's layout (read in place: outputs and gradients channels-last,
    as ATen's are)."""
    if path == "torch":
        monkeypatch.delitem(memory.POOL_KERNELS, "cpu")
    torch.manual_seed(0)
    x = torch.rand(shape, dtype=dtype)
    if kind == "spikes":
        x = (x > 0.7).to(dtype)
    elif kind == "ties and nan":
        x = torch.round(x * 3)
        x.view(-1)[5] = float("nan")
    elif kind == "edge values":  # +-0 ties, infinities, several NaN in a window
        pool = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1.0], dtype=dtype)
        x = pool[torch.randint(len(pool), shape)]
    pooled = torch.nn.functional.max_pool2d(x, k).shape
    g = torch.randn(pooled, dtype=dtype)
    g[g.abs() < 0.3] = -0.0  # signed zeros reach the input's gradient as torch's do
    if layout == "channels-last":
        x, g = (t.contiguous(memory_format=torch.channels_last) for t in (x, g))
        assert not x.is_contiguous()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = torch.nn.functional.max_pool2d(a, k)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        got = memory.MaxPool2d(k, rows=4)(b)
    assert torch.equal(_bits(got.detach()), _bits(want.detach()))
    assert got.stride() == want.stride()
    want.backward(g)
    got.backward(g)
    assert torch.equal(_bits(b.grad), _bits(a.grad))
    assert b.grad.stride() == a.grad.stride() == x.stride()
    assert [(t.dtype, t.numel()) for t in saved] == [(torch.uint8, want.numel())]
    assert saved[0].stride()[-want.dim():] == want.stride()  # offsets laid out as the output


def test_max_pool_under_packed_spikes_and_compile():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.rand(6, 2, 3, 8, 8, requires_grad=True)
    wrt = [x, *conv.parameters()]

    def net(pool, x):
        s = snnfunc.lif(x, tau=2.0, v_threshold=0.3).spikes  # [T, B, 3, 8, 8]
        return conv(pool(s.flatten(0, 1))).square().sum()

    want = torch.autograd.grad(net(torch.nn.MaxPool2d(2), x), wrt)
    with memory.packed_spikes() as stats:
        loss = net(memory.MaxPool2d(2), x)
    got = torch.autograd.grad(loss, wrt)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert stats.spike_bytes_unpacked == 6 * 2 * 3 * 4 * 4 * 4  # the pooled spikes conv saves, packed
    compiled = torch.compile(lambda x: net(memory.MaxPool2d(2), x))
    got = torch.autograd.grad(compiled(x), wrt)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_a_channels_last_network_keeps_its_layout_through_pooling_packing_and_compile():
    """Channels-last steps stay channels-last through the neuron, `MaxPool2d` (no copy at its
    boundary) and the packing of the spikes the convolution saves (packed in memory order,
    unpacked with the same strides), eagerly and compiled, with ATen's gradients."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.rand(6, 2, 8, 8, 3).permute(0, 1, 4, 2, 3).requires_grad_()  # channels innermost
    wrt = [x, *conv.parameters()]

    def net(pool, x):
        s = snnfunc.lif(x, tau=2.0, v_threshold=0.3).spikes  # [T, B, 3, 8, 8]
        p = pool(s.flatten(0, 1))
        return conv(p).square().sum(), p

    loss, p = net(torch.nn.MaxPool2d(2), x)
    want = torch.autograd.grad(loss, wrt)
    with memory.packed_spikes() as stats:
        loss, p = net(memory.MaxPool2d(2), x)
    assert p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    got = torch.autograd.grad(loss, wrt)
    assert all(torch.equal(a, b) and a.stride() == b.stride() for a, b in zip(got, want))
    assert stats.spike_bytes_unpacked == 12 * 3 * 4 * 4 * 4  # the pooled spikes conv saves
    packed = memory._Packed(p.detach())
    assert packed.order is not None and packed.bits.numel() == p.numel() // 8
    assert torch.equal(packed.unpack(), p) and packed.unpack().stride() == p.stride()
    compiled = torch.compile(lambda x: net(memory.MaxPool2d(2), x)[0])
    for a, b in zip(torch.autograd.grad(compiled(x), wrt), want):
        torch.testing.assert_close(a, b)


def test_max_pool_checks_its_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        memory.MaxPool2d(0)
    with pytest.raises(ValueError, match="rows"):
        memory.MaxPool2d(2, rows=0)
    bad = torch.full((1, 1, 2, 2), 4, dtype=torch.uint8)  # outside a 2 x 2 window
    with pytest.raises(ValueError, match="offsets"):
        torch.ops.snnfunc.window_max_pool2d_backward(torch.ones(1, 1, 2, 2), bad, 4, 4, 2, 8)


@pytest.mark.skipif("cpu" not in memory.BIT_KERNELS
                    or not memory.BIT_KERNELS["cpu"][0](torch.device("cpu"), torch.float32),
                    reason="needs a C compiler (the C backend's packing kernels)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_packing_kernels_equal_the_torch_ops(monkeypatch, dtype):
    """The C backend's packing of spikes into bits and back gives the torch ops' bits and
    values, bit for bit: every length around a byte, -0, NaN and inf (not zero: bit set)."""
    kernel = memory.BIT_KERNELS["cpu"]
    torch.manual_seed(0)
    for n in (0, 1, 7, 8, 9, 15, 16, 17, 1000, 12345, 40003):
        x = torch.randn(n).to(dtype)
        x[::3] = 0
        x[1::7] = -0.0
        x[2::11] = math.nan
        x[4::13] = math.inf
        monkeypatch.setitem(memory.BIT_KERNELS, "cpu", kernel)
        bits, count = memory._pack_bits(x)
        values = memory._unpack_bits(bits, n, x.shape, dtype)
        monkeypatch.delitem(memory.BIT_KERNELS, "cpu")
        want_bits, _ = memory._pack_bits(x)
        want = memory._unpack_bits(want_bits, n, x.shape, dtype)
        assert count == n and bits.dtype == torch.uint8 and torch.equal(bits, want_bits), n
        assert values.dtype == dtype and torch.equal(values, want), n
        assert torch.equal(values, (x != 0).to(dtype))


def test_spike_counts_stored_as_bytes_bit_for_bit():
    """A sum of spike tensors marked with spike_counts is kept as one byte per value under
    packed_spikes() (gradients bit for bit); marked values that are not integers 0-255 bit
    for bit (a fraction, 256, -0.0, NaN) are kept as they are."""
    torch.manual_seed(0)
    fc = torch.nn.Linear(16, 8)
    a, b = (torch.rand(2, 5, 16) < 0.5).float(), (torch.rand(2, 5, 16) < 0.5).float()
    w = torch.randn(2, 5, 8)

    def grads(counts, ctx):
        fc.zero_grad()
        with ctx as stats:
            x = counts.clone().requires_grad_()
            y = fc(memory.spike_counts(x * 1.0))
        (y * w).sum().backward()
        return (fc.weight.grad.clone(), x.grad), stats

    counts = a + b + a  # 0 .. 3
    want, _ = grads(counts, contextlib.nullcontext(PackedStats()))
    got, stats = grads(counts, memory.packed_spikes())
    assert all(torch.equal(g, h) for g, h in zip(want, got))
    assert stats.spike_bytes == counts.numel()
    assert stats.spike_bytes_unpacked == 4 * counts.numel()
    for bad in (0.5, 256.0, -0.0, math.nan):
        odd = counts.clone()
        odd[1, 2, 3] = bad
        want, _ = grads(odd, contextlib.nullcontext(PackedStats()))
        got, stats = grads(odd, memory.packed_spikes())
        assert stats.spike_bytes == 0 and stats.other_bytes > 0
        assert all(torch.equal(g.view(torch.int32), h.view(torch.int32))  # NaN too
                   for g, h in zip(want, got))
    with pytest.raises(TypeError, match="counts must be a float tensor"):
        memory.spike_counts(torch.ones(3, dtype=torch.int64))


def test_recompute_runs_neuron_adapters_again_from_their_state():
    """Batch norm and a stateful neuron under recompute, called twice in a row (the second
    call continues from the first's final state) with the monitor on: outputs, gradients,
    running statistics, final state and monitor as without it, bit for bit."""
    torch.manual_seed(0)
    plain = torch.nn.Sequential(
        snn.TimeDistributed(torch.nn.BatchNorm2d(4)),
        snn.PLIFNode(2.0, surrogate=snnfunc.surrogate.ATan(), step_mode="m", monitor_state=True))
    twin = copy.deepcopy(plain)
    x = torch.randn(3, 2, 4, 5, 5)
    w = torch.randn(3, 2, 4, 5, 5)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = [plain(xa * 2), plain(xa * 3)]
    got = [memory.recompute(twin, xb * 2), memory.recompute(twin, xb * 3)]
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert 0 < want[1].mean() < 1
    (sum(want) * w).sum().backward()
    (sum(got) * w).sum().backward()
    assert xa.grad.abs().sum() > 0 and torch.equal(xa.grad, xb.grad)
    for a, b in zip(plain.parameters(), twin.parameters()):
        assert torch.equal(a.grad, b.grad)
    for a, b in zip(plain.buffers(), twin.buffers()):
        assert torch.equal(a, b)
    assert torch.equal(plain[1].v, twin[1].v)
    assert len(twin[1].monitor["s"]) == len(plain[1].monitor["s"]) == 6  # not recorded twice


def test_recompute_keeps_gradients_outputs_and_batch_norm_statistics():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    twin = copy.deepcopy(encoder)
    x = torch.rand(5, 1, 8, 8)
    w = torch.randn(5, 4, 8, 8)
    want = encoder(x)
    (want * w).sum().backward()
    calls = []
    twin[0].register_forward_hook(lambda *_: calls.append(1))
    got = memory.recompute(twin, x)
    (got * w).sum().backward()
    assert len(calls) == 2  # run again in the backward pass
    assert torch.equal(got, want)
    for a, b in zip(encoder.parameters(), twin.parameters()):
        assert torch.equal(a.grad, b.grad)
    for a, b in zip(encoder.buffers(), twin.buffers()):  # running statistics updated once
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(memory.recompute(twin.eval(), x), encoder.eval()(x))
