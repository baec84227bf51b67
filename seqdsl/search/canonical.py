"""A canonical text of a cell's step graph, so that a search recognises a
cell it has already seen under other names.

Two cells get the same form when their lowered graphs differ only by
  - the names of parameters, intermediates, inputs, states and size symbols,
  - the order of the operands of a commutative op (`a + b`, `b + a`),
  - the grouping of a chain of one associative op (`(a + b) + c`, `a + (b + c)`),
  - the order of the parts of a weight's concatenation, when that weight is
    used only there (`W[a, x]` and `W[x, a]` are the same family of cells),
  - the written order of independent equations, and repeated subexpressions.
Parameters are named by their type, their initialiser and the places they
are used (a Weisfeiler–Lehman style refinement over the graph); those still
tied sit in symmetric places (two gates built alike), and one is singled
out and the refinement run again, as graph canonisers do. A graph whose
symmetry fools the refinement could get two forms, a missed duplicate; two
different cells never get one form, because the form is the whole graph,
renamed and with operands sorted.
"""
from __future__ import annotations

import hashlib
from collections import Counter

from ..ir.graph import Graph, Lit, Size, Var
from ..ir.lower import CellType

# Ops whose operands may be reordered, and those whose chains may be
# flattened: a small table here rather than a facet of every op entry,
# because only duplicate detection asks it.
COMMUTATIVE = frozenset({"add", "mul"})
ASSOCIATIVE = frozenset({"add", "mul"})
# A weight applied to a concatenation: its parts may be reordered with the
# weight's columns when nothing else reads that weight.
CONCATENATING = frozenset({"linear"})


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


class _Node:
    """One equation after flattening: `out = op[attrs](args)`."""

    def __init__(self, out: Var, op: str, args: list, attrs: str):
        self.out, self.op, self.args, self.attrs = out, op, args, attrs
        self.sortable_tail = False  # see `_order_concatenations`

    def key(self) -> str:
        return f"{self.op}{self.attrs}"


def canonical_form(cell: CellType) -> str:
    """The canonical text of `cell`'s step graph: equal for cells that differ
    only as the module docstring lists, different otherwise."""
    graph = _renamed_sizes(cell)
    roles = _roles(cell, graph)
    nodes, alias = _merge_repeats(_flattened(graph))
    _order_concatenations(nodes, graph)
    params = {p.name: p for p in graph.params}
    inits = {name: str(cell.inits.get(name, ())) for name in params}

    def param_leaf(name: str) -> str:
        p = params[name]
        return f"param {p.kind} {p.type_str()} {inits[name]}"

    labels = _refined(nodes, graph, roles, alias, {n: _digest(param_leaf(n)) for n in params})
    # Parameters still tied sit in symmetric places (two gates built alike):
    # single one out and refine again, so that the others' names follow
    # from that choice rather than from the written order.
    while True:
        tied = Counter(labels.values())
        label = min((lab for lab, count in tied.items() if count > 1), default=None)
        if label is None:
            break
        chosen = next(n for n in params if labels[n] == label)
        labels[chosen] = _digest(label + "|chosen")
        labels = _refined(nodes, graph, roles, alias, labels)
    up = _up_hashes(nodes, roles, labels.__getitem__)
    return _text(cell, graph, nodes, (roles, labels, up, alias))


def _refined(nodes: list[_Node], graph: Graph, roles, alias, labels: dict[str, str]):
    """The parameters' labels refined by where they are used until no more of
    them are told apart (each round can only split ties, so few rounds run)."""
    for _ in range(len(labels) + 1):
        up = _up_hashes(nodes, roles, labels.__getitem__)
        down = _down_hashes(nodes, graph, lambda a: _leaf(a, up, roles, labels.__getitem__),
                            alias)
        refined = {n: _digest(labels[n] + "|" + down.get(n, "unused")) for n in labels}
        if len(set(refined.values())) == len(set(labels.values())):
            return labels
        labels = refined
    return labels


def canonical_key(cell: CellType) -> str:
    """A short digest of `canonical_form`, for sets and dictionaries."""
    return _digest(canonical_form(cell))


def _renamed_sizes(cell: CellType) -> Graph:
    env = {k: Size.of(f"§{i}") for i, k in enumerate(cell.symbols)}
    return cell.graph.map_sizes(lambda s: s.subst(env))


def _roles(cell: CellType, graph: Graph) -> dict[str, str]:
    """Each graph input's role, which stands for its name."""
    roles = {name: f"in{i}" for i, (name, _) in enumerate(cell.inputs)}
    roles.update((f"{name}<t-1>", f"s{j}") for j, (name, _) in enumerate(cell.states))
    for k, v in enumerate(graph.inputs):
        roles.setdefault(v.name, f"i{k}")
    return roles


def _flattened(graph: Graph) -> list[_Node]:
    """The equations, with each chain of one associative op made one n-ary
    node where the inner results are read only by the chain."""
    uses = Counter(a.name for e in graph.eqns for a in e.args if isinstance(a, Var))
    uses.update(v.name for v in graph.outputs)
    nodes: dict[str, _Node] = {}
    absorbed: set[str] = set()
    for e in graph.eqns:
        attrs = "[" + ",".join(f"{k}={v}" for k, v in e.attrs) + "]" if e.attrs else ""
        args = []
        for a in e.args:
            inner = nodes.get(a.name) if isinstance(a, Var) else None
            if (e.op in ASSOCIATIVE and inner is not None and inner.op == e.op
                    and not inner.attrs and not attrs and uses[a.name] == 1):
                args += inner.args
                absorbed.add(a.name)
            else:
                args.append(a)
        nodes[e.out.name] = _Node(e.out, e.op, args, attrs)
    return [n for name, n in nodes.items() if name not in absorbed]


