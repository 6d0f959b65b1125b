"""snnfunc.nir: imported graphs equal a plain forward-Euler simulation of NIR's equations written
here; snnfunc -> NIR -> snnfunc gives the same spikes; what NIR cannot express is refused."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from snnfunc import nn as snn

nir = pytest.importorskip("nir", reason="snnfunc.nir needs the optional package nir (extra 'nir')")
from snnfunc.nir import from_nir, to_nir  # noqa: E402


# ------------------------------------------------------------------ the NIR equations, plainly


def euler(node, current: np.ndarray, dt: float) -> np.ndarray:
    """Forward Euler of one NIR neuron node over current [T, B, ...]; spikes (IF, LIF, CubaLIF)
    or the membrane (I, LI, CubaLI) per step. Written from NIR's docstrings, nothing shared
    with snnfunc."""
    kind = type(node).__name__
    p = {k: np.asarray(v, dtype=current.dtype) for k, v in vars(node).items()
         if isinstance(v, (np.ndarray, float, np.floating))}
    if kind.startswith("Cuba"):
        i_syn, currents = np.zeros_like(current[0]), []
        for x in current:  # tau_syn dI/dt = -I + w_in S
            i_syn = i_syn + dt / p["tau_syn"] * ((0 - i_syn) + p["w_in"] * x)
            currents.append(i_syn)
        current, kind, p["tau"] = np.stack(currents), kind[4:], p["tau_mem"]
    if kind in ("LIF", "LI"):
        v = np.broadcast_to(p["v_leak"], current.shape[1:]).copy()
    elif kind == "IF":
        v = np.broadcast_to(p["v_reset"], current.shape[1:]).copy()
    else:
        v = np.zeros_like(current[0])
    out = []
    for x in current:
        if kind in ("IF", "I"):
            v = v + dt * p["r"] * x  # dv/dt = R I
        else:
            v = v + dt / p["tau"] * ((p["v_leak"] - v) + p["r"] * x)  # tau dv/dt = v_leak - v + R I
        if kind in ("IF", "LIF"):
            z = v > p["v_threshold"]
            v = np.where(z, p["v_reset"], v)
            out.append(z.astype(current.dtype))
        else:
            out.append(v)
    return np.stack(out)


def single(node, shape):
    """Input -> node -> Output."""
    return nir.NIRGraph(nodes={"input": nir.Input(np.array(shape)), "n": node,
                               "output": nir.Output(np.array(shape))},
                        edges=[("input", "n"), ("n", "output")], metadata={}, type_check=False)


def make_node(kind, shape, general, rng, dtype):
    def arr(lo, hi):
        return rng.uniform(lo, hi, size=shape).astype(dtype)

    def const(value):
        return np.full(shape, value, dtype=dtype)

    v_reset = arr(-0.3, 0.2) if general else const(-0.1)
    v_leak = arr(-0.2, 0.3) if general else v_reset.copy()
    thr = arr(0.5, 1.2)
    if kind == "IF":
        return nir.IF(r=arr(0.5, 2.0), v_threshold=thr, v_reset=v_reset)
    if kind == "I":
        return nir.I(r=arr(0.5, 2.0))
    if kind == "LIF":
        return nir.LIF(tau=arr(1.5, 8.0), r=arr(0.5, 3.0), v_leak=v_leak, v_threshold=thr, v_reset=v_reset)
    if kind == "LI":
        return nir.LI(tau=arr(1.5, 8.0), r=arr(0.5, 3.0), v_leak=v_leak)
    if kind == "CubaLIF":
        return nir.CubaLIF(tau_syn=arr(1.5, 4.0), tau_mem=arr(1.5, 8.0), r=arr(0.5, 3.0), v_leak=v_leak,
                           v_threshold=thr, v_reset=v_reset, w_in=arr(0.5, 2.0))
    return nir.CubaLI(tau_syn=arr(1.5, 4.0), tau_mem=arr(1.5, 8.0), r=arr(0.5, 3.0), v_leak=v_leak,
                      w_in=arr(0.5, 2.0))


KINDS = ["IF", "I", "LIF", "LI", "CubaLIF", "CubaLI"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_import_equals_euler_bit_for_bit(kind, dtype):
    """One reset value equal to the leak: the import evaluates the Euler step in its order."""
    rng = np.random.default_rng(1)
    shape, dt = (7, 5), 0.25
    node = make_node(kind, shape, general=False, rng=rng, dtype=dtype)
    current = (rng.standard_normal((40, 3, *shape)) * 1.5 + 0.8).astype(dtype)
    want = euler(node, current, dt)
    x = torch.from_numpy(current)
    got = from_nir(single(node, shape), dt=dt, dtype=x.dtype)(x).detach().numpy()
    if kind in ("IF", "LIF", "CubaLIF"):
        assert 0.02 < want.mean() < 0.9  # the test exercises firing and resetting
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["IF", "LIF", "LI", "CubaLIF"])
def test_import_general_parameters_equals_euler(kind):
    """Per-neuron v_reset and v_leak != v_reset run in U = V - base: same spikes (float64),
    membranes to rounding."""
    rng = np.random.default_rng(2)
    shape, dt = (50,), 0.5
    node = make_node(kind, shape, general=True, rng=rng, dtype=np.float64)
    current = rng.standard_normal((60, 4, *shape)) * 1.5 + 0.8
    want = euler(node, current, dt)
    x = torch.from_numpy(current)
    got = from_nir(single(node, shape), dt=dt, dtype=x.dtype)(x).detach().numpy()
    if kind == "LI":
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    else:
        assert 0.02 < want.mean() < 0.9
        np.testing.assert_array_equal(got, want)


def test_scalar_parameters_write_read_import(tmp_path):
    """0-d parameters (shared by every neuron) survive nir.write / nir.read and import. They are
    NumPy scalars: nir.write compresses ndarrays, which h5py refuses for 0-d ones."""
    f = np.float32
    node = nir.LIF(tau=f(4.0), r=f(1.5), v_leak=f(0.0), v_threshold=f(1.0), v_reset=f(0.0))
    path = tmp_path / "scalar.nir"
    nir.write(path, single(node, (30,)))
    read = nir.read(path, type_check=False)  # NIR's shape inference refuses 0-d parameters
    assert np.shape(read.nodes["n"].tau) == ()
    current = (np.random.default_rng(3).standard_normal((30, 2, 30)) + 0.8).astype(f)
    got = from_nir(path)(torch.from_numpy(current)).numpy()
    np.testing.assert_array_equal(got, euler(node, current, 1.0))
    assert got.mean() > 0.02


def test_export_keeping_parameter_shapes_round_trips(tmp_path):
    """per_neuron=False: a number stays 0-d, a per-channel tensor stays [C, 1, 1]."""
    torch.manual_seed(2)
    plif = snn.PLIFNode(2.0, step_mode="m", param_shape=(3, 1, 1))
    TD = snn.TimeDistributed
    net = torch.nn.Sequential(TD(torch.nn.Conv2d(1, 3, 3)), plif, TD(torch.nn.Flatten()),
                              torch.nn.Linear(3 * 4 * 4, 5), snn.LIFNode(2.0, step_mode="m"))
    drive(net)
    with torch.no_grad():
        plif.w.copy_(torch.tensor([0.3, 0.5, 0.8]).view(3, 1, 1))
    x = torch.rand(10, 2, 1, 6, 6) * 2
    graph = to_nir(net, x, per_neuron=False)
    assert graph.nodes["1"].tau.shape == (3, 1, 1) and np.shape(graph.nodes["4"].tau) == ()
    nir.write(tmp_path / "compact.nir", graph)
    with torch.no_grad():
        want = net(x)
    assert want.sum() > 0
    torch.testing.assert_close(from_nir(tmp_path / "compact.nir")(x), want, rtol=0, atol=0)


def test_graph_ops_pooling_scale_threshold_and_fan_in():
    """Conv2d, SumPool2d, AvgPool2d, Flatten, Scale, Threshold, Affine, and a node with two
    incoming edges (their sum), against torch written here."""
    rng = np.random.default_rng(4)
    f = np.float64
    conv_w, conv_b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    aff_w, aff_b = rng.standard_normal((5, 3 * 3 * 3)), rng.standard_normal(5)
    scale, thr = rng.uniform(0.5, 2, (5,)), rng.uniform(-0.5, 0.5, (5,))
    nodes = {
        "input": nir.Input(np.array([2, 12, 12])),
        "conv": nir.Conv2d(input_shape=(12, 12), weight=conv_w, stride=1, padding=1, dilation=1,
                           groups=1, bias=conv_b),
        "sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0, end_dim=-1),
        "aff": nir.Affine(weight=aff_w, bias=aff_b),
        "scale": nir.Scale(scale=scale),
        "thr": nir.Threshold(threshold=thr),
        "output": nir.Output(np.array([5])),
    }
    edges = [("input", "conv"), ("conv", "sum"), ("sum", "avg"), ("avg", "flat"), ("flat", "aff"),
             ("aff", "scale"), ("aff", "thr"), ("scale", "thr"), ("thr", "output")]
    net = from_nir(nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False),
                   dtype=torch.float64)
    x = torch.from_numpy(rng.standard_normal((4, 3, 2, 12, 12)).astype(f))
    F = torch.nn.functional
    y = F.conv2d(x.flatten(0, 1), torch.from_numpy(conv_w), torch.from_numpy(conv_b), padding=1)
    y = F.avg_pool2d(y, 2) * 4  # sum pooling
    y = F.avg_pool2d(y, 2).unflatten(0, (4, 3)).flatten(2)
    y = y @ torch.from_numpy(aff_w).T + torch.from_numpy(aff_b)
    y = y * torch.from_numpy(scale) + y
    want = (y > torch.from_numpy(thr)).double()
    got = net(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert 0 < want.mean() < 1


# ------------------------------------------------------------------ snnfunc -> NIR -> snnfunc


def drive(net):
    """Larger weights and a positive bias, so every spiking layer fires."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
                m.weight.mul_(3)
                if m.bias is not None:
                    m.bias.add_(0.5)
    return net


