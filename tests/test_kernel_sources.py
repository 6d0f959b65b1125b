"""The oracle for moving the generator's code: the sha256 of every generated kernel source (C
and Triton, forward and backward) over the neurons of the registry, their options, hard and
soft reset, detach, dtypes, presence patterns of the gradients and shared parameters, against
the committed table `kernel_sources.json`. Code that moves must leave every source byte for
byte as it was; a change that means to change sources regenerates the table
(`python tests/test_kernel_sources.py --write`) and says which sources changed and why.
"""

import hashlib
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import snnfunc  # noqa: E402
from snnfunc import surrogate as S  # noqa: E402

TABLE = Path(__file__).with_name("kernel_sources.json")
DTYPES = ("float32", "float64", "float16", "bfloat16")
SURROGATES = {"Sigmoid": S.Sigmoid(), "PiecewiseQuadratic": S.PiecewiseQuadratic(),
              "SignSwish": S.SignSwish()}
# (has_gs, has_gh, has_gv all, need: params/threshold, need initial states, has_gtr, has_sg)
PATTERNS = {
    "spikes": (True, False, False, False, False, False, False),
    "all": (True, False, True, True, True, False, False),
    "h-traces": (False, True, False, True, False, True, False),
    "sg": (True, False, True, False, True, False, True),
}


def _neurons():
    """The built-in neurons, and two user neurons: the refractory neuron of the docs and the
    table of every IR operation."""
    from ir_op_table import TABLE as OPS  # noqa: F401  (registers it)
    from registry import refractory  # noqa: F401  (registers it)
    from snnfunc._core import registry as definition

    names = ["snnfunc:if", "snnfunc:lif", "snnfunc:plif", "snnfunc:rif", "snnfunc:cuba_lif",
             "snnfunc:alif", "snnfunc:qif", "snnfunc:eif", "tests:ir_op_table",
             "registry:refractory"]
    return [definition.lookup(n) for n in names]


def _options(nrn):
    names = list(nrn.options)
    for bits in range(2 ** len(names)):
        yield {n: bool(bits >> k & 1) for k, n in enumerate(names)}


def configs():
    """Every configuration of the oracle, as (key, dict)."""
    i = 0
    for nrn in _neurons():
        for opts, hard in itertools.product(list(_options(nrn)), (True, False)):
            i += 1
            base = dict(neuron=nrn.name, opts=opts, hard=hard)
            tag = f"{nrn.name}/{','.join(f'{k}={int(v)}' for k, v in opts.items())}/" \
                  f"{'hard' if hard else 'soft'}"
            for dtype, want, shared in itertools.product(DTYPES, (False, True), (False, True)):
                cfg = dict(base, direction="forward", dtype=dtype, want=want, shared=shared)
                for backend in ("c", "triton"):
                    if backend == "triton" and shared:
                        continue  # the Triton kernels take shared values as flags at launch
                    yield (f"{backend}/forward/{tag}/{dtype}/want={int(want)}/"
                           f"shared={int(shared)}", dict(cfg, backend=backend))
            for k, (pattern, detach, sg) in enumerate(itertools.product(
                    PATTERNS, (False, True), SURROGATES)):
                dtype = DTYPES[(i + k) % len(DTYPES)]
                shared = bool((i + k) % 2)
                cfg = dict(base, direction="backward", dtype=dtype, pattern=pattern,
                           detach=detach, surrogate=sg, shared=shared)
                for backend in ("c", "triton"):
                    if backend == "triton" and shared:
                        continue
                    yield (f"{backend}/backward/{tag}/detach={int(detach)}/{dtype}/{pattern}/"
                           f"{sg}/shared={int(shared)}", dict(cfg, backend=backend))


def render(cfg) -> str:
    """The source of one configuration, by today's generator."""
    from snnfunc._core import registry as definition
    from snnfunc._backends.c import skeleton as _codegen
    from snnfunc._backends.triton import skeleton as _triton_codegen
    from snnfunc._kernel import surrogates as _generated

    nrn = definition.lookup(cfg["neuron"])
    M, K = len(nrn.parameters), len(nrn.states)
    shared = (True,) * (M + 1) if cfg["shared"] else (False,) * (M + 1)
    if cfg["direction"] == "forward":
        if cfg["backend"] == "c":
            return _codegen.forward_source(nrn, cfg["opts"], hard=cfg["hard"],
                                           want_h=cfg["want"], dtype=cfg["dtype"],
                                           want_trace=cfg["want"], shared=shared)
        return _triton_codegen.forward_source(nrn, cfg["opts"], hard=cfg["hard"],
                                              want_h=cfg["want"], dtype=cfg["dtype"],
                                              want_trace=cfg["want"])
    gs, gh, gv, need_p, need_s, gtr, sg = PATTERNS[cfg["pattern"]]
    token = _generated.surrogate_token(SURROGATES[cfg["surrogate"]])
    kw = dict(hard=cfg["hard"], detach=cfg["detach"],
              surrogate_derivative=_generated.derivative_rule_for(token, sg), has_gs=gs,
              has_gh=gh, has_gv=(gv,) * K, need=(need_p,) * (M + 1) + (need_s,) * K,
              dtype=cfg["dtype"], has_gtr=(gtr,) * K)
    if cfg["backend"] == "c":
        return _codegen.backward_source(nrn, cfg["opts"], shared=shared, **kw)
    return _triton_codegen.backward_source(nrn, cfg["opts"], **kw)


def digests() -> dict:
    # the table holds the sources with torch <= 2.14's derivative of clamp at its bounds, on
    # every torch: torch 2.15's (snnfunc._core.vjp.MIN_NORM_CLAMP) changes those of the neurons
    # with a clamp (refractory, the IR table), checked against torch by tests/test_ir_ops.py
    from snnfunc._core import vjp

    rule, vjp.MIN_NORM_CLAMP = vjp.MIN_NORM_CLAMP, False
    try:
        return {key: hashlib.sha256(render(cfg).encode()).hexdigest() for key, cfg in configs()}
    finally:
        vjp.MIN_NORM_CLAMP = rule


def test_generated_sources_are_byte_identical_to_the_table():
    want = json.loads(TABLE.read_text())
    got = digests()
    assert len(got) > 1000 and set(got) == set(want), "the table's configurations changed"
    changed = sorted(k for k in got if got[k] != want[k])
    assert not changed, (f"{len(changed)} of {len(got)} generated sources changed, e.g.\n"
                         + "\n".join(changed[:20]))


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit("usage: python tests/test_kernel_sources.py --write  (regenerates the table)")
    table = digests()
    TABLE.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    print(f"wrote {len(table)} digests to {TABLE}")
