"""Syntax → graph IR for one time step, inferring every size on the way.

Sizes are linear forms over symbols: `H` (a state's declared size) and `X`
(an input's size), bound when the cell is instantiated. A weight's row count
and a parameter vector's size start as unknowns (`?1`) and are solved by
unification as the equations are lowered. An equation that would force an
input size (`X = H`) is allowed and reported as a constraint; one that cannot
hold for positive sizes (`H = H + X`) is an error naming both sizes.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field

from ..lang import syntax as S
from ..lang.check import CellScope
from ..lang.rules import FUNCTIONS, constant_value
from ..errors import Loc, SeqError, SeqWarning
from .graph import BATCH, MATRIX, VECTOR, Eqn, Graph, Lit, Size, Var, dce, total_size, verify
from .lower_forms import MatrixForms


@dataclass
class Constraint:
    symbol: str
    value: Size
    loc: Loc

    def __str__(self) -> str:
        return f"{self.symbol} = {self.value}"


@dataclass
class CellType:
    """A checked cell: its step graph with symbolic sizes, and what it needs."""

    name: str
    loc: Loc
    source: str
    inputs: list[tuple[str, Size]]  # (name, size)
    states: list[tuple[str, Size]]
    output: str
    params: dict[str, Var]  # name -> Var (kind vector or matrix, symbolic shape)
    inits: dict[str, tuple]
    graph: Graph
    constraints: list[Constraint]
    symbols: list[str]  # the free size symbols, states' first
    warnings: list[SeqWarning] = field(default_factory=list)
    computed_output: bool = False  # the output is `output ŷ<t> = ...`, carried as a state
    sizes: dict[str, Size] = field(default_factory=dict)  # `m : M = ...`: declared sizes
    scalars: tuple[str, ...] = ()  # learned scalars (`param α : 1`)


class Unifier:
    """Solves equalities between sizes; unknowns are named `?n`."""

    def __init__(self, input_symbols: set[str], source: str):
        self.bound: dict[str, Size] = {}
        self.input_symbols = input_symbols
        self.constraints: list[Constraint] = []
        self.source = source
        self.count = 0

    def fresh(self) -> Size:
        self.count += 1
        return Size.of(f"?{self.count}")

    def resolve(self, s: Size) -> Size:
        while any(k in self.bound for k in s.symbols):
            s = s.subst(self.bound)
        return s

    def equate(self, a: Size, b: Size, loc: Loc, message) -> None:
        """Make a == b; `message(a, b)` words the error if they cannot be equal."""
        a, b = self.resolve(a), self.resolve(b)
        d = a - b
        if d == Size():
            return
        for k, c in d.terms:
            if k.startswith("?") and abs(c) == 1:
                self.bound[k] = (d - Size.of(k) * c) * (-c)
                return
        for k, c in d.terms:
            if k in self.input_symbols and abs(c) == 1 and not any(
                    s.startswith("?") for s in d.symbols):
                value = (d - Size.of(k) * c) * (-c)
                if value.is_positive():
                    self.bound[k] = value
                    self.constraints.append(Constraint(k, value, loc))
                    return
        raise SeqError(message(_shown(a), _shown(b)), loc, source=self.source)


ONE = Size.of(1)


def _size_computed_output(scope: CellScope, unify: Unifier, state_sizes: dict[str, Size],
                          taken: set[str]) -> list[str]:
    """A computed output whose size nothing fixes (`ŷ<t> = softmax(Wya a<t>
    + by)`: the rows of Wya are free) gets a size symbol of its own, `Y` for
    `ŷ`; the symbol, if one was made."""
    name = scope.computed_output
    if name is None:
        return []
    size = unify.resolve(state_sizes[name])
    unknown = [k for k in size.symbols if k.startswith("?")]
    if not unknown:
        return []
    if size != Size.of(unknown[0]):
        raise SeqError(f"cannot infer the size of the output `{name}`", scope.state_locs[name],
                       source=scope.source, hint=f"declare it: `output {name}<t> : Y = ...`")
    symbol = output_symbol(name, taken)
    unify.bound[unknown[0]] = Size.of(symbol)
    return [symbol]


def output_symbol(name: str, taken) -> str:
    """`Y` for `ŷ` or `y`: the base letter upper-cased, unless that clashes."""
    base = "".join(ch for ch in unicodedata.normalize("NFD", name)
                   if not unicodedata.combining(ch))
    return input_symbol(base, taken) if base.isidentifier() else input_symbol("y", taken)


def _shown(s: Size) -> str:
    return str(s).replace("?", "n") if any(k.startswith("?") for k in s.symbols) else str(s)


class _NameGen:
    """Fresh temporaries `t1, t2, ...` that never clash with the user's names."""

    def __init__(self, taken):
        self.taken = set(taken)
        self.n = 0

    def __call__(self, prefix: str = "t") -> str:
        while True:
            self.n += 1
            name = f"{prefix}{self.n}"
            if name not in self.taken:
                self.taken.add(name)
                return name


