"""Keeping NumPy's BLAS threads out of the way of the compiled kernels'.

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
import os
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _numpy_blas():
    """A threadpoolctl controller of NumPy's own BLAS library, or None when
    threadpoolctl or that library cannot be found."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    home = os.path.dirname(np.__file__)
    own = (home + os.sep, home + ".libs" + os.sep)
    ctl = ThreadpoolController()
    mine = [lib.filepath for lib in ctl.lib_controllers
            if lib.user_api == "blas" and lib.filepath.startswith(own)]
    return ctl.select(filepath=mine) if mine else None


@contextlib.contextmanager
def numpy_blas_single_threaded():
    """NumPy's BLAS at one thread inside the block, as it was after it."""
    ctl = _numpy_blas()
    if ctl is None:
        yield
        return
    with ctl.limit(limits=1):
        yield
