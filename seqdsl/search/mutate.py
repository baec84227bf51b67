"""Mutations of a cell's syntax tree: the moves of an architecture search.

Each mutation is a small function `(cell, rng) -> Mutant | None` that picks
one place of the cell with `rng` (a `random.Random`, so a seed reproduces a
run) and returns a new cell with one change there, and a description of it
in the course's notation ("replace tanh by σ in c̃"); None when the cell has
no place for it. The input cell is never changed. Mutations edit only the
cell's top-level equations and do not check what they produce: a mutant may
be invalid (a cycle, a size that cannot be inferred), which
`seqdsl.search.explore` finds by loading its source.

Mutants stay in the language: a mutation builds syntax-tree nodes, which
`seqdsl.lang.unparse` prints as ordinary `.seq` source.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ..lang import syntax as S
from ..lang.unparse import unparse_expr
from .tree import (LOC, build_sum, depends_on, facts, fresh_name, label, node_at, readable,
                   replace_at, sites, sum_terms, with_expr)

# The activations a mutation swaps between; None is the identity (no call).
# exp, log, softmax and layernorm are left alone: swapped in for a gate's
# squashing they make cells that diverge or mean something else entirely.
ACTIVATIONS = ("σ", "tanh", "relu", "softplus", None)
_SAME = {"sigmoid": "σ"}


@dataclass(frozen=True)
class Mutant:
    cell: S.CellDef
    description: str
    kind: str  # the name of the mutation (a key of MUTATIONS)

    def __iter__(self):
        """`for cell, description in mutants(...)`."""
        return iter((self.cell, self.description))


def _equation_sites(cell: S.CellDef):
    """(body index, path, node, parent) of every sub-expression of every top-level equation."""
    for i in facts(cell).equations:
        for path, node, parent in sites(cell.body[i].expr):
            yield i, path, node, parent


def _edit(cell: S.CellDef, index: int, path, new: S.Expr) -> S.CellDef:
    return with_expr(cell, index, replace_at(cell.body[index].expr, path, new))


def _shown(fn: str | None) -> str:
    return "identity" if fn is None else fn


def replace_activation(cell: S.CellDef, rng: random.Random) -> Mutant | None:
    """Swap one activation for another (σ, tanh, relu, softplus), remove it
    (identity), or put one around an equation that has none."""
    choices = []
    for i, path, node, _ in _equation_sites(cell):
        if isinstance(node, S.Call) and len(node.args) == 1 and not node.kwargs \
                and _SAME.get(node.callee, node.callee) in ACTIVATIONS:
            choices.append((i, path, node, _SAME.get(node.callee, node.callee)))
        elif not path:  # an equation's whole right-hand side, with no activation
            choices.append((i, path, node, None))
    if not choices:
        return None
    i, path, node, old = rng.choice(choices)
    new = rng.choice([fn for fn in ACTIVATIONS if fn != old])
    inner = node.args[0] if old is not None else node
    result = inner if new is None else S.Call(new, (inner,), (), LOC, LOC)
    return Mutant(_edit(cell, i, path, result),
                  f"replace {_shown(old)} by {_shown(new)} in {label(cell, i)}",
                  "replace_activation")


def _term_roots(cell: S.CellDef):
    """Where a new term can be added: an equation's right-hand side, the
    argument of a call, a part of a concatenation (never inside a sum, so
    that `a + b` grows to `a + b + c`, not `a + (b + c)`)."""
    for i, path, node, parent in _equation_sites(cell):
        if isinstance(parent, S.BinOp) and parent.op in "+-":
            continue
        if not path or isinstance(parent, (S.Call, S.Concat)):
            yield i, path, node, parent


def _where(cell: S.CellDef, index: int, path, node, parent) -> str:
    """`Γr`, `the argument of σ in Γr`, `c in Wr[c, x] in Γr`."""
    if isinstance(parent, S.Call):
        return f"the argument of {parent.callee} in {label(cell, index)}"
    if isinstance(parent, S.Concat):
        return f"{unparse_expr(node)} in {_concatenation(cell, index, path[:-1])}"
    return label(cell, index)


def _concatenation(cell: S.CellDef, index: int, path) -> str:
    """The concatenation at `path` with the weight applied to it: `Wr[c, x] in Γr`."""
    expr = cell.body[index].expr
    owner = node_at(expr, path[:-1]) if path else None
    shown = unparse_expr(node_at(expr, path))
    if isinstance(owner, S.Apply):
        shown = owner.weight + shown
    return f"{shown} in {label(cell, index)}"


def add_term(cell: S.CellDef, rng: random.Random) -> Mutant | None:
    """Add a term to a sum: a new weight applied to a value the equation can
    read (`+ W1 c̃`), a new bias (`+ b1`), or a new vector scaling a state
    or intermediate elementwise (`+ p1 * c`, a peephole)."""
    roots = list(_term_roots(cell))
    if not roots:
        return None
    i, path, node, parent = rng.choice(roots)
    values = readable(cell, i)
    sized = [v for v in values if v.name not in facts(cell).inputs]  # size H, not X
    kind = rng.choice(["weight", "weight", "bias", "vector"] if sized else ["weight", "bias"])
    if kind == "weight":
        term = S.Apply(fresh_name(cell, "W"), rng.choice(values), LOC, LOC)
    elif kind == "bias":
        term = S.Var(fresh_name(cell, "b"), None, LOC)
    else:
        term = S.BinOp("*", S.Var(fresh_name(cell, "p"), None, LOC), rng.choice(sized), LOC)
    new = S.BinOp("+", node, term, LOC)
    return Mutant(_edit(cell, i, path, new),
                  f"add {unparse_expr(term)} to {_where(cell, i, path, node, parent)}", "add_term")


def remove_term(cell: S.CellDef, rng: random.Random) -> Mutant | None:
    """Remove one term of a sum (`Wr[c, x] + br` → `Wr[c, x]`) or one part
    of a weight's concatenation (`Wr[c, x]` → `Wr[x]`)."""
    choices = []
    for i, path, node, parent in _equation_sites(cell):
        if isinstance(node, S.BinOp) and node.op in "+-" and not (
                isinstance(parent, S.BinOp) and parent.op in "+-" and parent.left is node):
            choices += [(i, path, node, k) for k in range(len(sum_terms(node)))]
        elif isinstance(node, S.Concat) and len(node.parts) > 1:
            choices += [(i, path, node, k) for k in range(len(node.parts))]
    if not choices:
        return None
    i, path, node, k = rng.choice(choices)
    if isinstance(node, S.Concat):
        gone = node.parts[k]
        new = S.Concat(node.parts[:k] + node.parts[k + 1:], LOC)
        where = _concatenation(cell, i, path)
    else:
        terms = sum_terms(node)
        gone = terms[k][1]
        new = build_sum(terms[:k] + terms[k + 1:])
        where = f"{unparse_expr(node)} in {label(cell, i)}"
    return Mutant(_edit(cell, i, path, new), f"remove {unparse_expr(gone)} from {where}",
                  "remove_term")


