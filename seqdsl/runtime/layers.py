"""A network's layers at run time: cells, `bidirectional` and `stack`,
chained over whole sequences.

Each layer runs a cell's compiled (or reference) forward over all steps at
once and its backward through time; the combinators only reorder, split and
join whole arrays, so no Python loop runs per step. Every example keeps its
own length: the backward copy of a bidirectional layer reads each example's
valid steps in reverse, so padding never reaches it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..ir.graph import Size
from ..ir.lower import CellType
from ..ir.network import Layer
from ..ir.tokens import TokenReads, read_tokens
from .backends import cell_instance
from .lookup import lookups
from .validate import valid_steps


@dataclass
class Run:
    """What one forward pass through the layers keeps for the backward."""

    finals: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # prefix -> states
    starts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # given first states
    records: dict[str, object] = field(default_factory=dict)  # prefix -> a layer's trace
    d_finals: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)  # as checked
    sequences: dict[str, np.ndarray] = field(default_factory=dict)  # inputs and layers' outputs
    owner: object = None  # the network whose forward this is


def reverse_each(a: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`a` (T, B, ...) with each example's first `lengths[b]` steps in
    reverse order and its padding left where it is (its own inverse)."""
    T, B = a.shape[:2]
    t = np.arange(T)[:, None]
    idx = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    return a[idx, np.arange(B)[None, :]]


class CellLayer:
    """One cell over a sequence; with `init`, it starts from the final
    state of the named layer and sends that state its gradient. A layer
    reading token ids runs the cell with its products of the ids replaced by
    column lookups (see ir/tokens.py), or on one-hot vectors when the cell
    uses the ids other than through a weight."""

    def __init__(self, prefix: str, layer: Layer, sizes: dict[str, int], dtype, backend: str,
                 vocabulary: int | None = None, threads: int | None = None):
        bound = {k: v.subst(sizes).value() for k, v in layer.sizes.items()}
        self.prefix = prefix
        self.init = layer.init
        self.vocabulary = vocabulary
        self.tokens = None
        self.token_ops = lookups(backend)
        if vocabulary:  # the declared cell gives shapes and starting values; it never runs
            self.cell = cell_instance(layer.cell, bound, dtype, "numpy")
            self.tokens = read_tokens(self.cell.forward_graph, layer.cell.inputs[0][0])
        if self.tokens is None:
            self.cell = self.runner = cell_instance(layer.cell, bound, dtype, backend, threads)
        else:
            self.runner = cell_instance(looked_up_cell(layer.cell, self.cell, self.tokens), {},
                                        dtype, backend, threads)
        self.names = {f"{prefix}.{n}": n for n in self.cell.param_shapes}
        # Each kept block of columns as a slice where it is one (a view: no copy).
        self._cols = {c.name: _as_slice(c.cols) for c in (self.tokens.columns
                                                          if self.tokens else ())}
        self.out_size = self.cell.state_sizes[self.cell.output]

    def cells(self):
        yield self.prefix, self

    def _own(self, params) -> dict[str, np.ndarray]:
        """The runner's parameters: the cell's own, or the columns of its
        weights that the lookups leave (copied contiguous once, for both
        the forward and the backward run, which would each copy them)."""
        own = {n: params[k] for k, n in self.names.items()}
        if self.tokens is None:
            return own
        own.update((c.name, np.ascontiguousarray(own[c.weight][:, self._cols[c.name]]))
                   for c in self.tokens.columns)
        return {n: own[n] for n in self.runner.param_shapes}

    def _input(self, own, x, lengths):
        """What the runner reads: x itself, one-hot rows, or looked-up columns."""
        if not self.vocabulary:
            return x
        if self.tokens is None:
            safe = np.where(valid_steps(len(x), lengths), x, 0)
            return np.eye(self.vocabulary, dtype=self.cell.dtype)[safe]
        return {k.name: self.token_ops.gather(own[k.weight][:, k.lo:k.hi], x, lengths)
                for k in self.tokens.lookups}

    def forward(self, params, x, lengths, run: Run) -> np.ndarray:
        state0 = run.starts.get(self.prefix)
        if state0 is None and self.init:
            state0 = run.finals[self.init]
        own = {n: params[k] for k, n in self.names.items()}
        runner_params = self._own(params)
        r = self.runner.forward(runner_params, self._input(own, x, lengths), lengths, state0)
        run.finals[self.prefix] = r.final
        run.records[self.prefix] = (r, x, runner_params)
        return r.outputs

    def backward(self, params, d_out, lengths, run: Run, grads) -> np.ndarray | None:
        r, x, runner_params = run.records[self.prefix]  # the parameters the forward ran with
        g = self.runner.backward(runner_params, r, d_out, run.d_finals.get(self.prefix))
        for k, n in self.names.items():
            if n in g.params:
                grads[k] += g.params[n]
        if self.init:
            into = run.d_finals.setdefault(self.init, {})
            for n, d in g.state0.items():
                into[n] = into[n] + d if n in into else d
        if self.tokens is not None:
            self._scatter(g, x, lengths, grads)
            return None  # token ids have no gradient
        (dx,) = g.inputs.values()
        return None if self.vocabulary else dx  # token ids have no gradient

    def _scatter(self, g, ids, lengths, grads) -> None:
        """Each looked-up column's gradient, added to the column it came from."""
        for c in self.tokens.columns:
            grads[f"{self.prefix}.{c.weight}"][:, self._cols[c.name]] += g.params[c.name]
        for k in self.tokens.lookups:
            into = grads[f"{self.prefix}.{k.weight}"][:, k.lo:k.hi]
            self.token_ops.add(into, ids, lengths, g.inputs[k.name])


