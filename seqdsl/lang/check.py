"""Names and time: what every name in a cell means, and in which order its
equations run.

`scope_cell` turns a cell's syntax into a `CellScope`: inputs, states,
intermediates in dependency order, the parameters (the free names) with how
they are used, and warnings. Shapes are inferred later, while lowering.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import syntax as S
from ..errors import Loc, SeqError, SeqWarning
from .forms import IDENTITY, PaperForms, is_number
from .repeat import unroll
from .rules import (Spellings, check_call, check_divisor, check_free_name, check_time,
                    looks_like_typo)

INITIALISERS = {"normal": (1, 1), "uniform": (1, 1), "zeros": (0, 0), "ones": (0, 0),
                "glorot": (0, 0), "orthogonal": (0, 1)}  # name: (min, max) arguments


@dataclass
class ParamUse:
    name: str
    kind: str  # "matrix" (applied as a weight) or "vector" (used elementwise)
    loc: Loc  # first use
    init: tuple = ("default",)  # ("const", v) or (initialiser, *numbers)
    declared: bool = False
    scalar: bool = False  # `param α : 1`: one number, broadcast where it is used


@dataclass
class CellScope:
    name: str
    loc: Loc
    source: str
    inputs: dict[str, S.InputDecl]
    states: dict[str, int | str]  # name -> declared size (symbol or number)
    state_locs: dict[str, Loc]
    equations: list[S.Equation]  # in an order where every value is defined before use
    intermediates: set[str]
    params: dict[str, ParamUse]
    output: str
    warnings: list[SeqWarning] = field(default_factory=list)
    sizes: dict[str, int | str] = field(default_factory=dict)  # declared intermediate sizes
    # `output ŷ<t> = ...`: carried as a state that nothing reads back (its
    # size, None in `states` when not declared, is inferred)
    computed_output: str | None = None

    def ref(self, var: S.Var) -> tuple[str, str]:
        """What a (valid) reference means: ('input'|'prev'|'new'|'inter'|'param', name)."""
        if var.name in self.inputs:
            return "input", var.name
        if var.name in self.states:
            return ("new" if var.time and var.time.offset == 0 else "prev"), var.name
        if var.name in self.intermediates:
            return "inter", var.name
        return "param", var.name


def scope_cell(cell: S.CellDef, source: str) -> CellScope:
    """Resolve every name of `cell`, enforce the time rules, order its equations."""
    ck = _CellChecker(unroll(cell, source), source)
    return ck.run()


class _CellChecker(PaperForms):
    def __init__(self, cell: S.CellDef, source: str):
        self.cell = cell
        self.source = source
        self.warnings: list[SeqWarning] = []
        self.computed: str | None = None  # the computed output's name

    def err(self, message: str, loc: Loc, hint: str | None = None) -> SeqError:
        return SeqError(message, loc, hint=hint, source=self.source)

    def run(self) -> CellScope:
        cell = self.cell
        inputs: dict[str, S.InputDecl] = {}
        states: dict[str, int | str] = {}
        state_locs: dict[str, Loc] = {}
        decls: dict[str, S.ParamDecl] = {}
        outputs: list[S.OutputDecl] = []
        equations: list[S.Equation] = []
        for st in cell.body:
            if isinstance(st, S.InputDecl):
                for n in st.names:
                    self._fresh(n, st.loc, inputs, states)
                    inputs[n] = st
            elif isinstance(st, S.StateDecl):
                for n in st.names:
                    self._fresh(n, st.loc, inputs, states)
                    states[n] = st.size if st.size is not None else "H"
                    state_locs[n] = st.loc
            elif isinstance(st, S.ParamDecl):
                if st.name in decls:
                    raise self.err(f"parameter `{st.name}` is declared twice", st.loc)
                self._check_decl(st)
                decls[st.name] = st
            elif isinstance(st, S.OutputDecl):
                outputs.append(st)
                if st.expr is not None:
                    equations.append(self._computed_output(st, inputs, states, state_locs))
            else:
                equations.append(st)
        if not inputs:
            raise self.err(f"cell {cell.name} has no input", cell.loc,
                           hint="declare one: `input x`")
        if not set(states) - {self.computed}:
            raise self.err(f"cell {cell.name} has no state", cell.loc,
                           hint="declare one: `state h : H`")
        for n, kind in ((n, d.kind) for n, d in inputs.items()):
            if kind is not None:
                raise self.err(f"input `{n}` of a cell is a vector; `: {kind}` belongs in a network",
                               inputs[n].loc)

        # Equation targets: one `<t>` equation per state, one per intermediate.
        defined_at: dict[str, int] = {}  # target name -> index of its equation
        for i, eq in enumerate(equations):
            tgt = eq.target
            if tgt.name in inputs:
                raise self.err(f"`{tgt.name}` is an input; it cannot be given an equation", tgt.loc)
            if tgt.name in states:
                if tgt.time is None or tgt.time.base != "t" or tgt.time.offset != 0:
                    raise self.err(f"state `{tgt.name}` is updated by an equation for "
                                   f"`{tgt.name}<t>`, not `{tgt}`", tgt.loc,
                                   hint=f"write `{tgt.name}<t> = ...`")
            elif tgt.time is not None and (tgt.time.base != "t" or tgt.time.offset != 0):
                raise self.err(f"`{tgt}`: only a state has a value at another step; "
                               f"an intermediate is written `{tgt.name}` or `{tgt.name}<t>`", tgt.loc)
            if eq.size is not None and tgt.name in states:
                raise self.err(f"`{tgt}`: a state's size is declared with it: "
                               f"`state {tgt.name} : {eq.size}`", tgt.loc)
            if tgt.name in defined_at:
                first = equations[defined_at[tgt.name]].loc
                what = "`<t>` equation for state" if tgt.name in states else "equation for"
                raise self.err(f"a second {what} `{tgt.name}` (the first is at line {first.line})",
                               tgt.loc, hint="every value has exactly one equation")
            defined_at[tgt.name] = i
        for n in states:
            if n not in defined_at:
                raise self.err(f"state `{n}` has no `{n}<t> = ...` equation", state_locs[n],
                               hint=f"every state needs exactly one equation for `{n}<t>`")
        intermediates = {eq.target.name for eq in equations if eq.target.name not in states}

        # References, calls, parameter uses.
        params: dict[str, ParamUse] = {}
        deps: list[set[str]] = []
        reads: list[set[str]] = []  # every name each equation reads
        for i, eq in enumerate(equations):
            here: set[str] = set()
            used: set[str] = set()
            for node in S.walk(eq.expr):
                if isinstance(node, S.Var):
                    self._reference(node, i, equations, defined_at, inputs, states,
                                    intermediates, params, here, used)
                elif isinstance(node, S.Apply):
                    used.add(self._weight(node, inputs, states, intermediates, params, decls))
                elif isinstance(node, S.MatApply):
                    used |= self._matrix(node.matrix, inputs, states, intermediates, params,
                                         decls)
                elif isinstance(node, S.Call):
                    check_call(node, self.source)
                elif isinstance(node, S.BinOp) and node.op == "/":
                    check_divisor(node, self.source)
            deps.append(here)
            reads.append(used)

        # Equations no state depends on are dropped, with a warning.
        live = self._live(equations, deps, states)
        used = set().union(*(reads[i] for i in live)) if live else set()
        all_reads = set().union(*reads) if reads else set()
        for name, d in decls.items():
            if name in inputs or name in states or name in intermediates:
                raise self.err(f"`{name}` is already defined; only a free name can be a parameter",
                               d.loc)
            if name not in used:
                self.warnings.append(SeqWarning(f"parameter `{name}` is declared but never used",
                                                d.loc))
                continue
            params[name].declared = True
            params[name].init = self._init(d)
            if d.size is not None:
                self._scalar(params[name], d)

        spellings = Spellings(list(inputs) + list(states) + [eq.target.name for eq in equations])
        for p in params.values():
            if p.declared:
                continue
            near = spellings.near(p.name, p.loc, self.source)
            if near:
                raise self.err(f"`{p.name}` is not defined, so it would become a new parameter",
                               p.loc, hint=f"did you mean {near}? (if `{p.name}` is meant to be "
                               f"a learned parameter, declare it: `param {p.name}`)")

        order = [i for i in self._order(equations, deps, states) if i in live]
        for i, eq in enumerate(equations):
            if i not in live:
                name = eq.target.name
                why = "only feeds values that are never used" if name in all_reads \
                    else "is defined but never used"
                self.warnings.append(SeqWarning(f"intermediate `{name}` {why}", eq.target.loc))
        for n in inputs:
            if n not in used:
                self.warnings.append(SeqWarning(f"input `{n}` is never used", inputs[n].loc))

        output = self._output(outputs, states)
        kept = {n: p for n, p in params.items() if n in used}
        self._modifier_letters(kept, set(inputs) | set(states) | intermediates)
        return CellScope(cell.name, cell.loc, self.source, inputs, states, state_locs,
                         [equations[i] for i in order],
                         {equations[i].target.name for i in live} - set(states),
                         kept, output, self.warnings,
                         sizes={eq.target.name: eq.size for eq in equations
                                if eq.size is not None and eq.target.name not in states},
                         computed_output=self.computed)

    @staticmethod
    def _live(equations, deps, states) -> set[int]:
        """The equations some state's update depends on."""
        index = {eq.target.name: i for i, eq in enumerate(equations)}
        todo = [index[n] for n in states]
        live: set[int] = set()
        while todo:
            i = todo.pop()
            if i not in live:
                live.add(i)
                todo += [index[n] for n in deps[i]]
        return live

    def _fresh(self, name, loc, inputs, states):
        if name in inputs or name in states:
            raise self.err(f"`{name}` is declared twice", loc)

    def _reference(self, var, i, equations, defined_at, inputs, states, intermediates,
                   params, here, used):
        check_time(var, self.source)
        name, t = var.name, var.time
        if name in inputs:
            if t is not None and t.offset != 0:
                raise self.err(f"`{var}`: an input is only available at its own step",
                               t.loc, hint=f"keep `{name}` in a state to read it a step later")
        elif name in states:
            if name == self.computed and (t is None or t.offset != 0):
                raise self.err(f"`{var}`: `{name}` is the cell's computed output, which has no "
                               "previous value", var.loc,
                               hint=f"read this step's `{name}<t>`, or make a state to carry it")
            if t is not None and t.offset == 0:
                j = defined_at[name]
                if j >= i:
                    what = ("in its own equation" if j == i else
                            f"before its equation (line {equations[j].loc.line})")
                    raise self.err(f"`{var}` is used {what}", var.loc,
                                   hint=f"`{name}` or `{name}<t-1>` is the previous value; "
                                   f"`{name}<t>` may be used once its equation has been given")
                here.add(name)
        elif name in intermediates:
            if t is not None and t.offset != 0:
                raise self.err(f"`{var}`: an intermediate has no value at another step", t.loc,
                               hint=f"declare `{name}` a state to carry it across steps")
            here.add(name)
        else:
            if t is not None:
                near = looks_like_typo(name, list(inputs) + list(states) + sorted(intermediates))
                raise self.err(f"`{var}`: `{name}` is not an input, state or intermediate, so it "
                               f"has no value at a step", var.loc,
                               hint=f"did you mean {near}?" if near else None)
            check_free_name(name, var.loc, self.source)
            if name.endswith(S.TRANSPOSE) and len(name) > 1:
                raise self.err(f"`{name}` is a transpose: only a weight applied to a vector can "
                               "be transposed", var.loc,
                               hint=f"`{name} v` applies the transpose of `{name[:-1]}` to v")
            self._use(params, name, "vector", var.loc)
        used.add(name)

    def _weight(self, node: S.Apply, inputs, states, intermediates, params, decls) -> str:
        """Register a weight applied to a vector; the parameter's name."""
        if isinstance(node.arg, S.Num):
            raise self.err(f"weight `{node.weight}` is applied to a number", node.arg.loc)
        if node.weight == IDENTITY and IDENTITY not in decls:
            raise self.err("`I` is the identity only inside a matrix expression; here it would "
                           "be a learned matrix", node.weight_loc,
                           hint="for γ times the identity write `γ * v` (or `(W - γ * I) v`); "
                           "to mean a learned matrix named I, declare it: `param I`")
        return self._matrix_name(node.weight, node.weight_loc, inputs, states, intermediates,
                                 params)

    def _use(self, params, name, kind, loc):
        use = params.get(name)
        if use is None:
            params[name] = ParamUse(name, kind, loc)
        elif use.kind != kind:
            first = "as a weight applied to a vector" if use.kind == "matrix" else "elementwise"
            now = "as a weight" if kind == "matrix" else "elementwise, as a vector"
            raise self.err(f"parameter `{name}` is used {now} here, but {first} at line "
                           f"{use.loc.line}, column {use.loc.col}", loc,
                           hint="a parameter is either a matrix or a vector; use two names")

    def _init(self, d: S.ParamDecl) -> tuple:
        if d.value is not None:
            if not is_number(d.value):
                raise self.err(f"`param {d.name} = ...` takes a number", d.value.loc,
                               hint=f"for a random start write `param {d.name} ~ normal(0.1)`")
            return ("const", _number(d.value))
        if d.init is None:
            return ("default",)
        init = d.init
        name = init.name if isinstance(init, S.Var) else (
            init.callee if isinstance(init, S.Call) and isinstance(init.callee, str) else None)
        if name not in INITIALISERS:
            raise self.err("unknown initialiser", init.loc, hint="use one of " + ", ".join(
                f"{k}(...)" if INITIALISERS[k][1] else k for k in INITIALISERS))
        args = init.args if isinstance(init, S.Call) else ()
        lo, hi = INITIALISERS[name]
        if not lo <= len(args) <= hi or not all(is_number(a) for a in args):
            raise self.err(f"`{name}` takes {lo if lo == hi else f'{lo} to {hi}'} number(s)",
                           init.loc)
        nums = tuple(_number(a) for a in args)
        if name in ("normal", "uniform") and nums[0] <= 0:
            raise self.err(f"`{name}(...)` takes a positive scale, not {nums[0]:g}", args[0].loc)
        return (name, *nums)

    def _order(self, equations, deps, states) -> list[int]:
        """Dependency order, keeping the written order where it is free.
        Depth-first without recursion: a chain of intermediates may be long."""
        index = {eq.target.name: i for i, eq in enumerate(equations)}
        # Reading a state's previous value does not depend on its equation.
        needs = [sorted({index[n] for n in d}, reverse=True) for d in deps]
        done: list[int] = []
        finished: set[int] = set()
        path_set: set[int] = set()
        for root in range(len(equations)):
            path: list[int] = []  # the equations being visited, each waiting on the next
            todo = [root]
            while todo:
                i = todo.pop()
                if i < 0:  # all of ~i's needs are done
                    path_set.discard(path.pop())
                    finished.add(~i)
                    done.append(~i)
                elif i in finished:
                    continue
                elif i in path_set:
                    self._cycle(equations, path[path.index(i):] + [i])
                else:
                    path.append(i)
                    path_set.add(i)
                    todo += [~i] + needs[i]
        return done

    def _cycle(self, equations, cycle: list[int]):
        names = " → ".join(_shown(equations[j].target) for j in cycle)
        raise self.err(f"cycle among intermediates: {names}", equations[cycle[0]].target.loc,
                       hint="each value must be computable from earlier ones; "
                       "use a state to carry a value to the next step")

    def _output(self, outputs, states) -> str:
        if len(outputs) > 1:
            raise self.err("a cell has one `output`", outputs[1].loc)
        if not outputs:
            return next(iter(states))
        out = outputs[0]
        if out.expr is None and out.size is not None:
            raise self.err(f"`output {out.target.name} : {out.size}`: only a computed output "
                           "declares its size here", out.loc)
        if out.target.name not in states:
            raise self.err(f"`output {out.target.name}`: the output must be a state", out.loc,
                           hint="states: " + ", ".join(states))
        return out.target.name


def _shown(var: S.Var) -> str:
    return f"{var.name}<t>" if var.time else var.name


def _number(e) -> float:
    return e.value if isinstance(e, S.Num) else -_number(e.arg)
