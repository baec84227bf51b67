"""Starting values of parameters, as a spec's `param` declarations ask.

Each array is allocated once, in the cell's dtype, and filled a block at a
time from float64 draws: a float32 cell never holds a float64 copy of its
weights, and it gets the float64 cell's values rounded (one seed, one set of
numbers). Only `orthogonal` needs its whole matrix in float64 (for the QR).
"""
from __future__ import annotations

import numpy as np

BLOCK = 1 << 17  # values drawn at a time (1 MiB of float64)


def initial_value(init: tuple, shape: tuple[int, ...], rng: np.random.Generator,
                  dtype) -> np.ndarray:
    """One parameter's start: `init` is ("default",), ("const", v), ("normal", s),
    ("uniform", a), ("zeros",), ("ones",), ("glorot",) or ("orthogonal"[, gain])."""
    kind, *args = init
    out = np.empty(shape, dtype)
    if kind in ("const", "zeros", "ones"):
        out.fill(args[0] if kind == "const" else float(kind == "ones"))
    elif kind == "default" and len(shape) == 1:
        out.fill(0.0)
    elif kind == "orthogonal":
        out[...] = _orthogonal(shape, rng, args[0] if args else 1.0)
    else:
        _fill_in_blocks(out, _draw(kind, args, shape), rng)
    return out


def _draw(kind: str, args: list, shape: tuple[int, ...]):
    """A function (rng, n) -> n float64 values of the distribution `kind`."""
    if kind == "default":  # uniform in ±1/sqrt(fan-in)
        fan_in = np.sqrt(shape[-1])
        return lambda rng, n: rng.uniform(-1, 1, n) / fan_in
    if kind == "normal":
        return lambda rng, n: rng.normal(0, args[0], n)
    if kind == "uniform":
        return lambda rng, n: rng.uniform(-args[0], args[0], n)
    if kind == "glorot":
        limit = np.sqrt(6 / sum(shape)) if len(shape) == 2 else np.sqrt(3 / shape[0])
        return lambda rng, n: rng.uniform(-limit, limit, n)
    raise ValueError(f"unknown initialiser {kind}")


def _fill_in_blocks(out: np.ndarray, draw, rng) -> None:
    # The generator fills arrays in C order, so drawing block by block gives
    # the very numbers one draw of the whole shape would.
    flat = out.reshape(-1)
    for start in range(0, flat.size, BLOCK):
        stop = min(start + BLOCK, flat.size)
        flat[start:stop] = draw(rng, stop - start)


def _orthogonal(shape: tuple[int, ...], rng, gain: float) -> np.ndarray:
    """A (semi-)orthogonal matrix, or a random unit vector, times `gain`."""
    q, r = np.linalg.qr(rng.normal(size=(max(shape), min(shape)) if len(shape) == 2
                                   else (shape[0], 1)))
    q = q * np.sign(np.diag(r))
    return gain * (q if q.shape == shape else q.T).reshape(shape)


def temporary_bytes(init: tuple, shape: tuple[int, ...]) -> int:
    """Memory an initialiser uses beyond its result: a block of draws, or the
    float64 matrix, its QR factors and product for `orthogonal`."""
    if init[0] == "orthogonal":
        return 4 * 8 * int(np.prod(shape))
    return 2 * 8 * BLOCK
