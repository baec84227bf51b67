"""The NumPy reference runtime: a cell run forward over whole sequences, and
backward through time by running its derived backward step in reverse.

Slow and plain on purpose: it is the ground truth faster backends are tested
against. Batches hold sequences of different lengths: at steps past an
example's length its state is left unchanged, its output is zero, and it gets
no gradient. Only the examples still running are computed at each step, so
padding can hold anything without turning gradients into NaN.

Sizes, shapes, initialisation and the checks of every argument live in
`instance`, shared with the other backends; they are re-exported here so the
names this module has always offered keep working.
"""
from __future__ import annotations

import numpy as np

from .instance import (CellInstance, Grads, Origin, Result, Trace, UnknownSizeWarning,
                       bind_sizes)
from .interp import evaluate

__all__ = ["Cell", "CellInstance", "Grads", "NumpyCell", "Origin", "Result", "Trace",
           "UnknownSizeWarning", "bind_sizes"]


class NumpyCell(CellInstance):
    """A cell type at fixed sizes and dtype, run by the NumPy interpreter one
    step at a time. Its tape keeps, per step, the rows still running and the
    values the backward step reads."""

    backend = "numpy"
    dtypes = None  # the interpreter runs in any float dtype

    def forward(self, params, x, lengths=None, state0=None) -> Result:
        """Run the cell over x (T, B, X); returns outputs, final states, trace."""
        p, xs, T, B, lengths, start = self._forward_args(params, x, lengths, state0)
        states = {n: v.copy() for n, v in start.items()}
        outputs = np.zeros((T, B, self.state_sizes[self.output]), self.dtype)
        tape = []
        for t in range(T):
            rows = np.nonzero(t < lengths)[0]
            env = dict(p)
            env.update((n, a[t, rows]) for n, a in xs.items())
            env.update((f"{n}<t-1>", s[rows]) for n, s in states.items())
            env = evaluate(self.forward_graph, env, len(rows), self.dtype)
            for n in states:
                states[n][rows] = env[f"{n}<t>"]
            outputs[t, rows] = env[f"{self.output}<t>"]
            tape.append((rows, {k: env[k] for k in self.saved}))
        return Result(outputs, states, Trace(xs, lengths, start, tape, self.origin))

    def backward(self, params, result: Result, d_outputs=None, d_final=None) -> Grads:
        """Backprop through time: gradients of a loss whose gradient is
        `d_outputs` (T, B, H) for the outputs and `d_final` for final states."""
        p, tr, T, B, d_outputs, d_final = self._backward_args(params, result, d_outputs, d_final)
        g_state = {n: g.copy() for n, g in d_final.items()}
        grads = {k: np.zeros(s, self.dtype) for k, s in self.param_shapes.items()}
        dx = {n: np.zeros_like(a) for n, a in tr.x.items()}
        for t in reversed(range(T)):
            rows, saved = tr.tape[t]
            env = dict(p)
            env.update(saved)
            for n in self.state_sizes:
                g = g_state[n][rows]
                env[f"d_{n}<t>"] = g + d_outputs[t, rows] if n == self.output else g
            env = evaluate(self.backward_graph, env, len(rows), self.dtype)
            for n in self.state_sizes:
                g_state[n][rows] = env[f"d_{n}<t-1>"]
            for n in dx:
                dx[n][t, rows] = env[f"d_{n}"]
            for k in grads:
                grads[k] += env[f"d_{k}"]
        return Grads(grads, dx, g_state)

    def _tape_holds(self, tape: list, T: int, B: int) -> bool:
        return len(tape) == T


Cell = NumpyCell  # the name spec.py, tools and tests have always imported