def _neuron(name):
    m = "m"
    return {
        "IF": lambda: snn.IFNode(1.0, -0.1, step_mode=m),
        "LIF": lambda: snn.LIFNode(2.5, 1.0, 0.0, step_mode=m),
        "LIF-no-decay-input": lambda: snn.LIFNode(3.0, 0.8, 0.1, step_mode=m, decay_input=False),
        "PLIF": lambda: snn.PLIFNode(0.4, step_mode=m),
        "PLIF-sigmoid-per-neuron": lambda: snn.PLIFNode(
            2.0, step_mode=m, parametrization="sigmoid", param_shape=(16,), decay_input=False),
        "RIF-leak": lambda: snn.RIFNode(-0.2, step_mode=m),
        "RIF-zero": lambda: snn.RIFNode(0.0, step_mode=m),
    }[name]()


NEURONS = ["IF", "LIF", "LIF-no-decay-input", "PLIF", "PLIF-sigmoid-per-neuron", "RIF-leak", "RIF-zero"]


@pytest.mark.parametrize("dt", [1.0, 1e-3])
@pytest.mark.parametrize("name", NEURONS)
def test_round_trip_through_a_file(name, dt, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), _neuron(name), torch.nn.Linear(16, 8),
                              _neuron(name if name != "PLIF-sigmoid-per-neuron" else "PLIF"))
    net = drive(net.double())
    with torch.no_grad():  # per-neuron values that differ
        for p in net.parameters():
            if p.dim() == 1 and p.shape[0] == 16 and name.startswith("PLIF"):
                p.add_(torch.linspace(-0.5, 0.5, 16, dtype=p.dtype))
    x = torch.rand(20, 4, 12, dtype=torch.float64) * 4
    graph = to_nir(net, x, dt=dt)
    nir.write(tmp_path / "net.nir", graph)
    nir.read(tmp_path / "net.nir")  # passes NIR's own type check
    back = from_nir(tmp_path / "net.nir", dt=dt, dtype=x.dtype)
    with torch.no_grad():
        want = net(x)
        hidden = net[1](net[0](x))
    snn.reset_net(net)
    got = back(x)
    assert 0.02 < hidden.mean() < 0.9 and want.sum() > 0
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_exported_graph_equals_euler_at_the_threshold():
    """An input that lands exactly on v_threshold fires in snnfunc (>=). The exported threshold
    makes NIR's strict > fire there too; exact_threshold=False writes θ and misses it."""
    net = torch.nn.Sequential(snn.IFNode(1.0, 0.0, step_mode="m"))
    x = torch.full((6, 1, 3), 0.5)  # H = 0.5, 1.0 (= θ), 0.5, 1.0, ...
    spikes = net(x)
    assert spikes[:, 0, 0].tolist() == [0, 1, 0, 1, 0, 1]
    exact = to_nir(net, x).nodes["0"]
    assert exact.v_threshold.dtype == np.float32 and exact.v_threshold[0] < 1.0
    np.testing.assert_array_equal(euler(exact, x.numpy(), 1.0), spikes.numpy())
    np.testing.assert_array_equal(from_nir(to_nir(net, x))(x).numpy(), spikes.numpy())
    nominal = to_nir(net, x, exact_threshold=False).nodes["0"]
    assert nominal.v_threshold[0] == 1.0
    assert euler(nominal, x.numpy(), 1.0)[:, 0, 0].tolist() == [0, 0, 1, 0, 0, 1]  # fires at 1.5


