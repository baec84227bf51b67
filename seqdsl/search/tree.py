"""Reading and rebuilding a cell's syntax tree for mutations: where each
sub-expression is, a copy with one of them replaced, and what the names of
a cell stand for. Nothing here changes a tree in place: the dataclasses are
frozen, and every edit returns a new tree sharing the untouched parts.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import Loc
from ..lang import syntax as S
from ..lang.rules import looks_like_typo

# Where mutated nodes come from: no file, so a message about one points nowhere real.
LOC = Loc("<mutation>", 1, 1)
SIGMOIDS = ("σ", "sigmoid")

# A path is a tuple of steps (field, index): index is None for a single child.
Path = tuple[tuple[str, int | None], ...]


def children(expr: S.Expr) -> list[tuple[tuple[str, int | None], S.Expr]]:
    """The sub-expressions of `expr` that hold values (not a matrix sum's
    weights, nor a call's name or keywords), each with its step."""
    if isinstance(expr, S.BinOp):
        return [(("left", None), expr.left), (("right", None), expr.right)]
    if isinstance(expr, (S.Neg, S.Apply, S.MatApply)):
        return [(("arg", None), expr.arg)]
    if isinstance(expr, S.Concat):
        return [(("parts", i), p) for i, p in enumerate(expr.parts)]
    if isinstance(expr, S.Call):
        return [(("args", i), a) for i, a in enumerate(expr.args)]
    return []


def sites(expr: S.Expr, path: Path = ()):
    """Every (path, sub-expression, parent) of `expr`, parents first."""
    todo = [(path, expr, None)]
    while todo:
        here, node, parent = todo.pop()
        yield here, node, parent
        todo += [(here + (step,), child, node) for step, child in reversed(children(node))]


def node_at(expr: S.Expr, path: Path) -> S.Expr:
    """The sub-expression of `expr` at `path`."""
    for name, index in path:
        expr = getattr(expr, name) if index is None else getattr(expr, name)[index]
    return expr


def replace_at(expr: S.Expr, path: Path, new: S.Expr) -> S.Expr:
    """A copy of `expr` with the sub-expression at `path` replaced by `new`."""
    if not path:
        return new
    (name, index), rest = path[0], path[1:]
    if index is None:
        return replace(expr, **{name: replace_at(getattr(expr, name), rest, new)})
    items = list(getattr(expr, name))
    items[index] = replace_at(items[index], rest, new)
    return replace(expr, **{name: tuple(items)})


def with_expr(cell: S.CellDef, index: int, expr: S.Expr) -> S.CellDef:
    """The cell with the equation at `cell.body[index]` given a new right-hand side."""
    body = list(cell.body)
    body[index] = replace(body[index], expr=expr)
    return replace(cell, body=tuple(body))


def all_names(cell: S.CellDef) -> set[str]:
    """Every name written in the cell, declared, assigned, read, applied or called."""
    names: set[str] = set()

    def expr_names(e):
        for _, node, _ in sites(e):
            if isinstance(node, S.Var):
                names.add(node.name)
            elif isinstance(node, S.Apply):
                names.add(node.weight)
            elif isinstance(node, S.MatApply):
                expr_names(node.matrix)
            elif isinstance(node, S.Call) and isinstance(node.callee, str):
                names.add(node.callee)

    def statements(body):
        for st in body:
            if isinstance(st, S.Repeat):
                statements(st.body)
                continue
            for attr in ("names",):
                names.update(getattr(st, attr, ()))
            if isinstance(st, S.ParamDecl):
                names.add(st.name)
            if isinstance(st, (S.Equation, S.OutputDecl)):
                names.add(st.target.name)
            for attr in ("expr", "value", "init"):
                if getattr(st, attr, None) is not None:
                    expr_names(getattr(st, attr))

    statements(cell.body)
    return names


@dataclass(frozen=True)
class Facts:
    """What the names of a cell stand for, read from its syntax alone."""

    inputs: tuple[str, ...]
    states: tuple[str, ...]
    equations: tuple[int, ...]  # indices in the body of the top-level equations, in order
    intermediates: tuple[str, ...]
    gates: tuple[str, ...]  # intermediates computed as σ(...)
    names: frozenset[str]

    @property
    def defined(self) -> tuple[str, ...]:
        return self.inputs + self.states + self.intermediates


def facts(cell: S.CellDef) -> Facts:
    inputs, states, equations, inter, gates = [], [], [], [], []
    for i, st in enumerate(cell.body):
        if isinstance(st, S.InputDecl):
            inputs += st.names
        elif isinstance(st, S.StateDecl):
            states += st.names
        elif isinstance(st, S.Equation):
            equations.append(i)
    for i in equations:
        eq = cell.body[i]
        if eq.target.name not in states:
            inter.append(eq.target.name)
            if isinstance(eq.expr, S.Call) and eq.expr.callee in SIGMOIDS:
                gates.append(eq.target.name)
    return Facts(tuple(inputs), tuple(states), tuple(equations), tuple(inter), tuple(gates),
                 frozenset(all_names(cell)))


def label(cell: S.CellDef, index: int) -> str:
    """How a description names the equation at `index`: `Γr`, `c<t>`."""
    target = cell.body[index].target
    return target.name if target.name not in facts(cell).states else f"{target.name}<t>"


def readable(cell: S.CellDef, index: int) -> list[S.Var]:
    """The values the equation at `index` can read without making a cycle:
    the inputs, the states' previous values, the intermediates written
    before it and the new values of states updated before it."""
    f = facts(cell)
    values = [S.Var(n, None, LOC) for n in f.inputs + f.states]
    for i in f.equations:
        if i >= index:
            break
        target = cell.body[i].target
        if target.name in f.states:
            values.append(S.Var(target.name, S.Time("t", 0, LOC), LOC))
        else:
            values.append(S.Var(target.name, None, LOC))
    return values


def depends_on(cell: S.CellDef, name: str) -> set[str]:
    """The intermediates and new state values that `name`'s equation reads,
    directly or through other intermediates (a state's previous value is
    not a dependency: it comes from the step before)."""
    f = facts(cell)
    reads: dict[str, set[str]] = {}
    for i in f.equations:
        eq = cell.body[i]
        key = eq.target.name
        reads[key] = {n.name for _, n, _ in sites(eq.expr) if isinstance(n, S.Var)
                      and (n.name in f.intermediates or (n.name in f.states and n.time
                                                         and n.time.offset == 0))}
    seen: set[str] = set()
    todo = list(reads.get(name, ()))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += reads.get(n, ())
    return seen


def fresh_name(cell: S.CellDef, prefix: str) -> str:
    """A new parameter name `W1`, `W2`, …: unused in the cell, and not one the
    typo rule would take for a misspelt input, state or intermediate."""
    f = facts(cell)
    k = 1
    while True:
        name = f"{prefix}{k}"
        if name not in f.names and not looks_like_typo(name, f.defined):
            return name
        k += 1


def sum_terms(expr: S.Expr) -> list[tuple[str, S.Expr]]:
    """The terms of a chain of `+` and `-`, each with its sign: `a - b + c`
    is [('+', a), ('-', b), ('+', c)]. A term in brackets stays one term."""
    terms = []
    while isinstance(expr, S.BinOp) and expr.op in "+-":
        terms.append((expr.op, expr.right))
        expr = expr.left
    terms.append(("+", expr))
    return terms[::-1]


def build_sum(terms: list[tuple[str, S.Expr]]) -> S.Expr:
    """The inverse of `sum_terms`; a leading `-` term becomes unary minus."""
    sign, first = terms[0]
    expr = first if sign == "+" else S.Neg(first, LOC)
    for sign, term in terms[1:]:
        expr = S.BinOp(sign, expr, term, LOC)
    return expr
