"""A NumPy interpreter of the IR: the executable definition of every op and
the oracle that compiled code is tested against.

Values: a batch vector is an array (B, n), a parameter vector (n,), a
matrix (r, c). Sizes must be numbers (see `specialise`).
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Lit, Size
from ..ir.ops import OPS, Evaluation, Facet

# Each op's evaluation is its registry entry's `eval`; this view names them.
EVAL = Facet("eval")


def evaluate(graph: Graph, env: dict[str, np.ndarray], batch: int, dtype) -> dict[str, np.ndarray]:
    """Run `graph` on the values in `env` (inputs and params by name); returns
    `env` extended with every equation's result.

    Arithmetic is IEEE's, silently, as in compiled code: `exp` of a large
    number is inf, `log(0)` is -inf, and what follows from them (inf - inf is
    NaN) shows in the results instead of as NumPy RuntimeWarnings. Where an
    op's true value is finite it is computed without overflow (`sigmoid`,
    `softplus`, `softmax`, `log_softmax`)."""
    env = dict(env)
    with np.errstate(all="ignore"):
        for e in graph.eqns:
            args = [np.asarray(a.value, dtype) if isinstance(a, Lit) else env[a.name]
                    for a in e.args]
            env[e.out.name] = OPS[e.op].eval(Evaluation(e, batch, dtype), *args)
    return env


def specialise(graph: Graph, sizes: dict[str, int]) -> Graph:
    """The graph with every size symbol replaced by its number."""
    def fix(s: Size) -> Size:
        out = s.subst(sizes)
        if not out.is_const():
            raise ValueError(f"size {s} has unbound symbols {sorted(out.symbols)}")
        return out
    return graph.map_sizes(fix)
