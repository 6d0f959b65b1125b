"""The package's floors hold (docs/internals.md): every module imports only from the floors
below it (import-linter's layers contract in pyproject.toml), there is no import cycle, and
no module uses a private name of another floor."""

import ast
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "snnfunc"

needs_linter = pytest.mark.skipif(importlib.util.find_spec("importlinter") is None,
                                  reason="needs import-linter (the test extra installs it)")


def _layers():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return [[m.strip() for m in layer.replace(":", "|").split("|")] for layer in contract["layers"]]


def _modules():
    """module name -> its source file, for every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _floor(module: str):
    """The index of a module's floor (0 the top), or None for the package itself."""
    rel = module.split(".")[1:]
    if not rel:
        return None
    for k, layer in enumerate(_layers()):
        if rel[0] in layer:
            return k
    raise AssertionError(f"{module} is in no floor of pyproject.toml's layers contract")


@needs_linter
def test_every_import_runs_down_the_floors():
    proc = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command;"
                           " lint_imports_command()"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_every_module_is_on_a_floor():
    for module in _modules():
        _floor(module)


def _imports(module, path):
    """(imported module, names taken from it, line) for each import of a module's source,
    function-level imports included."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno, alias.asname or alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            yield base, [a.name for a in node.names], node.lineno, None


def test_no_import_cycle():
    modules = _modules()
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        for target, names, _, _ in _imports(module, path):
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            # `from package import submodule` depends on the submodule (importing it runs the
            # package's __init__ first, as every import of a submodule does)
            for t in subs if subs and len(subs) == len(names) else [target, *subs]:
                if t in modules and t != module and t != "snnfunc":
                    graph[module].add(t)
    # Tarjan's strongly connected components: every one of a single module
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    assert not found, f"import cycles: {found}"


def test_no_private_name_of_another_floor():
    modules = _modules()
    bad = []
    for module, path in modules.items():
        floor = _floor(module)
        aliases = {}
        for target, names, line, asname in _imports(module, path):
            if not target.startswith("snnfunc"):
                continue
            for name in names:
                full = f"{target}.{name}"
                if full in modules:  # a module imported by name: its attributes are checked below
                    aliases[name] = full
                elif name.startswith("_") and not name.startswith("__"):
                    if _floor(target) != floor:
                        bad.append(f"{module}:{line} imports {name} from {target}")
            if asname and target in modules:
                aliases[asname] = target
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and _floor(aliases[node.value.id]) != floor):
                bad.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "\n".join(bad)
