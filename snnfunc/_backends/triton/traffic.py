"""The bytes a generated Triton kernel moves per neuron-step, read from its source.

A kernel's time loops (`for t in range(T)`, `for r in range(T)`) load and store a row of each
sequence tensor (`[T, N]`, or `[K, T, N]` for the kept values and traces) at step t:
`tl.load(NAME_ptr + ... at ...)`, `tl.store(NAME_ptr + ... at, ...)`, the row of the k-th
kept value at `kept_ptr + k * TN + at`. A row read in several branches of the walk back
(one per presence pattern of the cotangents: one runs at a step) counts once per loop. Rows
of the compute type (the kept values, the traces, their cotangents: float32 for half
precision) move its size, the others the element size of the input's dtype. The per-neuron
tensors (states, parameters, threshold: read once per program) are not sequence traffic."""

from __future__ import annotations

import re

_SIZES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
_ACCESS = re.compile(r"tl\.(load|store)\((\w+)_ptr \+ (?:(\d+) \* TN \+ )?(?:tl\.cast\(t, tl\.int64\) \* SXT \+ xoff|at)\b")
_COMPUTE = ("kept", "tr", "gtr", "buf")


def streams(source: str, dtype: str) -> dict:
    """`{"read": {row: bytes}, "write": {row: bytes}}` per neuron-step, over every time
    loop of `source` (a row read in two loops counts twice)."""
    io, real = _SIZES[dtype], 8 if dtype == "float64" else 4
    out = {"read": {}, "write": {}}
    for body in re.split(r"\n    for \w+ in range\(T\):\n", source)[1:]:
        body = re.split(r"\n(?=    \S)", body)[0]  # to the end of the loop's block
        seen = set()
        for op, ptr, k in _ACCESS.findall(body):
            if (op, ptr, k) in seen:
                continue
            seen.add((op, ptr, k))
            name = ptr + k
            size = real if ptr.startswith(_COMPUTE) else io
            way = "read" if op == "load" else "write"
            out[way][name] = out[way].get(name, 0) + size
    return out


def total(s: dict) -> int:
    """Bytes read and written per neuron-step."""
    return sum(s["read"].values()) + sum(s["write"].values())
