"""`repeat N { ... }`: micro-steps, unrolled before the checker sees the cell.

A Recurrent Highway Network makes L sub-steps per time step, each with its
own weights. In a block

    repeat 3 {
        h = tanh(first(WH x) + RH s + bH)
        τ = σ(first(WT x) + RT s + bT)
        s = h * τ + s * (1 - τ)
    }

the equations run three times, in the order written, and:
- a name the block assigns is read as its newest value: the one this
  micro-step made if its equation came earlier in the block, else the one
  the previous micro-step made, else (in the first) its value before the
  block — for a state, its previous value;
- the last micro-step's value of a state is its new value `s<t>`; the last
  value of an intermediate keeps the plain name, so the equations after the
  block read it as `h`; earlier values are named `h_1`, `h_2`, ...;
- every parameter used in the block is one per micro-step (`RH_1`, `RH_2`,
  `RH_3`), declared ones with their declaration's initialiser;
- `first(e)` is `e` in the first micro-step and nothing (zero) in the others:
  the input enters once, as in the paper.

The result is a plain cell: checking, lowering, autodiff and the backends
see the unrolled equations, with positions pointing into the block.
"""
from __future__ import annotations

from dataclasses import replace

from . import syntax as S
from ..errors import SeqError

MAX_UNROLLED = 10_000  # equations a cell may have once its blocks are unrolled


def unroll(cell: S.CellDef, source: str) -> S.CellDef:
    """The cell with each `repeat` block replaced by its micro-steps."""
    if not any(isinstance(st, S.Repeat) for st in cell.body):
        return cell
    inputs = {n for st in cell.body if isinstance(st, S.InputDecl) for n in st.names}
    states = {n for st in cell.body if isinstance(st, S.StateDecl) for n in st.names}
    outside = {st.target.name for st in cell.body if isinstance(st, S.Equation)}
    decls = {st.name: st for st in cell.body if isinstance(st, S.ParamDecl)}
    blocks = [st for st in cell.body if isinstance(st, S.Repeat)]
    taken = inputs | states | outside | set(decls) | _all_names(cell.body)
    body: list[S.Statement] = []
    per_step: set[str] = set()
    total = 0
    for st in cell.body:
        if not isinstance(st, S.Repeat):
            body.append(st)
            continue
        block = _Block(st, source, inputs, states, outside | _assigned_in(blocks, st), taken)
        eqs = block.unrolled()
        total += len(eqs)
        if total > MAX_UNROLLED:
            raise SeqError(f"`repeat` blocks unroll to more than {MAX_UNROLLED:,} equations",
                           st.loc, source=source, hint="use fewer micro-steps")
        body += eqs
        per_step |= block.per_step
    used_outside = _all_names([st for st in cell.body if not isinstance(st, S.Repeat)])
    for name in per_step & set(decls):  # a declared parameter: one declaration per copy
        d = decls[name]
        copies = [replace(d, name=_step_name(name, k)) for k in range(1, _count(blocks, name) + 1)]
        keep = [d] if name in used_outside else []
        body[body.index(d):body.index(d) + 1] = keep + copies
    return replace(cell, body=tuple(body))


def _count(blocks: list[S.Repeat], param: str) -> int:
    return max(b.count for b in blocks if param in _all_names(b.body))


def _assigned_in(blocks: list[S.Repeat], but: S.Repeat) -> set[str]:
    """What the other blocks assign: plain intermediates here, read as such."""
    return {e.target.name for b in blocks if b is not but for e in b.body
            if isinstance(e, S.Equation)}


def _step_name(name: str, k: int) -> str:
    return f"{name}_{k}"


def _all_names(body) -> set[str]:
    names: set[str] = set()
    for st in body:
        if isinstance(st, S.Repeat):
            names |= _all_names(st.body)
        elif isinstance(st, S.Equation):
            names.add(st.target.name)
            names |= {n.name for n in _nodes(st.expr) if isinstance(n, S.Var)}
            names |= {n.weight for n in _nodes(st.expr) if isinstance(n, S.Apply)}
    return names


def _nodes(expr):
    """Every node of an expression, the matrices of `(…) v` included."""
    for node in S.walk(expr):
        yield node
        if isinstance(node, S.MatApply):
            yield from _nodes(node.matrix)


