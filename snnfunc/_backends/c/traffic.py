"""The bytes a generated C kernel moves per neuron-step, read from its source.

A kernel's time loops (`for (int64_t t ...)`) take a row of each sequence tensor (`[T, N]`)
they touch at step t: `x_row(j, t, ...)` for x, `j->NAME + t * N` (or `j->NAME[k] + t * N`)
for the rest, into a row pointer declared `const` where it is read and not where it is
written; the loop then uses the row (`GET`, `IN`, `PUT`, `PUTG`, `OUT`, `OUTG`), or adds a
state's trace cotangent in place (`j->gtr[k][t * N + ...]`). Rows of the compute type
(`REAL`: the traces) move its size, the others the element size of the input's dtype. The
backward's buffer of kept values (a block's steps, sized to stay in the cache) and the
per-neuron step tensors (states, parameters, threshold: read once per call) are not sequence
traffic and are not counted."""

from __future__ import annotations

import re

_SIZES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
_ROW = re.compile(
    r"(const )?(IO|REAL) \*restrict (\w+) = "
    r"(?:x_row\(j, t,|j->(\w+)(?:\[(\d+)\])?(?: \? j->\w+(?:\[\d+\])?)? \+ t \* N)")
_TRACE_COT = re.compile(r"j->gtr\[(\d+)\]\[t \* N")
_USE = "(?:GET|PUT|PUTG)\\({var},"  # IN, OUT: a half-precision row converted (guarded)


def streams(source: str, dtype: str) -> dict:
    """`{"read": {row: bytes}, "write": {row: bytes}}` per neuron-step, over every time
    loop of `source` (a row read in two loops counts twice)."""
    io, real = _SIZES[dtype], 8 if dtype == "float64" else 4
    out = {"read": {}, "write": {}}
    loops = source.split("for (int64_t t = ")[1:]
    for body in loops:
        body = body.split("\nstatic ")[0]  # the rest of this function only
        for const, kind, var, field, k in _ROW.findall(body):
            if not re.search(_USE.format(var=re.escape(var)), body) and f"{var}[i] =" not in body:
                continue
            name = "x" if not field else field + (k or "")
            way = "read" if const else "write"
            size = real if kind == "REAL" else io
            out[way][name] = out[way].get(name, 0) + size
        for k in _TRACE_COT.findall(body):
            out["read"][f"gtr{k}"] = out["read"].get(f"gtr{k}", 0) + real
    return out


def total(s: dict) -> int:
    """Bytes read and written per neuron-step."""
    return sum(s["read"].values()) + sum(s["write"].values())
