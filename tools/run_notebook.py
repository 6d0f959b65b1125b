"""Runs examples/tutorial.ipynb top to bottom in a fresh kernel and saves it with the outputs
of that run (what the docs site shows). The run's timings and kernel details are not kept.

    python tools/run_notebook.py                 # examples/tutorial.ipynb, in place
    python tools/run_notebook.py other.ipynb

Needs the test extra (nbclient, nbformat, ipykernel) and the examples extra.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def run(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """The notebook at `path`, executed in a fresh kernel with this checkout's snnfunc first
    on the path, in the notebook's folder; raises CellExecutionError if a cell fails."""
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)
    return nb


def main(argv=None):
    path = Path((argv or sys.argv[1:] or [ROOT / "examples" / "tutorial.ipynb"])[0])
    start = time.perf_counter()
    nb = run(path)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps: a diff on every run
    nb.metadata.pop("widgets", None)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    print(f"ran {path} in {time.perf_counter() - start:.1f} s and saved its outputs")


if __name__ == "__main__":
    main()
