"""Repeated eager calls (`snnfunc._kernel.cached`): a call seen twice before runs from its
entry (the checked call's constants and filled jobs); it computes what the whole path
computes, bit for bit (spikes, states, gradients), on random and edge inputs, for every
neuron of the test registry; calls it must not take run the whole path."""

import threading

import pytest
import torch

import snnfunc
from conftest import CPU_KERNELS
from registry import ENTRIES, leaves
from snnfunc import surrogate as S
from snnfunc._kernel import cached
from test_edge_values import assert_bits, edge_grid

pytestmark = CPU_KERNELS


@pytest.fixture(autouse=True)
def _fresh():
    cached.clear()
    yield
    cached.clear()


def _run(entry, x, state, grad, **kw):
    """(spikes, state leaves, gradients of x and the state) of one call, from fresh leaves."""
    x = x.clone().requires_grad_(grad)
    st = None if state is None else [t.clone().requires_grad_(grad) for t in state]
    out = entry(x, st, **kw)
    got = [out.spikes.detach(), *(t.detach() for t in leaves(out[1]))]
    if grad:
        gs = torch.linspace(-1, 1, out.spikes.numel()).reshape(out.spikes.shape)
        loss = (out.spikes.float() * gs).sum() + sum(t.sum() * 0.3 for t in leaves(out[1]))
        loss.backward()
        got += [x.grad, *([] if st is None else [t.grad for t in st])]
    return got


def _whole_then_hit(entry, x, state, grad, **kw):
    cached.clear()
    hits = cached.stats["hits"]
    whole = _run(entry, x, state, grad, **kw)
    second = _run(entry, x, state, grad, **kw)  # the entry made on the second call runs it
    third = _run(entry, x, state, grad, **kw)
    assert cached.stats["hits"] - hits == 2, "the second and third calls run from the entry"
    return whole, second, third


