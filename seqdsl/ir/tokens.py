"""Token inputs read by lookup: a pass over a cell's step graph at bound sizes.

An input of token ids stands for one-hot vectors, and a weight applied to a
one-hot vector only picks one of its columns. So each product `W [a, x]`
that reads the token input `x` becomes `W_a [a] + x·W`, where `W_a` holds
W's other columns and `x·W` is a new input: the columns of W that `x` reads,
looked up per step by token id. No dense one-hot product is ever formed,
and the gradient of a looked-up column is scattered back to that column.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .graph import BATCH, MATRIX, Eqn, Graph, Size, Var, dce, verify


@dataclass(frozen=True)
class Lookup:
    """A new input: columns lo:hi of weight `weight`, one per token id."""

    name: str
    weight: str
    lo: int
    hi: int
    rows: int


@dataclass(frozen=True)
class Columns:
    """A new parameter: the columns `cols` of weight `weight`."""

    name: str
    weight: str
    cols: tuple[int, ...]


@dataclass(frozen=True)
class TokenReads:
    graph: Graph
    lookups: tuple[Lookup, ...]
    columns: tuple[Columns, ...]


class _Fresh:
    def __init__(self, graph: Graph):
        self.taken = set(graph.vars())

    def __call__(self, base: str) -> str:
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}{n}"
        self.taken.add(name)
        return name


def read_tokens(graph: Graph, token: str) -> TokenReads | None:
    """`graph` with the input `token` read through lookups; None when the
    token input is used other than as one part of a product, or not at all
    (a cell that ignores it would be left without the input its runs take
    their steps and batch from). Then it must be read as one-hot vectors."""
    (x,) = [v for v in graph.inputs if v.name == token]
    fresh = _Fresh(graph)
    lookups: dict[tuple, Lookup] = {}
    columns: list[Columns] = []
    params = list(graph.params)
    eqns: list[Eqn] = []
    for e in graph.eqns:
        reads = [a for a in e.args if isinstance(a, Var) and a.name == token]
        if not reads:
            eqns.append(e)
            continue
        if e.op != "linear" or len(reads) != 1:
            return None
        w, *parts = e.args
        cols, lo, at = [], 0, None
        for p in parts:
            n = p.size.value()
            if p.name == token:
                at = (lo, lo + n)
            else:
                cols += range(lo, lo + n)
            lo += n
        key = (w.name,) + at
        if key not in lookups:
            lookups[key] = Lookup(fresh(f"{token}_{w.name}"), w.name, *at, w.shape[0].value())
        looked = Var(lookups[key].name, BATCH, e.out.shape)
        others = [p for p in parts if p.name != token]
        if not others:
            eqns.append(Eqn(e.out, "copy", (looked,), (), e.loc))
            continue
        rest = Var(fresh(f"{w.name}_rest"), MATRIX, (w.shape[0], Size.of(len(cols))))
        params.append(rest)
        columns.append(Columns(rest.name, w.name, tuple(cols)))
        product = Var(fresh(f"{e.out.name}_rest"), BATCH, e.out.shape)
        eqns.append(Eqn(product, "linear", (rest, *others), (), e.loc))
        eqns.append(Eqn(e.out, "add", (product, looked), (), e.loc))
    inputs = tuple(Var(k.name, BATCH, (Size.of(k.rows),)) for k in lookups.values()) + tuple(
        v for v in graph.inputs if v.name != token)
    if not lookups:
        return None
    out = dce(replace(graph, inputs=inputs, params=tuple(params), eqns=tuple(eqns)))
    used = {a.name for e in out.eqns for a in e.args if isinstance(a, Var)}
    out = replace(out, params=tuple(p for p in out.params if p.name in used))
    return TokenReads(verify(out), tuple(lookups.values()), tuple(columns))
