"""One-equation graphs for every registered op, and a float64
finite-difference check of an op's VJP through autodiff and the interpreter.

An elementwise or feature-wise op gets batch arguments of one size; the
other families' ops have their own argument shapes, written here once.
"""
from __future__ import annotations

import numpy as np

from seqdsl.ir.autodiff import backward
from seqdsl.ir.graph import BATCH, MATRIX, VECTOR, Eqn, Graph, Size, Var
from seqdsl.ir.ops import ELEMENTWISE, FEATURE_WISE, OPS
from seqdsl.runtime.interp import evaluate


def _v(name, kind, *shape):
    return Var(name, kind, tuple(Size.of(s) for s in shape))


def _cols(lo, hi):
    return (("cols", (Size.of(lo), Size.of(hi))),)


# name -> (inputs, params, arguments, result, attrs) for the ops whose
# arguments differ in shape.
def _structural(n: int) -> dict:
    x0, x1, x6 = _v("x0", BATCH, n), _v("x1", BATCH, 2), _v("x0", BATCH, n + 2)
    g = _v("g", BATCH, 3)
    w = _v("W", MATRIX, 3, n + 2)
    wt = _v("W", MATRIX, n + 2, 3)
    s1, vn = _v("α", VECTOR, 1), _v("v", VECTOR, n)
    y = _v("y", BATCH, n)
    return {
        "copy": ([x0], [], (x0,), y, ()),
        "linear": ([x0, x1], [w], (w, x0, x1), _v("y", BATCH, 3), ()),
        "concat": ([x0, x1], [], (x0, x1), _v("y", BATCH, n + 2), ()),
        "linear_t": ([g], [w], (w, g), _v("y", BATCH, 2), _cols(n, n + 2)),
        "outer": ([g, x0, x1], [], (g, x0, x1), _v("y", MATRIX, 3, n + 2), (("of", "W"),)),
        "bsum": ([x0], [], (x0,), _v("y", VECTOR, n), ()),
        "slice": ([x6], [], (x6,), y, _cols(1, n + 1)),
        "zeros": ([], [], (), y, ()),
        # Wᵀ: W is (n+2)×3 here, applied transposed to [x0, x1].
        "tlinear": ([x0, x1], [wt], (wt, x0, x1), _v("y", BATCH, 3), ()),
        "tlinear_t": ([g], [wt], (wt, g), _v("y", BATCH, 2), _cols(n, n + 2)),
        "touter": ([g, x0, x1], [], (g, x0, x1), _v("y", MATRIX, n + 2, 3), (("of", "W"),)),
        "broadcast": ([], [s1], (s1,), _v("y", VECTOR, n), (("size", Size.of(n)),)),
        "fsum": ([], [vn], (vn,), _v("y", VECTOR, 1), ()),
    }


def sample_graph(op: str, n: int = 4) -> Graph:
    """A graph of one equation `y = op(...)` at concrete sizes."""
    entry = OPS[op]
    if entry.family in (ELEMENTWISE, FEATURE_WISE):
        args = tuple(_v(f"x{i}", BATCH, n) for i in range(entry.arity))
        inputs, params, y, attrs = args, (), _v("y", BATCH, n), ()
    else:
        table = _structural(n)
        assert op in table, f"opsamples.py has no sample for `{op}`: add one"
        inputs, params, args, y, attrs = table[op]
    return Graph("T", tuple(inputs), tuple(params), (Eqn(y, op, args, attrs),), (y,))


def random_env(graph: Graph, batch: int, rng, low=0.3, high=1.5) -> dict[str, np.ndarray]:
    """Values for a graph's inputs and params, in [low, high] (positive, so
    that `log` and division stay well defined) unless told otherwise."""
    env = {}
    for v in graph.inputs + graph.params:
        shape = tuple(s.value() for s in v.shape)
        env[v.name] = rng.uniform(low, high, ((batch,) if v.kind == BATCH else ()) + shape)
    return env


def vjp_error(graph: Graph, env: dict, batch: int, rng, h: float = 1e-6) -> float:
    """Worst relative error of the gradient of Σ g·y (y the graph's output)
    that autodiff derives, against central differences, in float64."""
    (y,) = graph.outputs
    fwd = evaluate(graph, env, batch, np.float64)
    g = rng.normal(size=fwd[y.name].shape)
    bwd = backward(graph)
    got = evaluate(bwd, {**fwd, f"d_{y.name}": g}, batch, np.float64)
    worst = 0.0
    for v, d in zip(graph.inputs + graph.params, bwd.outputs):
        numeric = np.zeros_like(env[v.name])
        for i in np.ndindex(numeric.shape):
            up, down = dict(env), dict(env)
            up[v.name] = env[v.name].copy()
            down[v.name] = env[v.name].copy()
            up[v.name][i] += h
            down[v.name][i] -= h
            loss = [float((evaluate(graph, e, batch, np.float64)[y.name] * g).sum())
                    for e in (up, down)]
            numeric[i] = (loss[0] - loss[1]) / (2 * h)
        scale = max(np.abs(numeric).max(), 1e-3)
        worst = max(worst, float(np.abs(got[d.name] - numeric).max() / scale))
    return worst