@pytest.mark.parametrize("name", list(ENTRIES))
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("given", [False, True])
def test_hit_equals_whole_path(name, grad, given):
    e = ENTRIES[name]
    k = len(e.neuron.states)
    x, states = edge_grid(6, 40, torch.float32, seed=7, states=k)
    x = x * e.drive / 1.5
    state = [torch.rand(40) for _ in range(k)] if given else None
    for kw in (dict(), dict(v_reset=None, surrogate=S.ATan(), detach_reset=True)):
        whole, second, third = _whole_then_hit(e, x, state, grad, **kw)
        for a, b, c in zip(whole, second, third, strict=True):
            assert_bits(a, b, name)
            assert_bits(a, c, name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_hit_equals_whole_path_dtypes(dtype):
    e = ENTRIES["lif"]
    x, (v,) = edge_grid(5, 33, dtype, seed=3)
    whole, _, third = _whole_then_hit(e, x, None, True)
    for a, c in zip(whole, third, strict=True):
        assert_bits(a, c)
    v = v.to(torch.float32) if dtype == torch.float16 else v  # held in the compute dtype
    whole, _, third = _whole_then_hit(e, x, [v.nan_to_num()], True)
    for a, c in zip(whole, third, strict=True):
        assert_bits(a, c)


def test_inputs_read_in_place_hit():
    """An input expanded over T (stride 0), a batch-first view and channels-last steps (run
    on steps permuted to their memory order) are read in place from an entry too; the three
    calls agree."""
    x = torch.rand(1, 64).expand(6, 64) * 2
    xb = (torch.rand(4, 6, 16) * 2).transpose(0, 1)
    cl = (torch.rand(6, 2, 3, 5) * 2).contiguous(memory_format=torch.channels_last)
    for inp in (x, xb, cl):
        whole, _, third = _whole_then_hit(ENTRIES["lif"], inp, None, True)
        for a, c in zip(whole, third, strict=True):
            assert_bits(a, c)


@pytest.mark.parametrize("a, b", [(dict(v_threshold=0.0), dict(v_threshold=-0.0)),
                                  (dict(v_reset=0.0), dict(v_reset=-0.0)),
                                  (dict(tau=2.0), dict(tau=2)),
                                  (dict(surrogate=S.Sigmoid(4.0)), dict(surrogate=S.Sigmoid(2.0)))])
def test_numbers_that_differ_do_not_share_an_entry(a, b):
    """Calls whose numbers differ (signed zeros included) each run their own; each equals
    the whole path with its own numbers."""
    x = torch.tensor([[0.0, -0.0, 1.0, 2.0], [0.0, 0.5, -0.0, 3.0]]) - 1.0
    for kw in (a, b, a, b, a, b):
        got = snnfunc.lif(x, **kw)
        cached.clear()
        want = snnfunc.lif(x, **kw)
        assert_bits(got.spikes, want.spikes)
        assert_bits(got.v, want.v)


def _not_taken(fn):
    hits = cached.stats["hits"]
    for _ in range(3):
        fn()
    assert cached.stats["hits"] == hits


def test_calls_not_taken():
    x = torch.rand(4, 2, 3, 5)
    _not_taken(lambda: snnfunc.lif(x, tau=torch.tensor(2.0, dtype=torch.float64)))  # cast
    _not_taken(lambda: snnfunc.lif(x, return_h=True))
    _not_taken(lambda: snnfunc.lif(x, return_states=True))
    _not_taken(lambda: snnfunc.lif(x, impl="reference"))
    _not_taken(lambda: snnfunc.lif(x[..., ::2]))  # read from a copy
    _not_taken(lambda: snnfunc.lif(x, v_threshold=float("nan")))
    _not_taken(lambda: torch.func.grad(lambda t: snnfunc.lif(t).spikes.sum())(x))
    _not_taken(lambda: snnfunc.lif(torch.nn.Parameter(x)))
    with torch.autograd.forward_ad.dual_level():
        _not_taken(lambda: snnfunc.lif(x))


@pytest.mark.parametrize("name", list(ENTRIES))
@pytest.mark.parametrize("shared", [False, True])
def test_tensor_parameters_hit(name, shared):
    """The first parameter and the threshold as tensors (learned: their gradients too), per
    neuron or one value shared: the hits equal the whole path bit for bit."""
    e = ENTRIES[name]
    x, _ = edge_grid(6, 24, torch.float32, seed=11)
    x = (x * e.drive / 1.5).nan_to_num(0.5)
    shape = () if shared else (24,)
    runs, hits = [], cached.stats["hits"]
    for i in range(3):
        xg = x.clone().requires_grad_()
        th = torch.full(shape, 0.9).requires_grad_()
        p = (None if e.first is None
             else torch.full(shape, float(e.params[e.first])).requires_grad_())
        out = e(xg, None, p, v_threshold=th)
        (out.spikes * torch.linspace(-1, 1, x.numel()).reshape(x.shape)).sum().backward()
        runs.append([out.spikes, *leaves(out[1]), xg.grad, th.grad,
                     *([] if p is None else [p.grad])])
    for a, c in zip(runs[0], runs[2], strict=True):
        assert_bits(a, c, name)
    assert cached.stats["hits"] - hits == 2


def test_positive_tensor_checked_on_every_hit():
    x = torch.rand(3, 4)
    tau = torch.full((4,), 2.0)
    for _ in range(3):
        snnfunc.lif(x, tau=tau)
    hits = cached.stats["hits"]
    tau[1] = -1.0
    with pytest.raises(ValueError, match="tau must be > 0 everywhere"):
        snnfunc.lif(x, tau=tau)
    tau[1] = 2.0
    snnfunc.lif(x, tau=tau)
    assert cached.stats["hits"] == hits + 1


def test_bad_arguments_raise_every_time():
    x = torch.rand(3, 4)
    for _ in range(3):
        with pytest.raises(ValueError, match="tau must be > 0"):
            snnfunc.lif(x, tau=-1.0)
        with pytest.raises(TypeError, match="unexpected keyword argument 'w'"):
            snnfunc.lif(x, w=1.0)
        with pytest.raises(ValueError, match="does not broadcast"):
            snnfunc.lif(x, torch.rand(5))


def test_modes_do_not_share_an_entry():
    x = torch.rand(4, 8, requires_grad=True)
    for _ in range(3):
        with torch.no_grad():
            assert snnfunc.lif(x).spikes.grad_fn is None
        assert snnfunc.lif(x).spikes.grad_fn is not None
        with torch.inference_mode():
            assert snnfunc.lif(x.detach()).spikes.is_inference()
        assert not snnfunc.lif(x).spikes.is_inference()


def test_create_graph_and_second_derivative():
    """A recorded backward goes through the whole path's backward: the same gradient, and
    the same error where it is differentiated again."""
    x0 = torch.rand(5, 6) * 2
    grads = []
    for _ in range(3):
        x = x0.clone().requires_grad_()
        out = snnfunc.lif(x, impl="fused")
        (g,) = torch.autograd.grad(out.v.sum() + out.spikes.sum(), x, create_graph=True)
        grads.append(g.detach())
        with pytest.raises(RuntimeError, match="differentiable once"):
            g.sum().backward()
    assert cached.stats["hits"] >= 2
    assert_bits(grads[0], grads[2])


def test_input_changed_in_place_before_backward():
    for _ in range(3):
        x = torch.rand(4, 8, requires_grad=True)
        y = x * 1.0
        out = snnfunc.lif(y)
        y.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.spikes.sum().backward()


def test_threads_share_an_entry():
    x = torch.rand(8, 512) * 2
    want = snnfunc.lif(x, tau=3.0).spikes
    snnfunc.lif(x, tau=3.0)
    errors = []

    def work(seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(50):
            y = torch.rand(8, 512, generator=g) * 2
            got = snnfunc.lif(y, tau=3.0).spikes
            cached.clear() if seed == 0 and _ % 17 == 0 else None
            if not torch.equal(got, snnfunc.lif(y, tau=3.0, impl="reference").spikes):
                errors.append(seed)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert torch.equal(snnfunc.lif(x, tau=3.0).spikes, want)


def test_entries_bounded(monkeypatch):
    monkeypatch.setattr(cached, "LIMIT", 5)
    for n in range(1, 20):
        for _ in range(2):
            snnfunc.lif(torch.rand(2, n))
        assert len(cached._entries) <= 5


@pytest.mark.parametrize("warm", [0, 1, 2])
def test_checkpoint_recomputes_either_path(warm):
    """torch.utils.checkpoint recomputes the call in the backward: the forward and the
    recomputation may take different paths (first seen, entry made, hit) and must save
    alike; the gradients equal those without checkpointing."""
    x0 = torch.rand(6, 10) * 2
    w = torch.full((10,), 2.0, requires_grad=True)
    x = x0.clone().requires_grad_()
    want = torch.autograd.grad(snnfunc.lif(x, tau=w).spikes.sum(), (x, w))
    cached.clear()
    for _ in range(warm):
        snnfunc.lif(x0.clone().requires_grad_(), tau=w)
    x = x0.clone().requires_grad_()
    out = torch.utils.checkpoint.checkpoint(lambda t: snnfunc.lif(t, tau=w).spikes, x,
                                            use_reentrant=False)
    got = torch.autograd.grad(out.sum(), (x, w))
    for a, b in zip(got, want):
        assert_bits(a, b)


def test_info_counts_the_hits():
    import io

    x = torch.rand(3, 7)
    for _ in range(4):
        snnfunc.lif(x, tau=1.5)
    text = snnfunc.info(file=io.StringIO())
    line = next(t for t in text.splitlines() if t.startswith("repeated eager calls"))
    assert line.endswith(f": {cached.stats['hits']} (entries made: {cached.stats['made']})")
    assert cached.stats["hits"] >= 2