def test_conv_network_round_trip_and_state_untouched():
    torch.manual_seed(1)
    plif = snn.PLIFNode(2.0, step_mode="m", param_shape=(4, 1, 1), parametrization="sigmoid")
    TD = snn.TimeDistributed
    net = torch.nn.Sequential(
        TD(torch.nn.Conv2d(1, 4, 3, padding=1)), plif, TD(torch.nn.AvgPool2d(2), torch.nn.Flatten()),
        torch.nn.Dropout(0.3), torch.nn.Linear(4 * 4 * 4, 10), snn.LIFNode(2.0, step_mode="m"))
    drive(net)
    with torch.no_grad():
        plif.w.copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0]).view(4, 1, 1))
    net.eval()
    x = torch.rand(8, 3, 1, 8, 8) * 3
    with torch.no_grad():
        want = net(x)
    v_before = plif.v.clone()
    graph = to_nir(net, x)
    assert torch.equal(plif.v, v_before)  # export reads parameters only
    assert [type(n).__name__ for n in graph.nodes.values()] == [
        "Input", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine", "LIF", "Output"]
    assert graph.nodes["1"].tau.shape == (4, 8, 8)
    snn.reset_net(net)
    got = from_nir(graph)(x)
    assert 0 < want.mean() < 1
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_imported_network_trains_and_restarts_each_call():
    net = torch.nn.Sequential(torch.nn.Linear(5, 6), snn.LIFNode(step_mode="m"))
    x = torch.rand(10, 2, 5) * 3
    back = from_nir(to_nir(net, x))
    a, b = back(x), back(x)
    assert torch.equal(a, b)
    a.sum().backward()
    weights = [p for p in back.parameters()]
    assert len(weights) == 2 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("layer, match", [
    (snn.LIFNode(2.0, 1.0, None, step_mode="m"), "soft reset"),
    (snn.IFNode(1.0, None, step_mode="m"), "soft reset"),
    (snn.RIFNode(0.1, step_mode="m"), "RIF's self-weight"),
    (torch.nn.MaxPool1d(2), "max pooling"),
    (torch.nn.BatchNorm1d(4), "fold it"),
    (torch.nn.ReLU(), "not exportable"),
    (torch.nn.Conv1d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode"),
    (torch.nn.Flatten(0), "batch dimension"),
])
def test_export_refuses_what_nir_cannot_express(layer, match):
    net = torch.nn.Sequential(torch.nn.Identity(), layer)
    x = torch.rand(3, 2, 4, 6)
    with pytest.raises((ValueError, TypeError), match=match) as err:
        to_nir(net, x)
    assert "layer '1'" in str(err.value)


def test_export_refuses_mixed_sign_rif_and_bad_arguments():
    rif = snn.RIFNode(-0.1, step_mode="m")
    net = torch.nn.Sequential(rif)
    with torch.no_grad():
        rif.w.fill_(0.0)
    assert type(to_nir(net, torch.rand(2, 1, 3)).nodes["0"]).__name__ == "IF"
    with pytest.raises(ValueError, match="dt must be a positive"):
        to_nir(net, torch.rand(2, 1, 3), dt=0.0)
    with pytest.raises(ValueError, match="sample_input must be"):
        to_nir(net, torch.rand(3))
    with pytest.raises(TypeError, match="module must be"):
        to_nir("net", torch.rand(2, 1, 3))


def test_import_refuses_unknown_nodes_and_bad_graphs():
    shape = np.array([3])
    lif = nir.LIF(tau=np.full(3, 2.0), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3),
                  v_reset=np.zeros(3))
    with pytest.raises(TypeError, match="nir.NIRGraph"):
        from_nir(42)
    with pytest.raises(ValueError, match="dt must be"):
        from_nir(single(lif, (3,)), dt=-1)
    with pytest.raises(ValueError, match="unknown node 'nope'"):
        from_nir(nir.NIRGraph(nodes={"input": nir.Input(shape), "output": nir.Output(shape)},
                              edges=[("input", "nope")], type_check=False))
    orphan = {"input": nir.Input(shape), "lif": lif, "output": nir.Output(shape)}
    with pytest.raises(ValueError, match="node 'lif' has no incoming edge"):
        from_nir(nir.NIRGraph(nodes=orphan, edges=[("lif", "output")], type_check=False))
    with pytest.raises(ValueError, match="leads into the Input node"):
        from_nir(nir.NIRGraph(nodes=orphan, edges=[("input", "lif"), ("lif", "input"),
                                                   ("lif", "output")], type_check=False))
    assert math.isfinite(from_nir(single(lif, (3,)))(torch.rand(2, 1, 3)).sum().item())


# ------------------------------------------------------------------ cycles, subgraphs, delays


def graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False)


