"""The vanishing/exploding-gradient diagnostic: how much of a loss at the
last step reaches each earlier state.

What is measured. A cell at its default initialisation (`init_params(seed)`)
runs over T steps of standard-normal inputs, batch B, from zero states:
s<t> = cell(s<t-1>, x<t>) for t = 1..T. The loss reads the last step only,

    L = Σ over the batch of r · h<T>

where h is the cell's output state (`cell.output`: `a` for the LSTM) and r a
random unit vector drawn once per seed, so every example's ∂L/∂h<T> is r
itself, of norm 1, in no favoured direction (a plain sum of h<T> would
always push along (1, ..., 1)). For every t = 1..T the diagnostic reports
‖∂L/∂h<t>‖: the gradient of L with respect to the output state at step t,
the other states (an LSTM's `c<t>`) held fixed, i.e. exactly what backward
returns as `state0`'s gradient when the cell is run from step t with the
states at t as `state0`.

It is made one step at a time, as backprop through time makes it: T
one-step forward runs keep each step's trace, then T - 1 one-step backward
runs carry the gradient of every state back from step T to step 1
(`d_final` in, `state0`'s gradient out). That is T forward and T backward
cell-steps per seed, the same work as one training step; tests check it
against finite differences and against the direct definition above.

Averaging. The norm is taken per example, averaged (arithmetic mean) over
the batch, then over seeds by the geometric mean: the numbers span tens of
orders of magnitude, and a geometric mean is the mean of their logarithms,
the scale the plot shows, where an arithmetic mean would report the
largest seed alone. Seed k draws the parameters (`init_params(k)`), the
inputs and r.

`scale` multiplies the recurrent weights by S: the columns of each matrix
product (`W[a<t-1>, x<t>]`, `Waa a<t-1>`) that multiply a previous state, or
a value computed from previous states without passing through another matrix
product (the GRU's `Γr * c` in `Wc[Γr * c, x]`). `recurrent_columns` finds
them in the cell's step graph: entry by entry, a value is recurrent when it
is a previous state's entry, or an elementwise op, a copy, a slice or a
concatenation of recurrent entries; a feature-wise op (softmax) makes its
whole result recurrent if any argument entry is; a matrix product's result
is not (its recurrent columns are the ones scaled). Bias and peephole
vectors (`pu * c`) are never scaled: they are not weight matrices.

`clip_norm` shows per-step clipping of the carried gradient: after each
backward step, the gradient of all the states at that step (jointly, per
example) is scaled down to norm C when it is larger, before it is carried
further back; the reported ‖∂L/∂h<t>‖ are the clipped ones, so the curve is
bounded by C. (Clipping the whole parameter gradient, as `seqdsl train
--clip-norm` does, rescales every step's contribution by one factor and
would not change the curve's shape.)
"""
from __future__ import annotations

import numpy as np

from ..errors import SeqError
from ..ir.ops import FEATURE_WISE, OPS, PRODUCT

DEFAULT_STEPS = 100
DEFAULT_HIDDEN = 64
DEFAULT_INPUT = 32
DEFAULT_BATCH = 16
DEFAULT_SEEDS = 3


def gradient_norms(cell_type, steps: int = DEFAULT_STEPS, hidden: int | None = DEFAULT_HIDDEN,
                   input: int | None = None, sizes: dict[str, int] | None = None,
                   batch: int = DEFAULT_BATCH, seeds: int = DEFAULT_SEEDS, scale: float = 1.0,
                   clip_norm: float | None = None, backend: str = "numpy",
                   state: str | None = None) -> np.ndarray:
    """‖∂L/∂h<t>‖ for t = 1..T (entry t - 1), as the module docstring
    defines it, for a cell type (`spec.cell("GRU")`) at float64. `input`
    None is 32, unless the cell's equations fix the input size."""
    from ..spec import instantiate
    cell = instantiate(cell_type, hidden=hidden, input=default_input(cell_type, input),
                       sizes=sizes, dtype=np.float64, backend=backend)
    return measure(cell, steps, batch, seeds, scale, clip_norm, state)


