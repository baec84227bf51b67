"""A network's heads and losses at run time.

A head's step graph (lowered like a cell's) runs once over all the rows it
has: every valid step of every example for `ŷ<t>`, each example's own last
step for `ŷ`. Its loss graph runs over the labelled rows, and the backward
graph autodiff derives from it gives the gradients of the heads' inputs and
parameters. The row arrays are gathered and scattered whole: nothing runs
per step.

On the numba backend the three row graphs (the head's, its loss's and that
loss's backward) run as generated, Numba-compiled code (numba/rows.py), from
the same op registry and code generator as the cells, written from the
symbolic graphs (compiled once for every size, the sizes passed when they
run); on numpy, through the interpreter, at the network's sizes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SeqError
from ..ir.autodiff import backward as derive_backward
from ..ir.losses import LOSSES, default_loss, loss_graph
from ..ir.graph import Graph
from ..ir.network import Head
from . import validate
from .interp import evaluate, specialise

REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class RowGraph:
    """A row graph at the network's sizes, and over the size symbols."""

    graph: Graph
    symbolic: Graph


class Interpreted:
    """Row graphs run by the NumPy interpreter."""

    def __init__(self, dtype, sizes: dict[str, int]):
        self.dtype = dtype

    def __call__(self, rows: RowGraph, env, batch: int, wanted: list[str]) -> dict:
        return evaluate(rows.graph, env, batch, self.dtype)


class Compiled:
    """Row graphs run by generated code, each compiled on first use from its
    symbolic graph (a graph the generator does not write runs through the
    interpreter)."""

    def __init__(self, dtype, sizes: dict[str, int]):
        self.dtype = dtype
        self.sizes = sizes
        self._compiled: dict = {}

    def __call__(self, rows: RowGraph, env, batch: int, wanted: list[str]) -> dict:
        run = self.kernel(rows, wanted)
        if run is None:
            return evaluate(rows.graph, env, batch, self.dtype)
        return {**env, **run(env)}

    def kernel(self, rows: RowGraph, wanted: list[str]):
        """The compiled rows of `rows` that give `wanted`; None where the
        generator does not write the graph."""
        from .numba.emit_rows import Unsupported
        from .numba.rows import CompiledRows
        key = (id(rows.symbolic), tuple(wanted))
        if key not in self._compiled:
            try:
                run = CompiledRows(rows.symbolic, self.dtype, wanted, self.sizes)
            except Unsupported:
                run = None
            self._compiled[key] = (rows.symbolic, run)  # the graph kept alive: its id stays
        return self._compiled[key][1]