def input_symbol(name: str, taken) -> str:
    """The size symbol of an input: `X` for `x`, unless that clashes."""
    upper = name.upper()
    if upper != name and upper not in taken and upper.isidentifier():
        return upper
    return f"n_{name}"


def lower_cell(scope: CellScope) -> CellType:
    taken = {s for sz in scope.states.values() if isinstance(sz, str) for s in [sz]}
    in_syms = {}
    for n in scope.inputs:
        in_syms[n] = input_symbol(n, taken | set(in_syms.values()))
    unify = Unifier(set(in_syms.values()), scope.source)
    state_sizes = {n: Size.of(s) if s is not None else unify.fresh()
                   for n, s in scope.states.items()}
    low = _Lowerer(scope, unify, state_sizes, in_syms)
    eqns = low.run()
    output_syms = _size_computed_output(scope, unify, state_sizes,
                                        taken | set(in_syms.values()))

    # Every unknown must be solved, and every size positive.
    for name, use in scope.params.items():
        v = low.params[name]
        shape = tuple(unify.resolve(s) for s in v.shape)
        for axis, s in zip(("rows" if v.kind == MATRIX else "size", "columns"), shape):
            if any(k.startswith("?") for k in s.symbols):
                raise SeqError(f"cannot infer the {axis} of `{name}`: nothing in the cell fixes it",
                               use.loc, source=scope.source,
                               hint="use the result where its size is known, e.g. in a state")
            if not s.is_positive():
                every = " and ".join(sorted(s.symbols))
                raise SeqError(f"`{name}` would have {s} {axis}"
                               + (f", which is not positive for every {every}" if every else ""),
                               use.loc, source=scope.source)

    def fix(s: Size) -> Size:
        s = unify.resolve(s)
        if any(k.startswith("?") for k in s.symbols):
            raise SeqError("cannot infer every size in the cell", scope.loc, source=scope.source)
        return s

    inputs = [Var(n, BATCH, (Size.of(in_syms[n]),)) for n in scope.inputs]
    prev = [Var(f"{n}<t-1>", BATCH, (state_sizes[n],)) for n in scope.states]
    outputs = [low.values[f"{n}<t>"] for n in scope.states]
    params = [low.params[n] for n in scope.params]
    graph = Graph(scope.name, tuple(inputs + prev), tuple(params), tuple(eqns), tuple(outputs))
    graph = verify(dce(graph.map_sizes(fix)))
    state_sizes = {n: fix(s) for n, s in state_sizes.items()}
    symbols = list(dict.fromkeys(
        [s for s in scope.states.values() if isinstance(s, str)] + output_syms
        + list(in_syms.values())
        + [s for s in scope.sizes.values() if isinstance(s, str)]))
    return CellType(
        name=scope.name, loc=scope.loc, source=scope.source,
        inputs=[(n, Size.of(in_syms[n])) for n in scope.inputs],
        states=[(n, state_sizes[n]) for n in scope.states], output=scope.output,
        params={v.name: v for v in graph.params}, inits={n: u.init for n, u in scope.params.items()},
        graph=graph, constraints=unify.constraints, symbols=symbols, warnings=scope.warnings,
        computed_output=scope.computed_output is not None,
        sizes={n: Size.of(s) for n, s in scope.sizes.items()},
        scalars=tuple(n for n, u in scope.params.items() if u.scalar))


