"""`seqdsl graph FILE`: a cell's step graph, or its derived backward step."""
from __future__ import annotations

from .common import EPILOG, load, pick_cell


def add_parser(sub) -> None:
    g = sub.add_parser("graph", help="print a cell's step graph (IR text or Graphviz DOT)",
                       description="Print the graph IR of one time step of a cell, or of its "
                       "backward step derived by reverse-mode autodiff.", epilog=EPILOG)
    g.add_argument("file", metavar="FILE")
    g.add_argument("--cell", metavar="NAME", help="the cell (default: the file's only cell; "
                   "a library cell such as LSTM may be named too)")
    g.add_argument("--backward", action="store_true", help="show the derived backward step")
    g.add_argument("--format", choices=("text", "dot"), default="text",
                   help="IR text, one equation a line (default), or Graphviz DOT source")
    g.set_defaults(run=run)


def run(args) -> int:
    from ..ir.autodiff import backward
    from ..ir.dot import to_dot
    spec = load(args.file)
    ct = pick_cell(spec, args.cell)
    graph = backward(ct.graph) if args.backward else ct.graph
    print(to_dot(graph) if args.format == "dot" else graph)
    return 0
