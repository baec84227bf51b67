"""Graph-to-graph passes that make a step cheaper without changing its values."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from .graph import Eqn, Graph, Lit, Var

ZERO = Lit(0.0)


def fold_zeros(graph: Graph, zero: Iterable[str] = ()) -> Graph:
    """The graph with its zeros folded away: the values made by `zeros`
    equations, and those named in `zero` (values its caller knows are zero:
    the code generator's products that a stacked product holds). Sums drop
    zero terms (later equations read the other term directly) and products
    with a zero become zero. A graph output that folds away is kept as a
    `copy` of what it equals, or `zeros`, so the outputs stay. A value named
    in `zero` stays defined: who makes it decides that it is zero.

    Only equations that take a literal can read a zero; any other reader
    (`concat`, `outer`, ...) makes the result fail `verify`."""
    zero = set(zero)
    sub: dict[str, Var | Lit] = {n: ZERO for n in zero}
    outputs = {v.name for v in graph.outputs}
    eqns = []
    for e in graph.eqns:
        args = tuple(sub.get(a.name, a) if isinstance(a, Var) else a for a in e.args)
        if e.out.name in zero:
            eqns.append(Eqn(e.out, "zeros", (), loc=e.loc) if any(map(_is0, args))
                        else replace(e, args=args))
            continue
        folded = _fold(e.op, args)
        if folded is None:
            eqns.append(replace(e, args=args))
            continue
        sub[e.out.name] = folded
        if e.out.name in outputs:
            eqns.append(Eqn(e.out, "zeros", (), loc=e.loc) if _is0(folded)
                        else Eqn(e.out, "copy", (folded,), loc=e.loc))
    return replace(graph, eqns=tuple(eqns))


def _is0(a) -> bool:
    return isinstance(a, Lit) and a.value == 0


def _fold(op: str, args):
    """What an equation reduces to (a value or ZERO), or None if it stays."""
    if op == "zeros":
        return ZERO
    if op in ("add", "sub") and _is0(args[1]):
        return args[0]
    if op == "add" and _is0(args[0]):
        return args[1]
    if op == "mul" and any(map(_is0, args)):
        return ZERO
    if op in ("div", "neg", "copy", "bsum") and _is0(args[0]):
        return ZERO
    return None
