"""Matrix products, the batch sum, and the ops that only move values:
copy, zeros, concatenation and slices.

`linear(W, p1, p2, ...)` applies W to the concatenation of its parts without
making it; its VJP gives each part a `linear_t` over its own columns of W, and
W an `outer` summed over the batch. The Numba backend makes the products
with its product plan (runtime/numba/plan.py): `linear` is written as the sum
of the slices of those products that the plan hands the generator.
"""
from __future__ import annotations

import numpy as np

from ..graph import BATCH, MATRIX, VECTOR, Eqn, Size, total_size
from .base import (LAYOUT, PRODUCT, REDUCTION, Accumulate, Op, Product, Row, Scalar, Type,
                   at, plus)


# ---- shape rules --------------------------------------------------------------------

def product_type(e: Eqn, transposed: bool = False) -> Type:
    """W (or Wᵀ) applied to the concatenation of the other arguments."""
    w, *parts = e.args
    if w.kind != MATRIX or not parts or any(p.kind == MATRIX for p in parts):
        raise ValueError(f"{e.op} takes a matrix and one or more vectors")
    applied = f"{w.name}ᵀ" if transposed else w.name
    rows, cols = (w.shape[1], w.shape[0]) if transposed else w.shape
    if total_size(parts) != cols:
        raise ValueError(f"{applied} has {cols} columns but is applied to {total_size(parts)} "
                         "entries")
    return BATCH, (rows,)


def block_gradient_type(e: Eqn, transposed: bool = False) -> Type:
    """The type of `g` applied back through a block of columns `cols` of W
    (or, `transposed`, of Wᵀ): g must match W's rows (its columns)."""
    w, g = e.args
    lo, hi = e.attr("cols")
    axis, what = (1, "columns") if transposed else (0, "rows")
    if g.size != w.shape[axis]:
        raise ValueError(f"{g.name} has size {g.size}, {w.name} has {w.shape[axis]} {what}")
    return BATCH, (hi - lo,)


def _slice_type(e: Eqn) -> Type:
    lo, hi = e.attr("cols")
    return e.args[0].kind, (hi - lo,)


# ---- NumPy ------------------------------------------------------------------------

def concatenated(parts):
    """The parts side by side, parameter vectors broadcast over the batch."""
    return parts[0] if len(parts) == 1 else np.concatenate(
        [np.broadcast_to(p, parts[0].shape[:-1] + p.shape[-1:]) for p in parts], axis=-1)


def _linear(ev, w, *parts):
    return concatenated(parts) @ w.T


def _outer(ev, g, *parts):
    return g.T @ concatenated(parts)


# ---- VJPs -------------------------------------------------------------------------

def product_vjp(part_grad: str, weight_grad: str):
    """The VJP of a product `op(W, p1, p2, ...)`: each part gets a
    `part_grad` over its own block of the applied matrix's columns, W a
    `weight_grad` summed over the batch."""
    def vjp(b, e, g):
        w, *parts = e.args
        grads, lo = [], Size()
        for p in parts:
            hi = lo + p.size
            grads.append(b.emit(part_grad, (w, g), BATCH, (p.size,), (("cols", (lo, hi)),)))
            lo = hi
        dw = b.emit(weight_grad, (g, *parts), w.kind, w.shape, (("of", w.name),))
        return [dw] + grads
    return vjp


def _concat_vjp(b, e, g):
    grads, lo = [], Size()
    for p in e.args:
        hi = lo + p.size
        grads.append(b.emit("slice", (g,), BATCH, (p.size,), (("cols", (lo, hi)),)))
        lo = hi
    return grads


# ---- Numba rows ---------------------------------------------------------------------

def _concat_row(e, out, a, const, size) -> list[str]:
    lines, off = [], Size()
    for x, t in zip(e.args, a):
        lines += [f"for _k in range({size(x.size)}):",
                  f"    {at(out, plus(size(off), '_k'))} = {at(t, '_k')}"]
        off = off + x.size
    return lines


def _slice_row(e, out, a, const, size) -> list[str]:
    lo = size(e.attr("cols")[0])
    return [f"for _k in range({size(e.out.size)}):",
            f"    {at(out, '_k')} = {at(a[0], plus(lo, '_k'))}"]


def _cols(e: Eqn) -> int:
    return e.out.shape[1].value()


ENTRIES = [
    Op("copy", LAYOUT, 1, "the same value under another name",
       lambda e: (e.args[0].kind, e.args[0].shape), lambda ev, x: x,
       lambda b, e, g: [g], Scalar("{0}"), 0),
    Op("linear", PRODUCT, None, "W applied to the concatenation of its other arguments, "
       "per example", product_type, _linear, product_vjp("linear_t", "outer"),
       Scalar(lambda slices: " + ".join(slices)),
       lambda e: 2 * e.out.size.value() * e.args[0].shape[1].value()),
    Op("concat", LAYOUT, None, "the concatenation of vectors",
       lambda e: (BATCH, (total_size(e.args),)),
       lambda ev, *xs: np.concatenate(xs, axis=-1), _concat_vjp, Row(_concat_row), 0),
    # Only backward graphs hold the rest: they are never differentiated.
    Op("linear_t", PRODUCT, 2, "the columns `cols` of W, transposed, applied to g: g @ W[:, cols]",
       block_gradient_type, lambda ev, w, g: g @ w[:, ev.cols()], None, Product(),
       lambda e: 2 * e.args[0].shape[0].value() * e.out.size.value()),
    Op("outer", PRODUCT, None, "Σ over the batch of g ⊗ [parts]: a weight's gradient",
       lambda e: (MATRIX, (e.args[0].size, total_size(e.args[1:]))), _outer, None, Product(),
       lambda e: 2 * e.out.size.value() * _cols(e)),
    Op("bsum", REDUCTION, 1, "Σ over the batch: a parameter vector's gradient",
       lambda e: (VECTOR, (e.args[0].size,)), lambda ev, g: g.sum(axis=0), None, Accumulate(),
       1),
    Op("slice", LAYOUT, 1, "the entries `cols` of a vector", _slice_type,
       lambda ev, x: x[..., ev.cols()], None, Row(_slice_row), 0),
    Op("zeros", LAYOUT, 0, "a zero value of the result's type",
       lambda e: (e.out.kind, e.out.shape), lambda ev: ev.zeros(ev.eqn.out), None,
       Scalar("K0"), 0),
]