def recurrent_lif_graph(rng, n_in=4, n=6, tau=2.0, bias=True):
    """input -> fc -> lif, with lif -> rec -> lif closing the cycle; lif -> output."""
    lif = nir.LIF(tau=np.full(n, tau), r=rng.uniform(1.5, 3.0, n), v_leak=np.zeros(n),
                  v_threshold=rng.uniform(0.8, 1.2, n), v_reset=np.zeros(n))
    w_in, b_in = rng.standard_normal((n, n_in)) * 1.5, rng.uniform(0.6, 1.2, n)
    w_rec, b_rec = rng.standard_normal((n, n)) * 0.8, rng.uniform(-0.2, 0.2, n)
    rec = nir.Affine(weight=w_rec, bias=b_rec) if bias else nir.Linear(weight=w_rec)
    nodes = {"input": nir.Input(np.array([n_in])), "fc": nir.Affine(weight=w_in, bias=b_in),
             "lif": lif, "rec": rec, "output": nir.Output(np.array([n]))}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    return graph(nodes, edges)


def recurrent_reference(g, x, dt):
    """The cycle by hand: the back edge rec -> lif carries rec's value of the previous step
    (nothing at step 0); the LIF by NIR's Euler step, as in `euler`."""
    fc, lif, rec = g.nodes["fc"], g.nodes["lif"], g.nodes["rec"]
    v = np.broadcast_to(lif.v_leak, x.shape[1:2] + lif.v_leak.shape).copy()
    back, out = None, []
    for x_t in x:
        i = x_t @ fc.weight.T + fc.bias
        if back is not None:
            i = i + back
        v = v + dt / lif.tau * ((lif.v_leak - v) + lif.r * i)
        z = v > lif.v_threshold
        v = np.where(z, lif.v_reset, v)
        s = z.astype(x.dtype)
        back = s @ rec.weight.T + getattr(rec, "bias", 0.0)
        out.append(s)
    return np.stack(out)


@pytest.mark.parametrize("bias", [True, False])
def test_a_cycle_runs_step_by_step_with_the_previous_value_on_its_back_edge(bias):
    rng = np.random.default_rng(5)
    g = recurrent_lif_graph(rng, bias=bias)
    x = rng.standard_normal((50, 3, 4)) + 0.3
    net = from_nir(g, dt=0.5, dtype=torch.float64)
    assert net.back_edges == [("rec", "lif")]
    got = net(torch.from_numpy(x)).detach().numpy()
    want = recurrent_reference(g, x, 0.5)
    assert 0.05 < want.mean() < 0.9
    np.testing.assert_array_equal(got, want)
    # the recurrent weight matters: without it the spikes differ
    g.nodes["rec"].weight = np.zeros_like(g.nodes["rec"].weight)
    assert not np.array_equal(from_nir(g, dt=0.5, dtype=torch.float64)(torch.from_numpy(x)).detach().numpy(), want)


def test_a_self_loop_delays_by_one_step_and_trains():
    """A Scale with an edge to itself accumulates: y_t = x_t + y_{t-1} (y_{-1} = 0)."""
    s = nir.Scale(scale=np.ones(2))
    net = from_nir(graph({"input": nir.Input(np.array([2])), "acc": s, "output": nir.Output(np.array([2]))},
                         [("input", "acc"), ("acc", "acc"), ("acc", "output")]), dtype=torch.float64)
    x = torch.randint(-3, 4, (7, 2, 2)).double().requires_grad_()
    y = net(x)
    torch.testing.assert_close(y, x.cumsum(0), rtol=0, atol=0)
    y[-1].sum().backward()  # the last step depends on every step
    assert torch.equal(x.grad, torch.ones_like(x))


def test_a_cycle_trains_through_time():
    rng = np.random.default_rng(6)
    net = from_nir(recurrent_lif_graph(rng), dt=0.5)
    x = torch.from_numpy(rng.standard_normal((30, 2, 4)).astype(np.float32)) + 0.3
    net(x).sum().backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert len(grads) == 4 and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_a_closed_loop_without_input_starts_from_zero():
    """A loop no edge from the Input reaches runs too: its first node reads only a back edge,
    zero at step 0 (of the shape of its source's output)."""
    n = 3
    nodes = {"input": nir.Input(np.array([n])), "output": nir.Output(np.array([n])),
             "li": nir.LI(tau=np.full(n, 2.0), r=np.ones(n), v_leak=np.zeros(n)),
             "w": nir.Affine(weight=np.eye(n) * 0.5, bias=np.array([1.0, 2.0, 3.0]))}
    net = from_nir(graph(nodes, [("input", "output"), ("w", "li"), ("li", "w"), ("li", "output")]),
                   dtype=torch.float64)
    assert net.back_edges == [("w", "li")]  # the walk reaches 'li' first (by name)
    x = torch.zeros(4, 1, n, dtype=torch.float64)
    li, w, want = np.zeros(n), np.zeros(n), []
    for _ in range(4):
        li = li + 1.0 / 2.0 * ((0.0 - li) + w)  # li reads w of the previous step
        w = 0.5 * li + np.array([1.0, 2.0, 3.0])
        want.append(li)
    np.testing.assert_allclose(net(x)[:, 0].detach().numpy(), np.stack(want), rtol=0, atol=1e-15)


