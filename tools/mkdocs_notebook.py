"""MkDocs hook: the tutorial notebook as a page of the site, with the outputs it was saved with.

`examples/tutorial.ipynb` becomes `tutorial.md`: its Markdown cells as they are, each code cell
as a Python block followed by its outputs (text as text blocks, figures as PNG files next to
the page). Nothing is executed here: the notebook is committed with the outputs of a real run
(`python tools/run_notebook.py`), and `tests/test_notebook.py` runs it in a fresh kernel. Only
the standard library reads the notebook (it is JSON), so the docs build needs no Jupyter.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

NOTEBOOKS = {"tutorial.md": "examples/tutorial.ipynb"}  # page -> notebook, from the repository root


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(value)


def notebook_page(path: Path, page: str, source_url: str | None):
    """The page's Markdown and its figures, {file name: PNG bytes}."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    stem = page.rsplit(".", 1)[0]
    parts, figures = [], {}
    for i, cell in enumerate(nb["cells"]):
        source = _text(cell["source"]).rstrip()
        if cell["cell_type"] == "markdown":
            parts.append(source)
            if i == 0 and source_url:  # after the title
                parts.append(f"The notebook: [`{NOTEBOOKS[page]}`]({source_url}); the outputs "
                             "below are those of a run on a 2-core CPU machine.")
            continue
        if cell["cell_type"] != "code" or not source:
            continue
        parts.append(f"```python\n{source}\n```")
        for out in cell.get("outputs", []):
            kind = out["output_type"]
            if kind == "error":
                raise PluginError(f"{path} was saved with an error in cell {i}: run it again "
                                  "(python tools/run_notebook.py)")
            if kind == "stream":
                parts.append(f"```text\n{_text(out['text']).rstrip()}\n```")
            elif kind in ("execute_result", "display_data"):
                data = out["data"]
                if "image/png" in data:
                    name = f"{stem}-{i}-{len(figures)}.png"
                    figures[name] = base64.b64decode(_text(data["image/png"]))
                    parts.append(f"![output of the cell above]({name})")
                elif "text/plain" in data:
                    parts.append(f"```text\n{_text(data['text/plain']).rstrip()}\n```")
    return "\n\n".join(parts) + "\n", figures


def on_files(files, config):
    root = Path(config["config_file_path"]).parent
    repo = (config.get("repo_url") or "").rstrip("/")
    for page, notebook in NOTEBOOKS.items():
        url = f"{repo}/blob/main/{notebook}" if repo else None
        markdown, figures = notebook_page(root / notebook, page, url)
        files.append(File.generated(config, page, content=markdown))
        for name, png in figures.items():
            files.append(File.generated(config, name, content=png))
    return files
