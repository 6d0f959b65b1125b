"""Every Python code block in the README and docs/ runs."""

import contextlib
import functools
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# blocks whose printed output the page shows run in a test of their own, which compares it
PRINTED = {("conv.md", 0)}
BLOCKS = [(page, i, code) for page in PAGES
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
          if (page.name, i) not in PRINTED]


def test_pages_have_blocks():
    pages = {p.name for p, _, _ in BLOCKS}
    assert pages >= {"README.md", "adapters.md", "neurons.md", "compile.md", "per-sample-gradients.md",
                     "ensembles.md", "custom-surrogate.md", "state.md", "from-spikingjelly.md",
                     "from-snntorch.md", "interop.md", "custom-neuron.md", "half-precision.md", "from-norse.md"}


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


# --- the built site -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The docs site, built as CI builds it (strict), into a temporary folder."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


API_PAGES = ["neurons", "definition", "surrogate", "nn", "recurrent", "memory", "nir", "info"]


@pytest.mark.parametrize("page", API_PAGES)
def test_api_page_has_no_rest_markup(site, page):
    # the docstrings are Markdown (mkdocstrings, Google style) with math as $...$ and $$...$$
    html = (site / "api" / page / "index.html").read_text()
    assert 'class="doc doc-heading"' in html  # mkdocstrings rendered the module's members
    found = {m: html.count(m) for m in (":math:", ".. math::", ":func:", ":class:", ":mod:", ":meth:", "``")
             if m in html}
    assert not found, f"raw reST in the built API page (count per markup): {found}"


def test_api_pages_are_all_in_the_nav_and_the_overview():
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with the docs extra (mkdocs)")
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    api = next(entry["API reference"] for entry in nav if "API reference" in entry)
    listed = [next(iter(entry.values())) for entry in api]
    on_disk = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs" / "api").glob("*.md"))
    assert sorted(listed) == on_disk == sorted(["api/index.md", *(f"api/{p}.md" for p in API_PAGES)])
    overview = (ROOT / "docs" / "api" / "index.md").read_text()
    assert all(f"]({p}.md)" in overview for p in API_PAGES)


def _public_objects():
    """Every public name of the package, loaded statically by griffe (as mkdocstrings does)."""
    import griffe

    pkg = griffe.load("snnfunc", search_paths=[str(ROOT)], resolve_aliases=True)
    for module in ("", "nn", "surrogate", "nir", "recurrent", "memory"):
        mod = pkg[module] if module else pkg
        for name in mod.exports:
            yield f"{mod.path}.{name}", mod[str(name)]


def test_public_names_have_docstrings():
    pytest.importorskip("griffe", reason="griffe comes with the docs extra (mkdocstrings[python])")
    missing = [path for path, obj in _public_objects() if not (obj.docstring and obj.docstring.value.strip())]
    assert not missing, f"public names without a docstring: {missing}"