def nested_recurrent_graph(rng):
    """The cycle of `recurrent_lif_graph` inside a subgraph 'layer', as Spyx writes it."""
    flat = recurrent_lif_graph(rng)
    inner = graph({"input": nir.Input(np.array([6])), "lif": flat.nodes["lif"],
                   "rec": flat.nodes["rec"], "output": nir.Output(np.array([6]))},
                  [("input", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])
    outer = graph({"input": flat.nodes["input"], "fc": flat.nodes["fc"], "layer": inner,
                   "output": flat.nodes["output"]},
                  [("input", "fc"), ("fc", "layer"), ("layer", "output")])
    return flat, outer


def test_nested_graphs_are_inlined(tmp_path):
    flat, nested = nested_recurrent_graph(np.random.default_rng(7))
    x = torch.from_numpy(np.random.default_rng(8).standard_normal((40, 2, 4))) + 0.3
    net = from_nir(nested, dt=0.5, dtype=torch.float64)
    assert net.back_edges == [("layer.rec", "layer.lif")]
    assert net.passes == {"layer.input", "layer.output"}
    want = from_nir(flat, dt=0.5, dtype=torch.float64)(x)
    assert 0.05 < want.mean() < 0.9
    torch.testing.assert_close(net(x), want, rtol=0, atol=0)
    nir.write(tmp_path / "nested.nir", nested)  # and through a file
    torch.testing.assert_close(from_nir(tmp_path / "nested.nir", dt=0.5, dtype=torch.float64)(x),
                               want, rtol=0, atol=0)
    # an edge may name a node inside a subgraph
    nested.edges = [("input", "fc"), ("fc", "layer.input"), ("layer.output", "output")]
    torch.testing.assert_close(from_nir(nested, dt=0.5, dtype=torch.float64)(x), want, rtol=0, atol=0)


def test_nested_graph_errors_name_the_node():
    flat, nested = nested_recurrent_graph(np.random.default_rng(7))
    inner = nested.nodes["layer"]
    inner.nodes["second"] = nir.Input(np.array([6]))
    inner.edges.append(("second", "lif"))
    with pytest.raises(ValueError, match=r"subgraph 'layer' has 2 Input nodes"):
        from_nir(nested)
    del inner.nodes["second"]
    inner.edges.pop()
    nested.nodes["layer.lif"] = flat.nodes["lif"]
    with pytest.raises(ValueError, match=r"node 'layer.lif': two nodes have this name"):
        from_nir(nested)


def test_several_inputs_and_outputs():
    rng = np.random.default_rng(9)
    wa, wb = rng.standard_normal((3, 2)), rng.standard_normal((3, 4))
    nodes = {"a": nir.Input(np.array([2])), "b": nir.Input(np.array([4])),
             "fa": nir.Linear(weight=wa), "fb": nir.Linear(weight=wb),
             "thr": nir.Threshold(threshold=np.zeros(3)),
             "spikes": nir.Output(np.array([3])), "current": nir.Output(np.array([3]))}
    edges = [("a", "fa"), ("b", "fb"), ("fa", "thr"), ("fb", "thr"), ("thr", "spikes"),
             ("fa", "current"), ("fb", "current")]
    net = from_nir(graph(nodes, edges), dtype=torch.float64)
    assert net.input_names == ["a", "b"] and net.output_names == ["spikes", "current"]
    xa, xb = torch.randn(5, 2, 2, dtype=torch.float64), torch.randn(5, 2, 4, dtype=torch.float64)
    out = net({"a": xa, "b": xb})
    current = xa @ torch.from_numpy(wa).T + xb @ torch.from_numpy(wb).T
    torch.testing.assert_close(out["current"], current, rtol=0, atol=0)
    torch.testing.assert_close(out["spikes"], (current > 0).double(), rtol=0, atol=0)
    assert 0 < out["spikes"].mean() < 1
    with pytest.raises(ValueError, match=r"Input nodes \['a', 'b'\]: pass a dict"):
        net(xa)
    with pytest.raises(ValueError, match="dict from the Input nodes"):
        net({"a": xa})
    with pytest.raises(ValueError, match=r"different \[T, batch\]"):
        net({"a": xa, "b": xb[:3]})


def test_delay_shifts_each_neuron_by_whole_steps_inside_and_outside_a_cycle():
    steps = np.array([0, 1, 3])
    dt = 0.25
    delay = nir.Delay(delay=steps * dt)
    x = torch.randn(8, 2, 3, dtype=torch.float64)
    net = from_nir(single(delay, (3,)), dt=dt, dtype=torch.float64)
    want = torch.zeros_like(x)
    for j, d in enumerate(steps):
        want[d:, :, j] = x[:x.shape[0] - d, :, j]
    torch.testing.assert_close(net(x), want, rtol=0, atol=0)
    # in a cycle: y_t = x_t + y_{t-1-d}, through a back edge and the delay
    nodes = {"input": nir.Input(np.array([3])), "sum": nir.Scale(scale=np.ones(3)),
             "delay": delay, "output": nir.Output(np.array([3]))}
    loop = from_nir(graph(nodes, [("input", "sum"), ("sum", "delay"), ("delay", "sum"),
                                  ("sum", "output")]), dt=dt, dtype=torch.float64)
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        y[t] = x[t]
        for j, d in enumerate(steps):
            if t - 1 - d >= 0:
                y[t, :, j] += y[t - 1 - d, :, j]
    torch.testing.assert_close(loop(x), y, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"node 'n' \(Delay\): a delay runs as a whole number"):
        from_nir(single(nir.Delay(delay=np.array([0.1, 0.3, 0.25])), (3,)), dt=dt)


def test_an_imported_cyclic_network_exports_and_imports_again_equal(tmp_path):
    """import -> to_nir -> nir.write -> nir.read -> import: the same outputs bit for bit, also
    after training changed the weights; nested graphs come back flat."""
    flat, nested = nested_recurrent_graph(np.random.default_rng(10))
    net = from_nir(nested, dt=0.5)
    x = torch.from_numpy(np.random.default_rng(11).standard_normal((40, 2, 4)).astype(np.float32)) + 0.3
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    want = net(x)
    assert 0.05 < want.mean() < 0.9
    g = to_nir(net)
    assert not any(isinstance(n, nir.NIRGraph) for n in g.nodes.values())
    assert sorted(g.edges) == sorted([("input", "fc"), ("fc", "layer.lif"), ("layer.lif", "layer.rec"),
                                      ("layer.rec", "layer.lif"), ("layer.lif", "output")])
    nir.write(tmp_path / "again.nir", g)
    back = from_nir(tmp_path / "again.nir", dt=0.5)
    assert back.back_edges == [("layer.rec", "layer.lif")]
    torch.testing.assert_close(back(x), want, rtol=0, atol=0)
    g64 = to_nir(net, x.double())
    assert g64.nodes["fc"].weight.dtype == np.float64


def test_conv1d_and_bias_free_linear_round_trip(tmp_path):
    """Conv1d -> NIR Conv1d, Linear without bias -> NIR Linear, and back."""
    torch.manual_seed(3)
    TD = snn.TimeDistributed
    net = drive(torch.nn.Sequential(
        TD(torch.nn.Conv1d(2, 3, 3, stride=2, padding=1)), snn.IFNode(1.0, 0.0, step_mode="m"),
        TD(torch.nn.Flatten()), torch.nn.Linear(3 * 5, 4, bias=False), snn.LIFNode(2.0, step_mode="m")))
    x = torch.rand(12, 2, 2, 10) * 2
    graph = to_nir(net, x)
    assert [type(n).__name__ for n in graph.nodes.values()] == [
        "Input", "Conv1d", "IF", "Flatten", "Linear", "LIF", "Output"]
    nir.write(tmp_path / "c1.nir", graph)
    with torch.no_grad():
        want = net(x)
    assert want.sum() > 0
    torch.testing.assert_close(from_nir(tmp_path / "c1.nir")(x), want, rtol=0, atol=0)


# ----------------------------------------------------------- dtypes, Flatten, one-step samples

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "nir-external"


def external(name):
    """A graph written by another project (see the folder's README); skips where it is absent."""
    path = EXTERNAL / name
    if not path.exists():
        pytest.skip(f"{path} is absent (graphs written by other projects, kept in shared/)")
    return path


def test_a_float64_graph_imports_as_float32_and_runs_its_equations():
    """The NIR paper's two-neuron graph stores float64; it used to fail on float32 input with
    'expected m1 and m2 to have the same dtype'."""
    graph = nir.read(external("paper_two_lif_neurons.nir"), type_check=False)
    assert graph.nodes["linear1"].weight.dtype == np.float64
    dt = 1e-4  # the paper's step; lif1 leaks towards 1.2, above its threshold 1
    net = from_nir(graph, dt=dt)
    assert {t.dtype for t in (*net.parameters(), *net.buffers())} == {torch.float32}
    hidden = []
    lif1 = next(m for key, m in net.layers.items() if key.endswith("lif1"))
    lif1.register_forward_hook(lambda module, args, out: hidden.append(out))
    x = torch.rand(400, 2, 1) * 0.5
    out = net(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    want = euler(graph.nodes["lif1"], x.numpy(), dt)  # the equations, in float32
    assert want.sum() >= 4
    np.testing.assert_array_equal(hidden[0].detach().numpy(), want)
    net64 = from_nir(graph, dt=dt, dtype=torch.float64)
    torch.testing.assert_close(net64(x.double()), out.double(), rtol=0, atol=0)
    with pytest.raises(TypeError, match="dtype must be a floating"):
        from_nir(graph, dtype=torch.int32)


def test_integer_weights_import_as_floating_parameters():
    """Integer arrays used to fail: 'Only Tensors of floating point and complex dtype can
    require gradients'."""
    w = np.array([[1, -2, 0], [3, 1, 1]], dtype=np.int64)
    lif = nir.LIF(tau=np.full(2, 2, dtype=np.int64), r=np.ones(2, dtype=np.int64),
                  v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2))
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "w": nir.Linear(weight=w),
                                "lif": lif, "output": nir.Output(np.array([2]))},
                         edges=[("input", "w"), ("w", "lif"), ("lif", "output")], type_check=False)
    net = from_nir(graph)
    (weight,) = net.parameters()
    assert weight.dtype == torch.float32 and weight.requires_grad
    assert torch.equal(weight, torch.tensor(w, dtype=torch.float32))
    x = torch.rand(6, 4, 3) * 3
    out = net(x)
    out.sum().backward()
    assert out.dtype == torch.float32 and weight.grad is not None
    float_graph = nir.NIRGraph(nodes={**graph.nodes, "w": nir.Linear(weight=w.astype(np.float32))},
                               edges=graph.edges, type_check=False)
    assert torch.equal(out, from_nir(float_graph)(x))


