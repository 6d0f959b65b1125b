"""The README's demo runs end to end (a short schedule, eager) and learns."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("neuron", ["plif", "rif"])
def test_train_digits_short_run_learns(tmp_path, neuron, capsys):
    demo = _load("train_digits")
    acc = demo.main(["--epochs", "2", "--no-compile", "--neuron", neuron, "--out", str(tmp_path)])
    assert acc > 0.5  # chance is 0.1
    assert (tmp_path / "digits_spikes.png").stat().st_size > 10_000
    assert "test accuracy" in capsys.readouterr().out
