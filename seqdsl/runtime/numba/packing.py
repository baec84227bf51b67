"""Where a cell's step products run over packed weights (packed.py): the
rule (`packing`: where the CPU has AVX-512, SEQDSL_PACKED aside), the
threads of a run's packed products, and the limits from which a product
qualifies, in the settings compiled code reads (gemm.py holds them, with
the measurements behind PACKED_MIN_WORK and the other limits).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from functools import lru_cache

import llvmlite.binding as llvm

from .gemm import (PACK_SPLIT_VALUES, PACKED_MAX_COLUMNS, PACKED_MIN_COLUMNS, PACKED_MIN_STEPS,
                   PACKED_MIN_WORK, PACKED_SPLIT_WORK, _SETTINGS, _replace_limits)


_PACKING: list = [None]  # packing_forced's choice inside its block


def _packing_setting() -> str:
    """SEQDSL_PACKED as set ("" where it is not)."""
    return os.environ.get("SEQDSL_PACKED", "").strip()


def packing_is_on(setting: str, avx512: bool) -> bool:
    """Whether a cell's large step products run over packed weights: as
    SEQDSL_PACKED (`setting`) says ("0": never, "1": on any CPU), by default
    where the CPU has AVX-512 (`avx512`), the width packed.py's kernel is
    written for. Any other setting warns and is ignored."""
    if setting not in ("", "0", "1"):
        warnings.warn(f"SEQDSL_PACKED={setting!r}: expected 0 (step products never over "
                      "packed weights) or 1 (on any CPU); ignored: they are packed where the "
                      "CPU has AVX-512", RuntimeWarning, stacklevel=2)
    if setting == "0":
        return False
    return setting == "1" or avx512


@lru_cache(maxsize=1)
def _packing_here() -> bool:
    return packing_is_on(_packing_setting(), bool(llvm.get_host_cpu_features().get("avx512f")))


def packing() -> bool:
    """Whether a cell's large step products run over packed weights here
    (packing_is_on)."""
    return _PACKING[0] if _PACKING[0] is not None else _packing_here()


def packed_parts(threads: int) -> int:
    """A run's step products, where packed, on `threads` of Numba's threads
    (0: none packed; none either where `packing` says no); returns the
    number it replaced."""
    was = int(_SETTINGS[7])
    _SETTINGS[7] = max(int(threads), 0) if packing() else 0
    return was


def set_packed_limits(min_work: int = PACKED_MIN_WORK, min_columns: int = PACKED_MIN_COLUMNS,
                      max_columns: int = PACKED_MAX_COLUMNS,
                      min_steps: int = PACKED_MIN_STEPS,
                      split_work: int = PACKED_SPLIT_WORK,
                      pack_split: int = PACK_SPLIT_VALUES) -> tuple[int, ...]:
    """The smallest step product run over packed weights (multiply-adds,
    columns of the result, steps of the run), the most columns, the least
    multiply-adds of each thread's part of a split one, and the least
    values of a weight each thread packs; returns the limits they
    replaced."""
    return _replace_limits((8, 9, 10, 11, 12, 13), (min_work, min_columns, max_columns,
                                                    min_steps, split_work, pack_split))


@contextlib.contextmanager
def packing_forced(on: bool):
    """Inside the block, runs begun in it pack their step products where
    they qualify (`on`), or never, whatever `packing` says here: for tests
    and benchmarks."""
    was = _PACKING[0]
    _PACKING[0] = bool(on)
    try:
        yield
    finally:
        _PACKING[0] = was


@contextlib.contextmanager
def every_step_product_packed(on: bool = True):
    """Inside the block, every step product of a run begun in it runs over
    packed weights, however small, on any CPU (with `on`; else nothing
    changes): for tests, whose problems are all below the limits."""
    if not on:
        yield
        return
    limits = set_packed_limits(1, 1, 1 << 30, 1, 1, 1)
    try:
        with packing_forced(True):
            yield
    finally:
        set_packed_limits(*limits)