def conv_flatten_net():
    return torch.nn.Sequential(snn.TimeDistributed(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten()),
                               torch.nn.Linear(2 * 4 * 4, 3), snn.LIFNode(2.0, step_mode="m"))


def test_flatten_is_written_with_a_negative_end_dim_and_both_forms_import():
    torch.manual_seed(0)
    net = conv_flatten_net()
    x = torch.rand(5, 2, 1, 6, 6) * 2
    graph = to_nir(net, x)
    flat = [n for n in graph.nodes.values() if isinstance(n, nir.Flatten)][0]
    assert flat.start_dim == 0 and flat.end_dim == -1  # as snnTorch and Sinabs write it
    want = from_nir(graph)(x)
    flat.end_dim = 2  # the positive form of the same Flatten, as we used to write it
    torch.testing.assert_close(from_nir(graph)(x), want, rtol=0, atol=0)


def test_a_peers_cnn_with_flatten_to_minus_one_imports_per_sample():
    """Sinabs' CNN of the NIR paper (Flatten(0, -1) over a sample's dims): each sample of a
    batch gets what it gets alone."""
    net = from_nir(external("paper_cnn_sinabs.nir"))
    x = (torch.rand(6, 3, 2, 34, 34) < 0.3).float()
    with torch.no_grad():
        out = net(x)
        alone = [net(x[:, b:b + 1]) for b in range(x.shape[1])]
    assert out.shape == (6, 3, 10)
    torch.testing.assert_close(out, torch.cat(alone, dim=1), rtol=0, atol=0)


