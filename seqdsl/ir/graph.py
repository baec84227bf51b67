"""The graph IR: one time step of a cell as a flat, single-assignment list of
equations, printable as text (one equation a line) like JAX's jaxpr.

Plain frozen data: passes are functions from Graph to Graph, and `verify`
checks every invariant a pass must keep. The IR knows nothing of lark,
NumPy or Numba.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ..errors import Loc


# ---- sizes: linear forms over size symbols (H, X, ...) ------------------------

@dataclass(frozen=True)
class Size:
    """`2H + X + 1` as terms (('H', 2), ('X', 1)) and const 1."""

    terms: tuple[tuple[str, int], ...] = ()
    const: int = 0

    @staticmethod
    def of(value: "int | str | Size") -> "Size":
        if isinstance(value, Size):
            return value
        if isinstance(value, int):
            return Size((), value)
        return Size(((value, 1),), 0)

    @staticmethod
    def _make(coeffs: dict[str, int], const: int) -> "Size":
        return Size(tuple(sorted((k, v) for k, v in coeffs.items() if v)), const)

    def __add__(self, other: "Size | int") -> "Size":
        other = Size.of(other)
        coeffs = dict(self.terms)
        for k, v in other.terms:
            coeffs[k] = coeffs.get(k, 0) + v
        return Size._make(coeffs, self.const + other.const)

    def __neg__(self) -> "Size":
        return Size(tuple((k, -v) for k, v in self.terms), -self.const)

    def __sub__(self, other: "Size | int") -> "Size":
        return self + (-Size.of(other))

    def __mul__(self, n: int) -> "Size":
        return Size._make({k: v * n for k, v in self.terms}, self.const * n)

    __rmul__ = __mul__

    @property
    def symbols(self) -> set[str]:
        return {k for k, _ in self.terms}

    def coeff(self, symbol: str) -> int:
        return dict(self.terms).get(symbol, 0)

    def is_const(self) -> bool:
        return not self.terms

    def subst(self, env: dict[str, "Size | int"]) -> "Size":
        out = Size((), self.const)
        for k, v in self.terms:
            out = out + (Size.of(env[k]) * v if k in env else Size(((k, v),)))
        return out

    def value(self) -> int:
        if self.terms:
            raise ValueError(f"size {self} is not a number")
        return self.const

    def is_positive(self) -> bool:
        """True when the size is > 0 for every choice of positive symbols."""
        return all(v > 0 for _, v in self.terms) and self.const >= 0 and (
            bool(self.terms) or self.const > 0)

    def __str__(self) -> str:
        # Written as the course writes concatenations: `H+X`, `128+X`, `2H-1`.
        terms = [(k, v) for k, v in self.terms]
        if self.const > 0:
            terms.insert(0, ("", self.const))
        elif self.const < 0:
            terms.append(("", self.const))
        if not terms:
            return "0"
        text = ""
        for k, v in terms:
            mag = abs(v)
            body = str(mag) if not k else k if mag == 1 else f"{mag}{k}" if len(k) == 1 \
                else f"{mag}·{k}"
            text += ("-" if v < 0 else "+") + body
        return text[1:] if text.startswith("+") else text

    def paren(self) -> str:
        text = str(self)
        return f"({text})" if len(self.terms) + bool(self.const) > 1 else text


# ---- values, equations, graphs --------------------------------------------------

BATCH, VECTOR, MATRIX = "batch", "vector", "matrix"



@dataclass(frozen=True)
class Var:
    """A value. `batch` is one vector per example (B×n); `vector` (n) and
    `matrix` (r×c) are parameters or their gradients, shared by the batch."""

    name: str
    kind: str
    shape: tuple[Size, ...]

    @property
    def size(self) -> Size:
        return self.shape[0]

    def type_str(self) -> str:
        if self.kind == BATCH:
            return f"B×{self.shape[0].paren()}"
        return "×".join(s.paren() for s in self.shape)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Lit:
    value: float

    def __str__(self) -> str:
        v = float(self.value)  # whole numbers without `.0`; others (1e+300 too) as repr writes them
        return str(int(v)) if math.isfinite(v) and v == int(v) and abs(v) < 1e16 else repr(v)


Atom = Var | Lit


def total_size(parts) -> Size:
    """The size of the concatenation of `parts` (values, not literals)."""
    total = Size()
    for p in parts:
        if isinstance(p, Lit):
            raise ValueError("a literal cannot be concatenated")
        total = total + p.size
    return total


@dataclass(frozen=True)
class Eqn:
    out: Var
    op: str
    args: tuple[Atom, ...]
    attrs: tuple[tuple[str, object], ...] = ()
    loc: Loc | None = field(default=None, compare=False)

    def attr(self, key: str):
        return dict(self.attrs)[key]

    def __str__(self) -> str:
        attrs = ""
        if self.attrs:
            attrs = "[" + ", ".join(_attr_str(k, v) for k, v in self.attrs) + "]"
        args = ", ".join(str(a) for a in self.args)
        return f"{self.out.name}: {self.out.type_str()} = {self.op}{attrs}({args})"


def _attr_str(key: str, value) -> str:
    if key == "cols":
        lo, hi = value
        return f"{lo}:{hi}"
    return f"{key}={value}"


@dataclass(frozen=True)
class Graph:
    """One step: `inputs` are per-example values entering it (the input at
    step t, the previous states; for a backward step also the cotangents and
    the forward values it reads), `params` the learned parameters."""

    name: str
    inputs: tuple[Var, ...]
    params: tuple[Var, ...]
    eqns: tuple[Eqn, ...]
    outputs: tuple[Var, ...]

    def __str__(self) -> str:
        lines = [f"graph {self.name}"]
        if self.params:
            lines.append("  params  " + ", ".join(f"{v.name}: {v.type_str()}" for v in self.params))
        lines.append("  inputs  " + ", ".join(f"{v.name}: {v.type_str()}" for v in self.inputs))
        lines += [f"  {e}" for e in self.eqns]
        lines.append("  outputs " + ", ".join(v.name for v in self.outputs))
        return "\n".join(lines)

    def vars(self) -> dict[str, Var]:
        table = {v.name: v for v in self.inputs + self.params}
        table.update((e.out.name, e.out) for e in self.eqns)
        return table

    def map_sizes(self, fn) -> "Graph":
        """The same graph with every Size replaced by fn(size)."""
        def var(v: Var) -> Var:
            return replace(v, shape=tuple(fn(s) for s in v.shape))

        def atom(a: Atom) -> Atom:
            return var(a) if isinstance(a, Var) else a

        def attrs(e: Eqn):
            return tuple((k, fn(v) if isinstance(v, Size) else tuple(fn(s) for s in v)
                          if k == "cols" else v) for k, v in e.attrs)

        return Graph(self.name, tuple(map(var, self.inputs)), tuple(map(var, self.params)),
                     tuple(Eqn(var(e.out), e.op, tuple(map(atom, e.args)), attrs(e), e.loc)
                           for e in self.eqns),
                     tuple(map(var, self.outputs)))


def dce(graph: Graph) -> Graph:
    """Drop the equations whose results nothing needs."""
    live = {v.name for v in graph.outputs}
    kept = []
    for e in reversed(graph.eqns):
        if e.out.name in live:
            kept.append(e)
            live |= {a.name for a in e.args if isinstance(a, Var)}
    return replace(graph, eqns=tuple(reversed(kept)))


class VerifyError(AssertionError):
    pass


def verify(graph: Graph) -> Graph:
    """Check single assignment, definition before use, and every op's shape
    rule; returns the graph so passes can be chained through it."""
    from .ops import OPS, result_type

    defined: dict[str, Var] = {}
    for v in graph.inputs + graph.params:
        if v.name in defined:
            raise VerifyError(f"{graph.name}: {v.name} declared twice")
        defined[v.name] = v
    for e in graph.eqns:
        if e.op not in OPS:
            raise VerifyError(f"{graph.name}: unknown op {e.op!r} in `{e}`")
        for a in e.args:
            if isinstance(a, Var):
                if a.name not in defined:
                    raise VerifyError(f"{graph.name}: `{a.name}` used before it is defined in `{e}`")
                if defined[a.name] != a:
                    raise VerifyError(f"{graph.name}: `{a.name}` used with type {a.type_str()} "
                                      f"but defined as {defined[a.name].type_str()} in `{e}`")
        if e.out.name in defined:
            raise VerifyError(f"{graph.name}: `{e.out.name}` assigned twice")
        try:
            kind, shape = result_type(e)
        except (ValueError, KeyError, IndexError) as exc:
            raise VerifyError(f"{graph.name}: `{e}`: {exc}") from None
        if (kind, shape) != (e.out.kind, e.out.shape):
            shown = Var("_", kind, shape).type_str()
            raise VerifyError(f"{graph.name}: `{e}` should have type {shown}")
        defined[e.out.name] = e.out
    for v in graph.outputs:
        if defined.get(v.name) != v:
            raise VerifyError(f"{graph.name}: output `{v.name}` is not defined")
    return graph
