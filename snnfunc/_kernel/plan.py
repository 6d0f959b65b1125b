"""The backward plan, for every backend: which cotangents are present at each step, the
traced VJP of each presence pattern, and the forward values the backward keeps.

Which state cotangents are present at a step depends on how far it is from the end (an
unused output, the final state's at the last step are absent): iterated from the last step
back, the presence pattern settles on a fixpoint after a few steps. The kernel has one block
of code for each pattern, the step `r = T - 1 - t` from the end running block `block_of(r)`.
Like `jax.lax.scan`'s partial evaluation iterating which carries are known.
"""

from __future__ import annotations

import dataclasses
import functools

from snnfunc._core.ir import SCALAR_INPUT
from snnfunc._core.vjp import vjp


@dataclasses.dataclass
class BackwardPlan:
    """The plan of one backward kernel.

    Attributes:
      blocks: `(present state cotangents in, present out, (graph, ids, outs, res, wrt))` of
        each block, the last steps' first.
      fix: the block the patterns repeat from; `period = len(blocks) - fix`.
      recompute: the forward step traced `(graph, ids, outs)`; the blocks' graphs begin with
        its nodes.
      kept: the forward nodes kept for every step (see `kept_values`).
    """

    blocks: list
    fix: int
    recompute: tuple
    kept: list

    @property
    def period(self) -> int:
        return len(self.blocks) - self.fix

    def block_of(self, r: int) -> int:
        """The block that runs at step `r` from the end."""
        return r if r < len(self.blocks) else self.fix + (r - self.fix) % self.period

    @classmethod
    def build(cls, neuron, opts, *, hard, detach, surrogate_derivative, has_gs, has_gh, has_gv,
              need, has_gtr=None, kept=None):
        """`kept`: the forward values kept by someone else (the forward kernel, `forward_kept`)
        rather than chosen for this configuration; checked to give every value its blocks
        read."""
        blocks, fix = patterns(neuron, opts, hard=hard, detach=detach,
                               surrogate_derivative=surrogate_derivative, has_gs=has_gs,
                               has_gh=has_gh, has_gv=has_gv, has_gtr=has_gtr)
        recompute = neuron.trace(opts, hard=hard, detach_reset=detach)
        n_forward = len(recompute[0].nodes)
        for _, _, (g, *_rest) in blocks:  # the blocks' forward parts: the same trace
            assert g.nodes[:n_forward] == recompute[0].nodes, "the step traced differently"
        if kept is None:
            kept = kept_values(neuron, blocks, n_forward, need)
        else:
            missing = _not_derivable(neuron, blocks, n_forward, need, set(kept))
            assert not missing, (
                f"{neuron.name}: the forward keeps the values of nodes {sorted(kept)}, but the "
                f"backward of this configuration (has_gs={has_gs}, has_gh={has_gh}, "
                f"has_gv={tuple(has_gv)}, has_gtr={has_gtr}, need={tuple(need)}) reads nodes "
                f"{sorted(missing)}, which cheap operations do not give from them: "
                f"forward_kept must choose from a configuration that reads them")
            kept = sorted(kept)
        return cls(blocks, fix, recompute, kept)


def patterns(neuron, opts, *, hard, detach, surrogate_derivative, has_gs, has_gh,
                      has_gv, has_gtr=None):
    """The presence patterns of the state cotangents from the last step back: a list of
    `(present state cotangents in, present state cotangents out, the block's traced VJP)`
    ending at a fixpoint. A state whose trace has a cotangent (`has_gtr`) has one at every
    step."""
    has_gtr = tuple(has_gtr or (False,) * len(has_gv))
    patterns = []
    present = tuple(a or b for a, b in zip(has_gv, has_gtr))
    seen = {}
    while present not in seen:
        seen[present] = len(patterns)
        block, out = vjp_block(neuron, opts, hard=hard, detach=detach,
                                surrogate_derivative=surrogate_derivative, has_gs=has_gs,
                                has_gh=has_gh, present=present)
        patterns.append((present, out, block))
        present = tuple(a or b for a, b in zip(out, has_gtr))
    return patterns, seen[present]


def vjp_block(neuron, opts, *, hard, detach, surrogate_derivative, has_gs, has_gh, present):
    g, ids, outs = neuron.trace(opts, hard=hard, detach_reset=detach)
    cots: dict[int, int] = {}

    def put(node, name):  # outputs that are one node (a state left as it is) add up
        c = g.add("input", name)
        cots[node] = c if node not in cots else g.add("add", cots[node], c)

    if has_gs:
        put(outs["s"], "cot:s")
    if has_gh:
        put(outs["h"], "cot:h")
    for k, o in enumerate(outs["states"]):
        if present[k]:
            put(o, f"cot:state:{k}")
    wrt = [ids["x"], *(ids[f"state:{n}"] for n in neuron.states),
           *(ids[f"param:{n}"] for n in neuron.parameters), ids["v_threshold"]]
    res = vjp(g, cots, wrt, surrogate_derivative)
    state_out = tuple(res[ids[f"state:{n}"]] is not None for n in neuron.states)
    return (g, ids, outs, res, wrt), state_out