def default_input(cell_type, input: int | None) -> int | None:
    """32, unless given or the cell's equations fix the input size (X = H)."""
    if input is None and not cell_type.constraints:
        return DEFAULT_INPUT
    return input


def measure(cell, steps: int = DEFAULT_STEPS, batch: int = DEFAULT_BATCH,
            seeds: int = DEFAULT_SEEDS, scale: float = 1.0, clip_norm: float | None = None,
            state: str | None = None, params: dict | None = None) -> np.ndarray:
    """`gradient_norms` for a cell instance: (T,) norms, mean over the batch,
    geometric mean over seeds 0..seeds-1. With `params` (a trained cell's),
    those instead of each seed's initialisation."""
    for name, value in (("steps", steps), ("batch", batch), ("seeds", seeds)):
        if int(value) != value or value < 1:
            raise SeqError(f"{name}: expected a positive whole number, given {value!r}")
    if not (np.isfinite(scale) and scale > 0):
        raise SeqError(f"scale: expected a number > 0, given {scale!r}")
    if clip_norm is not None and not (np.isfinite(clip_norm) and clip_norm > 0):
        raise SeqError(f"clip_norm: expected a number > 0, given {clip_norm!r}")
    state = cell.output if state is None else state
    if state not in cell.state_sizes:
        raise SeqError(f"state: cell {cell.type.name} has no state `{state}`",
                       hint="states: " + ", ".join(cell.state_sizes))
    columns = recurrent_columns(cell)
    logs = []
    for seed in range(seeds):
        own, x, r = random_problem(cell, steps, batch, seed)
        own = scale_columns(own if params is None else params, columns, scale)
        g = state_gradients(cell, own, x, r, clip_norm)[state]
        with np.errstate(divide="ignore"):  # an underflow to 0 is a norm of 0, log -inf
            logs.append(np.log(np.linalg.norm(g, axis=-1).mean(axis=1)))
    return np.exp(np.mean(logs, axis=0))


def trained_cell(directory, layer: str | None = None):
    """The cell of layer `layer` (default: the first) of the network trained
    in `directory` (its `best` checkpoint, else `last`), in float64 on the
    numpy backend, with its trained parameters: (cell, params)."""
    from pathlib import Path

    from ..train.run import load_model
    name = "best" if (Path(directory) / "best.json").exists() else "last"
    model = load_model(directory, name, "numpy")
    layers = {prefix: c for lay in model.net.layers.values() for prefix, c in lay.cells()}
    if layer is None:
        layer = next(iter(layers))
    if layer not in layers:
        raise SeqError(f"{directory}: network {model.net.type.name} has no layer `{layer}`",
                       hint="layers: " + ", ".join(layers))
    c = layers[layer]
    from ..runtime.backends import cell_instance
    cell = cell_instance(c.cell.type, c.cell.sizes, np.float64, "numpy")
    return cell, {n: np.asarray(model.params[k], np.float64) for k, n in c.names.items()}


def random_problem(cell, steps: int, batch: int, seed: int):
    """Seed `seed`'s default parameters, standard-normal inputs (T, B, n)
    by input name, and the loss's unit vector r."""
    rng = np.random.default_rng(seed)
    x = {n: rng.standard_normal((steps, batch, s)) for n, s in cell.input_sizes.items()}
    r = rng.standard_normal(cell.state_sizes[cell.output])
    return cell.init_params(seed), x, r / np.linalg.norm(r)


