"""The two BLAS thread pools: NumPy's kept out of the way of the compiled
kernels', and the kernels' own set to what a run's plan says (shards.py).

Compiled kernels call BLAS through SciPy's OpenBLAS (Numba binds `np.dot`
to it), NumPy's `@` through NumPy's own copy: two thread pools. An OpenBLAS
thread spins for a while after its work is done, so when a network runs its
heads and losses with NumPy between its cells' kernels, each pool's spinning
threads take the cores the other pool needs. Measured on 2 cores (Tagger,
B=32, T=50, float32, forward+backward): 52–60 ms with both pools at 2
threads, 16 ms with NumPy's at 1 while the network runs; a head's product
(1,300×64 by 64×10) took 1.4 ms instead of 0.03 ms after a kernel had run.
The heads' products are small, so one thread loses nothing there.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from functools import lru_cache

import numpy as np

from . import gemm
from .shards import parallel_loops_hand_off_fast


@lru_cache(maxsize=1)
def _blas_libraries():
    """The BLAS libraries threadpoolctl finds: NumPy's own, and every other
    (SciPy's, to which Numba binds the kernels' `np.dot`); None where
    threadpoolctl is missing."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    importlib.import_module("scipy.linalg.cython_blas")  # loaded, so threadpoolctl sees it
    home = os.path.dirname(np.__file__)
    own = (home + os.sep, home + ".libs" + os.sep)
    blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    return ([lib for lib in blas if lib.filepath.startswith(own)],
            [lib for lib in blas if not lib.filepath.startswith(own)])


def numpy_blas() -> list:
    """Controllers of NumPy's own BLAS (empty where threadpoolctl finds none)."""
    found = _blas_libraries()
    return found[0] if found else []


def kernel_blas() -> list:
    """Controllers of the BLAS the compiled kernels call (empty where
    threadpoolctl finds none)."""
    found = _blas_libraries()
    return found[1] if found else []


@contextlib.contextmanager
def _threads(libs: list, n: int):
    """`libs` at `n` threads inside the block, as they were after it (each
    change is one library call: cheap enough for every run)."""
    changed = []
    for lib in libs:
        was = lib.get_num_threads()
        if was != n:
            lib.set_num_threads(n)
            changed.append((lib, was))
    try:
        yield
    finally:
        for lib, was in changed:
            lib.set_num_threads(was)


@contextlib.contextmanager
def blas_threads(n: int):
    """The kernels' products on `n` threads inside the block, as they were
    after it: at one thread on BLIS where it is there (gemm.py); at more,
    each large product split over `n` of Numba's threads on BLIS, where
    BLIS is there and Numba's threads take up a loop fast (OpenBLAS then
    kept to one thread, so that its threads, which spin after a call, do
    not take the cores Numba's need), else on OpenBLAS's `n` threads."""
    split = n > 1 and gemm.available() and parallel_loops_hand_off_fast()
    was = gemm.use_blis(n == 1 or split)
    parts = gemm.split_products(n if split else 1)
    try:
        with _threads(kernel_blas(), 1 if split else n):
            yield
    finally:
        gemm.split_products(parts)
        gemm.use_blis(was)


def numpy_blas_single_threaded():
    """NumPy's BLAS at one thread inside the block, as it was after it."""
    return _threads(numpy_blas(), 1)
