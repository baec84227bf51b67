"""A NumPy interpreter of the IR: the executable definition of every op and
the oracle that compiled code is tested against.

Values: a batch vector is an array (B, n), a parameter vector (n,), a
matrix (r, c). Sizes must be numbers (see `specialise`).
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Eqn, Graph, Lit, Size
from ..ir.ops import OPS

LAYERNORM_EPS = 1e-5


def _sigmoid(x):
    # exp of a non-positive number only: no overflow for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _softmax_vjp(y, g):
    return y * (g - (g * y).sum(axis=-1, keepdims=True))


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


def _cols(e: Eqn) -> slice:
    lo, hi = e.attr("cols")
    return slice(lo.value(), hi.value())


def _linear(e, w, *parts):
    cat = parts[0] if len(parts) == 1 else np.concatenate(
        [np.broadcast_to(p, parts[0].shape[:-1] + p.shape[-1:]) for p in parts], axis=-1)
    return cat @ w.T


def _outer(e, g, *parts):
    cat = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
    return g.T @ cat



EVAL = {
    "copy": lambda e, x: x,
    "add": lambda e, x, y: x + y,
    "sub": lambda e, x, y: x - y,
    "mul": lambda e, x, y: x * y,
    "div": lambda e, x, y: x / y,
    "neg": lambda e, x: -x,
    "sigmoid": lambda e, x: _sigmoid(x),
    "tanh": lambda e, x: np.tanh(x),
    "relu": lambda e, x: np.maximum(x, 0),
    "exp": lambda e, x: np.exp(x),
    "log": lambda e, x: np.log(x),
    "step": lambda e, x: (x > 0).astype(x.dtype),
    "softmax": lambda e, x: _softmax(x),
    "layernorm": lambda e, x: _layernorm(x),
    "softmax_vjp": lambda e, y, g: _softmax_vjp(y, g),
    "layernorm_vjp": lambda e, x, g: _layernorm_vjp(x, g),
    "linear": _linear,
    "linear_t": lambda e, w, g: g @ w[:, _cols(e)],
    "outer": _outer,
    "bsum": lambda e, g: g.sum(axis=0),
    "concat": lambda e, *xs: np.concatenate(xs, axis=-1),
    "slice": lambda e, x: x[..., _cols(e)],
    "zeros": None,  # needs the batch size: handled in `evaluate`
}
assert set(EVAL) == set(OPS), set(EVAL) ^ set(OPS)


def evaluate(graph: Graph, env: dict[str, np.ndarray], batch: int, dtype) -> dict[str, np.ndarray]:
    """Run `graph` on the values in `env` (inputs and params by name); returns
    `env` extended with every equation's result.

    Arithmetic is IEEE's, silently, as in compiled code: `exp` of a large
    number is inf, `log(0)` is -inf, and what follows from them (inf - inf is
    NaN) shows in the results instead of as NumPy RuntimeWarnings. Where an
    op's true value is finite it is computed without overflow (`sigmoid`,
    `softmax`)."""
    env = dict(env)
    with np.errstate(all="ignore"):
        for e in graph.eqns:
            if e.op == "zeros":
                shape = tuple(s.value() for s in e.out.shape)
                env[e.out.name] = np.zeros((batch,) + shape if e.out.kind == "batch" else shape,
                                           dtype)
                continue
            args = [np.asarray(a.value, dtype) if isinstance(a, Lit) else env[a.name]
                    for a in e.args]
            env[e.out.name] = EVAL[e.op](e, *args)
    return env


def specialise(graph: Graph, sizes: dict[str, int]) -> Graph:
    """The graph with every size symbol replaced by its number."""
    def fix(s: Size) -> Size:
        out = s.subst(sizes)
        if not out.is_const():
            raise ValueError(f"size {s} has unbound symbols {sorted(out.symbols)}")
        return out
    return graph.map_sizes(fix)