def _order_concatenations(nodes: list[_Node], graph: Graph) -> None:
    """Mark the products whose parts may be sorted (see `CONCATENATING`)."""
    params = {p.name for p in graph.params}
    uses = Counter(a.name for n in nodes for a in n.args if isinstance(a, Var))
    for n in nodes:
        w = n.args[0] if n.args else None
        n.sortable_tail = (n.op in CONCATENATING and isinstance(w, Var) and w.name in params
                           and uses[w.name] == 1)


def _canonical_order(node: _Node, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(key, text) pairs of a node's arguments in their canonical order."""
    if node.op in COMMUTATIVE:
        return sorted(items)
    if node.sortable_tail:
        return items[:1] + sorted(items[1:])
    return items


def _arg_keys(node: _Node, keys: list[str]) -> list[str]:
    return [k for k, _ in _canonical_order(node, [(k, "") for k in keys])]


def _leaf(a, values: dict[str, str], roles: dict[str, str], param) -> str:
    if isinstance(a, Lit):
        return f"lit {a}"
    if a.name in values:
        return values[a.name]
    if a.name in roles:
        return roles[a.name]
    return param(a.name)


def _up_hashes(nodes: list[_Node], roles, param) -> dict[str, str]:
    """Each value's hash from what it is computed from; `param(name)` is a
    parameter's leaf label."""
    values: dict[str, str] = {}
    for n in nodes:
        args = _arg_keys(n, [_leaf(a, values, roles, param) for a in n.args])
        values[n.out.name] = _digest(f"{n.key()}:{n.out.type_str()}(" + ",".join(args) + ")")
    return values


def _merge_repeats(nodes: list[_Node]) -> tuple[list[_Node], dict[str, str]]:
    """Drop a node computing exactly what an earlier one does (same op on the
    same arguments), reading the earlier one's result instead."""
    seen: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    kept = []
    for n in nodes:
        n.args = [Var(alias[a.name], a.kind, a.shape) if isinstance(a, Var) and a.name in alias
                  else a for a in n.args]
        shown = [str(a) if isinstance(a, Var) else f"lit {a}" for a in n.args]
        key = (n.key(), n.out.type_str(), tuple(_arg_keys(n, shown)))
        if key in seen:
            alias[n.out.name] = seen[key]
        else:
            seen[key] = n.out.name
            kept.append(n)
    return kept, alias


def _down_hashes(nodes: list[_Node], graph: Graph, key, alias: dict[str, str]) -> dict[str, str]:
    """Each value's hash from how it is used, down to the graph's outputs,
    with `key(arg)` the hash of an argument from what it is computed from:
    the context that tells parameters apart."""
    contexts: dict[str, list[str]] = {}
    for k, v in enumerate(graph.outputs):
        contexts.setdefault(alias.get(v.name, v.name), []).append(f"out{k}")
    for n in reversed(nodes):
        own = _digest("|".join(sorted(contexts.get(n.out.name, []))))
        keys = [key(a) for a in n.args]
        for i, a in enumerate(n.args):
            if not isinstance(a, Var):
                continue
            others = keys[:i] + keys[i + 1:]
            slot = str(i)
            if n.op in COMMUTATIVE:
                slot, others = "*", sorted(others)
            elif n.sortable_tail:  # the weight first, then the parts
                slot = "*" if i > 0 else slot
                others = others[:1] + sorted(others[1:]) if i > 0 else sorted(others)
            contexts.setdefault(a.name, []).append(
                _digest(f"{own}:{n.key()}:{slot}:" + ",".join(others)))
    return {name: _digest("|".join(sorted(c))) for name, c in contexts.items()}


def _text(cell: CellType, graph: Graph, nodes: list[_Node], facts) -> str:
    """The graph printed in an order and with names that only the hashes decide."""
    roles, labels, up, alias = facts
    used = {a.name for n in nodes for a in n.args if isinstance(a, Var)}
    ordered = sorted((labels[p.name], i, p) for i, p in enumerate(graph.params) if p.name in used)
    names = dict(roles)
    lines = []
    for i, (_, _, p) in enumerate(ordered):
        names[p.name] = f"p{i}"
        lines.append(f"param p{i}: {p.kind} {p.type_str()} {cell.inits.get(p.name, ())}")
    for n in _topological(nodes, up):
        items = [(up.get(a.name, names[a.name]), names[a.name]) if isinstance(a, Var)
                 else (f"lit {a}", str(a)) for a in n.args]
        args = [text for _, text in _canonical_order(n, items)]
        names[n.out.name] = f"v{len(lines)}"
        lines.append(f"{names[n.out.name]}: {n.out.type_str()} = {n.key()}({', '.join(args)})")
    outs = [names[alias.get(v.name, v.name)] for v in graph.outputs]
    states = [name for name, _ in cell.states]
    lines.append(f"outputs {', '.join(outs)}; passes on state {states.index(cell.output)}"
                 + (" (computed)" if cell.computed_output else ""))
    return "\n".join(lines)


def _topological(nodes: list[_Node], up: dict[str, str]) -> list[_Node]:
    """The nodes in dependency order, ties broken by hash, not by the written order."""
    produced = {n.out.name: n for n in nodes}
    waiting = {n.out.name: {a.name for a in n.args if isinstance(a, Var) and a.name in produced}
               for n in nodes}
    ready = sorted((up[name], name) for name, deps in waiting.items() if not deps)
    order = []
    while ready:
        _, name = ready.pop(0)
        order.append(produced[name])
        for other, deps in waiting.items():
            if name in deps:
                deps.discard(name)
                if not deps:
                    ready.append((up[other], other))
        ready.sort()
    return order
