"""A network's heads as step graphs, lowered by the cell lowering.

A head such as `output ŷ<t> = softmax(Wy h<t> + by)` is one equation over the
sequences it reads; lowered like a cell without states, it becomes a graph
whose inputs are those sequences' values at one step, so the interpreter, the
autodiff and the losses treat it as they treat any cell's step. The lowering
is also where a head's shapes are inferred: its parameters' and its output's.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from ..errors import Loc, SeqError
from ..lang import syntax as S
from ..lang.check import CellScope
from ..lang.network import HeadScope
from .graph import Graph, Size, dce, verify
from .lower import Unifier, _Lowerer, input_symbol


@dataclass
class Head:
    name: str
    per_step: bool  # ŷ<t> (every step) or ŷ (each example's last step)
    size: Size
    text: str
    loc: Loc
    graph: Graph | None = None  # its step graph, lowered like a cell's


def head_scope(head: HeadScope, source: str) -> CellScope:
    """The scope of a head: the sequences it reads are its inputs, its free
    names its parameters (matrices where applied as weights)."""
    target = S.Var(head.name, None, head.decl.target.loc)
    return CellScope(name=head.name, loc=head.loc, source=source,
                     inputs=dict.fromkeys(head.sequences), states={}, state_locs={},
                     equations=[S.Equation(target, head.decl.expr, head.loc)],
                     intermediates={head.name}, params=dict(head.params), output=head.name)


class HeadLowering:
    """The heads of one network, lowered one after another.

    A parameter that several heads use is one parameter: a later head starts
    from the shape an earlier one inferred for it. A head's number of classes
    (the free size of its output, bound only by the data) is given a symbol
    of its own, so that no two sizes are tied by name.
    """

    def __init__(self, sequence_sizes: dict[str, Size], input_symbols: set[str], source: str):
        self.sequence_sizes = sequence_sizes
        self.symbols = set(input_symbols) | {"H"}  # taken: a class symbol is none of these
        self.source = source
        self.params: dict[str, tuple[Size, ...]] = {}  # every head's, in order of first use

    def lower(self, head: HeadScope) -> Head:
        """The head's step graph and size; its parameters' shapes join `params`."""
        scope = head_scope(head, self.source)
        unify = Unifier(set(), self.source)
        shared = {n: self.params[n] for n in scope.params if n in self.params}
        low = _Lowerer(scope, unify, {}, {n: self.sequence_sizes[n] for n in scope.inputs},
                       shared)
        eqns = low.run()
        result = low.values[head.name]
        size = unify.resolve(result.size)
        free = sorted((k for k in size.symbols if k.startswith("?")), key=lambda k: int(k[1:]))
        if free:
            unify.bound[free[0]] = Size.of(self._class_symbol(head.name))
        for n in scope.params:
            fixed = tuple(unify.resolve(s) for s in low.params[n].shape)
            if any(k.startswith("?") for s in fixed for k in s.symbols):
                raise SeqError(f"cannot infer the shape of `{n}`", head.loc, source=self.source)
            self.params[n] = fixed
        params = tuple(low.params[n] for n in _graph_order(head))
        graph = Graph(head.name, tuple(low.values[n] for n in scope.inputs), params, tuple(eqns),
                      (result,)).map_sizes(unify.resolve)
        if any(k.startswith("?") for v in graph.vars().values() for s in v.shape
               for k in s.symbols):
            raise SeqError(f"cannot infer every size of output `{head.name}`", head.loc,
                           source=self.source)
        return Head(head.name, head.per_step, unify.resolve(size), head.text, head.loc,
                    verify(dce(graph)))

    def _class_symbol(self, head: str) -> str:
        """The size symbol of a head's number of classes: its first letter
        upper-cased (`ŷ` → `Y`), numbered (`Y2`, `Y3`, …) when an input or an
        earlier head has that symbol."""
        base = input_symbol(unicodedata.normalize("NFD", head)[0], set())
        sym, n = base, 2
        while sym in self.symbols:
            sym, n = f"{base}{n}", n + 1
        self.symbols.add(sym)
        return sym


def _graph_order(head: HeadScope) -> list[str]:
    """The parameters in the order the graph lists them: as written, a
    weight before what it is applied to."""
    names = [node.weight if isinstance(node, S.Apply) else node.name
             for node in S.walk(head.decl.expr) if isinstance(node, (S.Apply, S.Var))]
    return [n for n in dict.fromkeys(names) if n in head.params]
