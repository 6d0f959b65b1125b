"""The neurons registered in this process, by name: the kernels' ops name a neuron by string
and look it up here. A definition registers itself when it runs (the built-ins at import,
a user's when its `@snnfunc.neuron` runs); nothing is imported for a name."""

from __future__ import annotations

import importlib

_NEURONS: dict = {}


def register(definition) -> None:
    """Registers `definition` under its name (a definition run again replaces it)."""
    _NEURONS[definition.name] = definition


def registered() -> list:
    """Every registered definition, by name."""
    return [_NEURONS[n] for n in sorted(_NEURONS)]


def lookup(name: str):
    """The definition registered under `name`; a saved graph loads in a fresh process once the
    module defining its neurons is imported."""
    found = _NEURONS.get(name) if isinstance(name, str) else None
    if found is None:
        module = name.rpartition(":")[0] if isinstance(name, str) else ""
        hint = f"import the module that defines it ({module}) first" if module else (
            "import the module that defines it first")
        raise ValueError(f"no neuron definition named {name!r} is registered in this process: "
                         f"{hint}")
    return found


def unpickle(name: str, module: str):
    """The definition `name` for pickle: the module that defines it is imported first if
    needed, as pickle imports a function's module (a saved graph's ops never import)."""
    if name not in _NEURONS and isinstance(module, str):
        importlib.import_module(module)
    return lookup(name)


def state_of(name: str, module: str, values: tuple):
    """A state NamedTuple made by `snnfunc.neuron`, for pickle (through its neuron)."""
    return unpickle(name, module).State(*values)


def reduce_state(state):
    definition = next(d for d in _NEURONS.values() if d.State is type(state))
    return state_of, (definition.name, definition.charge.__module__, tuple(state))
