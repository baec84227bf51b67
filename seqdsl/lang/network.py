"""Checking networks: layers of cells composed with `stack` and
`bidirectional`, applied to sequences, and per-step or last-step heads.

A network is checked against the cells of its own file and the shipped
library; every parameter is listed with its shape, named by its place in
the network (`h.0.fwd.Wu`).
"""
from __future__ import annotations

import difflib
import unicodedata
from dataclasses import dataclass, field

from . import syntax as S
from .rules import (FUNCTIONS, check_call, check_divisor, check_free_name, check_time,
                    looks_like_typo)
from ..errors import Loc, SeqError, SeqWarning, source_text
from ..ir.graph import Size
from ..ir.lower import CellType, Unifier, input_symbol

COMBINATORS = ("stack", "bidirectional")


@dataclass
class Layer:
    """One node of a layer expression, at its sizes."""

    kind: str  # "cell", "bidirectional" or "stack"
    text: str
    in_size: Size
    out_size: Size
    cell: CellType | None = None
    sizes: dict[str, Size] = field(default_factory=dict)  # the cell's symbols
    children: list["Layer"] = field(default_factory=list)
    init: str | None = None  # a sequence whose final state starts this layer

    def params(self, prefix: str) -> dict[str, tuple[Size, ...]]:
        if self.kind == "cell":
            return {f"{prefix}.{n}": tuple(s.subst(self.sizes) for s in v.shape)
                    for n, v in self.cell.params.items()}
        out = {}
        names = ["fwd", "bwd"] if self.kind == "bidirectional" else [
            str(i) for i in range(len(self.children))]
        for n, child in zip(names, self.children):
            out.update(child.params(f"{prefix}.{n}"))
        return out


@dataclass
class Head:
    name: str
    per_step: bool  # ŷ<t> (every step) or ŷ (each example's last step)
    size: Size
    text: str
    loc: Loc


@dataclass
class NetworkType:
    name: str
    loc: Loc
    inputs: list[tuple[str, str, Size]]  # (name, "vectors" or "tokens", size)
    sequences: dict[str, Layer]
    heads: list[Head]
    params: dict[str, tuple[Size, ...]]
    kind: str
    warnings: list[SeqWarning] = field(default_factory=list)


def check_network(net: S.NetworkDef, source: str, cells: dict[str, CellType]) -> NetworkType:
    return _NetworkChecker(net, source, cells).run()