def _as_slice(cols: tuple[int, ...]):
    """`cols` as a slice when they are a contiguous run, else a list."""
    if cols and list(cols) == list(range(cols[0], cols[-1] + 1)):
        return slice(cols[0], cols[-1] + 1)
    return list(cols)


def looked_up_cell(ct: CellType, declared, tokens: TokenReads) -> CellType:
    """The cell type that runs `tokens.graph`: at bound sizes, its token
    input replaced by one input per lookup."""
    g = tokens.graph
    lookups = {k.name for k in tokens.lookups}
    return replace(ct, inputs=[(v.name, v.size) for v in g.inputs if v.name in lookups],
                   states=[(n, Size.of(s)) for n, s in declared.state_sizes.items()],
                   params={v.name: v for v in g.params}, inits={}, graph=g, constraints=[],
                   symbols=[])


class Bidirectional:
    """A forward and a backward copy of a layer; outputs joined per step."""

    def __init__(self, fwd, bwd):
        self.fwd, self.bwd = fwd, bwd
        self.out_size = fwd.out_size + bwd.out_size

    def cells(self):
        yield from self.fwd.cells()
        yield from self.bwd.cells()

    def forward(self, params, x, lengths, run: Run) -> np.ndarray:
        a = self.fwd.forward(params, x, lengths, run)
        b = self.bwd.forward(params, reverse_each(x, lengths), lengths, run)
        return np.concatenate([a, reverse_each(b, lengths)], axis=-1)

    def backward(self, params, d_out, lengths, run: Run, grads) -> np.ndarray:
        n = self.fwd.out_size
        d_a = np.ascontiguousarray(d_out[..., :n])
        d_b = reverse_each(d_out[..., n:], lengths)
        dx = self.fwd.backward(params, d_a, lengths, run, grads)
        dx_b = self.bwd.backward(params, d_b, lengths, run, grads)
        return None if dx is None else dx + reverse_each(dx_b, lengths)


class Stack:
    """Layers applied one after another."""

    def __init__(self, children):
        self.children = children
        self.out_size = children[-1].out_size

    def cells(self):
        for c in self.children:
            yield from c.cells()

    def forward(self, params, x, lengths, run: Run) -> np.ndarray:
        for c in self.children:
            x = c.forward(params, x, lengths, run)
        return x

    def backward(self, params, d_out, lengths, run: Run, grads) -> np.ndarray:
        for c in reversed(self.children):
            d_out = c.backward(params, d_out, lengths, run, grads)
        return d_out


def build(prefix: str, layer: Layer, sizes: dict[str, int], dtype, backend: str,
          vocabulary: int | None = None, threads: int | None = None):
    """The runtime layer for a checked layer tree, parameters named as the
    check names them (`h.0.fwd.Wu`); `vocabulary` when it reads token ids;
    `threads` for the numba backend's cells."""
    if layer.kind == "cell":
        return CellLayer(prefix, layer, sizes, dtype, backend, vocabulary, threads)
    if layer.kind == "bidirectional":
        fwd, bwd = layer.children
        return Bidirectional(
            build(f"{prefix}.fwd", fwd, sizes, dtype, backend, vocabulary, threads),
            build(f"{prefix}.bwd", bwd, sizes, dtype, backend, vocabulary, threads))
    return Stack([build(f"{prefix}.{i}", c, sizes, dtype, backend, None if i else vocabulary,
                        threads)
                  for i, c in enumerate(layer.children)])
