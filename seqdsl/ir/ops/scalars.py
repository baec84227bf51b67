"""Learned scalars (`param α : 1`): a parameter of one entry, broadcast
where it meets a vector.

The lowering makes the broadcast explicit: `α * h` is `mul(broadcast(α), h)`
with `broadcast` giving the vector of the size `h` has, so every other op
sees operands of one shape. Its VJP sums the vector's cotangent back into
the one entry (`fsum`). Both are values of parameters alone: the Numba
backend makes them once per call, outside the time loop.
"""
from __future__ import annotations

import numpy as np

from ..graph import VECTOR, Eqn, Size
from .base import LAYOUT, REDUCTION, Op, Row, Type, at

ONE = Size.of(1)


def _broadcast_type(e: Eqn) -> Type:
    (a,) = e.args
    if a.kind != VECTOR or a.shape != (ONE,):
        raise ValueError(f"broadcast takes a scalar (a vector of size 1), not {a.type_str()}")
    return VECTOR, (e.attr("size"),)


def _fsum_type(e: Eqn) -> Type:
    (a,) = e.args
    if a.kind != VECTOR:
        raise ValueError(f"fsum takes a vector, not {a.type_str()}")
    return VECTOR, (ONE,)


def _broadcast_row(e, out, a, const, size) -> list[str]:
    return [f"for _k in range({size(e.out.size)}):",
            f"    {at(out, '_k')} = {at(a[0], 0)}"]


def _fsum_row(e, out, a, const, size) -> list[str]:
    return [f"{at(out, 0)} = K0",
            f"for _k in range({size(e.args[0].size)}):",
            f"    {at(out, 0)} += {at(a[0], '_k')}"]


ENTRIES = [
    Op("broadcast", LAYOUT, 1, "a scalar repeated to the vector size `size`", _broadcast_type,
       lambda ev, a: np.broadcast_to(a, (ev.eqn.out.size.value(),)).copy(),
       lambda b, e, g: [b.emit("fsum", (g,), VECTOR, (ONE,))], Row(_broadcast_row), 0),
    # Only backward graphs hold it: it is never differentiated.
    Op("fsum", REDUCTION, 1, "the sum of a vector's entries, as a scalar", _fsum_type,
       lambda ev, a: a.sum(keepdims=True), None, Row(_fsum_row),
       lambda e: e.args[0].size.value()),
]
