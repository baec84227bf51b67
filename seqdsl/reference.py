"""The NumPy reference runtime: a cell run forward over whole sequences, and
backward through time by running its derived backward step in reverse.

Slow and plain on purpose: it is the ground truth faster backends are tested
against. Batches hold sequences of different lengths: at steps past an
example's length its state is left unchanged, its output is zero, and it gets
no gradient. Only the examples still running are computed at each step, so
padding can hold anything without turning gradients into NaN.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .autodiff import backward as derive_backward
from .autodiff import saved_values
from .errors import SeqError
from .interp import evaluate, specialise
from .ir import Graph
from .lower import CellType


@dataclass
class Trace:
    """What a forward run keeps for the backward run."""

    x: dict[str, np.ndarray]
    lengths: np.ndarray
    state0: dict[str, np.ndarray]
    tape: list[tuple[np.ndarray, dict[str, np.ndarray]]]  # (active rows, saved values)


@dataclass
class Result:
    outputs: np.ndarray  # (T, B, size of the output state); zero past each length
    final: dict[str, np.ndarray]  # each state at each example's last step
    trace: Trace


@dataclass
class Grads:
    params: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]  # (T, B, n) per input
    state0: dict[str, np.ndarray]  # (B, n) per state


def bind_sizes(ct: CellType, hidden: int | None = None, input: int | None = None,
               sizes: dict[str, int] | None = None) -> dict[str, int]:
    """Numbers for the cell's size symbols: `hidden` binds the states' symbol,
    `input` the input's, `sizes` any by name. Constraints the equations put on
    the input size are checked here, naming the sizes in conflict."""
    bound = dict(sizes or {})
    state_syms = [s for _, sz in ct.states for s in sz.symbols]
    in_syms = [s for _, sz in ct.inputs for s in sz.symbols]
    if hidden is not None:
        for s in state_syms:
            bound.setdefault(s, hidden)
    if input is not None:
        for s in in_syms:
            bound.setdefault(s, input)
    for c in ct.constraints:  # X = H: derive X when it was not given
        value = c.value.subst(bound)
        if c.symbol not in bound and value.is_const():
            bound[c.symbol] = value.value()
    missing = [s for s in ct.symbols if s not in bound]
    if missing:
        raise SeqError(f"cell {ct.name}: no size given for {', '.join(missing)}",
                       hint="pass --hidden N and --input N (or --size NAME=N)")
    for s in ct.symbols:
        if not isinstance(bound[s], int) or bound[s] < 1:
            raise SeqError(f"cell {ct.name}: size {s} must be a positive integer, not {bound[s]}")
    for c in ct.constraints:
        want = c.value.subst(bound).value()
        if bound[c.symbol] != want:
            given = ", ".join(f"{s} = {bound[s]}" for s in sorted(c.value.symbols))
            raise SeqError(
                f"cell {ct.name} cannot take input size {c.symbol} = {bound[c.symbol]}: its "
                f"equations require {c.symbol} = {c.value}, which is {want} here ({given})",
                c.loc, source=ct.source, hint=f"instantiate it with input size {want}")
    return bound


class Cell:
    """A cell type at fixed sizes and dtype, run by the NumPy interpreter."""

    def __init__(self, ct: CellType, sizes: dict[str, int], dtype=np.float64):
        self.type = ct
        self.sizes = sizes
        self.dtype = np.dtype(dtype)
        self.forward_graph: Graph = specialise(ct.graph, sizes)
        self.backward_graph: Graph = derive_backward(self.forward_graph)
        self.saved = [v.name for v in saved_values(self.forward_graph, self.backward_graph)]
        self.input_sizes = {n: s.subst(sizes).value() for n, s in ct.inputs}
        self.state_sizes = {n: s.subst(sizes).value() for n, s in ct.states}
        self.param_shapes = {v.name: tuple(d.value() for d in v.shape)
                             for v in self.forward_graph.params}

    @property
    def output(self) -> str:
        return self.type.output

    def init_params(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Parameters as the spec asks: `param` initialisers, else weights
        uniform in ±1/sqrt(fan-in) and vectors at zero."""
        rng = np.random.default_rng(seed)
        params = {}
        for name, shape in self.param_shapes.items():
            kind, *args = self.type.inits.get(name, ("default",))
            fan_in = shape[-1]
            if kind == "default":
                value = (rng.uniform(-1, 1, shape) / np.sqrt(fan_in) if len(shape) == 2
                         else np.zeros(shape))
            elif kind == "const":
                value = np.full(shape, args[0])
            elif kind == "normal":
                value = rng.normal(0, args[0], shape)
            elif kind == "uniform":
                value = rng.uniform(-args[0], args[0], shape)
            elif kind in ("zeros", "ones"):
                value = np.full(shape, 0.0 if kind == "zeros" else 1.0)
            elif kind == "glorot":
                limit = np.sqrt(6 / sum(shape)) if len(shape) == 2 else np.sqrt(3 / shape[0])
                value = rng.uniform(-limit, limit, shape)
            elif kind == "orthogonal":
                q, r = np.linalg.qr(rng.normal(size=(max(shape), min(shape)) if len(shape) == 2
                                               else (shape[0], 1)))
                q = q * np.sign(np.diag(r))
                value = (args[0] if args else 1.0) * (q if q.shape == shape else q.T).reshape(shape)
            else:
                raise ValueError(kind)
            params[name] = value.astype(self.dtype)
        return params

    # ---- running ----------------------------------------------------------------

    def _inputs(self, x) -> dict[str, np.ndarray]:
        names = list(self.input_sizes)
        xs = x if isinstance(x, dict) else {names[0]: x}
        if set(xs) != set(names):
            raise ValueError(f"cell {self.type.name} takes inputs {names}, got {sorted(xs)}")
        out = {}
        for n in names:
            a = np.asarray(xs[n], self.dtype)
            if a.ndim != 3 or a.shape[2] != self.input_sizes[n]:
                raise ValueError(f"input {n} must have shape (T, B, {self.input_sizes[n]}), "
                                 f"not {a.shape}")
            out[n] = a
        return out

    def _batch(self, x, lengths, state0):
        """Checked inputs, (T, B), lengths (int64) and initial states (zeros
        where not given) of one call."""
        xs = self._inputs(x)
        T, B = next(iter(xs.values())).shape[:2]
        lengths = np.full(B, T, np.int64) if lengths is None else np.asarray(lengths, np.int64)
        if lengths.shape != (B,) or lengths.min(initial=0) < 0 or lengths.max(initial=0) > T:
            raise ValueError(f"lengths must be {B} integers in 0..{T}")
        if state0 is not None and not isinstance(state0, dict):
            state0 = {next(iter(self.state_sizes)): state0}
        states = {n: np.array((state0 or {}).get(n, np.zeros((B, h))), self.dtype)
                  for n, h in self.state_sizes.items()}
        return xs, T, B, lengths, states

    def forward(self, params, x, lengths=None, state0=None) -> Result:
        """Run the cell over x (T, B, X); returns outputs, final states, trace."""
        xs, T, B, lengths, states = self._batch(x, lengths, state0)
        start = {n: v.copy() for n, v in states.items()}
        p = {k: np.asarray(v, self.dtype) for k, v in params.items()}
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
        return Result(outputs, states, Trace(xs, lengths, start, tape))

    def backward(self, params, result: Result, d_outputs=None, d_final=None) -> Grads:
        """Backprop through time: gradients of a loss whose gradient is
        `d_outputs` (T, B, H) for the outputs and `d_final` for final states."""
        tr = result.trace
        T, B = result.outputs.shape[:2]
        p = {k: np.asarray(v, self.dtype) for k, v in params.items()}
        g_state = {n: np.zeros((B, h), self.dtype) for n, h in self.state_sizes.items()}
        if d_final is not None:
            if not isinstance(d_final, dict):
                d_final = {next(iter(self.state_sizes)): d_final}
            for n, g in d_final.items():
                g_state[n] += g
        grads = {k: np.zeros(s, self.dtype) for k, s in self.param_shapes.items()}
        dx = {n: np.zeros_like(a) for n, a in tr.x.items()}
        for t in reversed(range(T)):
            rows, saved = tr.tape[t]
            env = dict(p)
            env.update(saved)
            for n in self.state_sizes:
                g = g_state[n][rows]
                if n == self.output and d_outputs is not None:
                    g = g + d_outputs[t, rows]
                env[f"d_{n}<t>"] = g
            env = evaluate(self.backward_graph, env, len(rows), self.dtype)
            for n in self.state_sizes:
                g_state[n][rows] = env[f"d_{n}<t-1>"]
            for n in dx:
                dx[n][t, rows] = env[f"d_{n}"]
            for k in grads:
                grads[k] += env[f"d_{k}"]
        return Grads(grads, dx, g_state)

    def value_and_grad(self, params, x, loss, lengths=None, state0=None):
        """Run forward, then backward through time for a loss of the outputs:
        `loss(outputs, final)` returns `(value, d_outputs, d_final)` (its
        gradients; `d_final` may be None). Returns `(value, Grads)`."""
        r = self.forward(params, x, lengths, state0)
        value, d_outputs, d_final = loss(r.outputs, r.final)
        return value, self.backward(params, r, d_outputs, d_final)