class HeadRun:
    """One head at bound sizes: its rows, its output and its loss."""

    def __init__(self, head: Head, sizes: dict[str, int], dtype, backend: str = "numpy"):
        self.run = (Compiled if backend == "numba" else Interpreted)(dtype, sizes)
        self.name = head.name
        self.per_step = head.per_step
        self.dtype = dtype
        self.sizes = sizes
        self._rows = RowGraph(specialise(head.graph, sizes), head.graph)
        self.graph = self._rows.graph
        self.reads = [v.name for v in self.graph.inputs]
        self.params = [p.name for p in self.graph.params]
        self.size = self.graph.outputs[0].size.value()
        self.default_loss = default_loss(self.graph)
        self._losses: dict[str, tuple] = {}

    def rows(self, lengths: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
        """(steps, examples) of the rows this head has."""
        if self.per_step:
            return np.nonzero(validate.valid_steps(T, lengths))
        b = np.nonzero(lengths > 0)[0]
        return lengths[b] - 1, b

    def _env(self, params, sequences, t, b) -> dict[str, np.ndarray]:
        env = {n: params[n] for n in self.params}
        env.update((n, sequences[n][t, b]) for n in self.reads)
        return env

    def forward(self, params, sequences, lengths, T: int, B: int) -> np.ndarray:
        """(T, B, size) for a per-step head, zero past each length; (B, size)
        for a last-step head, zero for an example of length 0."""
        t, b = self.rows(lengths, T)
        name = self.graph.outputs[0].name
        values = self.run(self._rows, self._env(params, sequences, t, b), len(t), [name])[name]
        full = np.zeros(((T,) if self.per_step else ()) + (B, self.size), self.dtype)
        if self.per_step:
            full[t, b] = values
        else:
            full[b] = values
        return full

    def graphs(self, loss: str) -> tuple[Graph, Graph]:
        """The loss graph of `loss` for this head and its derived backward."""
        g, bwd = self._loss_rows(loss)
        return g.graph, bwd.graph

    def _loss_rows(self, loss: str) -> tuple[RowGraph, RowGraph]:
        return self._loss_run(loss)[:2]

    def _loss_run(self, loss: str) -> tuple[RowGraph, RowGraph, list[str], list[str]]:
        """The loss's row graph, its backward, and what each run must give:
        the loss terms and the forward values the backward reads; the
        gradients of the head's inputs and parameters."""
        if loss not in self._losses:
            g = loss_graph(self._rows.symbolic, loss)
            bwd = derive_backward(g)
            made = {e.out.name for e in g.eqns}
            self._losses[loss] = (
                *(RowGraph(specialise(x, self.sizes), x) for x in (g, bwd)),
                [g.outputs[0].name] + [v.name for v in bwd.inputs if v.name in made],
                [f"d_{n}" for n in self.reads + self.params])
        return self._losses[loss]

    def loss(self, params, sequences, lengths, T, B, target, mask, loss, reduction) -> float:
        """The loss over this head's labelled rows, without its gradients."""
        return self._loss(params, sequences, lengths, T, B, target, mask, loss, reduction)[0]

    def loss_and_grad(self, params, sequences, lengths, T, B, target, mask, loss, reduction):
        """The loss over this head's labelled rows; the gradients of the
        sequences it reads (as (rows, values) to scatter) and of its params."""
        value, weight, env, (t, b), loss = self._loss(params, sequences, lengths, T, B, target,
                                                       mask, loss, reduction)
        g_rows, bwd_rows, _, backward_gives = self._loss_run(loss)
        terms = env[g_rows.graph.outputs[0].name]
        env[f"d_{g_rows.graph.outputs[0].name}"] = np.full(terms.shape, weight, self.dtype)
        env = self.run(bwd_rows, env, len(t), backward_gives)
        d_reads = {n: ((t, b), env[f"d_{n}"]) for n in self.reads}
        return value, d_reads, {n: env[f"d_{n}"] for n in self.params}

    def _loss(self, params, sequences, lengths, T, B, target, mask, loss, reduction):
        """(the loss, each term's weight in it, the loss graph's values, the
        labelled rows, the loss's name)."""
        t, b, dense, weight, loss = self.labelled(lengths, T, B, target, mask, loss, reduction)
        g_rows, _, forward_gives, _ = self._loss_run(loss)
        g = g_rows.graph
        env = self._env(params, sequences, t, b)
        env[g.inputs[-1].name] = dense
        # the terms and the values the backward reads, as one compiled run either way
        env = self.run(g_rows, env, len(t), forward_gives)
        terms = env[g.outputs[0].name]
        return float(terms.sum()) * weight, weight, env, (t, b), loss

    def labelled(self, lengths, T, B, target, mask, loss, reduction):
        """The labelled rows (steps, examples), their targets as dense rows,
        each loss term's weight by the reduction, and the loss's name."""
        loss = self.check_loss(loss)
        t, b = self.rows(lengths, T)
        dense, keep = self.targets(target, mask, t, b, T, B, loss)
        t, b = t[keep], b[keep]
        count = len(t) * (1 if loss == "cross_entropy" else self.size)
        weight = 1.0 / count if reduction == "mean" and count else 1.0
        return t, b, dense, weight, loss

    def compiled_loss(self, loss: str):
        """The compiled rows of `loss` and of its backward, as `loss_and_grad`
        runs them; None on the numpy backend or where one is not generated."""
        if not isinstance(self.run, Compiled):
            return None
        g_rows, bwd_rows, forward_gives, backward_gives = self._loss_run(loss)
        kernels = self.run.kernel(g_rows, forward_gives), self.run.kernel(bwd_rows, backward_gives)
        return None if None in kernels else kernels

    def check_loss(self, loss: str | None) -> str:
        if loss is None:
            return self.default_loss
        if loss not in LOSSES:
            raise SeqError(f"loss: unknown loss {loss!r} for output `{self.name}`; choose one "
                           f"of {', '.join(LOSSES)}")
        return loss

    def targets(self, target, mask, t, b, T, B, loss):
        """The target rows as dense values (class ids one-hot) and which of
        this head's rows are labelled: inside the lengths, not masked out,
        and, for class ids, not negative."""
        where = (T, B) if self.per_step else (B,)
        arg = f"targets[{self.name!r}]"
        a = np.asarray(target) if target is not None else None
        if a is None:
            raise SeqError(f"{arg}: no targets given for output `{self.name}`")
        index = (t, b) if self.per_step else (b,)
        keep = np.ones(len(t), bool)
        if mask is not None:
            m = np.asarray(mask)
            m = m.astype(np.int8) if m.dtype == bool else m
            m = validate.as_array(f"mask[{self.name!r}]", m, np.float64, where,
                                  "nonzero: the step counts")
            keep &= m[index] != 0
        if loss == "cross_entropy" and a.dtype.kind in "iu":
            ids = validate.as_array(arg, a, np.int64, where, "class ids; negative: unlabelled")
            ids = ids[index]
            keep &= ids >= 0
            bad = ids[keep] >= self.size
            if bad.any():
                raise SeqError(f"{arg}: class id {int(ids[keep][bad][0])} is out of range for "
                               f"output `{self.name}`, which has {self.size} classes")
            dense = np.zeros((int(keep.sum()), self.size), self.dtype)
            dense[np.arange(len(dense)), ids[keep]] = 1
            return dense, keep
        values = validate.as_array(arg, a, self.dtype, where + (self.size,),
                                   "targets per class")
        return np.ascontiguousarray(values[index][keep]), keep
