"""Products with a transposed weight: `Wᵀ h`.

`tlinear(W, p1, p2, ...)` applies Wᵀ to the concatenation of its parts: W
itself is the parameter, so a cell that uses both `W h` and `Wᵀ h` has one
W whose gradient collects both uses (for `(W − Wᵀ) h`, G − Gᵀ of the
recurrence's G). Its VJP mirrors `linear`'s: each part gets a `tlinear_t`
over its own block of Wᵀ's columns (W's rows), W a `touter` summed over the
batch. The Numba backend makes them with the product plan, stacking the
transposed blocks beside the plain ones (runtime/numba/plan.py).
"""
from __future__ import annotations

from ..graph import MATRIX, total_size
from .base import PRODUCT, Op, Product, Scalar
from .structural import block_gradient_type, concatenated, product_type, product_vjp


def _tlinear(ev, w, *parts):
    return concatenated(parts) @ w


def _touter(ev, g, *parts):
    return concatenated(parts).T @ g


ENTRIES = [
    Op("tlinear", PRODUCT, None, "Wᵀ applied to the concatenation of its other arguments, "
       "per example", lambda e: product_type(e, transposed=True), _tlinear,
       product_vjp("tlinear_t", "touter"),
       Scalar(lambda slices: " + ".join(slices)),
       lambda e: 2 * e.out.size.value() * e.args[0].shape[0].value()),
    # Only backward graphs hold the rest: they are never differentiated.
    Op("tlinear_t", PRODUCT, 2, "the columns `cols` of Wᵀ (rows of W), transposed, applied "
       "to g: g @ W[cols, :]ᵀ", lambda e: block_gradient_type(e, transposed=True),
       lambda ev, w, g: g @ w[ev.cols(), :].T, None, Product(),
       lambda e: 2 * e.args[0].shape[1].value() * e.out.size.value()),
    Op("touter", PRODUCT, None, "Σ over the batch of [parts] ⊗ g: the gradient of a weight "
       "applied transposed", lambda e: (MATRIX, (total_size(e.args[1:]), e.args[0].size)),
       _touter, None, Product(),
       lambda e: 2 * e.out.shape[0].value() * e.out.shape[1].value()),
]
