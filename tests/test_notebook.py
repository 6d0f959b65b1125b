"""examples/tutorial.ipynb runs top to bottom in a fresh kernel, is committed as one whole run,
and becomes the docs page tutorial.md (tools/mkdocs_notebook.py)."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _text(value):
    return value if isinstance(value, str) else "".join(value)


def test_notebook_runs_in_a_fresh_kernel():
    for module, extra in (("nbclient", "test"), ("nbformat", "test"), ("ipykernel", "test"),
                          ("sklearn", "examples"), ("matplotlib", "examples")):
        pytest.importorskip(module, reason=f"the notebook test needs {module} (extra '{extra}')")
    nb = _tool("run_notebook").run(NOTEBOOK)  # raises CellExecutionError if a cell fails
    printed = "".join(_text(o.get("text", "")) for c in _code_cells(nb) for o in c["outputs"])
    for claim in ("the same as the functions: True", "same spikes as the plain loop: True",
                  "the same counts as eager: True", "sample 3 alike: True"):
        assert claim in printed, printed[-2000:]
    accuracies = [float(a) for a in re.findall(r"test accuracy ([\d.]+)%", printed)]
    assert len(accuracies) == 4 and accuracies[0] > 30 and accuracies[-1] > 75  # chance: 10 %
    figures = [o for c in _code_cells(nb) for o in c["outputs"] if "image/png" in o.get("data", {})]
    assert len(figures) == 1


def test_committed_notebook_is_one_whole_run():
    """Saved with the outputs of one run from top to bottom (what the docs page shows)."""
    nb = json.loads(NOTEBOOK.read_text())
    cells = _code_cells(nb)
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    assert all(c["outputs"] for c in cells)
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]


def test_notebook_code_fits_the_docs_page():
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_docs import CODE_WIDTH
    finally:
        sys.path.pop(0)
    nb = json.loads(NOTEBOOK.read_text())
    long = [line for c in _code_cells(nb) for line in _text(c["source"]).splitlines()
            if len(line) > CODE_WIDTH]
    assert not long, long


def test_docs_page_shows_every_cell_and_the_figure():
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    hook = _tool("mkdocs_notebook")
    nb = json.loads(NOTEBOOK.read_text())
    markdown, figures = hook.notebook_page(NOTEBOOK, "tutorial.md", "https://example.org/nb")
    for cell in nb["cells"]:
        assert _text(cell["source"]).rstrip() in markdown
    assert markdown.count("```python") == len(_code_cells(nb))
    assert len(figures) == 1 and all(png.startswith(b"\x89PNG") for png in figures.values())
    assert all(f"]({name})" in markdown for name in figures)
    assert "https://example.org/nb" in markdown