def swap_operator(cell: S.CellDef, rng: random.Random) -> Mutant | None:
    """Turn a `+` between two values into an elementwise `*`, or a `*` into a `+`."""
    choices = [(i, path, node) for i, path, node, _ in _equation_sites(cell)
               if isinstance(node, S.BinOp) and node.op in "+*"]
    if not choices:
        return None
    i, path, node = rng.choice(choices)
    op = "*" if node.op == "+" else "+"
    new = S.BinOp(op, node.left, node.right, LOC)
    return Mutant(_edit(cell, i, path, new),
                  f"replace {node.op} by {op} in {label(cell, i)}: {unparse_expr(new)}",
                  "swap_operator")


def _gate_uses(cell: S.CellDef):
    """(body index, path, node, parent) of every read of a gate outside its own equation."""
    gates = set(facts(cell).gates)
    for i, path, node, parent in _equation_sites(cell):
        if isinstance(node, S.Var) and node.name in gates and node.name != cell.body[i].target.name:
            yield i, path, node, parent


def _is_one_minus(expr) -> bool:
    return (isinstance(expr, S.BinOp) and expr.op == "-" and isinstance(expr.left, S.Num)
            and expr.left.value == 1)


def couple_gate(cell: S.CellDef, rng: random.Random) -> Mutant | None:
    """Where a gate Γ scales a value (`Γ * v`), use `1 - Γ` instead, so that
    one gate decides two things (the GRU's update gate); where `1 - Γ`
    already is, use Γ."""
    choices = []
    for i, path, node, parent in _gate_uses(cell):
        if _is_one_minus(parent) and parent.right is node:
            choices.append((i, path[:-1], parent, node))  # uncouple: `1 - Γ` → `Γ`
        elif isinstance(parent, S.BinOp) and parent.op == "*":
            choices.append((i, path, node, S.BinOp("-", S.Num(1.0, LOC), node, LOC)))
    if not choices:
        return None
    i, path, old, new = rng.choice(choices)
    return Mutant(_edit(cell, i, path, new),
                  f"replace {unparse_expr(old)} by {unparse_expr(new)} in {label(cell, i)}",
                  "couple_gate")


def reuse_gate(cell: S.CellDef, rng: random.Random) -> Mutant | None:
    """Read another gate where a gate is read (`Γu` for `Γf`: the two are
    tied), when that makes no cycle among the equations."""
    gates = facts(cell).gates
    choices = []
    for i, path, node, _ in _gate_uses(cell):
        target = cell.body[i].target.name
        choices += [(i, path, node, g) for g in gates if g not in (node.name, target)
                    and target not in depends_on(cell, g)]
    if not choices:
        return None
    i, path, node, gate = rng.choice(choices)
    return Mutant(_edit(cell, i, path, S.Var(gate, None, LOC)),
                  f"use {gate} in place of {node.name} in {label(cell, i)}", "reuse_gate")


MUTATIONS = {f.__name__: f for f in (replace_activation, add_term, remove_term, swap_operator,
                                     couple_gate, reuse_gate)}


def mutate(cell: S.CellDef, rng: random.Random, kinds=None) -> Mutant | None:
    """One random mutation of `cell`: a kind drawn from `kinds` (default:
    all of MUTATIONS), another if the cell has no place for it; None if
    none applies."""
    order = list(kinds or MUTATIONS)
    rng.shuffle(order)
    for kind in order:
        mutant = MUTATIONS[kind](cell, rng)
        if mutant is not None:
            return mutant
    return None


def mutants(cell: S.CellDef, rng: random.Random, n: int, steps: tuple[int, int] = (1, 2),
            kinds=None):
    """Yield `n` mutants of `cell`, each made by a chain of between steps[0]
    and steps[1] random mutations; a chain's description joins its steps'
    with "; ". Fewer than n if no mutation applies."""
    for _ in range(n):
        current, done = cell, []
        for _ in range(rng.randint(*steps)):
            m = mutate(current, rng, kinds)
            if m is None:
                break
            current = m.cell
            done.append(m)
        if not done:
            return
        yield Mutant(current, "; ".join(m.description for m in done),
                     "+".join(m.kind for m in done))
