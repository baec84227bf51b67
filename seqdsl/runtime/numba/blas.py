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

from . import gemm, packing
from .gemm import kernel_blas, numpy_blas
from .shards import parallel_loops_hand_off_fast


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
def blas_threads(n: int, packed: bool = False):
    """The kernels' products on `n` threads inside the block, as they were
    after it: at one thread on BLIS where it is the faster (gemm.py); at
    more, each large product split over `n` of Numba's threads on BLIS,
    where BLIS is the faster and Numba's threads take up a loop fast
    (OpenBLAS then kept to one thread, so that its threads, which spin
    after a call, do not take the cores Numba's need), else on OpenBLAS's
    `n` threads. A cell's large step products, where packing.packing says so,
    run over weights packed once a run, on `n` of Numba's threads; in a run
    whose step products are so `packed`, its other large products are split
    over Numba's threads on BLIS too, so that OpenBLAS's threads, spinning
    after a product, do not take the cores the packed products need (on 2
    cores, the (32, 1024, 1024) LSTM forward: 345 ms packed beside OpenBLAS's
    2 threads, 304 with its products split on BLIS)."""
    blis = gemm.preferred()
    split = n > 1 and (blis or (packed and gemm.available())) \
        and parallel_loops_hand_off_fast()
    was = gemm.use_blis(blis and (n == 1 or split))
    parts = gemm.split_products(n if split else 1)
    packed_was = packing.packed_parts(n)
    try:
        with _threads(kernel_blas(), 1 if split else n):
            yield
    finally:
        packing.packed_parts(packed_was)
        gemm.split_products(parts)
        gemm.use_blis(was)


def numpy_blas_single_threaded():
    """NumPy's BLAS at one thread inside the block, as it was after it."""
    return _threads(numpy_blas(), 1)
