"""A stateless row graph (a head, a loss, a loss's backward) run by
generated, Numba-compiled code: the source from emit_rows.py, compiled and
cached as a cell's kernels are (compile.py). A graph over size symbols is
compiled once for every size: the sizes are passed when it runs."""
from __future__ import annotations

import numpy as np

from ...ir.graph import BATCH, Graph
from .compile import Loaded, cache_key, load_module
from .emit_rows import generate_rows


class CompiledRows:
    """`graph` over N rows: called with an env holding its inputs (N, n) and
    params by name, returns `outputs` by name (the graph's by default).
    `sizes` binds the graph's size symbols, if it has any."""

    def __init__(self, graph: Graph, dtype, outputs: list[str] | None = None,
                 sizes: dict[str, int] | None = None):
        self.graph = graph
        self.dtype = np.dtype(dtype)
        self.sizes = dict(sizes or {})
        self.outputs = list(outputs) if outputs is not None else [v.name for v in graph.outputs]
        gen = generate_rows(graph.name, graph, self.dtype.name, self.outputs)
        self.source, self.args, self.returns = gen.source, gen.args, gen.returns
        self.signature = gen.signature
        self._size_args = tuple(self.sizes[k] for k in gen.sizes)
        table = graph.vars()
        # the first argument with a row per batch row gives the number of rows
        self._rows_arg = next(i for i, n in enumerate(self.args) if table[n].kind == BATCH)
        key = cache_key(self.dtype.name, self.source)
        self.loaded: Loaded = load_module(self.source, key, {"run": self.signature})

    def __call__(self, env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [np.ascontiguousarray(env[n], self.dtype) for n in self.args]
        if args[self._rows_arg].shape[0] == 0:  # nothing to compute: empty rows, zero sums
            values = [self._zeros(n) for n in self.returns]
        else:
            values = self.loaded.module.run(*self._size_args, *args)
        out = dict(zip(self.returns, values))
        return {n: out[n] if n in out else env[n] for n in self.outputs}

    def _zeros(self, n: str) -> np.ndarray:
        v = self.graph.vars()[n]
        shape = tuple(s.subst(self.sizes).value() for s in v.shape)
        return np.zeros(((0,) if v.kind == BATCH else ()) + shape, self.dtype)
