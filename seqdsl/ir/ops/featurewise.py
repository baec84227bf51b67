"""Feature-wise ops: functions of each example's whole row of features
(softmax, log_softmax, layernorm), and the VJPs that backward graphs use
for them.

The Numba code of each is a few loops over the row; the arguments are read
through templates (`at(x, "_k")`), so the same lines serve a batch row and
a parameter vector, and the row's length is written by `size` (a run-time
value of the generated code).
"""
from __future__ import annotations

import numpy as np

from .base import FEATURE_WISE, Op, Row, at, elementwise_type

LAYERNORM_EPS = 1e-5


def featurewise(name: str, arity: int, doc: str, eval, vjp, row: Row, flops) -> Op:
    return Op(name, FEATURE_WISE, arity, doc, elementwise_type,
              lambda ev, *xs: eval(*xs), vjp, row, lambda e: flops(e.out.size.value()))


# ---- NumPy ------------------------------------------------------------------------

def _softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _softmax_vjp(y, g):
    return y * (g - (g * y).sum(axis=-1, keepdims=True))


def _log_softmax(x):
    # Shifted by the row's max: exp never overflows, and the largest term is 1.
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _log_softmax_vjp(y, g):
    return g - np.exp(y) * g.sum(axis=-1, keepdims=True)


def _layernorm(x):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LAYERNORM_EPS)


def _layernorm_vjp(x, g):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt(var + LAYERNORM_EPS)
    y = (x - mu) * rstd
    return rstd * (g - g.mean(axis=-1, keepdims=True) - y * (g * y).mean(axis=-1, keepdims=True))


# ---- Numba: the lines over one row ---------------------------------------------------

def _max_lines(x: str, n: str) -> list[str]:
    return [f"_m = {at(x, 0)}",
            f"for _k in range(1, {n}):",
            f"    _m = max(_m, {at(x, '_k')})"]


def _exp_sum_lines(x: str, out: str, n: str) -> list[str]:
    """Lines leaving e^(x - _m) in the row `out` and its sum in `_s`. The
    terms are written in a loop of their own: a loop that also sums them is
    not vectorised (its additions must keep their order), and it is the
    vectorised `exp` (activations.py) that makes these rows fast."""
    return ["_s = K0",
            f"for _k in range({n}):",
            f"    {at(out, '_k')} = exp({at(x, '_k')} - _m)",
            f"for _k in range({n}):",
            f"    _s += {at(out, '_k')}"]


def _softmax_row(e, out, a, const, size) -> list[str]:
    n = size(e.out.size)
    return _max_lines(a[0], n) + _exp_sum_lines(a[0], out, n) + [
        f"for _k in range({n}):",
        f"    {at(out, '_k')} = {at(out, '_k')} / _s"]


def _softmax_vjp_row(e, out, a, const, size) -> list[str]:
    n = size(e.out.size)
    y, g = a[0], a[1]
    return ["_s = K0",
            f"for _k in range({n}):",
            f"    _s += {at(y, '_k')} * {at(g, '_k')}",
            f"for _k in range({n}):",
            f"    {at(out, '_k')} = {at(y, '_k')} * ({at(g, '_k')} - _s)"]


def _log_softmax_row(e, out, a, const, size) -> list[str]:
    n = size(e.out.size)
    return _max_lines(a[0], n) + _exp_sum_lines(a[0], out, n) + [
        "_s = np.log(_s)",  # subtracted after _m, as the NumPy evaluation does
        f"for _k in range({n}):",
        f"    {at(out, '_k')} = {at(a[0], '_k')} - _m - _s"]


def _log_softmax_vjp_row(e, out, a, const, size) -> list[str]:
    n = size(e.out.size)
    y, g = a[0], a[1]
    return ["_s = K0",
            f"for _k in range({n}):",
            f"    _s += {at(g, '_k')}",
            f"for _k in range({n}):",
            f"    {at(out, '_k')} = {at(g, '_k')} - exp({at(y, '_k')}) * _s"]


def _moments(x: str, n: str, const) -> list[str]:
    """Lines leaving the row's mean in `_mu` and 1/sqrt(var + eps) in `_rstd`."""
    eps, n_k = const(LAYERNORM_EPS), f"DT({n})"  # the row's length, as a float of the dtype
    return ["_mu = K0",
            f"for _k in range({n}):",
            f"    _mu += {at(x, '_k')}",
            f"_mu = _mu / {n_k}",
            "_var = K0",
            f"for _k in range({n}):",
            f"    _var += ({at(x, '_k')} - _mu) * ({at(x, '_k')} - _mu)",
            f"_rstd = K1 / np.sqrt(_var / {n_k} + {eps})"]


def _layernorm_row(e, out, a, const, size) -> list[str]:
    n = size(e.out.size)
    return _moments(a[0], n, const) + [
        f"for _k in range({n}):",
        f"    {at(out, '_k')} = ({at(a[0], '_k')} - _mu) * _rstd"]


def _layernorm_vjp_row(e, out, a, const, size) -> list[str]:
    n = size(e.out.size)
    x, g = a[0], a[1]
    moments = _moments(x, n, const)
    n_k = f"DT({n})"
    return moments + [
        "_mg = K0",
        "_mgy = K0",
        f"for _k in range({n}):",
        f"    _y = ({at(x, '_k')} - _mu) * _rstd",
        f"    _mg += {at(g, '_k')}",
        f"    _mgy += {at(g, '_k')} * _y",
        f"_mg = _mg / {n_k}",
        f"_mgy = _mgy / {n_k}",
        f"for _k in range({n}):",
        f"    _y = ({at(x, '_k')} - _mu) * _rstd",
        f"    {at(out, '_k')} = _rstd * ({at(g, '_k')} - _mg - _y * _mgy)"]


ENTRIES = [
    featurewise("softmax", 1, "e^(x - max x) / Σ e^(x - max x)", _softmax,
                lambda b, e, g: [b.elementwise("softmax_vjp", e.out, g)],
                Row(_softmax_row, ("_m", "_s")), lambda n: 5 * n),
    featurewise("log_softmax", 1, "x - max x - log Σ e^(x - max x)", _log_softmax,
                lambda b, e, g: [b.elementwise("log_softmax_vjp", e.out, g)],
                Row(_log_softmax_row, ("_m", "_s")), lambda n: 5 * n + 2),
    featurewise("layernorm", 1, "(x - mean) / sqrt(var + 1e-5), population variance",
                _layernorm, lambda b, e, g: [b.elementwise("layernorm_vjp", e.args[0], g)],
                Row(_layernorm_row, ("_mu", "_var", "_rstd")), lambda n: 6 * n + 5),
    # The VJPs, of the result y (softmax, log_softmax) or the argument x
    # (layernorm) and the cotangent g: only backward graphs hold them.
    featurewise("softmax_vjp", 2, "y * (g - Σ g y)", _softmax_vjp, None,
                Row(_softmax_vjp_row, ("_s",)), lambda n: 4 * n),
    featurewise("log_softmax_vjp", 2, "g - e^y Σ g", _log_softmax_vjp, None,
                Row(_log_softmax_vjp_row, ("_s",)), lambda n: 4 * n),
    featurewise("layernorm_vjp", 2, "rstd (g - mean g - y mean(g y)), y = layernorm(x)",
                _layernorm_vjp, None,
                Row(_layernorm_vjp_row, ("_mu", "_var", "_rstd", "_mg", "_mgy", "_y")),
                lambda n: 13 * n + 9),
]
