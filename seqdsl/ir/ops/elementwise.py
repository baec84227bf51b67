"""Elementwise ops: arithmetic and the functions a cell calls entry by entry.

A literal argument is a number, broadcast over everything; a parameter
vector broadcasts over the batch (see `elementwise_type`). FLOPs count one
per arithmetic operation, comparison and exp/log/tanh, per entry.
"""
from __future__ import annotations

import numpy as np

from ..graph import Lit, Var
from .base import ELEMENTWISE, Op, Scalar, elementwise_type


def elementwise(name: str, arity: int, doc: str, eval, vjp, expr: str, flops: int = 1) -> Op:
    """The entry of an elementwise op: `eval` is a NumPy function of the
    arguments' values, `expr` the Numba expression over theirs."""
    return Op(name, ELEMENTWISE, arity, doc, elementwise_type,
              lambda ev, *xs: eval(*xs), vjp, Scalar(expr), flops)


def _sigmoid(x):
    # exp of a non-positive number only: no overflow for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    # log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): the exp never overflows,
    # and log1p keeps the small tail for large negative x.
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


# VJP rules: (builder, forward equation, cotangent g of its result) -> one
# cotangent per argument, None for a literal argument.
def _mul_vjp(b, e, g):
    x, y = e.args
    return [b.elementwise("mul", g, y) if isinstance(x, Var) else None,
            b.elementwise("mul", g, x) if isinstance(y, Var) else None]


def _div_vjp(b, e, g):
    x, y = e.args
    gx = b.elementwise("div", g, y)
    gy = None
    if isinstance(y, Var):  # d(x/y)/dy = -(x/y)/y
        gy = b.elementwise("neg", b.elementwise("mul", gx, e.out))
    return [gx if isinstance(x, Var) else None, gy]


def _sigmoid_vjp(b, e, g):
    y = e.out
    return [b.elementwise("mul", g, b.elementwise("mul", y, b.elementwise("sub", Lit(1.0), y)))]


def _tanh_vjp(b, e, g):
    y = e.out
    return [b.elementwise("mul", g, b.elementwise("sub", Lit(1.0), b.elementwise("mul", y, y)))]


ENTRIES = [
    elementwise("add", 2, "x + y", np.add, lambda b, e, g: [g, g], "{0} + {1}"),
    elementwise("sub", 2, "x - y", np.subtract,
                lambda b, e, g: [g, b.elementwise("neg", g)], "{0} - {1}"),
    elementwise("mul", 2, "x * y", np.multiply, _mul_vjp, "({0}) * ({1})"),
    elementwise("div", 2, "x / y", np.divide, _div_vjp, "({0}) / ({1})"),
    elementwise("neg", 1, "-x", np.negative, lambda b, e, g: [b.elementwise("neg", g)], "-({0})"),
    elementwise("sigmoid", 1, "1 / (1 + e^-x), without overflow", _sigmoid, _sigmoid_vjp,
                "sigmoid({0})", flops=3),
    elementwise("tanh", 1, "tanh x", np.tanh, _tanh_vjp, "tanh({0})"),
    elementwise("relu", 1, "max(x, 0)", lambda x: np.maximum(x, 0),
                lambda b, e, g: [b.elementwise("mul", g, b.elementwise("step", e.args[0]))],
                "max({0}, K0)"),
    # seqdsl's exp, not NumPy's: a loop calling np.exp (a libm call) stays scalar
    elementwise("exp", 1, "e^x", np.exp, lambda b, e, g: [b.elementwise("mul", g, e.out)],
                "exp({0})"),
    elementwise("log", 1, "natural logarithm", np.log,
                lambda b, e, g: [b.elementwise("div", g, e.args[0])], "np.log({0})"),
    elementwise("softplus", 1, "log(1 + e^x), without overflow", _softplus,
                lambda b, e, g: [b.elementwise("mul", g, b.elementwise("sigmoid", e.args[0]))],
                "max({0}, K0) + np.log1p(np.exp(-np.abs({0})))", flops=4),
    # relu's derivative: only a backward graph holds it.
    elementwise("step", 1, "1 where x > 0, else 0", lambda x: (x > 0).astype(x.dtype), None,
                "K1 if {0} > K0 else K0"),
]
