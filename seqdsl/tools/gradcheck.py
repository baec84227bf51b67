"""Finite-difference checks of backprop-through-time.

A random scalar loss of the outputs and final states, random weights, a
random batch of variable-length sequences and a random initial state; every
gradient the runtime derives is compared with central differences.

What it promises: each entry of the result is the worst relative error
(`relative_error`) of one gradient against central differences taken in the
cell's own dtype over a step h = cbrt(machine epsilon) · max(1, |value|)
(6e-6 in float64, 5e-3 in float32) and over 2h, extrapolated to a step of
zero (`derivative`): rounding stays near that of plain central differences
at h, and the truncation error, which made steep cells fail with plain
ones, cancels to order h⁴. The two runs are subtracted entry by entry of the
outputs and final states before the loss weighs them, so rounding scales with
the entries the step moves, not with the whole loss (a state that grows to
1e5 but does not depend on a weight adds nothing to that weight's
difference). A gradient or a loss that is not finite anywhere, in the derived
gradient or in the finite differences, is an infinite error: the check
fails, whatever the tolerance. `tolerance(dtype)` is the error a correct
gradient stays within: 1e-6 in float64 (the shipped cells measure up to 2e-9,
400 random generated cells up to 2e-7); 1e-2 in float32, where the loss
itself carries rounding noise of about 1e-7 relative (the shipped cells
measure up to 6e-4). A float32 check of a cell with kinks (`relu`) may fail
where the 1e-2 step crosses one: check such a cell in float64.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..runtime.instance import CellInstance

TOLERANCE = 1e-6  # float64; see tolerance() for other dtypes
_TOLERANCES = {np.dtype(np.float64): TOLERANCE, np.dtype(np.float32): 1e-2}


def tolerance(dtype) -> float:
    """The largest relative error a correct gradient shows in `dtype`."""
    return _TOLERANCES[np.dtype(dtype)]


def step(dtype) -> float:
    """The relative finite-difference step for `dtype`: cbrt(eps), where
    rounding (eps / step) and the truncation of plain central differences
    (step²) balance; `derivative` also takes twice this step."""
    return float(np.cbrt(np.finfo(dtype).eps))


def derivative(moved_by: Callable[[float, float], float], value: float, dtype,
               rel_step: float | None = None) -> float:
    """The derivative at `value` of a function f whose differences
    `moved_by(up, down)` = f(up) - f(down) gives, moved in `dtype`: central
    differences over a step h = rel_step · max(1, |value|) and over 2h,
    extrapolated to a step of zero (Richardson), so that their h² truncation
    terms cancel. A cell near saturation (a steep tanh, a layernorm of a
    near-constant vector) has third derivatives large enough that plain
    central differences at h erred by 1e-6 to 4e-6; extrapolated, 1e-10.
    Rounding grows by about half (the 2h difference adds its share), and the
    h⁴ truncation left is negligible at this h. The steps are those actually
    taken, after rounding to the dtype."""
    dtype = np.dtype(dtype)
    h = (step(dtype) if rel_step is None else rel_step) * max(1.0, abs(value))
    slopes, widths = [], []
    for s in (2 * h, h):
        up, down = dtype.type(value + s), dtype.type(value - s)
        width = float(up) - float(down)
        slopes.append(moved_by(up, down) / width)
        widths.append(width * width)
    (wide, narrow), (w_wide, w_narrow) = slopes, widths
    # D(s) = f' + c·s² + O(s⁴): eliminate c between the two steps taken
    return (w_wide * narrow - w_narrow * wide) / (w_wide - w_narrow)


@dataclass
class Problem:
    params: dict[str, np.ndarray]
    x: dict[str, np.ndarray]
    lengths: np.ndarray
    state0: dict[str, np.ndarray]
    w_out: np.ndarray  # loss = Σ w_out · outputs + Σ_s w_final[s] · final[s]
    w_final: dict[str, np.ndarray]


def random_problem(cell: CellInstance, steps: int = 5, batch: int = 3, seed: int = 0,
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


def loss(cell: CellInstance, pb: Problem, params=None, x=None, state0=None) -> float:
    return _weighted(pb, _run(cell, pb, params, x, state0))


def _run(cell: CellInstance, pb: Problem, params=None, x=None, state0=None) -> list[np.ndarray]:
    """The outputs and the final states the loss weighs, in that order."""
    r = cell.forward(params or pb.params, x or pb.x, pb.lengths, state0 or pb.state0)
    return [r.outputs, *(r.final[n] for n in pb.w_final)]


def _weighted(pb: Problem, arrays: list[np.ndarray]) -> float:
    """Σ w_out · outputs + Σ_s w_final[s] · final[s], of `_run`'s arrays (or
    of differences of them)."""
    weights = [pb.w_out, *pb.w_final.values()]
    return float(sum((np.asarray(a, np.float64) * w).sum() for a, w in zip(arrays, weights)))


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


def gradcheck(cell: CellInstance, pb: Problem, eps: float | None = None) -> dict[str, float]:
    """The worst relative error of each derived gradient against central
    differences: one entry per parameter, per input (`x`) and per initial
    state (`a<0>`); infinite where either side is not finite. `eps` is the
    relative step (default: `step(cell.dtype)`)."""
    dtype = np.dtype(cell.dtype)
    typed = lambda arrays: {k: np.array(v, dtype) for k, v in arrays.items()}  # noqa: E731
    params, x, state0 = typed(pb.params), typed(pb.x), typed(pb.state0)
    # The loss weights as the cell's backward sees them (in its dtype), so
    # that both sides differentiate the same loss.
    exact = lambda a: np.asarray(a, dtype).astype(np.float64)  # noqa: E731
    pb = replace(pb, w_out=exact(pb.w_out), w_final={n: exact(w) for n, w in pb.w_final.items()})
    r = cell.forward(params, x, pb.lengths, state0)
    g = cell.backward(params, r, pb.w_out, pb.w_final)

    def numeric(arrays: dict[str, np.ndarray], name: str, call) -> np.ndarray:
        out = np.zeros(arrays[name].shape)
        for i in np.ndindex(out.shape):
            moved = {**arrays, name: arrays[name].copy()}

            def moved_by(up, down, i=i, moved=moved):
                moved[name][i] = up
                ups = call(moved)
                moved[name][i] = down
                downs = call(moved)
                # Entry by entry, before weighing: an entry the step leaves
                # alone (a large state that does not depend on this value)
                # differs by exactly zero, so adds no rounding to the loss's
                # difference.
                return _weighted(pb, [np.asarray(u, np.float64) - d for u, d in zip(ups, downs)])

            out[i] = derivative(moved_by, float(arrays[name][i]), dtype, eps)
        return out

    finite_loss = np.isfinite(loss(cell, pb))

    def compare(analytic, name, arrays, call) -> float:
        if not finite_loss:
            return float("inf")
        return _finite_error(analytic, numeric(arrays, name, call))

    errors = {}
    for k in params:
        errors[k] = compare(g.params[k], k, params, lambda p: _run(cell, pb, params=p))
    for n in x:
        errors[n] = compare(g.inputs[n], n, x, lambda v: _run(cell, pb, x=v))
    for n in state0:
        errors[f"{n}<0>"] = compare(g.state0[n], n, state0, lambda s: _run(cell, pb, state0=s))
    return errors


def _finite_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """`relative_error`, except that any non-finite value on either side
    fails: a NaN gradient that central differences also give NaN is not a
    match but a broken cell (or loss)."""
    if not (np.isfinite(analytic).all() and np.isfinite(numeric).all()):
        return float("inf")
    return relative_error(analytic, numeric)