TD = snn.TimeDistributed
ONE_STEP_NETS = {  # a network and its time-major sample shape
    "linear": (lambda: torch.nn.Sequential(torch.nn.Linear(4, 3), snn.LIFNode(2.0, step_mode="m")),
               (7, 2, 4)),
    "conv": (conv_flatten_net, (5, 2, 1, 6, 6)),
    "neuron-first": (lambda: torch.nn.Sequential(
        snn.IFNode(step_mode="m"), TD(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten()),
        torch.nn.Linear(2 * 4 * 4, 3), snn.IFNode(step_mode="m")), (5, 2, 1, 6, 6)),
    "pool-first": (lambda: torch.nn.Sequential(
        TD(torch.nn.AvgPool2d(2), torch.nn.Flatten()), torch.nn.Linear(9, 3),
        snn.IFNode(step_mode="m")), (5, 2, 1, 6, 6)),
}


@pytest.mark.parametrize("name", ONE_STEP_NETS)
def test_one_step_sample_as_the_peers_take_it(name):
    """`to_nir(net, x[0])` (snnTorch's and Norse's convention) writes the same graph; it used to
    read [batch, features] as [T, batch] and fail in NIR's type inference."""
    make, shape = ONE_STEP_NETS[name]
    net = make()
    x = torch.rand(shape) * 3
    a, b = to_nir(net, x), to_nir(net, x[0])
    assert list(a.nodes) == list(b.nodes) and a.edges == b.edges
    assert [type(n) for n in a.nodes.values()] == [type(n) for n in b.nodes.values()]
    np.testing.assert_array_equal(b.nodes["input"].input_type["input"], shape[2:])
    nir.NIRGraph(nodes=b.nodes, edges=b.edges)  # passes NIR's type inference
    torch.testing.assert_close(from_nir(b)(x), from_nir(a)(x), rtol=0, atol=0)
    assert list(to_nir(net, x[0], time_major=False).nodes) == list(a.nodes)
    assert list(to_nir(net, x, time_major=True).nodes) == list(a.nodes)
    with pytest.raises(TypeError, match="time_major"):
        to_nir(net, x, time_major="yes")


@pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning")
def test_norse_runs_our_graph_with_a_flatten():
    """Norse 1.1 maps NIR's Flatten to torch.nn.Flatten(start_dim, end_dim) over [batch, ...]:
    with our end_dim=-1 it runs (at batch 1, as for Sinabs' graphs) and gives our spikes; the
    positive end_dim we used to write failed there."""
    norse = pytest.importorskip("norse.torch", reason="needs the peer library norse (extra peers)")
    torch.manual_seed(0)
    net = conv_flatten_net()
    with torch.no_grad():
        for layer in (net[0].layer[0], net[1]):
            layer.weight.abs_()
    x = torch.rand(20, 1, 1, 6, 6)
    with torch.no_grad():
        want = net(x)
    assert 0.05 < want.mean() < 0.95
    module = norse.from_nir(to_nir(net, x[0]), dt=1.0)
    state, got = None, []
    with torch.no_grad():
        for step in x:
            z, state = module(step, state)
            got.append(z)
    torch.testing.assert_close(torch.stack(got).reshape(want.shape), want, rtol=0, atol=0)


# ------------------------------------------------------------------ recurrent layers -> NIR


def recurrent_net(neuron, **options):
    recurrent = pytest.importorskip("snnfunc.recurrent", reason="needs snnfunc.recurrent")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 10),
                              recurrent.Recurrent(10, neuron, bias=False, **options),
                              torch.nn.Linear(10, 3), snn.IFNode(step_mode="m"))
    with torch.no_grad():
        for i in (0, 2):
            net[i].weight.mul_(3)
            net[i].bias.add_(0.5)
    return net


RECURRENT = {
    "lif": ("lif", dict(tau=2.0)),
    "lif-tau-3": ("lif", dict(tau=3.0)),
    "if": ("if_", {}),
    "plif-per-neuron": ("plif", dict(w=torch.nn.Parameter(torch.linspace(0.2, 0.6, 10)))),
    "cuba_lif": ("cuba_lif", dict(tau_syn=2.0, tau_mem=4.0)),
    "cuba_lif-no-decay-input": ("cuba_lif", dict(tau_syn=2.0, tau_mem=4.0, decay_input=False)),
}