def test_docstrings_use_markdown_literals():
    # Markdown renders ``x`` like `x`, so a reST literal does not show in the HTML: look at the source
    pytest.importorskip("griffe", reason="griffe comes with the docs extra (mkdocstrings[python])")
    rest = [path for path, obj in _public_objects() if obj.docstring and "``" in obj.docstring.value]
    assert not rest, f"docstrings with reST double-backtick literals: {rest}"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def chromium(url, *args, timeout=120):
    """Headless Chromium with the network unusable: names resolve to nothing and every request
    but to 127.0.0.1 goes to a closed port."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               "--proxy-server=http://127.0.0.1:9", "--virtual-time-budget=15000", *args, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def serve(folder):
    """The site over HTTP on 127.0.0.1 (fonts loaded from file:// URLs are blocked by Chromium)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
@pytest.mark.parametrize("page", ["neurons", "api/neurons"])
def test_equations_render_offline_in_chromium(site, page):
    raw = (site / page / "index.html").read_text()
    n_math = len(re.findall(r'class="arithmatex"', raw))
    assert n_math > 0
    # MathJax, fonts and styles come with the site
    assert not re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?:[^"]*)"', raw)
    with serve(site) as base:
        run = chromium(f"{base}/{page}/", "--dump-dom")
    dom = run.stdout
    assert run.returncode == 0 and "</html>" in dom, run.stderr[-2000:]
    blocks = re.findall(r'<(span|div) class="arithmatex">(.*?)</\1>', dom, re.S)
    assert len(blocks) == n_math
    raw_tex = [body[:80] for _, body in blocks if "<mjx-container" not in body or re.search(r"\\\(|\\\[|\$\$", body)]
    assert not raw_tex, f"{len(raw_tex)} of {n_math} equations not typeset, e.g. {raw_tex[:3]}"


def test_readme_quick_start_prints_what_it_says(capsys):
    readme = (ROOT / "README.md").read_text()
    code, printed = re.search(r"## Quick start\n\n```python\n(.*?)```\n\nIt prints\n\n```text\n(.*?)```",
                              readme, re.S).groups()
    exec(compile(code, "README.md[quick start]", "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    assert out == printed
    fired = int(re.search(r"^(\d+) spikes in", out, re.M).group(1))
    assert fired > 0  # the adapter network fires on the given input


def test_conv_page_prints_what_it_says(capsys):
    """docs/conv.md's network: the shapes as printed, the accuracies as printed up to the
    rounding differences between CPUs (each within 5 points), and it learns."""
    page = (ROOT / "docs" / "conv.md").read_text()
    code, printed = re.search(r"```python\n(.*?)```\n\nIt prints[^\n]*\n(?:[^\n]+\n)*\n```text\n(.*?)```",
                              page, re.S).groups()
    exec(compile(code, "conv.md[0]", "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    number = r"[\d.]+%"
    assert re.sub(number, "N", out) == re.sub(number, "N", printed), out
    got = [float(a) for a in re.findall(r"accuracy ([\d.]+)%", out)]
    shown = [float(a) for a in re.findall(r"accuracy ([\d.]+)%", printed)]
    assert len(got) == len(shown) == 3
    assert all(abs(a - b) < 5 for a, b in zip(got, shown)), (got, shown)
    assert got[-1] > 85  # chance is 10 %


# Material's code blocks in a 1280 px wide window, with the navigation and the table of
# contents beside them, are 688 px wide, 656 px of it for text: 80 characters of the code font
# (8.18 px each with the system monospace font, measured in Chromium). Longer lines scroll
# sideways; test_code_blocks_fit_at_1280px_in_chromium checks the rendered pages.
CODE_WIDTH = 80


def _code_lines(text):
    inside = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            inside = not inside
        elif inside:
            yield n, line


def test_docs_code_lines_fit_the_page():
    long = [f"{page.name}:{n} ({len(line)})" for page in sorted((ROOT / "docs").rglob("*.md"))
            for n, line in _code_lines(page.read_text()) if len(line) > CODE_WIDTH]
    assert not long, f"code lines over {CODE_WIDTH} characters: {long}"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
@pytest.mark.parametrize("group", [
    "guides",
    "api",
])
def test_code_blocks_fit_at_1280px_in_chromium(site, group):
    """Every page of the site in a 1280 px wide frame: no code block scrolls sideways. The
    guides come from docs/*.md, the API reference from the docstrings."""
    pages = sorted(p.parent.relative_to(site).as_posix() for p in site.rglob("index.html")
                   if not p.parent.name.startswith(("assets", "js", "search")))
    pages = [p for p in pages if p.startswith("api") == (group == "api")]
    frames = "".join(f'<iframe src="/{p}/" style="width:1280px;height:900px;border:0"></iframe>'
                     for p in pages)
    script = """<script>
    window.addEventListener('load', () => {
      const report = [], frames = [...document.querySelectorAll('iframe')];
      for (const f of frames) {
        const doc = f.contentDocument;
        const blocks = [...doc.querySelectorAll('pre > code')];
        if (!doc.querySelector('.md-content')) { report.push('NOT LOADED ' + f.src); continue; }
        blocks.forEach((c, i) => { if (c.scrollWidth > c.clientWidth + 1)
          report.push(f.src + ' block ' + i + ': ' + c.scrollWidth + ' > ' + c.clientWidth); });
      }
      const out = document.createElement('pre');
      out.id = 'fit'; out.textContent = 'FRAMES ' + frames.length + '\\n' + report.join('\\n');
      document.body.appendChild(out);
    });</script>"""
    (site / f"_fit_{group}.html").write_text(f"<!doctype html><html><body>{frames}{script}</body></html>")
    with serve(site) as base:
        run = chromium(f"{base}/_fit_{group}.html", "--window-size=1400,900", "--dump-dom", timeout=300)
    found = re.search(r'<pre id="fit">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stderr[-2000:]
    lines = found.group(1).splitlines()
    assert lines[0] == f"FRAMES {len(pages)}" and len(pages) >= (20 if group == "guides" else 8)
    assert lines[1:] == [], "\n".join(lines[1:])
