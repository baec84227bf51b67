"""`seqdsl graph FILE`: a cell's step graph, or its derived backward step."""
from __future__ import annotations

from .common import EPILOG, definition_args, load, pick


def add_parser(sub) -> None:
    g = sub.add_parser("graph", help="print a cell's or a network's step graphs (IR text or "
                       "Graphviz DOT)",
                       description="Print the graph IR of one time step of a cell, or of its "
                       "backward step derived by reverse-mode autodiff. For a network: the step "
                       "graph of each of its cells (once for the layers that share it), then "
                       "each output's graph and the graph of its default loss.", epilog=EPILOG)
    g.add_argument("file", metavar="FILE")
    definition_args(g)
    g.add_argument("--backward", action="store_true", help="show the derived backward step")
    g.add_argument("--format", choices=("text", "dot"), default="text",
                   help="IR text, one equation a line (default), or Graphviz DOT source")
    g.set_defaults(run=run)


def run(args) -> int:
    from ..ir.autodiff import backward
    from ..ir.dot import to_dot
    kind, definition = pick(load(args.file), args)
    graphs = _network_graphs(definition) if kind == "network" else [(None, definition.graph)]
    shown = []
    for title, graph in graphs:
        graph = backward(graph) if args.backward else graph
        text = to_dot(graph) if args.format == "dot" else str(graph)
        shown.append(text if title is None else f"{'//' if args.format == 'dot' else '#'} "
                     f"{title}\n{text}")
    print("\n\n".join(shown))
    return 0


def _network_graphs(nt) -> list[tuple[str, object]]:
    """(title, graph): each cell's step once, at the sizes of the layers that
    use it, then each output's graph and its default loss's."""
    from ..ir.losses import default_loss, loss_graph
    by_step: dict[str, tuple[list[str], object]] = {}
    for name, layer in nt.sequences.items():
        for prefix, cell in _cell_layers(name, layer):
            sizes = ", ".join(f"{k}={v}" for k, v in cell.sizes.items())
            key = f"cell {cell.cell.name} ({sizes})"
            graph = cell.cell.graph.map_sizes(lambda s, c=cell: s.subst(c.sizes))
            by_step.setdefault(key, ([], graph))[0].append(prefix)
    out = [(f"{', '.join(prefixes)}: {key}", graph) for key, (prefixes, graph) in by_step.items()]
    for h in nt.heads:
        loss = default_loss(h.graph)
        out.append((f"output {h.name}{'<t>' if h.per_step else ''}", h.graph))
        out.append((f"loss of {h.name}: {loss}", loss_graph(h.graph, loss)))
    return out


def _cell_layers(prefix: str, layer):
    """(parameter prefix, layer) of each cell in a layer tree, in order."""
    if layer.kind == "cell":
        yield prefix, layer
        return
    names = ["fwd", "bwd"] if layer.kind == "bidirectional" else range(len(layer.children))
    for n, child in zip(names, layer.children):
        yield from _cell_layers(f"{prefix}.{n}", child)