class _Block:
    def __init__(self, block: S.Repeat, source: str, inputs, states, intermediates, taken):
        self.block, self.source = block, source
        self.inputs, self.states, self.intermediates = inputs, states, intermediates
        self.taken = set(taken)
        self.per_step: set[str] = set()
        self._once = False  # inside `first(...)`: parameters keep their names
        self._check()
        self.assigned = [e.target.name for e in block.body]

    def err(self, message, loc, hint=None):
        return SeqError(message, loc, hint=hint, source=self.source)

    def _check(self) -> None:
        b = self.block
        if not 1 <= b.count <= S.MAX_STACK_DEPTH:
            raise self.err(f"`repeat {b.count}`: the count is 1 to {S.MAX_STACK_DEPTH}", b.loc)
        seen: set[str] = set()
        for st in b.body:
            if not isinstance(st, S.Equation):
                raise self.err("a `repeat` block holds equations only", st.loc, hint=
                               "declare inputs, states, parameters and the output outside it")
            t = st.target
            if t.time is not None:
                raise self.err(f"`{t}` in a `repeat` block: write `{t.name} = ...`", t.loc,
                               hint="the last micro-step's value of a state is its new value")
            if t.name in self.inputs:
                raise self.err(f"`{t.name}` is an input; it cannot be given an equation", t.loc)
            if t.name in seen:
                raise self.err(f"a second equation for `{t.name}` in one `repeat` block",
                               t.loc, hint="each micro-step computes each value once")
            if t.name in self.intermediates:
                raise self.err(f"`{t.name}` has an equation outside this `repeat` block too",
                               t.loc)
            seen.add(t.name)

    def unrolled(self) -> list[S.Equation]:
        n = self.block.count
        newest: dict[str, str] = {}  # name -> the name of its newest value so far
        eqs = []
        for k in range(1, n + 1):
            for eq in self.block.body:
                expr = self._expr(eq.expr, k, newest)
                name = eq.target.name
                last = k == n
                if last and name in self.states:
                    target = S.Var(name, S.Time("t", 0, eq.target.loc), eq.target.loc)
                else:
                    target = S.Var(name if last else self._fresh(name, k), None, eq.target.loc)
                eqs.append(S.Equation(target, expr, eq.loc, eq.size))
                newest[name] = target
        return eqs

    def _fresh(self, name: str, k: int) -> str:
        new = _step_name(name, k)
        if new in self.taken:
            raise self.err(f"`repeat` names the micro-steps' values of `{name}` `{name}_1`, "
                           f"`{name}_2`, ...; `{new}` is already a name in this cell",
                           self.block.loc, hint=f"rename `{new}`")
        return new

    def _param(self, name: str, k: int) -> str:
        self.per_step.add(name)
        new = _step_name(name, k)
        if new in self.taken - {name}:
            raise self.err(f"each micro-step has its own `{name}`, named `{new}`; "
                           f"`{new}` is already a name in this cell", self.block.loc,
                           hint=f"rename `{new}`")
        return new

    def _expr(self, e, k: int, newest: dict):
        def go(x):
            return self._expr(x, k, newest)

        if isinstance(e, S.Var):
            return self._var(e, k, newest)
        if isinstance(e, S.Num):
            return e
        if isinstance(e, S.BinOp):
            return replace(e, left=go(e.left), right=go(e.right))
        if isinstance(e, S.Neg):
            return replace(e, arg=go(e.arg))
        if isinstance(e, S.Apply):
            return replace(e, weight=self._weight(e.weight, k), arg=go(e.arg))
        if isinstance(e, S.MatApply):
            return replace(e, matrix=go(e.matrix), arg=go(e.arg))
        if isinstance(e, S.Concat):
            return replace(e, parts=tuple(map(go, e.parts)))
        if isinstance(e, S.Call):
            if e.callee == "first":
                if len(e.args) != 1 or e.kwargs:
                    raise self.err("`first` takes one argument", e.loc)
                return self._first(e.args[0], k, newest) if k == 1 else S.Num(0.0, e.loc)
            return replace(e, args=tuple(map(go, e.args)),
                           kwargs=tuple((n, go(v)) for n, v in e.kwargs))
        raise TypeError(e)

    def _first(self, e, k, newest):
        """In `first(...)` parameters are used once: they keep their names."""
        saved, self._once = self._once, True
        try:
            return self._expr(e, k, newest)
        finally:
            self._once = saved

    def _weight(self, name: str, k: int) -> str:
        if name in self.assigned or name in self.inputs or name in self.states \
                or name in self.intermediates:
            return name  # not a parameter: the checker says what is wrong
        return name if self._once else self._param(name, k)

    def _var(self, v: S.Var, k: int, newest: dict) -> S.Var:
        name = v.name
        if name in self.assigned and v.time is None:
            if name in newest:  # `s<t>` once the last micro-step has made it
                return replace(v, name=newest[name].name, time=newest[name].time)
            if name not in self.states:
                raise self.err(f"`{name}` is read before the block computes it", v.loc,
                               hint=f"in the first micro-step `{name}` has no value yet: "
                               f"compute it earlier in the block")
            return v  # a state before its first micro-step: its previous value
        if name in self.inputs or name in self.states or name in self.intermediates \
                or v.time is not None or self._once:
            return v
        return replace(v, name=self._param(name, k))  # a parameter used elementwise
