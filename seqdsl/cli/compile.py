"""`seqdsl compile FILE`: generate, compile and cache a cell's Numba kernels."""
from __future__ import annotations


import numpy as np

from ..errors import SeqError
from .common import EPILOG, definition_args, instantiate_from_args, size_args


def add_parser(sub) -> None:
    m = sub.add_parser("compile", help="generate, compile and cache the Numba kernels of a cell or a network",
                       description="Parse, check and differentiate a cell, plan its products, "
                       "generate Python source for its dtype (sizes are run-time arguments, so every "
                       "size shares it), and compile it "
                       "with Numba (cached on disk: a second run loads it). Prints a summary: "
                       "parameters, FLOPs per step, where the source is, compile time and "
                       "whether the cache was hit. With --network, every cell of the network, "
                       "one summary line each.", epilog=EPILOG)
    m.add_argument("file", metavar="FILE")
    definition_args(m)
    size_args(m)
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="floating-point type of the compiled code (float32)")
    m.add_argument("--emit", choices=("summary", "source", "graph"), default="summary",
                   help="print the summary (default), the generated source, or the step "
                   "graphs with the product plan")
    m.set_defaults(run=run)


def run(args) -> int:
    from ..runtime.numba.plan import product_groups
    kind, ct, cell = instantiate_from_args(args, "numba", announce=args.emit == "summary")
    if kind == "network":
        return _network(cell, args)
    if args.emit == "source":
        print(cell.source, end="")
        return 0
    groups = product_groups(cell.forward_graph, {n for n, _ in ct.inputs})
    if args.emit == "graph":
        print(cell.forward_graph)
        print()
        print(cell.backward_graph)
        print()
        print("products, one per operand and step (hoisted: one for all steps):")
        for g in groups.values():
            print(f"  {g.operand} ({g.size}) × [" + " | ".join(
                f"{m.weight}[:, {m.cols[0]}:{m.cols[1]}]ᵀ" for m in g.members)
                + f"] → {g.width}" + ("   hoisted out of the time loop" if g.hoisted else ""))
        return 0
    bound = ", ".join(f"{k}={v}" for k, v in cell.sizes.items())
    print(f"compiled {ct.name} ({bound}, {args.dtype}) from {args.file}")
    total = sum(int(np.prod(s)) for s in cell.param_shapes.values())
    print(f"  parameters  {total:,} in {len(cell.param_shapes)}: " + ", ".join(
        f"{n} {'×'.join(map(str, s))}" for n, s in cell.param_shapes.items()))
    f_mm, f_ew, b_mm, b_ew = _flops(cell)
    print(f"  FLOPs       per example and step: forward {f_mm + f_ew:,} "
          f"({f_mm:,} in matrix products), backward {b_mm + b_ew:,} ({b_mm:,})")
    print("  products    " + "; ".join(
        f"{g.operand}: {len(g.members)} block(s) → one {g.size}×{g.width}"
        + (" (hoisted)" if g.hoisted else "") for g in groups.values()))
    print(f"  source      {cell.source_path}")
    hit = "cache hit" if cell.loaded.cache_hit else "compiled, now cached"
    print(f"  compile     {cell.loaded.seconds:.2f} s ({hit})")
    return 0


def _network(net, args) -> int:
    """One line per cell of the network: where it is, its sizes, its
    compile time and whether the cache had it."""
    if args.emit != "summary":
        raise SeqError(f"--emit {args.emit} shows one cell: name it with --cell",
                       hint="a network's cells are listed by `seqdsl compile --network`")
    bound = ", ".join(f"{k}={v}" for k, v in net.sizes.items())
    print(f"compiled network {net.type.name} ({bound}, {args.dtype}) from {args.file}")
    for layer in net.layers.values():
        for prefix, c in layer.cells():
            cell = c.runner
            sizes = ", ".join(f"{k}={v}" for k, v in c.cell.sizes.items())
            how = " (token ids looked up)" if c.tokens is not None else ""
            hit = "cache hit" if cell.loaded.cache_hit else "compiled, now cached"
            print(f"  {prefix:<10} {c.cell.type.name} ({sizes}){how}: "
                  f"{cell.loaded.seconds:.2f} s ({hit})  {cell.source_path}")
    total = sum(int(np.prod(s)) for s in net.param_shapes.values())
    print(f"  parameters  {total:,} in {len(net.param_shapes)}")
    return 0


def _flops(cell) -> tuple[int, int, int, int]:
    """Floating-point operations per example and step, forward and backward:
    (matrix products, everything else) each, as each op's registry entry
    counts them. An equation on parameters alone is made once, not per
    example: it is not counted."""
    from ..ir.graph import BATCH, Var
    from ..ir.ops import OPS, PRODUCT

    def count(graph):
        mm = other = 0
        for e in graph.eqns:
            if not any(isinstance(a, Var) and a.kind == BATCH for a in e.args):
                continue
            op = OPS[e.op]
            if op.family == PRODUCT:
                mm += op.count_flops(e)
            else:
                other += op.count_flops(e)
        return mm, other
    return (*count(cell.forward_graph), *count(cell.backward_graph))
