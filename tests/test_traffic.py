"""Every generated kernel moves the fewest bytes: the rows of sequence tensors its time loops
read and write, counted from its source (`snnfunc._backends.c.traffic`), equal the floor of
its configuration. Forward: read x, write the spikes (and h, the states' traces where
asked). Backward: read x once, the cotangents present (spikes, h, the surrogate's
derivative where torch computes it, the traces'), write the input gradient. Over every C
source of the oracle (`test_kernel_sources.configs`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_kernel_sources import PATTERNS, configs, render  # noqa: E402

from snnfunc._backends.c import traffic  # noqa: E402
from snnfunc._core import registry  # noqa: E402

SIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def floor(cfg) -> dict:
    io = SIZE[cfg["dtype"]]
    real = 8 if cfg["dtype"] == "float64" else 4
    K = len(registry.lookup(cfg["neuron"]).states)
    if cfg["direction"] == "forward":
        write = {"s": io}
        if cfg["want"]:
            write.update({"h": io, **{f"tr{k}": real for k in range(K)}})
        return {"read": {"x": io}, "write": write}
    gs, gh, _, _, _, gtr, sg = PATTERNS[cfg["pattern"]]
    read = {"x": io}
    read.update({"gs": io} if gs else {})
    read.update({"gh": io} if gh else {})
    read.update({"sg": io} if sg else {})
    read.update({f"gtr{k}": real for k in range(K)} if gtr else {})
    return {"read": read, "write": {"gx": io}}


def test_every_c_kernel_moves_its_floor():
    checked, off = 0, []
    for key, cfg in configs():
        if cfg["backend"] != "c":
            continue
        got = traffic.streams(render(cfg), cfg["dtype"])
        checked += 1
        if got != floor(cfg):
            off.append(f"{key}: {got} (floor {floor(cfg)})")
    assert checked > 500
    assert not off, f"{len(off)} kernels above their floor, e.g.\n" + "\n".join(off[:10])


def test_the_count_sees_a_second_read():
    """The counter is not blind: a source that reads x in two time loops counts it twice."""
    cfg = next(c for _, c in configs() if c["backend"] == "c" and c["direction"] == "backward"
               and c["dtype"] == "float32")
    src = render(cfg)
    once = traffic.streams(src, "float32")["read"]["x"]
    twice = src + "\nstatic void f(void) { for (int64_t t = 0; t < T; t++) {\n" \
        "const IO *restrict xt = x_row(j, t, i0, n, XG); y = GET(xt, XF); } }\n"
    assert traffic.streams(twice, "float32")["read"]["x"] == 2 * once
