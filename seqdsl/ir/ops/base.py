"""What an op's registry entry holds (`Op`), and the rules entries share.

The Numba facet is plain data (source templates and small functions that
write source lines), so the IR names what the backend writes without
importing it: the helpers generated code calls (`sigmoid`, `tanh`) live in
runtime/numba/activations.py and are imported by the generated module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..graph import BATCH, MATRIX, VECTOR, Eqn, Size, Var

# What an op's result is and how much it costs; `family` says how a backend
# treats it and which FLOPs count as matrix products.
ELEMENTWISE = "elementwise"  # entry by entry; parameters broadcast over the batch
FEATURE_WISE = "feature-wise"  # over each example's row of features
PRODUCT = "product"  # matrix products, made by the backend's product plan
LAYOUT = "layout"  # copies, zeros, concatenations, slices: no arithmetic
REDUCTION = "reduction"  # over the batch
FAMILIES = (ELEMENTWISE, FEATURE_WISE, PRODUCT, LAYOUT, REDUCTION)

Type = tuple[str, tuple[Size, ...]]  # (kind, shape) of a value


class Evaluation(NamedTuple):
    """What an op's NumPy evaluation gets besides its arguments' values."""

    eqn: Eqn
    batch: int  # the examples a batch value has
    dtype: object  # a NumPy dtype, or a scalar type such as np.float32

    def zeros(self, v: Var) -> np.ndarray:
        shape = tuple(s.value() for s in v.shape)
        return np.zeros((self.batch,) + shape if v.kind == BATCH else shape, self.dtype)

    def cols(self) -> slice:
        lo, hi = self.eqn.attr("cols")
        return slice(lo.value(), hi.value())


# ---- how the Numba backend writes an op ---------------------------------------

@dataclass(frozen=True)
class Scalar:
    """One expression per entry, inside the fused loops over the batch and the
    features: a format string over the arguments' expressions (`"{0} + {1}"`),
    or a function of their list. Constants are `K0` (0.0) and `K1` (1.0)."""

    expr: str | Callable[[Sequence[str]], str]

    def __call__(self, args: Sequence[str]) -> str:
        return self.expr.format(*args) if isinstance(self.expr, str) else self.expr(args)


# A Row writer gets the equation, its result and its arguments as templates
# with `{j}` for the column (`buf_y[_b, {j}]`), `const(value)` naming a
# constant, and `size(s)` writing a Size as Python (`4 * n_H`: sizes are
# run-time values, so a row's length is never a number the writer may use);
# it returns source lines, nested ones indented by four spaces.
RowWriter = Callable[[Eqn, str, Sequence[str], Callable[[float], str], Callable[[Size], str]],
                     list[str]]


@dataclass(frozen=True)
class Row:
    """Statements over one example's row of features (a reduction such as
    softmax, or a layout such as concat). `scratch` are the scalar names the
    lines use besides `_k`; the generator reserves them."""

    write: RowWriter
    scratch: tuple[str, ...] = ()


@dataclass(frozen=True)
class Accumulate:
    """A sum over the batch: `acc[_j] += {0}` at each example, read after
    the time loop."""


@dataclass(frozen=True)
class Product:
    """Made by the backend's product plan (one GEMM per operand), never
    written entry by entry."""


Code = Scalar | Row | Accumulate | Product


# ---- the entry -------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    """Every fact about one op. `vjp` is the autodiff rule, (builder, equation,
    cotangent of its result) -> one cotangent per argument (None for no
    dependence); it is None exactly for the ops that only backward graphs
    hold, which are never differentiated. `flops` is per entry of the
    result (an int) or per example (a function of the equation)."""

    name: str
    family: str
    arity: int | None  # None: one or more arguments
    doc: str
    type: Callable[[Eqn], Type]
    eval: Callable[..., np.ndarray]  # (Evaluation, *argument values) -> value
    vjp: Callable | None
    code: Code
    flops: int | Callable[[Eqn], int]

    @property
    def backward_only(self) -> bool:
        return self.vjp is None

    def count_flops(self, e: Eqn) -> int:
        """Floating-point operations for one example (matrix and vector results
        count whole: they are made once per example and step too)."""
        if callable(self.flops):
            return self.flops(e)
        return self.flops * math.prod(s.value() for s in e.out.shape)


# ---- shape rules shared by several ops ----------------------------------------------

def elementwise_type(e: Eqn) -> Type:
    """Arguments of one shape, at least one of them a value; parameters
    broadcast over the batch, and matrices combine only with matrices (a
    shared weight's gradients)."""
    args = [a for a in e.args if isinstance(a, Var)]
    if not args:
        raise ValueError(f"{e.op} takes {len(e.args)} argument(s), not a literal alone")
    shapes = {a.shape for a in args}
    if len(shapes) != 1:
        raise ValueError("elementwise arguments of different shapes: "
                         + ", ".join(f"{a.name}: {a.type_str()}" for a in args))
    kinds = {a.kind for a in args}
    if MATRIX in kinds and kinds != {MATRIX}:
        raise ValueError("a matrix combined elementwise with a vector")
    kind = BATCH if BATCH in kinds else VECTOR if VECTOR in kinds else MATRIX
    return kind, shapes.pop()


def at(template: str, j) -> str:
    """`template` read at column `j` (a number or an expression)."""
    return template.format(j=j)


def plus(offset: str, index: str) -> str:
    """The column `offset + index` as Python (`offset` a written Size), or
    `index` alone where the offset is 0."""
    return index if offset == "0" else f"{offset} + {index}"
