"""The graph side of the import: nested graphs inlined, the depth-first walk that finds the
back edges, the strongly connected components (the cycles) and the nodes' output shapes."""

from __future__ import annotations

import numpy as np


def _flatten_graph(nir, graph, prefix=""):
    """The graph with nested `NIRGraph` nodes inlined.

    Returns `(nodes, edges, passes)`: nodes by their full name (a nested node is
    `"<subgraph>.<node>"`), edges between full names in the file's order, and the names of the
    nested graphs' own Input and Output nodes, which pass their summed input on unchanged.
    """
    nodes, edges, passes, ends = {}, [], set(), {}

    def add(name, node):
        if name in nodes:
            raise ValueError(f"node {name!r}: two nodes have this name once nested graphs are "
                             f"inlined (a node of that name and a node of a subgraph); rename one")
        nodes[name] = node

    for name, node in graph.nodes.items():
        full = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            inner, inner_edges, inner_passes = _flatten_graph(nir, node, full + ".")
            ins = [f"{full}.{n}" for n, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [f"{full}.{n}" for n, v in node.nodes.items() if isinstance(v, nir.Output)]
            ends[name] = (ins, outs)
            for n, v in inner.items():
                add(n, v)
            edges += inner_edges
            passes |= inner_passes | set(ins) | set(outs)
        else:
            add(full, node)

    def resolve(end, edge, role):
        if end in ends:  # an edge to or from a whole subgraph: its one Input or Output
            ins, outs = ends[end]
            which = outs if role == "source" else ins
            if len(which) != 1:
                kind = "Output" if role == "source" else "Input"
                raise ValueError(
                    f"edge {edge!r}: the subgraph {prefix}{end!r} has {len(which)} {kind} nodes "
                    f"{which}; name one of them in the edge ('{end}.<node>')")
            return which[0]
        full = f"{prefix}{end}"
        if full not in nodes:
            raise ValueError(f"edge {edge!r} names an unknown node {full!r}")
        return full

    for edge in graph.edges:
        src, dst = edge
        edges.append((resolve(src, edge, "source"), resolve(dst, edge, "destination")))
    return nodes, edges, passes


def _walk(names, edges, roots):
    """Depth-first walk from `roots`, then from every node not reached (by name), following
    edges in order. Returns the reverse postorder (a topological order once back edges are
    dropped) and the indices of the back edges (those that reach a node on the current path)."""
    succ = {n: [] for n in names}
    for i, (src, dst) in enumerate(edges):
        succ[src].append((dst, i))
    state, post, back = {}, [], set()
    for root in [*roots, *sorted(names, key=str)]:
        if root in state:
            continue
        state[root] = "open"
        stack = [(root, iter(succ[root]))]
        while stack:
            node, it = stack[-1]
            for dst, i in it:
                if state.get(dst) == "open":
                    back.add(i)
                elif dst not in state:
                    state[dst] = "open"
                    stack.append((dst, iter(succ[dst])))
                    break
            else:
                stack.pop()
                state[node] = "done"
                post.append(node)
    return post[::-1], back


def _components(names, edges):
    """Strongly connected components (Tarjan), in a topological order of the components."""
    succ = {n: [] for n in names}
    for src, dst in edges:
        succ[src].append(dst)
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]
    for root in names:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            for dst in it:
                if dst not in index:
                    index[dst] = low[dst] = counter[0]
                    counter[0] += 1
                    stack.append(dst)
                    on.add(dst)
                    work.append((dst, iter(succ[dst])))
                    break
                if dst in on:
                    low[node] = min(low[node], index[dst])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        n = stack.pop()
                        on.discard(n)
                        comp.append(n)
                        if n == node:
                            break
                    comps.append(comp)
    return comps[::-1]


def _output_shape(nir, node):
    """A node's output shape from its NIR type, or None where it is not known."""
    out = getattr(node, "output_type", None)
    if isinstance(node, nir.Input):
        out = {"output": node.input_type.get("input")} if isinstance(node.input_type, dict) else None
    if not isinstance(out, dict) or len(out) != 1:
        return None
    shape = np.asarray(next(iter(out.values())))
    if shape.ndim != 1 or shape.size == 0 or not (shape > 0).all():
        return None
    return tuple(int(s) for s in shape)
