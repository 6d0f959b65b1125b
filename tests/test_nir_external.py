"""NIR graphs written by other projects (`../shared/nir-external/`, sources in its README):
every graph that `nir.read` reads imports, and runs as its writers' own simulator (Norse 1.1)
runs it, spike for spike; the recurrent braille networks included."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir", reason="snnfunc.nir needs the optional package nir (extra 'nir')")
from snnfunc.nir import from_nir  # noqa: E402

EXTERNAL = Path(__file__).parents[1] / ".." / "shared" / "nir-external"

BRAILLE_FLAT = ["paper_braille_noDelay_bias_zero.nir", "paper_braille_noDelay_noBias_subtract.nir",
                "nirtorch_braille.nir", "norse_braille.nir"]
BRAILLE_NESTED = ["spyx_braille_noDelay_bias_zero_subgraph.nir",
                  "spyx_braille_noDelay_noBias_subtract_subgraph.nir"]
FEED_FORWARD = ["paper_lif_norse.nir", "paper_lif_rockpool.nir", "paper_two_lif_neurons.nir",
                "paper_cnn_sinabs.nir", "spyx_scnn_mnist.nir"]
CYCLIC = ["nirtorch_feedback_graph.nir"]
UNREADABLE = {  # nir 1.0.8 cannot read these at all (see the folder's README)
    "paper_braille_noDelay_bias_zero_subgraph.nir": "references destination node 'lif'",
    "paper_braille_noDelay_noBias_subtract_subgraph.nir": "references destination node 'lif'",
    "rockpool_braille.nir": "Type inference error",
}


def external(name):
    path = EXTERNAL / name
    if not path.exists():
        pytest.skip(f"{path} is absent (graphs written by other projects, kept in shared/)")
    return path


def norse_run(graph, x, dt):
    """Norse 1.1's from_nir of the graph, stepped over x [T, ...] as Norse runs it."""
    norse = pytest.importorskip("norse.torch", reason="needs the peer library norse (extra peers)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nirtorch.load's deprecation, Norse's r warnings
        module = norse.from_nir(graph, dt=dt)
        state, out = None, []
        with torch.no_grad():
            for step in x:
                z, state = module(step, state)
                out.append(z)
    return torch.stack(out)


def test_every_file_is_covered_here():
    if not EXTERNAL.exists():
        pytest.skip(f"{EXTERNAL} is absent (graphs written by other projects, kept in shared/)")
    files = {p.name for p in EXTERNAL.glob("*.nir")}
    assert files == set(BRAILLE_FLAT + BRAILLE_NESTED + FEED_FORWARD + CYCLIC) | set(UNREADABLE)


@pytest.mark.parametrize("rate", [0.2, 0.5])
@pytest.mark.parametrize("name", BRAILLE_FLAT + BRAILLE_NESTED)
def test_braille_rnn_equals_norse_spike_for_spike(name, rate):
    """CubaLIF layers with a recurrent weight (flat, or nested as a subgraph by Spyx): the
    back edge carries the previous step's value, as nirtorch's executor (Norse) runs it."""
    path = external(name)
    dt = 1e-4  # the braille task's step
    net = from_nir(path, dt=dt)
    assert len(net.back_edges) == 1
    torch.manual_seed(0)
    x = (torch.rand(300, 3, 12) < rate).float()
    with torch.no_grad():
        got = net(x)
    want = norse_run(nir.read(path), x, dt)
    assert got.shape == want.shape == (300, 3, 7)
    assert want.mean() > 0.01  # the readout fires
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("nested, flat", list(zip(BRAILLE_NESTED, BRAILLE_FLAT[:2])))
def test_spyx_nested_braille_equals_the_papers_flat_file(nested, flat):
    """Spyx's copies nest the recurrent layer; inlined, they run as the paper's flat graphs."""
    a, b = from_nir(external(nested), dt=1e-4), from_nir(external(flat), dt=1e-4)
    assert a.passes == {"lif1.input", "lif1.output"}
    x = (torch.rand(200, 2, 12) < 0.4).float()
    with torch.no_grad():
        want = b(x)
        torch.testing.assert_close(a(x), want, rtol=0, atol=0)
    assert want.sum() > 0


def test_paper_lif_reproduces_norses_recorded_trace_and_norse():
    """The NIR paper's single LIF (dt = 1e-4): the spikes of Norse's recorded trace."""
    path = external("paper_lif_norse.nir")
    trace = np.loadtxt(external("lif_traces/lif_norse.csv"), delimiter=",")  # input, v, spike
    x = torch.tensor(trace[:, 0], dtype=torch.float32).view(-1, 1, 1)
    with torch.no_grad():
        got = from_nir(path, dt=1e-4)(x)
    assert trace[:, 2].sum() == 4
    np.testing.assert_array_equal(got.view(-1).numpy(), trace[:, 2])
    torch.testing.assert_close(got, norse_run(nir.read(path), x, 1e-4).view(got.shape), rtol=0, atol=0)


def test_rockpool_lif_runs_its_equations():
    """Rockpool's LIF has r = 24 (Norse ignores r, so no Norse reference); NIR's type check
    refuses the file, from_nir reads it without. The Euler step written here, in float64."""
    path = external("paper_lif_rockpool.nir")
    with pytest.raises(Exception):
        nir.read(path)
    g = nir.read(path, type_check=False)
    w, lif = g.nodes["0_LinearTorch"].weight.astype(np.float64), g.nodes["1_LIFNeuronTorch"]
    p = {k: np.asarray(getattr(lif, k), dtype=np.float64) for k in ("tau", "r", "v_leak", "v_threshold", "v_reset")}
    dt = 1e-4
    x = np.random.default_rng(0).uniform(0, 1, (1000, 2, 1))
    v, want = np.zeros((2, 1)), []
    for x_t in x:
        v = v + dt / p["tau"] * ((p["v_leak"] - v) + p["r"] * (x_t @ w.T))
        z = v > p["v_threshold"]
        v = np.where(z, p["v_reset"], v)
        want.append(z)
    got = from_nir(path, dt=dt, dtype=torch.float64)(torch.from_numpy(x)).detach().numpy()
    assert np.sum(want) >= 10
    np.testing.assert_array_equal(got, np.stack(want))


def test_two_lif_neurons_equal_norse():
    path = external("paper_two_lif_neurons.nir")
    net = from_nir(path, dt=1e-4)
    hidden = []
    next(m for k, m in net.layers.items() if k.endswith("lif1")).register_forward_hook(
        lambda module, args, out: hidden.append(out))
    x = torch.rand(2000, 1, 1)
    with torch.no_grad():
        got = net(x)
    assert hidden[0].sum() >= 10  # lif1 (leaking towards 1.2, above its threshold) fires
    torch.testing.assert_close(got, norse_run(nir.read(path), x, 1e-4).view(got.shape), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["paper_cnn_sinabs.nir", "spyx_scnn_mnist.nir"])
def test_cnn_equals_norse(name):
    """Conv2d, IF, SumPool2d, Flatten, Affine; Norse runs these at batch 1."""
    path = external(name)
    torch.manual_seed(0)
    x = (torch.rand(25, 1, 2, 34, 34) < 0.5).float()
    with torch.no_grad():
        got = from_nir(path)(x)
    assert got.sum() >= 5
    torch.testing.assert_close(got, norse_run(nir.read(path), x, 1.0).view(got.shape), rtol=0, atol=0)


def test_nirtorch_feedback_graph_runs_its_loop():
    """Affine -> LIF -> Affine -> LI -> Affine -> back to the LIF, a loop that no edge from
    the Input enters, and an Input -> Output edge. nirtorch 2.6 never returns on it, so the
    loop is written here: the walk reaches 'feedback_ir' first (by name), so its input edge
    is the back edge, zero at step 0."""
    path = external("nirtorch_feedback_graph.nir")
    g = nir.read(path)
    dt = 1e-3
    net = from_nir(path, dt=dt, dtype=torch.float64)
    assert net.back_edges == [("feedback_weights", "feedback_ir")]
    n = {k: v for k, v in g.nodes.items()}
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    x = np.random.default_rng(1).standard_normal((60, 2, 3))
    lif, li = n["state"], n["feedback_ir"]
    v, ir, fb = np.zeros((2, 2000)), np.zeros((2, 3)), np.zeros((2, 3))
    want, fired = [], 0
    for x_t in x:
        ir = ir + dt / f64(li.tau) * ((f64(li.v_leak) - ir) + f64(li.r) * fb)
        cur = ir @ n["state_weights"].weight.T + n["state_weights"].bias
        v = v + dt / f64(lif.tau) * ((f64(lif.v_leak) - v) + f64(lif.r) * cur)
        z = v > f64(lif.v_threshold)
        v = np.where(z, f64(lif.v_reset), v)
        s = z.astype(np.float64)
        fired += s.sum()
        fb = s @ n["feedback_weights"].weight.T + n["feedback_weights"].bias
        want.append(x_t + s @ n["output_probe_conn_weights"].weight.T + n["output_probe_conn_weights"].bias)
    got = net(torch.from_numpy(x)).detach().numpy()
    assert fired > 0
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_files_nir_cannot_read_fail_in_nir_read(name):
    """These files fail in nir.read itself (with or without its type check), before any
    importer sees a graph: nothing for from_nir to import."""
    path = external(name)
    for kwargs in ({}, {"type_check": False}):
        with pytest.raises(ValueError, match=UNREADABLE[name]):
            nir.read(path, **kwargs)
    with pytest.raises(ValueError, match=UNREADABLE[name]):
        from_nir(path)
