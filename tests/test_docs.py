"""Every Python code block in the README and docs/ runs."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(page, i, code) for page in PAGES
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))]


def test_pages_have_blocks():
    assert {p.name for p, _, _ in BLOCKS} >= {"README.md", "adapters.md", "neurons.md", "surrogates.md"}


@pytest.mark.parametrize("page,i,code", BLOCKS, ids=[f"{p.name}-{i}" for p, i, _ in BLOCKS])
def test_code_block_runs(page, i, code):
    exec(compile(code, f"{page.name}[{i}]", "exec"), {"__name__": "__docs__"})
