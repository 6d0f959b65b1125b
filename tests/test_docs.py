"""Every Python code block in the README and docs/ runs."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(page, i, code) for page in PAGES
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))]


def test_pages_have_blocks():
    pages = {p.name for p, _, _ in BLOCKS}
    assert pages >= {"README.md", "adapters.md", "neurons.md", "compile.md", "per-sample-gradients.md",
                     "ensembles.md", "custom-surrogate.md", "state.md", "from-spikingjelly.md",
                     "from-snntorch.md", "interop.md"}


@pytest.mark.parametrize("page,i,code", BLOCKS, ids=[f"{p.name}-{i}" for p, i, _ in BLOCKS])
def test_code_block_runs(page, i, code):
    # blocks that show a peer library next to snnfunc run where the peer is installed
    # (CI installs them: extras "peers", "nir")
    for peer in ("spikingjelly", "snntorch", "norse", "nir"):
        if re.search(rf"^\s*(import|from) {peer}\b", code, re.M) and importlib.util.find_spec(peer) is None:
            pytest.skip(f"the block imports {peer}, which is not installed (extra 'peers'/'nir')")
    exec(compile(code, f"{page.name}[{i}]", "exec"), {"__name__": "__docs__"})


def test_surrogate_plot_covers_every_builtin(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import plot_surrogates
    finally:
        sys.path.pop(0)
    from snnfunc import surrogate as S

    names = plot_surrogates.main(str(tmp_path / "s.png"))
    classes = {getattr(S, n) for n in S.__all__ if isinstance(getattr(S, n), type)} - {S.Surrogate}
    assert set(names) == {c.__name__ for c in classes} and len(names) == 13
    assert (tmp_path / "s.png").stat().st_size > 20_000
    assert (ROOT / "docs" / "img" / "surrogates.png").exists()  # the committed figure
