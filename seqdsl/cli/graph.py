"""`seqdsl graph FILE`: a cell's step graph, or its derived backward step, as
text, Graphviz DOT, or a picture drawn by Graphviz."""
from __future__ import annotations

import pathlib
import sys

from ..errors import SeqError
from .common import (EPILOG, definition_args, load, network_sizes, pick, positive_int,
                     size_binding, sizes)


FORMATS = ("text", "dot", "svg", "png", "pdf")
BINARY = ("png", "pdf")  # pictures a terminal cannot show: they need -o
SUFFIXES = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".pdf": "pdf"}


def add_parser(sub) -> None:
    g = sub.add_parser("graph", help="show a cell's or a network's step graphs (IR text, "
                       "Graphviz DOT, or a picture: SVG, PNG, PDF)",
                       description="Show the graph IR of one time step of a cell, or of its "
                       "backward step derived by reverse-mode autodiff. For a network: the step "
                       "graph of each of its cells (once for the layers that share it), then "
                       "each output's graph and the graph of its default loss. Pictures are "
                       "drawn by Graphviz (the `dot` program): inputs, previous and new states, "
                       "parameters with their shapes, your named values (Γu, c̃) and anonymous "
                       "intermediates each look their own way, a legend says which is which, "
                       "and dashed edges carry each new state to the next step; a backward "
                       "picture draws the forward values it reads from the tape as cylinders.",
                       epilog=EPILOG)
    g.add_argument("file", metavar="FILE")
    definition_args(g)
    g.add_argument("--backward", action="store_true", help="show the derived backward step")
    g.add_argument("--format", choices=FORMATS, default=None,
                   help="text: the IR, one equation a line; dot: Graphviz DOT source; svg, png, "
                   "pdf: a picture (needs Graphviz's `dot` program). Default: from the suffix "
                   "of -o (.dot .gv .svg .png .pdf), else text")
    g.add_argument("-o", "--output", metavar="OUT", default=None,
                   help="write to OUT instead of standard output; png and pdf need it (a "
                   "picture is no use on a terminal)")
    g.add_argument("--hidden", type=positive_int, default=None, metavar="N",
                   help="show a cell's state size H as N (default: symbolic, H)")
    g.add_argument("--input", type=positive_int, default=None, metavar="N",
                   help="show the input size as N (default: symbolic, X)")
    g.add_argument("--size", type=size_binding, action="append", default=[], metavar="NAME=N",
                   help="show any other size symbol as a number, e.g. --size Y=10")
    g.set_defaults(run=run)


def run(args) -> int:
    from ..ir.autodiff import backward, saved_values
    fmt = _format(args)
    kind, definition = pick(load(args.file), args)
    env = _cell_sizes(args, definition) if kind == "cell" else _network_sizes(args, definition)
    graphs = _network_graphs(definition) if kind == "network" else [(None, definition.graph)]
    parts = []
    for title, graph in graphs:
        if env:
            graph = graph.map_sizes(lambda s: s.subst(env))
        tape = None
        if args.backward:  # the forward values it reads are drawn as tape reads
            graph, tape = backward(graph), graph
            tape = saved_values(tape, graph)
        parts.append((title, graph, tape))
    if fmt == "text":
        _emit(args.output, "\n\n".join(str(g) if t is None else f"# {t}\n{g}"
                                         for t, g, _ in parts) + "\n")
        return 0
    source = _dot_source(kind, definition.name, parts, args.backward)
    if fmt == "dot":
        _emit(args.output, source)
    else:
        from ..tools.render import render
        _emit(args.output, render(source, fmt))
    return 0


def _format(args) -> str:
    """--format, else the suffix of -o, else text; png and pdf need -o."""
    fmt = args.format
    if fmt is None:
        suffix = pathlib.Path(args.output).suffix.lower() if args.output else ""
        fmt = SUFFIXES.get(suffix, "text")
    if fmt in BINARY and args.output is None:
        raise SeqError(f"--format {fmt} draws a picture, which a terminal cannot show: "
                       f"give a file to write it to with -o, e.g. -o graph.{fmt}")
    return fmt


def _dot_source(kind: str, name: str, parts, backward: bool) -> str:
    from ..ir.dot import to_dot, to_dot_clusters
    if kind == "cell":
        _, graph, tape = parts[0]
        return to_dot(graph, tape)
    what = "the backward steps, derived by autodiff" if backward else \
        "each cell's step, each output and its loss"
    return to_dot_clusters(name + (".backward" if backward else ""), parts,
                           label=f"network {name}: {what}")


def _emit(output: str | None, data: str | bytes) -> None:
    """To standard output, or to the file `output` (saying so on stderr)."""
    if output is None:
        sys.stdout.write(data)
        return
    try:
        with open(output, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as e:
        raise SeqError(f"cannot write {output}: {e.strerror}") from None
    print(f"wrote {output}", file=sys.stderr)


def _cell_sizes(args, ct) -> dict[str, int]:
    """The sizes to show as numbers: --hidden binds the states' symbols,
    --input the input's, --size any; the rest stay symbolic."""
    env = sizes(args, "cell", ct.name, ct.symbols)
    bindings = ((args.hidden, [s for _, sz in ct.states for s in sz.symbols]),
                (args.input, [s for _, sz in ct.inputs for s in sz.symbols]))
    for value, symbols in bindings:
        for s in symbols if value is not None else ():
            env.setdefault(s, value)
    if env and all(s in env for s in ct.symbols):
        from ..runtime.instance import bind_sizes
        env = bind_sizes(ct, sizes=env)  # checks what the equations require (X = H)
    return env


def _network_sizes(args, nt) -> dict[str, int]:
    """As for a cell: --input for the network's only input, --size by name."""
    if args.hidden is None and args.input is None and not args.size:
        return {}
    bound = network_sizes(args, nt)  # refuses --hidden, checks the names
    given = {s for s, _ in args.size}
    if args.input is not None:
        given.add(str(nt.inputs[0][2]))
    return {s: v for s, v in bound.items() if s in given}


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
