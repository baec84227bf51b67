"""Reverse-mode autodiff as a graph-to-graph transform.

`backward(step)` derives the backward step of a forward step graph. It takes
the cotangents arriving at step t (`d_a<t>` for each new state, which the
runtime forms from the output's gradient and from step t+1) and the forward
values it reads, and returns the cotangents of the step's inputs and previous
states and the step's contribution to every parameter's gradient.

Each op's rule is the `vjp` of its registry entry (ops/), which emits
equations through the `_Builder` here; a value used twice gets its
cotangents summed with explicit `add`s. Nothing is written for a particular
cell or op.
"""
from __future__ import annotations

from dataclasses import replace

from .graph import BATCH, MATRIX, VECTOR, Eqn, Graph, Lit, Var, dce, verify
from .ops import Facet


class _Builder:
    """Emits backward equations with temporary names; `name` gives a
    temporary the readable name `d_<value>` it is the cotangent of."""

    def __init__(self, taken):
        self.eqns: list[Eqn] = []
        self.taken = set(taken)
        self.temps: set[str] = set()
        self.n = 0
        self.names: dict[str, str] = {}

    def emit(self, op, args, kind, shape, attrs=(), loc=None) -> Var:
        while True:
            self.n += 1
            name = f"s{self.n}"
            if name not in self.taken:
                break
        self.taken.add(name)
        self.temps.add(name)
        out = Var(name, kind, tuple(shape))
        self.eqns.append(Eqn(out, op, tuple(args), tuple(attrs), loc))
        return out

    def elementwise(self, op, *args) -> Var:
        vs = [a for a in args if isinstance(a, Var)]
        kinds = {v.kind for v in vs}
        kind = BATCH if BATCH in kinds else VECTOR if VECTOR in kinds else MATRIX
        return self.emit(op, args, kind, vs[0].shape)

    def name(self, v: Var, name: str) -> Var:
        """Give `v` the readable name `name` if it is a fresh temporary."""
        if v.name in self.temps and v.name not in self.names and name not in self.taken:
            self.names[v.name] = name
            self.taken.add(name)
        return v


def _sum(b: _Builder, parts: list[Var], name: str) -> Var:
    total = parts[0]
    for p in parts[1:]:
        total = b.elementwise("add", total, p)
    return b.name(total, name)


# Each op's rule is its registry entry's `vjp`; this view names them, so a
# test can swap one for a broken rule.
RULES = Facet("vjp")


def backward(fwd: Graph) -> Graph:
    """The backward step graph of the forward step graph `fwd`."""
    seeds = [Var(f"d_{o.name}", o.kind, o.shape) for o in fwd.outputs]
    taken = set(fwd.vars()) | {s.name for s in seeds}
    b = _Builder(taken)
    cts: dict[str, list[Var]] = {}
    for o, s in zip(fwd.outputs, seeds):
        cts.setdefault(o.name, []).append(s)

    for e in reversed(fwd.eqns):
        parts = cts.pop(e.out.name, None)
        if not parts:
            continue
        rule = RULES[e.op]
        if rule is None:
            raise ValueError(f"cannot differentiate `{e.op}`: no second derivatives")
        g = _sum(b, parts, f"d_{e.out.name}")
        for arg, ga in zip(e.args, rule(b, e, g)):
            if ga is None or isinstance(arg, Lit):
                continue
            if arg.kind == VECTOR and ga.kind == BATCH:  # a broadcast parameter
                ga = b.emit("bsum", (ga,), VECTOR, arg.shape)
            cts.setdefault(arg.name, []).append(ga)

    results = []
    for v in fwd.inputs + fwd.params:
        name = f"d_{v.name}"
        parts = cts.get(v.name)
        if not parts:
            r = b.name(b.emit("zeros", (), v.kind, v.shape), name)
        else:
            r = _sum(b, parts, name)
        if b.names.get(r.name) != name:  # shared with another name, or a seed: copy it
            r = b.name(b.emit("copy", (r,), r.kind, r.shape), name)
        results.append(r)

    renamed = {**b.names}
    fresh = (f"s{i}" for i in range(1, 10 ** 9))
    for e in b.eqns:  # number the remaining temporaries in order
        if e.out.name in b.temps and e.out.name not in renamed:
            renamed[e.out.name] = next(n for n in fresh if n not in taken)
    graph = Graph(f"{fwd.name}.backward", tuple(seeds), fwd.params, tuple(b.eqns),
                  tuple(results))
    graph = _rename(graph, renamed)
    graph = dce(graph)
    # The forward values the backward step reads are its inputs too.
    defined = {e.out.name for e in graph.eqns} | {s.name for s in seeds} | \
        {p.name for p in fwd.params}
    needed = {a.name for e in graph.eqns for a in e.args if isinstance(a, Var)} - defined
    fwd_vals = [v for v in list(fwd.inputs) + [e.out for e in fwd.eqns] if v.name in needed]
    return verify(replace(graph, inputs=tuple(seeds) + tuple(fwd_vals)))


def _rename(graph: Graph, names: dict[str, str]) -> Graph:
    def ren(a):
        return replace(a, name=names[a.name]) if isinstance(a, Var) and a.name in names else a

    return Graph(graph.name, graph.inputs, graph.params,
                 tuple(Eqn(ren(e.out), e.op, tuple(map(ren, e.args)), e.attrs, e.loc)
                       for e in graph.eqns),
                 tuple(map(ren, graph.outputs)))


def saved_values(fwd: Graph, bwd: Graph) -> list[Var]:
    """The forward values (not cotangents) the backward step of `fwd` reads."""
    return list(bwd.inputs[len(fwd.outputs):])