class _NetworkChecker:
    def __init__(self, net: S.NetworkDef, source: str, cells: dict[str, CellType]):
        self.net = net
        self.source = source
        self.cells = cells
        self.sizes: dict[str, Size] = {}  # sequence name -> size per step
        self.layers: dict[str, Layer] = {}
        self.locs: dict[str, Loc] = {}
        self.input_syms: set[str] = set()
        self.n_cells = 0  # cells in all layers so far, each copy counted
        self.class_syms: set[str] = set()  # the heads' numbers of classes

    def err(self, message, loc, hint=None) -> SeqError:
        return SeqError(message, loc, hint=hint, source=self.source)

    def run(self) -> NetworkType:
        inputs, heads = [], []
        warnings: list[SeqWarning] = []
        for st in self.net.body:
            if isinstance(st, S.InputDecl):
                if st.kind not in (None, "tokens"):
                    raise self.err(f"unknown input type `{st.kind}`", st.loc,
                                   hint="an input holds vectors, or `: tokens` (integer ids)")
                for n in st.names:
                    self._new_name(n, st.loc)
                    sym = input_symbol(n, set(self.input_syms) | {"H"})
                    self.input_syms.add(sym)
                    self.sizes[n] = Size.of(sym)
                    inputs.append((n, st.kind or "vectors", Size.of(sym)))
            elif isinstance(st, S.Equation):
                self._sequence(st)
            elif isinstance(st, S.OutputDecl):
                heads.append(st)
            else:
                what = "state" if isinstance(st, S.StateDecl) else "param"
                raise self.err(f"`{what}` belongs in a cell, not a network", st.loc)
        if not inputs:
            raise self.err(f"network {self.net.name} has no input", self.net.loc)
        if not heads:
            raise self.err(f"network {self.net.name} has no output", self.net.loc,
                           hint="add a head: `output ŷ<t> = softmax(Wy h<t> + by)`")
        seen_heads: dict[str, S.OutputDecl] = {}
        for h in heads:
            n = h.target.name
            if n in self.sizes:
                raise self.err(f"output `{n}` has the name of a sequence of this network",
                               h.target.loc, hint="name outputs apart, e.g. `ŷ`")
            if n in seen_heads:
                raise self.err(f"a second output `{n}` (the first is at line "
                               f"{seen_heads[n].loc.line})", h.target.loc)
            seen_heads[n] = h
        params: dict[str, tuple[Size, ...]] = {}
        for name, layer in self.layers.items():
            params.update(layer.params(name))
        self.head_params = {}
        checked = [self._head(h, self.head_params) for h in heads]
        params.update(self.head_params)
        used = {v.name for h in heads for v in S.walk(h.expr) if isinstance(v, S.Var)}
        used |= {l.init for l in self.layers.values() if l.init}
        used |= {st.expr.args[0].name for st in self.net.body if isinstance(st, S.Equation)}
        for n in self.layers:
            if n not in used:
                warnings.append(SeqWarning(f"sequence `{n}` is computed but never used",
                                           self.locs[n]))
        per_step = {h.per_step for h in checked}
        kind = ("encoder-decoder" if any(l.init for l in self.layers.values())
                else "many-to-many and many-to-one" if len(per_step) == 2
                else "many-to-many" if per_step == {True} else "many-to-one")
        return NetworkType(self.net.name, self.net.loc, inputs, dict(self.layers), checked,
                           params, kind, warnings)

    def _new_name(self, name, loc):
        if name in self.sizes:
            raise self.err(f"`{name}` is defined twice", loc)

    # ---- layers --------------------------------------------------------------------

    def _sequence(self, eq: S.Equation):
        tgt = eq.target
        if tgt.time is not None:
            raise self.err(f"a sequence is named without a time index: `{tgt.name} = ...`", tgt.loc)
        self._new_name(tgt.name, tgt.loc)
        e = eq.expr
        if not (isinstance(e, S.Call) and isinstance(e.callee, S.Call)):
            raise self.err("a network line applies a layer to a sequence", e.loc,
                           hint="for example `h = LSTM(H=64)(x)`")
        if len(e.args) != 1 or e.kwargs or not isinstance(e.args[0], S.Var):
            raise self.err("a layer is applied to one sequence: `(x)`", e.loc)
        arg = e.args[0]
        if arg.time is not None:
            raise self.err(f"a layer reads a whole sequence: write `{arg.name}`, not `{arg}`",
                           arg.loc)
        if arg.name not in self.sizes:
            raise self.err(f"unknown sequence `{arg.name}`", arg.loc, hint=self._known())
        layer = self._layer(e.callee, self.sizes[arg.name])
        self.layers[tgt.name] = layer
        self.locs[tgt.name] = tgt.loc
        self.sizes[tgt.name] = layer.out_size

    def _known(self) -> str:
        return "defined so far: " + ", ".join(self.sizes) if self.sizes else None

    def _layer(self, call: S.Call, in_size: Size) -> Layer:
        if not isinstance(call.callee, str):
            raise self.err("a layer is a cell or a combinator call", call.loc)
        name = call.callee
        text = source_text(self.source, call.loc)
        if name == "bidirectional":
            self._kwargs(call, ())
            if len(call.args) != 1:
                raise self.err("bidirectional takes one layer", call.loc)
            inner = self._layer(self._as_call(call.args[0]), in_size)
            return Layer("bidirectional", text, in_size, inner.out_size * 2,
                         children=[inner, self._layer(self._as_call(call.args[0]), in_size)])
        if name == "stack":
            kw = self._kwargs(call, ("depth",))
            if not call.args:
                raise self.err("stack takes one or more layers", call.loc)
            exprs = list(call.args)
            if "depth" in kw:
                depth = self._int(kw["depth"], "depth", S.MAX_STACK_DEPTH)
                if len(exprs) != 1:
                    raise self.err("`depth=` repeats a single layer: stack(layer, depth=n)",
                                   call.loc)
                exprs = exprs * depth
            children, size = [], in_size
            for a in exprs:
                child = self._layer(self._as_call(a), size)
                children.append(child)
                size = child.out_size
            return Layer("stack", text, in_size, size, children=children)
        if name in FUNCTIONS:
            raise self.err(f"`{name}` is a function, not a layer", call.callee_loc)
        cell = self.cells.get(name)
        if cell is None:
            near = difflib.get_close_matches(name, list(self.cells) + list(COMBINATORS), 1)
            near = near[0] if near else None
            raise self.err(f"unknown cell `{name}`", call.callee_loc,
                           hint=(f"did you mean `{near}`? " if near else "") +
                           "cells: " + ", ".join(sorted(self.cells)))
        return self._cell(cell, call, in_size, text)

    def _cell(self, cell: CellType, call: S.Call, in_size: Size, text: str) -> Layer:
        state_syms = [s for s in cell.symbols if s not in {sym for _, sz in cell.inputs
                                                            for sym in sz.symbols}]
        kw = self._kwargs(call, tuple(state_syms) + ("init",))
        self.n_cells += 1
        if self.n_cells > S.MAX_NETWORK_CELLS:  # nested `bidirectional` doubles the count
            raise self.err(f"network {self.net.name} has more than {S.MAX_NETWORK_CELLS:,} "
                           "cells (counting each copy `stack` and `bidirectional` make)",
                           call.loc)
        if call.args:
            raise self.err(f"{cell.name} takes sizes by name, e.g. `{cell.name}(H=64)`", call.loc)
        sizes: dict[str, Size] = {}
        for s in state_syms:
            if s not in kw:
                raise self.err(f"{cell.name} needs its size {s}: `{cell.name}({s}=...)`", call.loc)
            sizes[s] = Size.of(self._int(kw[s], s))
        if len(cell.inputs) != 1:
            raise self.err(f"{cell.name} has {len(cell.inputs)} inputs; a layer reads one "
                           "sequence", call.loc)
        sizes[next(iter(cell.inputs[0][1].symbols))] = in_size
        for c in cell.constraints:
            need = c.value.subst(sizes)
            if sizes[c.symbol] != need:
                raise self.err(f"{cell.name} needs input size {need} ({c.symbol} = {c.value}), "
                               f"but this layer reads vectors of size {in_size}", call.loc)
        init = None
        if "init" in kw:
            init = self._init(kw["init"], cell, sizes)
        out = dict(cell.states)[cell.output].subst(sizes)
        return Layer("cell", text, in_size, out, cell=cell, sizes=sizes, init=init)

    def _init(self, e, cell: CellType, sizes) -> str:
        if not (isinstance(e, S.Var) and e.time and e.time.base == "T" and e.time.offset == 0):
            raise self.err("`init=` takes another layer's final state: `init=e<T>`", e.loc)
        src = self.layers.get(e.name)
        if src is None:
            raise self.err(f"`{e.name}` is not a layer of this network", e.loc,
                           hint="layers so far: " + (", ".join(self.layers) or "none"))
        if src.kind != "cell":
            raise self.err(f"`init=` needs a single cell's final state; `{e.name}` is a "
                           f"{src.kind} layer", e.loc)
        mine = [(n, s.subst(sizes)) for n, s in cell.states]
        theirs = [(n, s.subst(src.sizes)) for n, s in src.cell.states]
        if [s for _, s in mine] != [s for _, s in theirs]:
            show = lambda st: ", ".join(f"{n}: {s}" for n, s in st)  # noqa: E731
            raise self.err(f"`{e.name}`'s final state ({show(theirs)}) does not fit the states "
                           f"of {cell.name} ({show(mine)})", e.loc)
        return e.name

    def _as_call(self, e) -> S.Call:
        if isinstance(e, S.Var) and e.time is None:
            if e.name in self.cells:
                raise self.err(f"cell `{e.name}` needs its sizes: `{e.name}(H=...)`", e.loc)
            raise self.err(f"unknown cell `{e.name}`", e.loc)
        if not isinstance(e, S.Call):
            raise self.err("expected a layer: a cell like `LSTM(H=64)` or a combinator", e.loc)
        return e

    def _kwargs(self, call: S.Call, allowed) -> dict:
        kw = {}
        for k, v in call.kwargs:
            if k not in allowed:
                raise self.err(f"`{call.callee}` takes no argument `{k}`", v.loc,
                               hint="it takes " + ", ".join(f"{a}=" for a in allowed)
                               if allowed else None)
            if k in kw:
                raise self.err(f"`{k}=` given twice", v.loc)
            kw[k] = v
        return kw

    def _int(self, e, what, limit=S.MAX_INT) -> int:
        if not (isinstance(e, S.Num) and e.value == int(e.value) and e.value >= 1):
            raise self.err(f"`{what}=` takes a positive whole number", e.loc)
        if e.value > limit:
            raise self.err(f"`{what}=` takes at most {limit:,}", e.loc)
        return int(e.value)

    # ---- heads -----------------------------------------------------------------------

    def _head(self, out: S.OutputDecl, params: dict) -> Head:
        tgt = out.target
        if out.expr is None:
            raise self.err("a network's output is computed: `output ŷ<t> = softmax(Wy h<t> + by)`",
                           out.loc)
        per_step = self._per_step(tgt)
        unify = Unifier(set(), self.source)
        own: dict[str, tuple[Size, ...]] = {}

        def size_of(e) -> Size | None:
            if isinstance(e, S.Num):
                return None
            if isinstance(e, S.Var):
                check_time(e, self.source, allow_T=True)
                if e.name in self.sizes:
                    want = "<t>" if per_step else "<T>"
                    if e.time is None or str(e.time) != want:
                        raise self.err(f"`{e}`: output `{tgt}` reads `{e.name}{want}`", e.loc,
                                       hint="`h<t>` is every step (many-to-many), `h<T>` each "
                                       "example's last step (many-to-one, with `output ŷ = ...`)")
                    return self.sizes[e.name]
                return self._head_param(e, own, unify, "vector")[0]
            if isinstance(e, S.Neg):
                return size_of(e.arg)
            if isinstance(e, S.Call):
                check_call(e, self.source)
                return size_of(e.args[0])
            if isinstance(e, S.Apply):
                arg = e.arg.parts if isinstance(e.arg, S.Concat) else (e.arg,)
                total = Size()
                for p in arg:
                    total = total + size_of(p)
                rows, cols = self._head_param(S.Var(e.weight, None, e.weight_loc), own, unify,
                                              "matrix")
                unify.equate(cols, total, e.loc, lambda a, b: f"weight `{e.weight}` has {a} columns, "
                             f"but is applied here to a vector of size {b}")
                return rows
            if isinstance(e, S.Concat):
                total = Size()
                for p in e.parts:
                    total = total + size_of(p)
                return total
            if isinstance(e, S.BinOp):
                if e.op == "/":
                    check_divisor(e, self.source)
                a, b = size_of(e.left), size_of(e.right)
                if a is not None and b is not None:
                    unify.equate(a, b, e.loc, lambda x, y: f"`{e.op}` of vectors of different "
                                 f"sizes: {x} against {y}")
                return a if a is not None else b
            raise TypeError(e)

        size = size_of(out.expr)
        if size is None:
            raise self.err("the output is a constant", out.expr.loc)
        size = unify.resolve(size)
        free = [k for k in size.symbols if k.startswith("?")]
        if free:  # the number of classes: named after the output, bound by the data
            unify.bound[free[0]] = Size.of(self._class_symbol(tgt.name))
        for n, shape in own.items():
            fixed = tuple(unify.resolve(s) for s in shape)
            if any(k.startswith("?") for s in fixed for k in s.symbols):
                raise self.err(f"cannot infer the shape of `{n}`", out.loc)
            params[n] = fixed
        return Head(tgt.name, per_step, unify.resolve(size), source_text(self.source, out.loc), out.loc)

    def _per_step(self, tgt: S.Var) -> bool:
        """`ŷ<t>` is computed at every step, `ŷ` at each example's last; no
        other time index names a head."""
        if tgt.time is None:
            return False
        if tgt.time.base == "t" and tgt.time.offset == 0:
            return True
        raise self.err(f"output `{tgt}`: an output is `{tgt.name}<t>` (every step) or "
                       f"`{tgt.name}` (each example's last step)", tgt.time.loc,
                       hint=f"write `output {tgt.name}<t> = …` reading `h<t>`, or "
                       f"`output {tgt.name} = …` reading `h<T>`")

    def _class_symbol(self, head: str) -> str:
        """The size symbol of a head's number of classes: its first letter
        upper-cased (`ŷ` → `Y`), numbered (`Y2`, `Y3`, …) when an input or an
        earlier head has that symbol, so that no two sizes are tied by name."""
        base = input_symbol(unicodedata.normalize("NFD", head)[0], set())
        sym, n = base, 2
        while sym in self.input_syms | self.class_syms | {"H"}:
            sym, n = f"{base}{n}", n + 1
        self.class_syms.add(sym)
        return sym

    def _head_param(self, var: S.Var, own, unify, kind) -> tuple[Size, ...]:
        if var.time is not None:
            raise self.err(f"unknown sequence `{var.name}`", var.loc, hint=self._known())
        if var.name in self.sizes:
            raise self.err(f"`{var.name}` is a sequence, not a weight", var.loc)
        check_free_name(var.name, var.loc, self.source)
        near = looks_like_typo(var.name, list(self.sizes))
        if near:
            raise self.err(f"`{var.name}` is not defined, so it would become a new parameter",
                           var.loc, hint=f"did you mean {near}?")
        shape = own.get(var.name)
        if shape is None and var.name in self.head_params:  # shared with an earlier output
            shape = own[var.name] = self.head_params[var.name]
        if shape is None:
            shape = (unify.fresh(), unify.fresh()) if kind == "matrix" else (unify.fresh(),)
            own[var.name] = shape
        elif len(shape) != (2 if kind == "matrix" else 1):
            raise self.err(f"parameter `{var.name}` is used both as a weight and as a vector",
                           var.loc)
        return shape