def scalar_inputs(g) -> int:
    """How many run-time numbers (the surrogate's parameters) a graph reads."""
    return 1 + max((int(args[0][len(SCALAR_INPUT):]) for op, args in g.nodes
                    if op == "input" and args[0].startswith(SCALAR_INPUT)), default=-1)


# forward values the backward keeps from its recompute rather than computing them again
_EXPENSIVE = {"div", "exp", "expm1", "log", "log1p", "sqrt", "rsqrt", "tanh", "cosh", "sinh",
              "sin", "cos", "reciprocal", "sigmoid", "pow"}
# read in the walk back as they are: one value per neuron, not per step (x is per step: where
# the walk back needs it, or a value computed from it, it is kept, so that the backward reads
# x from memory once)
_FREE_INPUTS = ("param:", "v_threshold", "v_rest")


def roots(neuron, ids, res, need):
    """The VJP's results a backward block writes."""
    M = len(neuron.parameters)
    out = [res[ids["x"]], *(res[ids[f"state:{n}"]] for n in neuron.states)]
    out += [res[ids[f"param:{n}"]] for k, n in enumerate(neuron.parameters) if need[k]]
    out += [res[ids["v_threshold"]]] if need[M] else []
    return [c for c in out if c is not None]


def _wanted(neuron, patterns, n_forward, need):
    """The forward values the blocks' VJPs read (masks by the values they compare), less
    those read as they are (`free`), and a test of whether `i` is cheap to compute again from
    `kept` (`derivable(i, kept)`)."""
    g = patterns[0][2][0]
    wanted: set[int] = set()
    for _, _, (gb, ids, outs, res, wrt) in patterns:
        stack, seen = roots(neuron, ids, res, need), set()
        while stack:  # the VJP nodes the block computes, and the forward values they read
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            if i < n_forward:
                wanted.add(i)
                continue
            op, args = gb.nodes[i]
            stack += [a for a in (args if op != "pow" else args[:1]) if isinstance(a, int)]

    def free(i):
        op, args = g.nodes[i]
        return op == "const" or op == "input" and args[0].startswith(_FREE_INPUTS)

    def values(i):  # a mask is computed again from what it compares
        if g.kinds[i] != "bool":
            return {i}
        op, args = g.nodes[i]
        return set().union(*(values(a) for a in args if isinstance(a, int)))

    wanted = {v for i in wanted for v in values(i) if not free(v)}

    def derivable(i, kept, seen=None):
        seen = set() if seen is None else seen
        op, args = g.nodes[i]
        if op in _EXPENSIVE or op == "input" and not free(i):
            return False
        for a in (args if op != "pow" else args[:1]):
            if not isinstance(a, int) or a in kept or free(a) or a in seen:
                continue
            seen.add(a)
            if not derivable(a, kept, seen):
                return False
        return True

    return wanted, derivable


def _not_derivable(neuron, patterns, n_forward, need, kept):
    """The values the blocks read that are neither in `kept` nor cheap to compute from it."""
    wanted, derivable = _wanted(neuron, patterns, n_forward, need)
    return {i for i in wanted if i not in kept and not derivable(i, kept)}


def kept_values(neuron, patterns, n_forward, need):
    """The forward values the recompute keeps in the buffer for every step, so that the walk
    back computes the VJP from them with cheap operations only (the same statements as the
    recompute, so the same values).

    Start from every forward value a VJP node reads; drop, latest first, each that a few
    cheap operations (no division, no exp) give again from the others kept and the inputs
    read as they are (parameters, threshold, v_rest). A state is kept where the VJP reads
    it, and so is x: the backward reads each input row from memory once."""
    wanted, derivable = _wanted(neuron, patterns, n_forward, need)
    kept = set(wanted)
    for i in sorted(wanted, reverse=True):
        if derivable(i, kept - {i}):
            kept.discard(i)
    return sorted(kept)


def _reads_argument(g, u):
    """A surrogate's derivative as the forward sees it: some function of the spike's
    argument (every surrogate's is one of that node; one computed in torch reads `sg`)."""
    return g.add("neg", u)


def forward_kept(neuron, opts, *, hard, detach, need) -> tuple:
    """The forward values a forward kernel keeps for the backward, for every step: the nodes
    of the backward's trace (`neuron.trace(opts, hard=hard, detach_reset=detach)`) that the
    plan keeps with every cotangent present (the spikes', h's, the states' and their traces'
    at every step) and the gradients `need` wants. Chosen before the backward's cotangents
    are known: every backward configuration of this `need` reads them, or values cheap to
    compute from them (`BackwardPlan.build(..., kept=)` checks it)."""
    return _forward_kept(neuron, tuple(sorted(opts.items())), hard, detach, tuple(need))


@functools.lru_cache(maxsize=256)
def _forward_kept(neuron, opts, hard, detach, need):
    K = len(neuron.states)
    return tuple(BackwardPlan.build(
        neuron, dict(opts), hard=hard, detach=detach, surrogate_derivative=_reads_argument,
        has_gs=True, has_gh=True, has_gv=(True,) * K, need=need, has_gtr=(True,) * K).kept)
