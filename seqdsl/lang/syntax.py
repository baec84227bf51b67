"""The surface syntax tree of a .seq file: what the user wrote, with positions.

Frozen dataclasses, one per construct. Names are already normalised (`c~` is
`c̃`, `y^` is `ŷ`, Unicode NFC) so later stages compare plain strings.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from ..errors import Loc

# ---- limits ------------------------------------------------------------------
# No real spec comes near these; they keep every stage of the front end fast
# and its recursion shallow on any input (a spec loads in well under a second).
MAX_SOURCE_CHARS = 50_000  # characters in one spec
MAX_NAME_CHARS = 100  # characters in one name
MAX_DEPTH = 200  # nesting of a definition's syntax tree (a sum of n terms nests n deep)
MAX_INT = 1_000_000  # sizes, time offsets, `stack` depths and other whole numbers
MAX_STACK_DEPTH = 100  # `stack(layer, depth=n)`
MAX_NETWORK_CELLS = 1_000  # cells in a network, each copy `stack` or `bidirectional` makes counted


TRANSPOSE = "\u1d40"  # ᵀ, MODIFIER LETTER CAPITAL T


def normalise_name(raw: str) -> str:
    """`c~` → `c̃`, `y^` → `ŷ`, `W.T` → `Wᵀ`, then NFC so composed and
    decomposed forms agree."""
    raw = str(raw)
    if raw.endswith(".T"):
        raw = raw[:-2] + TRANSPOSE
    elif raw.endswith("~"):
        raw = raw[:-1] + "\u0303"
    elif raw.endswith("^"):
        raw = raw[:-1] + "\u0302"
    return unicodedata.normalize("NFC", raw)


# ---- expressions -----------------------------------------------------------

@dataclass(frozen=True)
class Time:
    """A time index: `<t>` is ('t', 0), `<t-1>` is ('t', -1), `<T>` is ('T', 0)."""

    base: str
    offset: int
    loc: Loc = field(compare=False)

    def __str__(self) -> str:
        if self.offset == 0:
            return f"<{self.base}>"
        sign = "+" if self.offset > 0 else "-"
        return f"<{self.base}{sign}{abs(self.offset)}>"


@dataclass(frozen=True)
class Var:
    name: str
    time: Time | None
    loc: Loc = field(compare=False)

    def __str__(self) -> str:
        return self.name + (str(self.time) if self.time else "")


@dataclass(frozen=True)
class Num:
    value: float
    loc: Loc = field(compare=False)


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * /
    left: "Expr"
    right: "Expr"
    loc: Loc = field(compare=False)


@dataclass(frozen=True)
class Neg:
    arg: "Expr"
    loc: Loc = field(compare=False)


@dataclass(frozen=True)
class Apply:
    """A weight applied to a vector or a concatenation: `Wu[a, x]`, `Waa a`."""

    weight: str
    arg: "Expr"
    loc: Loc = field(compare=False)
    weight_loc: Loc = field(compare=False)


@dataclass(frozen=True)
class MatApply:
    """A sum of matrices applied to a vector: `(W - Wᵀ - γ I) h`. The matrix
    is an expression of weights (`W`, `Wᵀ`), the identity `I`, `+`, `-` and
    numbers (see ir/lower.py, which distributes the product)."""

    matrix: "Expr"
    arg: "Expr"
    loc: Loc = field(compare=False)


@dataclass(frozen=True)
class Concat:
    parts: tuple["Expr", ...]
    loc: Loc = field(compare=False)


@dataclass(frozen=True)
class Call:
    """`f(args, k=v)`; `callee` is a name, or a call for `stack(...)(x)`."""

    callee: "str | Call"
    args: tuple["Expr", ...]
    kwargs: tuple[tuple[str, "Expr"], ...]
    loc: Loc = field(compare=False)
    callee_loc: Loc = field(compare=False)


Expr = Var | Num | BinOp | Neg | Apply | MatApply | Concat | Call


# ---- statements and definitions --------------------------------------------

@dataclass(frozen=True)
class InputDecl:
    names: tuple[str, ...]
    kind: str | None  # None for vectors, "tokens" for integer ids
    loc: Loc = field(compare=False)


@dataclass(frozen=True)
class StateDecl:
    names: tuple[str, ...]
    size: str | int | None
    loc: Loc = field(compare=False)


@dataclass(frozen=True)
class ParamDecl:
    """`param b = 1` (value), `param W ~ normal(0.1)` (init) or `param W`."""

    name: str
    value: Expr | None
    init: Expr | None
    loc: Loc = field(compare=False)
    size: str | int | None = None  # `param α : 1`: a learned scalar


@dataclass(frozen=True)
class OutputDecl:
    target: Var
    expr: Expr | None
    loc: Loc = field(compare=False)
    size: str | int | None = None  # `output ŷ<t> : Y = ...`


@dataclass(frozen=True)
class Equation:
    target: Var
    expr: Expr
    loc: Loc = field(compare=False)
    size: str | int | None = None  # `m : M = ...`: the intermediate's declared size


@dataclass(frozen=True)
class Repeat:
    """`repeat 3 { ... }`: the block's equations, unrolled three times per
    step before anything else sees them (lang/repeat.py)."""

    count: int
    body: tuple["Statement", ...]
    loc: Loc = field(compare=False)


Statement = InputDecl | StateDecl | ParamDecl | OutputDecl | Equation | Repeat


@dataclass(frozen=True)
class CellDef:
    name: str
    body: tuple[Statement, ...]
    loc: Loc = field(compare=False)


@dataclass(frozen=True)
class NetworkDef:
    name: str
    body: tuple[Statement, ...]
    loc: Loc = field(compare=False)


@dataclass(frozen=True)
class Module:
    file: str
    source: str = field(repr=False)
    definitions: tuple[CellDef | NetworkDef, ...]


def walk(expr: Expr):
    """Yield every sub-expression of `expr`, parents before children."""
    yield expr
    if isinstance(expr, BinOp):
        yield from walk(expr.left)
        yield from walk(expr.right)
    elif isinstance(expr, Neg):
        yield from walk(expr.arg)
    elif isinstance(expr, Apply):
        yield from walk(expr.arg)
    elif isinstance(expr, MatApply):  # its matrix is checked on its own: names there are weights
        yield from walk(expr.arg)
    elif isinstance(expr, Concat):
        for p in expr.parts:
            yield from walk(p)
    elif isinstance(expr, Call):
        if isinstance(expr.callee, Call):
            yield from walk(expr.callee)
        for a in expr.args:
            yield from walk(a)
        for _, v in expr.kwargs:
            yield from walk(v)