@pytest.mark.parametrize("name", RECURRENT)
def test_recurrent_layer_exports_with_its_cycle_and_round_trips(name, tmp_path):
    """Recurrent(neuron): the neuron node and a Linear from its spikes back into it; the back
    edge reads the previous step's spikes, what the layer feeds back (none at the first step)."""
    import snnfunc

    function, options = RECURRENT[name]
    net = recurrent_net(getattr(snnfunc, function), **options)
    x = torch.rand(60, 4, 5) * 2
    with torch.no_grad():
        hidden = net[1](net[0](x))
        net[1].reset()
        want = net(x)
    net[1].reset()
    graph = to_nir(net, x, dt=1e-3)
    kinds = {"if_": "IF", "cuba_lif": "CubaLIF"}.get(function, "LIF")
    assert type(graph.nodes["1"]).__name__ == kinds
    assert ("1", "1.w_rec") in graph.edges and ("1.w_rec", "1") in graph.edges
    np.testing.assert_array_equal(graph.nodes["1.w_rec"].weight, net[1].weight.detach().numpy())
    nir.write(tmp_path / "rnn.nir", graph)
    back = from_nir(tmp_path / "rnn.nir", dt=1e-3)
    assert back.back_edges == [("1.w_rec", "1")]
    assert 0.05 < hidden.mean() < 0.9 and 0.05 < want.mean() < 0.95
    torch.testing.assert_close(back(x), want, rtol=0, atol=0)
    # the recurrent weight matters
    with torch.no_grad():
        net[1].weight.zero_()
        assert not torch.equal(net(x), want)


def test_recurrent_layer_with_its_input_weight_exports_it_as_a_linear(tmp_path):
    """Recurrent(in_features=...): its input weight a Linear node before the neuron's, the
    graph that of the same layer with a torch.nn.Linear before it, its outputs the layer's."""
    import snnfunc

    recurrent = pytest.importorskip("snnfunc.recurrent", reason="needs snnfunc.recurrent")
    torch.manual_seed(2)
    net = torch.nn.Sequential(recurrent.Recurrent(10, snnfunc.lif, in_features=5, bias=False,
                                                  tau=2.0))
    with torch.no_grad():
        net[0].input_weight.mul_(3)
    x = (torch.rand(40, 4, 5) < 0.5).float()
    with torch.no_grad():
        want = net(x)
    net[0].reset()
    graph = to_nir(net, x, dt=1e-3)
    assert ("input", "0.w_in") in graph.edges and ("0.w_in", "0") in graph.edges
    assert ("0.w_rec", "0") in graph.edges and ("0", "output") in graph.edges
    np.testing.assert_array_equal(graph.nodes["0.w_in"].weight,
                                  net[0].input_weight.detach().numpy())
    assert list(graph.nodes["output"].output_type.values())[0].tolist() == [10]
    nir.write(tmp_path / "rnn.nir", graph)
    back = from_nir(tmp_path / "rnn.nir", dt=1e-3)
    assert 0.05 < want.mean() < 0.95
    torch.testing.assert_close(back(x), want, rtol=0, atol=0)


def test_recurrent_export_refuses_what_nir_cannot_express():
    import snnfunc

    recurrent = pytest.importorskip("snnfunc.recurrent", reason="needs snnfunc.recurrent")
    x = torch.rand(4, 2, 5)
    net = torch.nn.Sequential(torch.nn.Linear(5, 6), recurrent.Recurrent(6, snnfunc.lif))
    with pytest.raises(ValueError, match=r"layer '1' \(Recurrent\): the recurrent bias"):
        to_nir(net, x)
    with torch.no_grad():
        net[1].bias.zero_()  # a zero bias is no bias
    assert set(to_nir(net, x).nodes) == {"input", "0", "1", "1.w_rec", "output"}
    soft = torch.nn.Sequential(recurrent.Recurrent(5, snnfunc.lif, bias=False, v_reset=None))
    with pytest.raises(ValueError, match=r"layer '0' \(Recurrent\): the soft reset"):
        to_nir(soft, x)
    odd = torch.nn.Sequential(recurrent.Recurrent(5, snnfunc.if_, bias=False))
    odd[0].neuron = lambda x_seq, state=None, **kw: snnfunc.if_(x_seq, state)
    with pytest.raises(TypeError, match=r"layer '0' \(Recurrent\): its neuron .* has no NIR node"):
        to_nir(odd, x)


def test_spike_linear_exports_as_the_linear_it_is(tmp_path):
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), snn.LIFNode(2.0, step_mode="m"),
                              snn.SpikeLinear(16, 8), snn.LIFNode(2.0, step_mode="m"))
    plain = torch.nn.Sequential(torch.nn.Linear(12, 16), snn.LIFNode(2.0, step_mode="m"),
                                torch.nn.Linear(16, 8), snn.LIFNode(2.0, step_mode="m"))
    plain.load_state_dict(net.state_dict())
    x = torch.rand(20, 4, 12) * 3
    graph = to_nir(net, x, dt=1.0)
    nir.write(tmp_path / "net.nir", graph)
    want = to_nir(plain, x, dt=1.0)
    assert sorted(graph.nodes) == sorted(want.nodes)
    for key, node in graph.nodes.items():
        assert type(node) is type(want.nodes[key])
        for field in ("weight", "bias"):
            if hasattr(node, field):
                np.testing.assert_array_equal(getattr(node, field), getattr(want.nodes[key], field))
    snn.reset_net(net)
    with torch.no_grad():
        ours = net(x)
    back = from_nir(tmp_path / "net.nir", dt=1.0)
    torch.testing.assert_close(back(x), ours)