def state_gradients(cell, params, x, r, clip_norm: float | None = None) -> dict[str, np.ndarray]:
    """∂L/∂s<t> for every state s and t = 1..T, (T, B, size) by state name
    (entry t - 1), for L = Σ_b r · h<T> from zero initial states; with
    `clip_norm`, as clipped per step (module docstring)."""
    x = {n: np.asarray(v, cell.dtype) for n, v in x.items()}
    T, B = next(iter(x.values())).shape[:2]
    results, states = [], None
    for t in range(T):  # keep each step's trace, for its backward
        results.append(cell.forward(params, {n: v[t:t + 1] for n, v in x.items()}, state0=states))
        states = results[-1].final
    carried = {n: np.zeros((B, size), cell.dtype) for n, size in cell.state_sizes.items()}
    carried[cell.output] = np.broadcast_to(np.asarray(r, cell.dtype), (B, len(r))).copy()
    out = {n: np.empty((T, B, size), cell.dtype) for n, size in cell.state_sizes.items()}
    for t in range(T - 1, -1, -1):  # results[t] made s<t+1> from s<t>
        if clip_norm is not None:
            carried = clip(carried, clip_norm)
        for n, g in carried.items():
            out[n][t] = g
        if t:
            carried = cell.backward(params, results[t], d_final=carried).state0
    return out


def clip(grads: dict[str, np.ndarray], max_norm: float) -> dict[str, np.ndarray]:
    """Each example's gradient of all states together, scaled down to norm
    `max_norm` where it is larger."""
    norm = np.sqrt(sum((g * g).sum(axis=-1) for g in grads.values()))
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(norm > max_norm, max_norm / norm, 1.0)[:, None]
    return {n: g * factor for n, g in grads.items()}


def scale_columns(params: dict[str, np.ndarray], columns: dict[str, np.ndarray],
                  scale: float) -> dict[str, np.ndarray]:
    """A copy of `params` with the `columns` (bool masks by weight name) of
    each weight multiplied by `scale`."""
    if scale == 1:
        return params
    out = dict(params)
    for name, mask in columns.items():
        out[name] = params[name].copy()
        out[name][:, mask] *= scale
    return out


def recurrent_columns(cell) -> dict[str, np.ndarray]:
    """The columns of each weight matrix that multiply a previous state (or a
    value made from previous states without another matrix product), as a
    bool mask over its columns; weights without such columns are left out."""
    graph = cell.forward_graph
    prev = {f"{n}<t-1>" for n in cell.state_sizes}
    masks = {v.name: np.full(v.size.value(), v.name in prev) for v in graph.inputs}
    found: dict[str, np.ndarray] = {}
    for e in graph.eqns:
        args = [masks.get(a.name) if hasattr(a, "name") else None for a in e.args]
        n = e.out.size.value() if len(e.out.shape) == 1 else 0
        family = OPS[e.op].family
        if e.op == "linear":
            w, parts = e.args[0].name, args[1:]
            cols = np.concatenate([m if m is not None else np.zeros(p.size.value(), bool)
                                   for m, p in zip(parts, e.args[1:])])
            found[w] = found.get(w, np.zeros_like(cols)) | cols
            masks[e.out.name] = np.zeros(n, bool)
        elif family == PRODUCT:  # no other product is in a forward graph; say so if one comes
            raise NotImplementedError(f"recurrent_columns: op {e.op}")
        else:
            masks[e.out.name] = _entry_mask(e, args, n, family == FEATURE_WISE)
    return {w: m for w, m in found.items() if m.any()}


def _entry_mask(e, args, n: int, mixes: bool) -> np.ndarray:
    """Which entries of `e`'s result are recurrent, from its arguments'
    (None: a literal or a parameter, never recurrent)."""
    if e.op == "concat":
        return np.concatenate([m if m is not None else np.zeros(a.size.value(), bool)
                               for m, a in zip(args, e.args)])
    if e.op == "slice":
        lo, hi = (c.value() for c in e.attr("cols"))
        return args[0][lo:hi].copy() if args[0] is not None else np.zeros(n, bool)
    out = np.zeros(n, bool)
    for m in args:
        if m is not None:
            out |= m.any() if mixes or m.shape != out.shape else m
    return out
