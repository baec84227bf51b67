"""Token lookups and their gradients.

A layer reading token ids replaces each product of a weight's columns with
a one-hot vector by the column itself (ir/tokens.py): the columns are
gathered for every step, and their gradients summed back per token id.
These are the NumPy versions, which the numpy backend runs; the numba
backend runs compiled loops that give the same values (numba/lookup.py).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .validate import valid_steps


def gather_columns(columns: np.ndarray, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(T, B, n): the column `ids[t, b]` of `columns` (n, V) at each valid
    step, zero past each example's length."""
    valid = valid_steps(len(ids), lengths)
    out = columns.T[np.where(valid, ids, 0)]
    out[~valid] = 0
    return out


def add_by_id(into: np.ndarray, ids: np.ndarray, lengths: np.ndarray,
              values: np.ndarray) -> None:
    """`into[:, i] += values[t, b]` for every valid step whose id is i;
    `into` is (n, V), `values` (T, B, n)."""
    valid = valid_steps(len(ids), lengths)
    total = np.zeros((into.shape[1], values.shape[2]), values.dtype)
    np.add.at(total, ids[valid], values[valid])
    into += total.T


class Lookups(NamedTuple):
    gather: Callable  # gather_columns
    add: Callable  # add_by_id


def lookups(backend: str) -> Lookups:
    """The two functions as `backend` runs them."""
    if backend == "numba":
        from .numba import lookup as compiled
        return Lookups(compiled.gather_columns, compiled.add_by_id)
    return Lookups(gather_columns, add_by_id)
