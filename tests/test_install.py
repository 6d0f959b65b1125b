"""Installed as users install it: a wheel and an sdist built from the project (`python -m
build`) and installed, not editable, into a fresh virtual environment run the fused kernels
(the C runtime's header files ship as package data; every other test runs on an editable
install and would not notice a missing file)."""

import importlib.util
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHECK = """
import pathlib, sys, torch, snnfunc
from snnfunc._kernel import dispatch
here = pathlib.Path(snnfunc.__file__).resolve()
assert "site-packages" in here.parts and {root!r} not in str(here), here
x = torch.rand(6, 4, 5, requires_grad=True)
out = snnfunc.lif(x, tau=2.0, impl="fused")
ref = snnfunc.lif(x, tau=2.0, impl="reference")
assert torch.equal(out.spikes, ref.spikes)
out.spikes.sum().backward()
assert dispatch.available("cpu") and x.grad.abs().sum() > 0
print("ran the fused kernels from", here.parent)
"""


@pytest.mark.skipif(importlib.util.find_spec("build") is None,
                    reason="needs the build package (the test extra installs it)")
@pytest.mark.skipif(sys.platform not in ("linux", "darwin"),
                    reason="the fused CPU kernels are built on Linux and macOS")
def test_wheel_and_sdist_install_and_run_the_fused_kernels(tmp_path):
    dist = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    site = sysconfig.get_paths()["purelib"]  # torch and numpy, from the running environment
    for name, artifact in (("wheel", wheel), ("sdist", sdist)):
        env_dir = tmp_path / f"venv-{name}"
        venv.create(env_dir, with_pip=True)
        py = env_dir / "bin" / "python"
        env_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                   "['purelib'])"], capture_output=True, text=True).stdout.strip()
        # torch and numpy from here (a .pth line: not its .pth files, so not the editable
        # install of the checkout)
        Path(env_site, "torch_from_test_env.pth").write_text(site + "\n")
        proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps",
                               "--disable-pip-version-check", str(artifact)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        proc = subprocess.run([str(py), "-c", _CHECK.format(root=str(ROOT))], capture_output=True,
                              text=True, timeout=600, cwd=tmp_path,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                   "SNNFUNC_CACHE": str(tmp_path / f"cache-{name}")})
        assert proc.returncode == 0, f"{name}: " + proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "ran the fused kernels from" in proc.stdout
