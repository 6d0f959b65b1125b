"""The imported network: `from_nir` and the `NIRNetwork` module it builds, which runs the
graph's nodes over the whole sequence and its cycles step by step."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from snnfunc.nir.common import _check_dt, _nir
from snnfunc.nir.graph import _components, _flatten_graph, _output_shape, _walk
from snnfunc.nir.layers import _import_node
from snnfunc.surrogate import Sigmoid, Surrogate


def from_nir(graph, *, dt: float = 1.0, surrogate: Surrogate = Sigmoid(),
             dtype: torch.dtype = torch.float32) -> "NIRNetwork":
    """Build a time-major module from a `nir.NIRGraph` or a path to a NIR file.

    Args:
      graph: a `nir.NIRGraph`, or a path that `nir.read` reads.
      dt: the Euler step (see the `snnfunc.nir` docs for the equations).
      surrogate: the spike function's surrogate for training the imported network.
      dtype: the floating dtype every imported weight and neuron constant is cast to,
        whatever the file stores (float64, float16 or integers); the network then runs on
        input of that dtype (`net.to(torch.float64)` changes it later, as for any module).
        Import a float64 network with `dtype=torch.float64` to get its spikes exactly.

    Returns:
      A `NIRNetwork`: `forward(x_seq)` maps `[T, batch, ...]` to the output node's
        `[T, batch, ...]`. Weights are parameters; neuron constants are buffers.
    """
    nir = _nir()
    if isinstance(graph, (str, Path)):
        # NIR's type check infers shapes from parameters and rejects 0-d (shared) ones; the
        # importer broadcasts parameters itself and needs no inferred types
        graph = nir.read(graph, type_check=False)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"graph must be a nir.NIRGraph or a path to a NIR file, got "
                        f"{type(graph).__name__}")
    if not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a snnfunc.surrogate.Surrogate, got "
                        f"{type(surrogate).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got "
                        f"{dtype!r}")
    return NIRNetwork(graph, _check_dt(dt), surrogate).to(dtype)


class NIRNetwork(nn.Module):
    """A NIR graph as a module over `[T, batch, ...]` (built by `from_nir`).

    A node with several incoming edges gets their sum. Nested `NIRGraph` nodes are inlined
    (their nodes are named `"<subgraph>.<node>"`). Nodes outside cycles run over the whole
    sequence at once, in a topological order; each cycle runs step by step, its nodes in a fixed
    order, and an edge that closes a cycle (a back edge) carries its source's value from the
    previous step, zero at step 0. The back edges are those a depth-first walk finds reaching a
    node on its current path; the walk starts at the Input nodes (by name), then at any node not
    reached (by name), and follows edges in the graph's order.

    Attributes:
      input_names: the Input nodes, in the graph's order.
      output_names: the Output nodes, in the graph's order.
      back_edges: the edges `(source, destination)` that carry the previous step's value.
    """

    def __init__(self, graph, dt: float, surrogate: Surrogate):
        super().__init__()
        nir = _nir()
        self.dt = dt
        nodes, edges, passes = _flatten_graph(nir, graph)
        self.node_names = list(nodes)
        self.input_names = [n for n, v in nodes.items() if isinstance(v, nir.Input) and n not in passes]
        self.output_names = [n for n, v in nodes.items() if isinstance(v, nir.Output) and n not in passes]
        if not self.input_names or not self.output_names:
            raise ValueError(f"the graph needs at least one Input and one Output node; it has "
                             f"inputs {self.input_names} and outputs {self.output_names}")
        for src, dst in edges:
            if dst in self.input_names:
                raise ValueError(f"edge {(src, dst)!r} leads into the Input node {dst!r}")
            if src in self.output_names:
                raise ValueError(f"edge {(src, dst)!r} leaves the Output node {src!r}")
        order, back = _walk(list(nodes), edges, sorted(self.input_names, key=str))
        position = {n: i for i, n in enumerate(order)}
        self.back_edges = [edges[i] for i in sorted(back)]
        self.edges, self.passes = list(edges), passes
        self._preds = {n: [] for n in nodes}  # (source, is a back edge) in edge order
        for i, (src, dst) in enumerate(edges):
            self._preds[dst].append((src, i in back))
        for n in order:
            if n not in self.input_names and not self._preds[n]:
                raise ValueError(f"node {n!r} has no incoming edge")
        self._blocks = []  # (False, [name]) over the whole sequence or (True, names) per step
        for comp in _components(order, edges):
            cyclic = len(comp) > 1 or any(src == dst == comp[0] for src, dst in edges)
            self._blocks.append((cyclic, sorted(comp, key=position.get)))
        self._out_shapes = {n: _output_shape(nir, v) for n, v in nodes.items()}
        self._nir_nodes = {n: copy.deepcopy(v) for n, v in nodes.items()
                           if n in passes or isinstance(v, (nir.Input, nir.Output))}
        self.layers = nn.ModuleDict()
        self._keys = {}
        for i, name in enumerate(order):
            if name in self._nir_nodes:
                continue
            key = f"n{i}_" + "".join(c if c.isalnum() else "_" for c in str(name))
            self._keys[name] = key
            self.layers[key] = _import_node(nir, name, nodes[name], dt, surrogate)
            self._nir_nodes[name] = copy.deepcopy(nodes[name])

    def forward(self, x_seq):
        """Run the graph over a sequence, from rest.

        Args:
          x_seq: the Input node's values, time-major `[T, batch, ...]`, in the dtype the
            network was imported with; for a graph with several Input nodes, a dict from
            their names to such tensors (one T and batch for all).

        Returns:
          The Output node's values, `[T, batch, ...]`; for several Output nodes, a dict from
            their names to their values.
        """
        values = self._inputs(x_seq)
        first = next(iter(values.values()))
        steps, batch = first.shape[0], first.shape[1]
        for per_step, names in self._blocks:
            if per_step:
                self._run_steps(names, values, steps, batch, first)
                continue
            (name,) = names
            if name in self.input_names:
                continue
            x = self._sum(name, [values[src] for src, _ in self._preds[name]])
            key = self._keys.get(name)
            values[name] = x if key is None else self.layers[key](x)
        if len(self.output_names) == 1:
            return values[self.output_names[0]]
        return {n: values[n] for n in self.output_names}

    def _inputs(self, x_seq):
        if isinstance(x_seq, torch.Tensor):
            if len(self.input_names) != 1:
                raise ValueError(f"the graph has Input nodes {self.input_names}: pass a dict "
                                 f"from these names to [T, batch, ...] tensors")
            x_seq = {self.input_names[0]: x_seq}
        if not isinstance(x_seq, dict) or set(x_seq) != set(self.input_names):
            got = sorted(map(str, x_seq)) if isinstance(x_seq, dict) else type(x_seq).__name__
            raise ValueError(f"x_seq must be a tensor [T, batch, ...] or a dict from the Input "
                             f"nodes {self.input_names} to such tensors; got {got}")
        lead = None
        for name, x in x_seq.items():
            if not isinstance(x, torch.Tensor) or x.dim() < 2:
                raise ValueError(f"the value of Input {name!r} must be a time-major tensor "
                                 f"[T, batch, ...]")
            if lead is not None and tuple(x.shape[:2]) != lead:
                raise ValueError(f"the Input values have different [T, batch]: {lead} and "
                                 f"{tuple(x.shape[:2])} (Input {name!r})")
            lead = tuple(x.shape[:2])
        return dict(x_seq)

    @staticmethod
    def _sum(name, terms):
        x = terms[0]
        for other in terms[1:]:
            x = x + other
        return x

    def _run_steps(self, names, values, steps, batch, like):
        """One cycle, step by step: back edges read the previous step (nothing at step 0)."""
        if steps == 0:
            raise ValueError(f"the cycle through {names} needs T >= 1 steps")
        inside = set(names)
        states = dict.fromkeys(names)
        outs = {n: [] for n in names}
        prev = None
        for t in range(steps):
            cur = {}
            for name in names:
                terms = []
                for src, is_back in self._preds[name]:
                    if src not in inside:
                        terms.append(values[src][t])
                    elif not is_back:
                        terms.append(cur[src])
                    elif prev is not None:
                        terms.append(prev[src])
                if not terms:  # only back edges, at step 0: their zero
                    src = self._preds[name][0][0]
                    shape = self._out_shapes[src]
                    if shape is None:
                        raise ValueError(f"node {name!r} reads only back edges, and the shape of "
                                         f"{src!r}'s output (zero at step 0) is not known")
                    terms.append(like.new_zeros((batch, *shape)))
                x = self._sum(name, terms)
                key = self._keys.get(name)
                if key is None:
                    y = x
                else:
                    layer = self.layers[key]
                    if hasattr(layer, "run"):
                        y, states[name] = layer.run(x.unsqueeze(0), states[name])
                        y = y[0]
                    else:
                        y = layer(x.unsqueeze(0))[0]
                cur[name] = y
                outs[name].append(y)
            prev = cur
        for name in names:
            values[name] = torch.stack(outs[name])
