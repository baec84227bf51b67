"""Checking networks: layers of cells composed with `stack` and
`bidirectional`, applied to sequences, and per-step or last-step heads.

This is the check that needs no sizes: names, the layer syntax
(`h = LSTM(H=64)(x)`), the combinators and their arguments, the time indices
of heads, the limits, and unused sequences. What it gives, a `NetworkScope`,
names each layer's cell and size arguments and what each head reads; the IR
(`ir/network.py`) then infers every size, once, from it and the cells.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace

from . import syntax as S
from .check import ParamUse
from .rules import (FUNCTIONS, check_call, check_divisor, check_free_name, check_time,
                    looks_like_typo)
from ..errors import Loc, SeqError, SeqWarning, source_text

COMBINATORS = ("stack", "bidirectional")


@dataclass(frozen=True)
class CellSignature:
    """What checking a layer must know of a cell, short of its sizes."""

    name: str
    sizes: tuple[str, ...]  # the sizes a layer names: `H` in `LSTM(H=64)`
    inputs: int  # how many inputs it has (a layer reads one sequence)


@dataclass
class LayerSyntax:
    """One node of a layer expression, as written: a cell with its size
    arguments, or a combinator of the layers in `children`."""

    kind: str  # "cell", "bidirectional" or "stack"
    text: str
    loc: Loc
    cell: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)  # `H=64` → {"H": 64}
    children: list["LayerSyntax"] = field(default_factory=list)
    init: str | None = None  # a sequence whose final state starts this layer
    init_loc: Loc | None = None


@dataclass
class HeadScope:
    """A head and what it reads: the sequences, and the parameters with how
    each is used (a "matrix" applied as a weight, or a "vector"), in the
    order of first use."""

    decl: S.OutputDecl
    name: str
    per_step: bool  # ŷ<t> (every step) or ŷ (each example's last step)
    text: str
    sequences: list[str]
    params: dict[str, ParamUse]

    @property
    def loc(self) -> Loc:
        return self.decl.loc


@dataclass
class NetworkScope:
    """A checked network: everything but its sizes."""

    name: str
    loc: Loc
    source: str
    inputs: list[tuple[str, str]]  # (name, "vectors" or "tokens")
    sequences: dict[str, LayerSyntax]  # the layer computing each, in order
    reads: dict[str, str]  # sequence -> the sequence its layer reads
    heads: list[HeadScope]
    warnings: list[SeqWarning] = field(default_factory=list)

    @property
    def kind(self) -> str:
        per_step = {h.per_step for h in self.heads}
        return ("encoder-decoder" if any(l.init for l in self.sequences.values())
                else "many-to-many and many-to-one" if len(per_step) == 2
                else "many-to-many" if per_step == {True} else "many-to-one")


def resized(scope: NetworkScope, sizes: dict[str, int]) -> NetworkScope:
    """`scope` with its layers' size arguments replaced where `sizes`
    names them (`{"H": 64}` makes every `LSTM(H=128)` an `LSTM(H=64)`)."""
    used = set()

    def layer(ls: LayerSyntax) -> LayerSyntax:
        own = {k: sizes.get(k, v) for k, v in ls.sizes.items()}
        used.update(k for k in ls.sizes if k in sizes)
        return replace(ls, sizes=own, children=[layer(c) for c in ls.children])

    sequences = {n: layer(ls) for n, ls in scope.sequences.items()}
    unknown = [k for k in sizes if k not in used]
    if unknown:
        names = sorted({k for ls in scope.sequences.values() for k in _layer_sizes(ls)})
        raise SeqError(f"network {scope.name}'s layers have no size "
                       f"{', '.join(map(repr, unknown))}",
                       hint="their sizes: " + (", ".join(names) or "none"))
    return replace(scope, sequences=sequences)


def _layer_sizes(ls: LayerSyntax):
    yield from ls.sizes
    for c in ls.children:
        yield from _layer_sizes(c)


def check_network(net: S.NetworkDef, source: str,
                  cells: dict[str, CellSignature]) -> NetworkScope:
    """Check every name and form of `net` against the cells it may use."""
    return _NetworkChecker(net, source, cells).run()


class _NetworkChecker:
    def __init__(self, net: S.NetworkDef, source: str, cells: dict[str, CellSignature]):
        self.net = net
        self.source = source
        self.cells = cells
        self.defined: dict[str, Loc] = {}  # inputs and sequences, in order
        self.layers: dict[str, LayerSyntax] = {}
        self.reads: dict[str, str] = {}
        self.n_cells = 0  # cells in all layers so far, each copy counted
        self.head_params: dict[str, str] = {}  # every head's, name -> kind

    def err(self, message, loc, hint=None) -> SeqError:
        return SeqError(message, loc, hint=hint, source=self.source)

    def run(self) -> NetworkScope:
        inputs, outputs = [], []
        for st in self.net.body:
            if isinstance(st, S.InputDecl):
                if st.kind not in (None, "tokens"):
                    raise self.err(f"unknown input type `{st.kind}`", st.loc,
                                   hint="an input holds vectors, or `: tokens` (integer ids)")
                for n in st.names:
                    self._new_name(n, st.loc)
                    self.defined[n] = st.loc
                    inputs.append((n, st.kind or "vectors"))
            elif isinstance(st, S.Equation):
                self._sequence(st)
            elif isinstance(st, S.OutputDecl):
                outputs.append(st)
            elif isinstance(st, S.Repeat):
                raise self.err("`repeat` belongs in a cell, not a network", st.loc,
                               hint="a network repeats layers with `stack(layer, depth=n)`")
            else:
                what = "state" if isinstance(st, S.StateDecl) else "param"
                raise self.err(f"`{what}` belongs in a cell, not a network", st.loc)
        if not inputs:
            raise self.err(f"network {self.net.name} has no input", self.net.loc)
        if not outputs:
            raise self.err(f"network {self.net.name} has no output", self.net.loc,
                           hint="add a head: `output ŷ<t> = softmax(Wy h<t> + by)`")
        self._output_names(outputs)
        heads = [self._head(h) for h in outputs]
        return NetworkScope(self.net.name, self.net.loc, self.source, inputs, dict(self.layers),
                            dict(self.reads), heads, self._unused(outputs))

    def _output_names(self, outputs: list[S.OutputDecl]) -> None:
        seen: dict[str, S.OutputDecl] = {}
        for h in outputs:
            n = h.target.name
            if n in self.defined:
                raise self.err(f"output `{n}` has the name of a sequence of this network",
                               h.target.loc, hint="name outputs apart, e.g. `ŷ`")
            if n in seen:
                raise self.err(f"a second output `{n}` (the first is at line "
                               f"{seen[n].loc.line})", h.target.loc)
            seen[n] = h

    def _unused(self, outputs: list[S.OutputDecl]) -> list[SeqWarning]:
        used = {v.name for h in outputs for v in S.walk(h.expr) if isinstance(v, S.Var)}
        used |= {l.init for l in self.layers.values() if l.init}
        used |= set(self.reads.values())
        return [SeqWarning(f"sequence `{n}` is computed but never used", self.defined[n])
                for n in self.layers if n not in used]

    def _new_name(self, name, loc):
        if name in self.defined:
            raise self.err(f"`{name}` is defined twice", loc)

    def _known(self) -> str:
        return "defined so far: " + ", ".join(self.defined) if self.defined else None

    # ---- layers --------------------------------------------------------------------

    def _sequence(self, eq: S.Equation):
        tgt = eq.target
        if tgt.time is not None:
            raise self.err(f"a sequence is named without a time index: `{tgt.name} = ...`", tgt.loc)
        self._new_name(tgt.name, tgt.loc)
        if eq.size is not None:
            raise self.err(f"`{tgt.name} : {eq.size}`: a sequence has its layer's size", tgt.loc,
                           hint="give the layer its sizes: `h = LSTM(H=64)(x)`")
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
        if arg.name not in self.defined:
            raise self.err(f"unknown sequence `{arg.name}`", arg.loc, hint=self._known())
        self.layers[tgt.name] = self._layer(e.callee)
        self.reads[tgt.name] = arg.name
        self.defined[tgt.name] = tgt.loc

    def _layer(self, call: S.Call) -> LayerSyntax:
        if not isinstance(call.callee, str):
            raise self.err("a layer is a cell or a combinator call", call.loc)
        name = call.callee
        text = source_text(self.source, call.loc)
        if name == "bidirectional":
            self._kwargs(call, ())
            if len(call.args) != 1:
                raise self.err("bidirectional takes one layer", call.loc)
            # Each direction is a cell of its own, counted and given parameters apart.
            return LayerSyntax("bidirectional", text, call.loc, children=[
                self._layer(self._as_call(call.args[0])) for _ in ("fwd", "bwd")])
        if name == "stack":
            return LayerSyntax("stack", text, call.loc, children=[
                self._layer(self._as_call(a)) for a in self._stacked(call)])
        if name in FUNCTIONS:
            raise self.err(f"`{name}` is a function, not a layer", call.callee_loc)
        cell = self.cells.get(name)
        if cell is None:
            near = difflib.get_close_matches(name, list(self.cells) + list(COMBINATORS), 1)
            near = near[0] if near else None
            raise self.err(f"unknown cell `{name}`", call.callee_loc,
                           hint=(f"did you mean `{near}`? " if near else "") +
                           "cells: " + ", ".join(sorted(self.cells)))
        return self._cell(cell, call, text)

    def _stacked(self, call: S.Call) -> list:
        """The layers `stack(...)` lists, `depth=n` copies of one repeated."""
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
        return exprs

    def _cell(self, cell: CellSignature, call: S.Call, text: str) -> LayerSyntax:
        kw = self._kwargs(call, cell.sizes + ("init",))
        self.n_cells += 1
        if self.n_cells > S.MAX_NETWORK_CELLS:  # nested `bidirectional` doubles the count
            raise self.err(f"network {self.net.name} has more than {S.MAX_NETWORK_CELLS:,} "
                           "cells (counting each copy `stack` and `bidirectional` make)",
                           call.loc)
        if call.args:
            raise self.err(f"{cell.name} takes sizes by name, e.g. `{cell.name}(H=64)`", call.loc)
        sizes: dict[str, int] = {}
        for s in cell.sizes:
            if s not in kw:
                raise self.err(f"{cell.name} needs its size {s}: `{cell.name}({s}=...)`", call.loc)
            sizes[s] = self._int(kw[s], s)
        if cell.inputs != 1:
            raise self.err(f"{cell.name} has {cell.inputs} inputs; a layer reads one "
                           "sequence", call.loc)
        layer = LayerSyntax("cell", text, call.loc, cell=cell.name, sizes=sizes)
        if "init" in kw:
            layer.init, layer.init_loc = self._init(kw["init"]), kw["init"].loc
        return layer

    def _init(self, e) -> str:
        """The layer named by `init=e<T>`; whether its final state fits the
        states of this one is a question of sizes, left to the IR."""
        if not (isinstance(e, S.Var) and e.time and e.time.base == "T" and e.time.offset == 0):
            raise self.err("`init=` takes another layer's final state: `init=e<T>`", e.loc)
        src = self.layers.get(e.name)
        if src is None:
            raise self.err(f"`{e.name}` is not a layer of this network", e.loc,
                           hint="layers so far: " + (", ".join(self.layers) or "none"))
        if src.kind != "cell":
            raise self.err(f"`init=` needs a single cell's final state; `{e.name}` is a "
                           f"{src.kind} layer", e.loc)
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

    def _head(self, out: S.OutputDecl) -> HeadScope:
        tgt = out.target
        if out.expr is None:
            raise self.err("a network's output is computed: `output ŷ<t> = softmax(Wy h<t> + by)`",
                           out.loc)
        if out.size is not None:
            raise self.err(f"`output {tgt.name} : {out.size}`: a network's output is sized by "
                           "what it is applied to", out.loc, hint="its number of classes gets "
                           "a symbol of its own, listed by `seqdsl check`")
        head = HeadScope(out, tgt.name, self._per_step(tgt), source_text(self.source, out.loc),
                         [], {})
        if not self._head_expr(out.expr, head):
            raise self.err("the output is a constant", out.expr.loc)
        self.head_params.update((n, use.kind) for n, use in head.params.items())
        return head

    def _head_expr(self, e, head: HeadScope) -> bool:
        """Check one sub-expression of a head, noting what it reads, in the
        order the IR infers sizes in; whether it has a value of its own (a
        sequence or a parameter in it), not only numbers."""
        if isinstance(e, S.Num):
            return False
        if isinstance(e, S.Var):
            check_time(e, self.source, allow_T=True)
            if e.name in self.defined:
                want = "<t>" if head.per_step else "<T>"
                if e.time is None or str(e.time) != want:
                    raise self.err(f"`{e}`: output `{head.decl.target}` reads `{e.name}{want}`",
                                   e.loc, hint="`h<t>` is every step (many-to-many), `h<T>` each "
                                   "example's last step (many-to-one, with `output ŷ = ...`)")
                head.sequences.append(e.name)
            else:
                self._head_param(e, head, "vector")
            return True
        if isinstance(e, S.Neg):
            return self._head_expr(e.arg, head)
        if isinstance(e, S.Call):
            check_call(e, self.source)
            return self._head_expr(e.args[0], head)
        if isinstance(e, S.MatApply) or (isinstance(e, S.Apply) and e.weight.endswith(
                S.TRANSPOSE) and len(e.weight) > 1):
            raise self.err("transposes and sums of matrices belong in cells; a head applies "
                           "weights as they are", e.loc,
                           hint="write the head's products out, `Wy h<t>`")
        if isinstance(e, (S.Apply, S.Concat)):
            parts = e.parts if isinstance(e, S.Concat) else \
                e.arg.parts if isinstance(e.arg, S.Concat) else (e.arg,)
            for p in parts:
                self._head_expr(p, head)
            if isinstance(e, S.Apply):
                self._head_param(S.Var(e.weight, None, e.weight_loc), head, "matrix")
            return True
        if isinstance(e, S.BinOp):
            if e.op == "/":
                check_divisor(e, self.source)
            left = self._head_expr(e.left, head)
            return self._head_expr(e.right, head) or left
        raise TypeError(e)

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

    def _head_param(self, var: S.Var, head: HeadScope, kind: str) -> None:
        if var.time is not None:
            raise self.err(f"unknown sequence `{var.name}`", var.loc, hint=self._known())
        if var.name in self.defined:
            raise self.err(f"`{var.name}` is a sequence, not a weight", var.loc)
        check_free_name(var.name, var.loc, self.source)
        near = looks_like_typo(var.name, list(self.defined))
        if near:
            raise self.err(f"`{var.name}` is not defined, so it would become a new parameter",
                           var.loc, hint=f"did you mean {near}?")
        # A parameter an earlier output uses is shared with it, so its use must agree.
        mine = head.params.get(var.name)
        first = mine.kind if mine else self.head_params.get(var.name)
        if first is not None and first != kind:
            raise self.err(f"parameter `{var.name}` is used both as a weight and as a vector",
                           var.loc)
        head.params.setdefault(var.name, ParamUse(var.name, kind, var.loc))