class _Lowerer(MatrixForms):
    def __init__(self, scope: CellScope, unify: Unifier, state_sizes, in_syms,
                 param_shapes: dict[str, tuple[Size, ...]] | None = None):
        self.scope = scope
        self.unify = unify
        self.state_sizes = state_sizes
        self.eqns: list[Eqn] = []
        taken = set(scope.inputs) | set(scope.states) | scope.intermediates | set(scope.params)
        self.fresh_name = _NameGen(taken)
        self.temps: set[str] = set()
        self.values: dict[str, Var] = {}
        for n in scope.inputs:
            self.values[n] = Var(n, BATCH, (Size.of(in_syms[n]),))
        for n, s in state_sizes.items():
            self.values[f"{n}<t-1>"] = Var(f"{n}<t-1>", BATCH, (s,))
        self.params: dict[str, Var] = {}
        # A parameter whose shape is already known (a network head's, inferred
        # by an earlier head that uses it too) keeps that shape: one parameter.
        known = param_shapes or {}
        for name, use in scope.params.items():
            shape = known.get(name) or (
                (unify.fresh(), unify.fresh()) if use.kind == MATRIX
                else (ONE,) if use.scalar else (unify.fresh(),))
            self.params[name] = Var(name, use.kind, shape)
        # Values of one entry made of learned scalars and numbers alone: they
        # broadcast where they meet a vector.
        self.scalars = {n for n, u in scope.params.items() if u.scalar}

    def run(self) -> list[Eqn]:
        for eq in self.scope.equations:
            name = eq.target.name
            is_state = name in self.scope.states
            out_name = f"{name}<t>" if is_state else name
            result = self.expr(eq.expr)
            if isinstance(result, Lit):
                raise SeqError(f"the equation for `{out_name}` is a constant", eq.expr.loc,
                               source=self.scope.source)
            scalar = result.name in self.scalars
            if self.eqns and self.eqns[-1].out == result and result.name not in self.values:
                last = self.eqns.pop()  # name the root equation after its target
                result = Var(out_name, last.out.kind, last.out.shape)
                self.eqns.append(Eqn(result, last.op, last.args, last.attrs, last.loc))
            else:  # the equation only renames a value
                result = self.emit("copy", (result,), result.kind, result.shape, eq.expr.loc,
                                   name=out_name)
            if scalar:
                self.scalars.add(out_name)
            declared = self.scope.sizes.get(name)
            if declared is not None:
                self.unify.equate(Size.of(declared), result.size, eq.loc, lambda a, b:
                                  f"`{name}` is declared of size {a}, but its equation gives a "
                                  f"vector of size {b}")
            if is_state:
                self.unify.equate(self.state_sizes[name], result.size, eq.loc, lambda a, b:
                                  f"`{name}<t>` has size {a}, but its equation gives a vector of "
                                  f"size {b}")
            self.values[out_name] = result
        return self._renumbered()

    def _renumbered(self) -> list[Eqn]:
        """Temporaries numbered t1, t2, ... in order, without the gaps left by
        the ones renamed after their equation's target."""
        fresh = _NameGen(self.fresh_name.taken - self.temps)
        names = {e.out.name: fresh() for e in self.eqns if e.out.name in self.temps}

        def ren(a):
            return Var(names[a.name], a.kind, a.shape) if isinstance(a, Var) and a.name in names else a

        return [Eqn(ren(e.out), e.op, tuple(map(ren, e.args)), e.attrs, e.loc) for e in self.eqns]

    def emit(self, op, args, kind, shape, loc, attrs=(), name=None) -> Var:
        if name is None:
            name = self.fresh_name()
            self.temps.add(name)
        out = Var(name, kind, shape)
        self.eqns.append(Eqn(out, op, tuple(args), tuple(attrs), loc))
        return out

    def expr(self, e) -> Var | Lit:
        if isinstance(e, S.Num):
            return Lit(e.value)
        if isinstance(e, S.Var):
            kind, name = self.scope.ref(e)
            key = {"input": name, "prev": f"{name}<t-1>", "new": f"{name}<t>",
                   "inter": name}.get(kind)
            return self.params[name] if kind == "param" else self.values[key]
        if isinstance(e, S.Neg):
            a = self.expr(e.arg)
            return Lit(-a.value) if isinstance(a, Lit) else self.unary("neg", a, e.loc)
        if isinstance(e, S.BinOp):
            return self.binop(e)
        if isinstance(e, S.Apply):
            return self.apply(e)
        if isinstance(e, S.MatApply):
            return self.matrix_apply(e)
        if isinstance(e, S.Concat):
            parts = self.parts(e.parts, "concatenated")
            return self.emit("concat", parts, BATCH, (total_size(parts),), e.loc)
        if isinstance(e, S.Call):
            a = self.expr(e.args[0])
            op = FUNCTIONS[e.callee]
            if isinstance(a, Lit):
                raise SeqError(f"`{e.callee}` of a number: write the value instead", e.loc,
                               source=self.scope.source)
            return self.unary(op, a, e.loc)
        raise TypeError(e)

    def unary(self, op: str, a: Var, loc) -> Var:
        out = self.emit(op, (a,), a.kind, a.shape, loc)
        if a.name in self.scalars:
            self.scalars.add(out.name)
        return out

    def broadcast(self, a: Var, size: Size, loc) -> Var:
        """A scalar as a vector of `size` entries."""
        return self.emit("broadcast", (a,), VECTOR, (size,), loc, attrs=(("size", size),))

    def binop(self, e: S.BinOp):
        a, b = self.expr(e.left), self.expr(e.right)
        op = {"+": "add", "-": "sub", "*": "mul", "/": "div"}[e.op]
        if isinstance(a, Lit) and isinstance(b, Lit):
            value = constant_value(e)
            if not math.isfinite(value):
                raise SeqError(f"this constant is not a finite number ({value})", e.loc,
                               source=self.scope.source, hint="numbers go up to about 1.8e308")
            return Lit(value)
        if op == "div" and b.value == 0:
            raise SeqError("division by zero", e.right.loc, source=self.scope.source)
        vs = [v for v in (a, b) if isinstance(v, Var)]
        scalar = all(v.name in self.scalars for v in vs)
        if not scalar and any(v.name in self.scalars for v in vs):  # `α * h`
            size = next(v.size for v in vs if v.name not in self.scalars)
            a, b = (self.broadcast(v, size, e.loc) if isinstance(v, Var) and v.name in self.scalars
                    else v for v in (a, b))
            vs = [v for v in (a, b) if isinstance(v, Var)]
        if len(vs) == 2:
            self.unify.equate(vs[0].size, vs[1].size, e.loc, lambda x, y:
                              f"`{e.op}` of vectors of different sizes: {x} against {y}")
        kind = BATCH if any(v.kind == BATCH for v in vs) else VECTOR
        out = self.emit(op, (a, b), kind, (vs[0].size,), e.loc)
        if scalar:
            self.scalars.add(out.name)
        return out

    def apply(self, e: S.Apply):
        parts = self.parts(e.arg.parts if isinstance(e.arg, S.Concat) else (e.arg,),
                           f"multiplied by weight `{e.weight}`")
        return self.product(e.weight, parts, e.loc)

    def product(self, weight: str, parts: list[Var], loc) -> Var:
        """`W [parts]`, or `Wᵀ [parts]` (W's transpose) for a name ending in ᵀ."""
        transposed = weight.endswith(S.TRANSPOSE) and weight[:-1] in self.params \
            and weight not in self.params
        w = self.params[weight[:-1] if transposed else weight]
        if not any(p.kind == BATCH for p in parts):
            raise SeqError(f"weight `{weight}` is applied to parameters only; it needs a "
                           "value of the step (an input, a state or an intermediate)", loc,
                           source=self.scope.source, hint="a product of parameters is itself "
                           "just one parameter: use a single bias")
        cols, rows = (w.shape[0], w.shape[1]) if transposed else (w.shape[1], w.shape[0])
        self.unify.equate(cols, total_size(parts), loc, lambda x, y:
                          f"weight `{weight}` has {x} columns, but is applied here to a vector "
                          f"of size {y}")
        return self.emit("tlinear" if transposed else "linear", (w, *parts), BATCH, (rows,), loc)

    def parts(self, exprs, what):
        out = []
        for p in exprs:
            v = self.expr(p)
            if isinstance(v, Lit):
                raise SeqError(f"a number cannot be {what}", p.loc, source=self.scope.source)
            if v.kind == MATRIX:
                raise SeqError("a weight matrix cannot be used as a vector", p.loc,
                               source=self.scope.source)
            out.append(v)
        return out
