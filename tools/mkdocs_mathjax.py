"""MkDocs hook: ship MathJax with the site, so that equations render without a network.

MathJax 3.2.2 comes from PyPI in the wheel of ``django-static-mathjax`` (the plain MathJax
distribution as package data, no dependencies; the docs extra installs it). This hook adds its
``es5/tex-mml-chtml.js`` and the folders that component loads from on demand (TeX extensions,
CHTML fonts, the menu and its accessibility parts) to the site under ``js/mathjax/``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

DEST = "js/mathjax"
SHIPPED = ("tex-mml-chtml.js", "input", "output/chtml", "ui", "a11y", "sre")


def mathjax_root() -> Path:
    try:
        import mathjax  # the django-static-mathjax wheel
    except ImportError:
        raise PluginError('MathJax is not installed: pip install -e ".[docs]" '
                          '(it comes with the django-static-mathjax package)') from None
    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def on_files(files, config):
    root = mathjax_root()
    for entry in SHIPPED:
        path = root / entry
        for src in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            uri = f"{DEST}/{src.relative_to(root).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(src)))
    return files
