"""Finite-difference checks of backprop-through-time.

A random scalar loss of the outputs and final states, random weights, a
random batch of variable-length sequences and a random initial state; every
gradient the runtime derives is compared with central differences.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .reference import Cell

TOLERANCE = 1e-6


@dataclass
class Problem:
    params: dict[str, np.ndarray]
    x: dict[str, np.ndarray]
    lengths: np.ndarray
    state0: dict[str, np.ndarray]
    w_out: np.ndarray  # loss = Σ w_out · outputs + Σ_s w_final[s] · final[s]
    w_final: dict[str, np.ndarray]


def random_problem(cell: Cell, steps: int = 5, batch: int = 3, seed: int = 0,
                   scale: float = 0.5) -> Problem:
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0, scale, s) for k, s in cell.param_shapes.items()}
    # Keep log() and division well away from zero on the inputs a cell may feed them.
    x = {n: rng.uniform(0.5, 1.5, (steps, batch, s)) * rng.choice([-1, 1], (steps, batch, s))
         for n, s in cell.input_sizes.items()}
    lengths = rng.integers(0, steps + 1, batch)
    lengths[0] = steps
    state0 = {n: rng.normal(0, scale, (batch, s)) for n, s in cell.state_sizes.items()}
    w_out = rng.normal(size=(steps, batch, cell.state_sizes[cell.output]))
    w_final = {n: rng.normal(size=(batch, s)) for n, s in cell.state_sizes.items()}
    return Problem(params, x, lengths, state0, w_out, w_final)


def loss(cell: Cell, pb: Problem, params=None, x=None, state0=None) -> float:
    r = cell.forward(params or pb.params, x or pb.x, pb.lengths, state0 or pb.state0)
    return float((r.outputs * pb.w_out).sum()
                 + sum((r.final[n] * w).sum() for n, w in pb.w_final.items()))


def relative_error(a: np.ndarray, b: np.ndarray, floor: float = 1e-3) -> float:
    """‖a - b‖∞ / max(‖a‖∞, ‖b‖∞, floor): relative, except that a gradient
    that is (nearly) zero is held to an absolute error, since central
    differences of a flat loss are rounding noise. Entries that are equal
    (the same infinity, or NaN in both) agree; any other non-finite entry is
    an infinite error, never a NaN that compares as small."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    if not (np.isfinite(a[differ]).all() and np.isfinite(b[differ]).all()):
        return float("inf")
    worst = np.abs(a[differ] - b[differ]).max(initial=0)
    if worst == 0:
        return 0.0
    scale = max(np.abs(v[np.isfinite(v)]).max(initial=0) for v in (a, b))
    return float(worst / (max(scale, floor) if floor == floor else scale))


def gradcheck(cell: Cell, pb: Problem, eps: float = 1e-6) -> dict[str, float]:
    """The worst relative error of each derived gradient against central
    differences: one entry per parameter, per input (`x`) and per initial
    state (`a<0>`)."""
    r = cell.forward(pb.params, pb.x, pb.lengths, pb.state0)
    g = cell.backward(pb.params, r, pb.w_out, pb.w_final)

    def numeric(arrays: dict[str, np.ndarray], name: str, call) -> np.ndarray:
        out = np.zeros_like(arrays[name])
        for i in np.ndindex(out.shape):
            moved = {**arrays, name: arrays[name].copy()}
            moved[name][i] += eps
            up = call(moved)
            moved[name][i] -= 2 * eps
            out[i] = (up - call(moved)) / (2 * eps)
        return out

    errors = {}
    for k in pb.params:
        errors[k] = relative_error(g.params[k], numeric(pb.params, k, lambda p: loss(cell, pb, params=p)))
    for n in pb.x:
        errors[n] = relative_error(g.inputs[n], numeric(pb.x, n, lambda x: loss(cell, pb, x=x)))
    for n in pb.state0:
        errors[f"{n}<0>"] = relative_error(
            g.state0[n], numeric(pb.state0, n, lambda s: loss(cell, pb, state0=s)))
    return errors
