"""The closed set of IR ops and the type of each op's result.

Every other table keyed by op (NumPy evaluation in runtime/interp.py, gradient
rules in autodiff.py, DOT labels) must cover the same set; a test checks that.
"""
from __future__ import annotations

from .graph import BATCH, MATRIX, VECTOR, Eqn, Size, Var, total_size

# Elementwise ops over vectors of one size; a parameter vector broadcasts
# over the batch and a literal over everything.
ELEMENTWISE_BINARY = ("add", "sub", "mul", "div")
ELEMENTWISE_UNARY = ("neg", "sigmoid", "tanh", "relu", "exp", "log", "step")
# Reductions over the feature axis of each example.
FEATURE_WISE = ("softmax", "layernorm")
FEATURE_WISE_VJP = ("softmax_vjp", "layernorm_vjp")

OPS = {
    **{op: "elementwise" for op in ELEMENTWISE_BINARY + ELEMENTWISE_UNARY},
    **{op: "feature-wise" for op in FEATURE_WISE + FEATURE_WISE_VJP},
    "copy": "the same value under another name",
    "linear": "W applied to the concatenation of its other arguments, per example",
    "linear_t": "the columns `cols` of W, transposed, applied to g: g @ W[:, cols]",
    "outer": "Σ over the batch of g ⊗ [parts]: a weight's gradient",
    "bsum": "Σ over the batch: a parameter vector's gradient",
    "concat": "the concatenation of vectors",
    "slice": "the entries `cols` of a vector",
    "zeros": "a zero value of the result's type",
}

# Ops that appear only in derived (backward) graphs, never in a forward step.
BACKWARD_ONLY = ("step", "softmax_vjp", "layernorm_vjp", "linear_t", "outer", "bsum", "slice",
                 "zeros")


def _vars(e: Eqn) -> list[Var]:
    return [a for a in e.args if isinstance(a, Var)]


def _elementwise_type(args: list[Var]) -> tuple[str, tuple[Size, ...]]:
    """Arguments of one shape; parameters broadcast over the batch, and
    matrices combine only with matrices (a shared weight's gradients)."""
    shapes = {a.shape for a in args}
    if len(shapes) != 1:
        raise ValueError("elementwise arguments of different shapes: "
                         + ", ".join(f"{a.name}: {a.type_str()}" for a in args))
    kinds = {a.kind for a in args}
    if MATRIX in kinds and kinds != {MATRIX}:
        raise ValueError("a matrix combined elementwise with a vector")
    kind = BATCH if BATCH in kinds else VECTOR if VECTOR in kinds else MATRIX
    return kind, shapes.pop()


def result_type(e: Eqn) -> tuple[str, tuple[Size, ...]]:
    """(kind, shape) of what `e` computes; ValueError if its arguments don't fit."""
    op = e.op
    args = _vars(e)
    if op in ELEMENTWISE_BINARY or op in ELEMENTWISE_UNARY or op in FEATURE_WISE_VJP \
            or op in FEATURE_WISE:
        arity = 2 if op in ELEMENTWISE_BINARY or op in FEATURE_WISE_VJP else 1
        if len(e.args) != arity or not args:
            raise ValueError(f"{op} takes {arity} argument(s), not a literal alone")
        return _elementwise_type(args)
    if op == "linear":
        w, *parts = e.args
        if w.kind != MATRIX or not parts or any(p.kind == MATRIX for p in parts):
            raise ValueError("linear takes a matrix and one or more vectors")
        cols = total_size(parts)
        if cols != w.shape[1]:
            raise ValueError(f"{w.name} has {w.shape[1]} columns but is applied to {cols} entries")
        return BATCH, (w.shape[0],)
    if op == "linear_t":
        w, g = e.args
        lo, hi = e.attr("cols")
        if g.size != w.shape[0]:
            raise ValueError(f"{g.name} has size {g.size}, {w.name} has {w.shape[0]} rows")
        return BATCH, (hi - lo,)
    if op == "outer":
        g, *parts = e.args
        return MATRIX, (g.size, total_size(parts))
    if op == "bsum":
        (g,) = e.args
        return VECTOR, (g.size,)
    if op == "concat":
        return BATCH, (total_size(e.args),)
    if op == "slice":
        lo, hi = e.attr("cols")
        return e.args[0].kind, (hi - lo,)
    if op == "copy":
        (a,) = e.args
        return a.kind, a.shape
    if op == "zeros":
        return e.out.kind, e.out.shape
    raise KeyError(op)
