"""The examples run end to end on short schedules (eager) and do what they claim."""

import functools
import gzip
import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _load(name):
    if str(EXAMPLES) not in sys.path:  # the examples import train_digits, as when run as scripts
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("neuron", ["plif", "rif"])
def test_train_digits_short_run_learns(tmp_path, neuron, capsys):
    demo = _load("train_digits")
    acc = demo.main(["--epochs", "2", "--no-compile", "--neuron", neuron, "--out", str(tmp_path)])
    assert acc > 0.5  # chance is 0.1
    assert (tmp_path / "digits_spikes.png").stat().st_size > 10_000
    assert (tmp_path / "digits_training.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    # it learns from the first epoch on: the output layer is not silent at the start
    first = float(re.search(r"epoch +1 +loss (\S+) +test accuracy ([\d.]+)%", out).group(2))
    assert first > 30, out[-500:]  # chance is 10 %
    # the figure's traces show neurons that fire, but not at every step, and leak in between
    traces = re.findall(r"neuron \d+ \((\d+) spikes?, (\d+) steps? leaking\)", out)
    assert len(traces) == 2 and all(0 < int(n) < 10 and int(leak) > 0 for n, leak in traces), out[-500:]
    assert re.search(r"digit \d predicted \d", out)


def test_train_digits_checkpoint_resumes_exactly(tmp_path, capsys):
    demo = _load("train_digits")
    common = ["--no-compile", "--T", "4", "--out", str(tmp_path)]
    demo.main(["--epochs", "2", *common])
    straight = capsys.readouterr().out
    ckpt = tmp_path / "digits.pt"
    demo.main(["--epochs", "1", "--checkpoint", str(ckpt), *common])
    demo.main(["--epochs", "2", "--checkpoint", str(ckpt), "--resume", *common])
    resumed = capsys.readouterr().out
    assert f"resumed from {ckpt} after epoch 1" in resumed
    epochs = lambda out: re.findall(r"epoch +\d+ +loss \S+ +test accuracy \S+", out)  # noqa: E731
    assert epochs(resumed) == epochs(straight) and len(epochs(straight)) == 2  # same losses and accuracies
    assert len(torch.load(ckpt)["history"]["accuracy"]) == 2
    with pytest.raises(SystemExit, match="saved with neuron='plif'"):
        demo.main(["--epochs", "3", "--checkpoint", str(ckpt), "--resume", "--neuron", "rif", *common])
    with pytest.raises(SystemExit, match="--resume needs --checkpoint"):
        demo.main(["--resume", *common])


def test_train_sequence_reads_rows_and_learns(capsys):
    ex = _load("train_sequence")
    x = torch.arange(2 * 64.0).reshape(2, 64)
    assert torch.equal(ex.rows(x)[3, 1], x[1, 24:32])  # step 3 is row 3 of each image
    acc = ex.main(["--epochs", "3"])
    assert acc > 0.4  # chance is 0.1
    assert re.search(r"final test accuracy [\d.]+% in \d+ s", capsys.readouterr().out)


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_and_trains_one_tiny_batch(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 16), ("t10k", 8)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    ex = _load("train_fashion_mnist")
    x = ex.read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")
    assert x.shape == (8, 28, 28) and x.dtype == np.uint8
    acc = ex.main(["--data", str(tmp_path), "--epochs", "1", "--batch-size", "16", "--channels", "4",
                   "--fc", "16", "--T", "2", "--no-compile"])
    assert 0.0 <= acc <= 1.0
    assert "epoch 1: loss" in capsys.readouterr().out


def test_fashion_mnist_checkpoint_and_training_plot(tmp_path, capsys):
    rng = np.random.default_rng(2)
    for prefix, n in (("train", 16), ("t10k", 8)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    ex = _load("train_fashion_mnist")
    tiny = ["--data", str(tmp_path), "--batch-size", "16", "--channels", "4", "--fc", "16", "--T", "2",
            "--no-compile", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "f.pt")]
    ex.main(["--epochs", "1", *tiny])
    ex.main(["--epochs", "2", "--resume", *tiny])
    assert "after epoch 1" in capsys.readouterr().out
    assert len(torch.load(tmp_path / "f.pt")["history"]["loss"]) == 2
    assert (tmp_path / "fashion-mnist_training.png").stat().st_size > 10_000
    with pytest.raises(SystemExit, match="saved with channels=4"):
        ex.main(["--epochs", "3", "--resume", *tiny, "--channels", "8"])


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.py")))
def test_every_example_help_shows_defaults(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        _load(name).main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    options = re.findall(r"^  --\w", out, re.M)
    assert options and len(re.findall(r"\(default:", out)) == len(options)


def test_fashion_mnist_help_keeps_the_command_lines():
    ex = _load("train_fashion_mnist")
    assert "--dataset mnist \\\n          --data wheels/" in ex.__doc__


def test_ddp_without_torchrun_says_how_to_launch():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    run = subprocess.run([sys.executable, str(EXAMPLES / "ddp.py")], capture_output=True, text=True,
                         timeout=120, env=dict(env, PYTHONPATH=str(ROOT)))
    assert run.returncode != 0
    assert "torchrun --standalone --nproc_per_node=2 examples/ddp.py" in run.stderr
    assert "RANK expected" not in run.stderr and "Traceback" not in run.stderr


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    ex = _load("train_fashion_mnist")
    with pytest.raises(SystemExit, match="apt install dataset-fashion-mnist"):
        ex.main(["--data", str(tmp_path), "--no-compile"])


def test_mnist_pickle_loads_train_and_validation(tmp_path):
    rng = np.random.default_rng(1)
    split = lambda n: (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n))  # noqa: E731
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump((split(12), split(4), split(8)), f)
    ex = _load("train_fashion_mnist")
    x_tr, y_tr, x_te, y_te = ex.load_mnist_pickle(tmp_path / "mnist.pkl.gz")
    assert x_tr.shape == (16, 1, 28, 28) and y_tr.shape == (16,) and x_te.shape == (8, 1, 28, 28)
    acc = ex.main(["--dataset", "mnist", "--data", str(tmp_path / "mnist.pkl.gz"), "--epochs", "1",
                   "--batch-size", "8", "--channels", "4", "--fc", "16", "--T", "2", "--no-compile"])
    assert 0.0 <= acc <= 1.0


def test_per_sample_gradients_check_and_dp_training(capsys, monkeypatch):
    ex = _load("per_sample_gradients")
    # the timing's median of one run, not five: the loop over 128 samples is some 40 times
    # slower than vmap, and the equality check runs as the example runs it
    monkeypatch.setattr(ex, "check_and_time", functools.partial(ex.check_and_time, repeats=1))
    acc, speedup = ex.main(["--epochs", "3", "--T", "6"])
    out = capsys.readouterr().out
    assert "vmap equals the loop" in out  # the example asserts the equality itself
    assert speedup > 1 and acc > 0.3


def test_ensemble_vmap_equals_one_by_one(capsys):
    ex = _load("ensemble")
    stacked, loop, ensemble = ex.main(["--members", "3", "--epochs", "2", "--T", "6"])
    assert "first-step gradients of all 3 members: vmap equals one by one" in capsys.readouterr().out
    assert len(stacked) == len(loop) == 3 and min(stacked) > 0.3
    assert max(abs(a - b) for a, b in zip(stacked, loop)) < 0.05 and ensemble > 0.3


@pytest.mark.skipif(not torch.distributed.is_available(),
                    reason="needs a torch build with torch.distributed")
def test_ddp_two_processes_stay_identical_and_learn(tmp_path):
    # TMPDIR: torchrun's torchelastic_* folder goes into tmp_path, not /tmp
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(EXAMPLES / "ddp.py"), "--epochs", "3", "--out", str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "parameters identical on all ranks" in run.stdout
    p0 = torch.load(tmp_path / "params_rank0.pt")
    p1 = torch.load(tmp_path / "params_rank1.pt")
    assert p0.keys() == p1.keys() and all(torch.equal(p0[k], p1[k]) for k in p0)
    for rank in (0, 1):
        losses = json.loads((tmp_path / f"losses_rank{rank}.json").read_text())
        assert len(losses) == 3 and losses[-1] < 0.7 * losses[0]


def test_fashion_mnist_low_memory_is_the_same_network_bit_for_bit():
    ex = _load("train_fashion_mnist")
    torch.manual_seed(0)
    nets = [ex.PLIFNet(channels=4, fc=16, T=3), ex.PLIFNet(channels=4, fc=16, T=3, low_memory=True)]
    nets[1].load_state_dict(nets[0].state_dict())
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    grads, buffers = [], []
    for net in nets:
        torch.manual_seed(1)  # the same dropout masks
        torch.nn.functional.cross_entropy(net(x) * 10, y).backward()
        grads.append([p.grad for p in net.parameters()])
        buffers.append(list(net.buffers()))
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert all(torch.equal(a, b) for a, b in zip(*buffers))  # batch norm's statistics updated once
    assert all(getattr(m, "v", 0.0) == 0.0 for m in nets[1].modules())  # no state held after forward
