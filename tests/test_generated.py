"""Generated kernels: every neuron made from a definition, fused == its reference loop.

Parametrised over the test registry (tests/registry.py: the built-ins and user neurons defined
as a user would) and over the surrogate registry: spikes, h and every state bit for bit where the
definition uses + - * / and comparisons (to rounding where it uses exp), gradients to rounding.
"""

import dataclasses
import inspect
import math

import pytest
import torch

import snnfunc
from conftest import CPU_KERNELS
from snnfunc._kernel import dispatch, surrogates
from snnfunc import surrogate as S
from snnfunc._core.definition import option_values as _option_values
from snnfunc.functional.defined import DEFINITIONS
from snnfunc.functional.neurons import DEFINITIONS as CLASSIC
from snnfunc._core import registry as definitions
from registry import ENTRIES, leaves

pytestmark = CPU_KERNELS


def _neuron(name):
    """The registry's neuron `name`: its definition, parameters, whether its forward is exact."""
    e = ENTRIES[name]
    return e.neuron, e.params, e.exact


SURROGATES = [getattr(S, n)() for n in S.__all__
              if inspect.isclass(getattr(S, n)) and issubclass(getattr(S, n), S.Surrogate)
              and getattr(S, n) is not S.Surrogate]


def test_every_builtin_neuron_is_in_the_test_registry():
    """Every neuron the package registers (its definitions, by their names in the kernels'
    registry) is an entry of tests/registry.py, under its public functions."""
    builtin = {d.name for d in definitions.registered() if d.name.startswith("snnfunc:")}
    assert builtin, "no built-in neuron registered"
    assert builtin <= {e.neuron.name for e in ENTRIES.values()}
    assert {f"snnfunc:{k}" for k in (*DEFINITIONS, *CLASSIC)} <= builtin
    for name, e in ENTRIES.items():
        assert definitions.lookup(e.neuron.name) is e.neuron, name
        if e.neuron.name in builtin:
            kind = e.neuron.name.partition(":")[2]
            assert e.multi is getattr(snnfunc, "if_" if kind == "if" else kind), name
            assert e.step is getattr(snnfunc, f"{kind}_step"), name
        assert e.classic == (e.neuron.name in {f"snnfunc:{k}" for k in CLASSIC}), name


def check_same(a, b, exact, what=""):
    if exact:
        assert torch.equal(a, b), what
    else:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=what)


def _inputs(neuron, kwargs, dtype, N=6, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (2.5 * torch.rand(T, 2, N, generator=g, dtype=dtype)).requires_grad_()
    state = [(0.5 * torch.rand(2, N, generator=g, dtype=dtype)).requires_grad_()
             for _ in neuron.states]
    state = state[0] if len(state) == 1 else neuron.State(*state)
    params = dict(kwargs)
    first = next(iter(params), None)  # the first parameter per neuron and learnable
    if first is not None:
        params[first] = (params[first] * (1 + 0.2 * torch.rand(N, generator=g, dtype=dtype))
                         ).requires_grad_()
    th = torch.full((N,), 0.9, dtype=dtype, requires_grad=True)
    return x, state, params, th


def _loss(out, T):
    w = torch.linspace(-1, 1, T, dtype=out.spikes.dtype).view(T, 1, 1)
    loss = (out.spikes * w).sum() + 0.3 * (out.h * w).sum()
    return loss + sum((0.5 + k) * t.sum() for k, t in enumerate(leaves(out[1])))


# every neuron with every option, reset and detach_reset, each in one of the two dtypes in
# turn: for every neuron and option set, each dtype runs a hard and a soft reset, attached and
# detached; a neuron with options runs every (reset, detach_reset) in both dtypes over them.
# The hard resets 0.0 and -0.2 take the same kernels (the value is an argument), so they keep
# to one dtype; every (neuron, option, reset kind, detach_reset, dtype) is a kernel to build.
DTYPES = [torch.float32, torch.float64]
CASES = [(name, opts, v_reset, detach, DTYPES[(i + j + (v_reset is None) + detach) % 2])
         for i, (name, e) in enumerate(ENTRIES.items())
         for j, opts in enumerate(_option_values(e.neuron.options))
         for v_reset in (0.0, None, -0.2) for detach in (False, True)]


@pytest.mark.parametrize("name, opts, v_reset, detach, dtype", CASES, ids=[
    f"{n}-{o}-{r}-{'detach' if d else 'attached'}-{str(t)[6:]}" for n, o, r, d, t in CASES])
def test_fused_equals_reference(name, opts, v_reset, detach, dtype):
    neuron, kwargs, exact = _neuron(name)
    x, state, params, th = _inputs(neuron, kwargs, dtype)
    inputs = [x, *leaves(state), *[p for p in params.values() if isinstance(p, torch.Tensor)], th]
    scale = 0.4 if opts.get("decay_input") is False else 1.0  # without decay, currents add up
    outs, grads = [], []
    for impl in ("fused", "reference"):
        out = neuron(x * scale, state, v_threshold=th, v_reset=v_reset, detach_reset=detach,
                     return_h=True, impl=impl, **params, **opts)
        outs.append(out)
        grads.append(torch.autograd.grad(_loss(out, x.shape[0]), inputs))
    a, b = outs
    check_same(a.spikes, b.spikes, exact, "spikes")
    check_same(a.h, b.h, exact, "h")
    for k, (p, q) in enumerate(zip(leaves(a[1]), leaves(b[1]))):
        check_same(p, q, exact, f"state {neuron.states[k]}")
    assert 0 < b.spikes.mean() < 1
    for k, (p, q) in enumerate(zip(*grads)):
        torch.testing.assert_close(p, q, rtol=1e-4 if dtype == torch.float32 else 1e-9,
                                   atol=1e-5 if dtype == torch.float32 else 1e-10,
                                   msg=f"gradient {k}")


LONG = [(n, torch.float64) for n in sorted(ENTRIES)] + [(n, torch.float32) for n in
                                                         ("lif", "alif", "user jumpy")]


@pytest.mark.parametrize("name, dtype", LONG, ids=[f"{n}-{str(d)[6:]}" for n, d in LONG])
def test_long_sequences(name, dtype):
    # T long enough that a backward block holds few neurons (its buffer keeps every step's
    # values), several blocks and threads, a partial last block
    neuron, kwargs, exact = _neuron(name)
    T = 700
    x, state, params, th = _inputs(neuron, kwargs, dtype, N=400, T=T, seed=1)
    inputs = [x, *leaves(state), *[p for p in params.values() if isinstance(p, torch.Tensor)], th]
    outs, grads = [], []
    for impl in ("fused", "reference"):
        out = neuron(0.4 * x, state, v_threshold=th, return_h=True, impl=impl, **params)
        outs.append(out)
        grads.append(torch.autograd.grad(_loss(out, T), inputs))
    a, b = outs
    check_same(a.spikes, b.spikes, exact, "spikes")
    for k, (p, q) in enumerate(zip(leaves(a[1]), leaves(b[1]))):
        check_same(p, q, exact, f"state {neuron.states[k]}")
    for k, (p, q) in enumerate(zip(*grads)):  # float32: sums of 1400 steps in another order
        scale = float(q.abs().max())
        torch.testing.assert_close(p, q, rtol=1e-4 if dtype == torch.float32 else 1e-9,
                                   atol=1e-4 * scale if dtype == torch.float32 else 1e-10,
                                   msg=f"gradient {k}")


# every surrogate into a generated kernel of a neuron with two states: cuba_lif and alif (its
# own threshold) in turn (test_fused runs every surrogate through lif's kernel too)
SURROGATE_CASES = [(["cuba_lif", "alif"][i % 2], sg) for i, sg in enumerate(SURROGATES)]


@pytest.mark.parametrize("name, surrogate", SURROGATE_CASES,
                         ids=[f"{n}-{type(s).__name__}" for n, s in SURROGATE_CASES])
def test_every_surrogate_is_compiled_into_the_kernel(name, surrogate):
    neuron, kwargs, _ = _neuron(name)
    x, state, params, th = _inputs(neuron, kwargs, torch.float64)
    grads = []
    for impl in ("fused", "reference"):
        out = neuron(x, state, v_threshold=th, surrogate=surrogate, return_h=True, impl=impl,
                     **params)
        grads.append(torch.autograd.grad(_loss(out, x.shape[0]), [x, th, *leaves(state)]))
    for p, q in zip(*grads):
        torch.testing.assert_close(p, q)
    assert surrogates.why_not_surrogate(surrogate) is None


@dataclasses.dataclass(frozen=True)
class Gaussian(S.Surrogate):
    sigma: float = 0.5

    def derivative(self, x):
        return torch.exp(-0.5 * (x / self.sigma) ** 2) / (self.sigma * math.sqrt(2 * math.pi))


@dataclasses.dataclass(frozen=True)
class PerChannel(S.Surrogate):
    def derivative(self, x):
        return torch.linspace(0.5, 1.5, x.shape[-1], dtype=x.dtype)


def test_a_user_surrogate_is_traced_into_the_kernel_or_evaluated_in_torch():
    """A derivative in elementwise torch code is compiled in; any other (one value per
    channel, say) is evaluated in torch on h - v_threshold and read by the kernel, which needs
    the plain threshold: a neuron with its own threshold runs the reference loop then."""
    for name, sg in (("cuba_lif", Gaussian()), ("cuba_lif", PerChannel()), ("alif", Gaussian())):
        neuron, kwargs, _ = _neuron(name)
        x, state, params, th = _inputs(neuron, kwargs, torch.float64)
        grads = []
        for impl in ("fused", "reference"):
            out = neuron(x, state, surrogate=sg, impl=impl, **params)
            grads.append(torch.autograd.grad(out.spikes.sum() + out.state.v.sum(), x))
        torch.testing.assert_close(grads[0], grads[1])
    assert surrogates.why_not_surrogate(Gaussian()) is None
    assert "cannot be compiled" in surrogates.why_not_surrogate(PerChannel())
    neuron, kwargs, _ = _neuron("alif")
    x, state, params, th = _inputs(neuron, kwargs, torch.float64)
    with pytest.raises(ValueError, match="PerChannel's derivative cannot be compiled.*threshold"):
        neuron(x, state, surrogate=PerChannel(), impl="fused", **params)
    out = neuron(x, state, surrogate=PerChannel(), **params)  # auto: the reference loop
    assert "Stack" in type(out.spikes.grad_fn).__name__


@pytest.mark.parametrize("name", ["cuba_lif", "alif", "user gated"])
@pytest.mark.parametrize("use", ["spikes", "h", "state0", "state1"])
def test_gradients_are_right_whichever_outputs_the_loss_uses(name, use):
    neuron, kwargs, _ = _neuron(name)
    x, state, params, th = _inputs(neuron, kwargs, torch.float64)
    inputs = [x, th, *leaves(state)]
    grads = []
    for impl in ("fused", "reference"):
        out = neuron(x, state, v_threshold=th, return_h=use == "h", impl=impl, **params)
        y = {"spikes": out.spikes, "h": getattr(out, "h", None), "state0": out.state[0],
             "state1": out.state[1]}[use]
        grads.append(torch.autograd.grad(y.pow(2).sum(), inputs, allow_unused=True))
    for p, q in zip(*grads):
        if q is None:
            assert p is None or not p.any()
        else:
            torch.testing.assert_close(p, q)


@pytest.mark.parametrize("name", ["cuba_lif", "alif"])
def test_vmap_of_grad_and_jacrev_through_the_generated_kernel(name):
    neuron, kwargs, _ = _neuron(name)
    x = 0.3 + 1.2 * torch.rand(6, 4, 3, dtype=torch.float64)

    def loss(impl):
        return lambda xb: neuron(xb, impl=impl, **kwargs).spikes.sum()

    per_sample = [torch.func.vmap(torch.func.grad(loss(impl)), in_dims=1, out_dims=1)(x)
                  for impl in ("fused", "reference")]
    torch.testing.assert_close(per_sample[0], per_sample[1])
    f = lambda impl: (lambda xb: neuron(xb, impl=impl, **kwargs).state.v)  # noqa: E731
    torch.testing.assert_close(torch.func.jacrev(f("fused"))(x[:, 0]),
                               torch.func.jacrev(f("reference"))(x[:, 0]))


def test_forward_mode_runs_the_reference():
    neuron, kwargs, _ = _neuron("cuba_lif")
    x = 0.3 + 1.2 * torch.rand(6, 3, dtype=torch.float64)
    t = torch.randn_like(x)
    f = lambda impl: (lambda xb: neuron(xb, impl=impl, **kwargs).state.v)  # noqa: E731
    _, jf = torch.func.jvp(f("auto"), (x,), (t,))
    _, jr = torch.func.jvp(f("reference"), (x,), (t,))
    torch.testing.assert_close(jf, jr)
    with pytest.raises(ValueError, match="forward-mode AD"):
        torch.func.jvp(f("fused"), (x,), (t,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["cuba_lif", "alif", "qif"])
def test_half_precision_is_computed_in_float32_on_both_paths(name, dtype):
    neuron, kwargs, _ = _neuron(name)
    x, state, params, th = _inputs(neuron, kwargs, dtype, N=40)
    inputs = [x, th, *leaves(state)]
    outs, grads = [], []
    for impl in ("fused", "reference"):
        out = neuron(x, state, v_threshold=th, return_h=True, impl=impl, **params)
        outs.append(out)
        grads.append(torch.autograd.grad(_loss(out, x.shape[0]), inputs))
    a, b = outs
    assert a.spikes.dtype == a.h.dtype == dtype and leaves(a[1])[0].dtype == torch.float32
    for p, q in zip([a.spikes, a.h, *leaves(a[1])], [b.spikes, b.h, *leaves(b[1])]):
        assert torch.equal(p, q)
    for p, q in zip(*grads):
        torch.testing.assert_close(p.float(), q.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype, limit", [(torch.float32, 4), (torch.float64, 8),
                                          (torch.bfloat16, 2)])
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_bytes_saved_per_neuron_step(name, dtype, limit):
    neuron, kwargs, _ = _neuron(name)
    T, N = 16, 32
    x = torch.rand(T, N, dtype=dtype, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        neuron(x, **kwargs).spikes.sum()
    per_step = sum(t.numel() * t.element_size() for t in saved if t.dim() and t.shape[0] == T)
    assert per_step / (T * N) <= limit, [tuple(t.shape) for t in saved]


def test_the_generated_ops_check_their_arguments():
    op = torch.ops.snnfunc.defined_forward
    x = torch.rand(4, 3)
    sc = torch.zeros(1, dtype=torch.float64)
    one = torch.zeros(())
    good = dict(states=[one, one], params=[one, one], th=one)
    with pytest.raises(ValueError, match="no neuron definition named"):
        op(x, [one], [one], one, sc, "nowhere:nothing", "", True, False)
    with pytest.raises(ValueError, match="states must hold 2"):
        op(x, [one], good["params"], one, sc, "snnfunc:cuba_lif", "decay_input=1", True, False)
    with pytest.raises(ValueError, match="options must"):
        op(x, *good.values(), sc, "snnfunc:cuba_lif", "decay=1", True, False)
    with pytest.raises(TypeError, match="x must be"):
        op(x.int(), *good.values(), sc, "snnfunc:cuba_lif", "decay_input=1", True, False)
    with pytest.raises(ValueError, match="must have shape"):
        op(x, [torch.zeros(5), one], good["params"], one, sc, "snnfunc:cuba_lif",
           "decay_input=1", True, False)
    with pytest.raises(ValueError, match="need must hold 5"):
        torch.ops.snnfunc.defined_backward(x, *good.values(), torch.ones_like(x), None, None,
                                           [None, None], sc.new_zeros(2), "snnfunc:cuba_lif",
                                           "decay_input=1", surrogates.surrogate_token(S.Sigmoid()),
                                           True, False, [True], [None, None])


def test_opcheck_the_generated_ops():
    x = torch.rand(6, 2, 3, dtype=torch.float64)
    st = [torch.rand(2, 3, dtype=torch.float64), torch.zeros((), dtype=torch.float64)]
    par = [torch.full((2, 3), 1.5, dtype=torch.float64), torch.full((), 2.0, dtype=torch.float64)]
    th = torch.full((2, 3), 0.9, dtype=torch.float64)
    sc = torch.zeros(1, dtype=torch.float64)
    torch.library.opcheck(torch.ops.snnfunc.defined_forward.default,
                          (x, st, par, th, sc, "snnfunc:cuba_lif", "decay_input=1", True, True, True),
                          test_utils=("test_schema", "test_faketensor"))
    tok = surrogates.surrogate_token(S.ATan())
    torch.library.opcheck(torch.ops.snnfunc.defined_backward.default,
                          (x, st, par, th, torch.randn_like(x), None, None, [torch.randn(2, 3, dtype=torch.float64), None],
                           torch.tensor([0.0, 2.0], dtype=torch.float64), "snnfunc:cuba_lif",
                           "decay_input=1", tok, True, False, [True, False, True, True, False],
                           [None, torch.randn_like(x)]),
                          test_utils=("test_schema", "test_faketensor"))


def test_autocast_runs_a_network_fused_end_to_end():
    torch.manual_seed(0)
    fc = torch.nn.Linear(8, 16)
    x = torch.rand(10, 4, 8)
    before = sum(dispatch.fallbacks.values())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = snnfunc.cuba_lif(fc(x), tau_syn=1.5)
        y = snnfunc.alif(out.spikes @ torch.ones(16, 5), impl="fused").spikes
    assert out.spikes.dtype == torch.bfloat16 and y.dtype == torch.bfloat16
    assert sum(dispatch.fallbacks.values()) == before
    y.sum().backward()
    assert fc.weight.grad is not None and fc.weight.grad.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", ["cuba_lif", "alif", "qif", "user jumpy"])
def test_return_states_traces_every_state_on_both_paths(name, dtype):
    neuron, kwargs, exact = _neuron(name)
    x, state, params, th = _inputs(neuron, kwargs, dtype)
    inputs = [x, th, *leaves(state)]
    outs, grads = [], []
    for impl in ("fused", "reference"):
        out = neuron(x, state, v_threshold=th, return_states=True, impl=impl, **params)
        assert isinstance(out, snnfunc.TraceOutput)
        outs.append(out)
        w = torch.linspace(-1, 1, x.shape[0], dtype=torch.float64).view(-1, 1, 1)
        loss = sum(((k + 1) * w * t.double()).sum() for k, t in enumerate(leaves(out.trace)))
        grads.append(torch.autograd.grad(loss + out.spikes.double().sum(), inputs))
    a, b = outs
    for p, q in zip(leaves(a.trace), leaves(b.trace)):
        assert p.shape == x.shape and p.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        check_same(p, q, exact)
    for p, q, r in zip(leaves(a.state), leaves(b.state), leaves(a.trace)):
        check_same(p, q, exact)
        assert torch.equal(p, r[-1])  # the final state is the trace's last step
    for p, q in zip(*grads):
        torch.testing.assert_close(p.double(), q.double(), rtol=2e-2 if dtype != torch.float64 else 1e-9,
                                   atol=2e-2 if dtype != torch.float64 else 1e-10)
