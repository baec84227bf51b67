"""A compiled cell on every core: its batch split into shards of rows.

Batch rows never meet inside a cell, so each shard runs the generated
forward, and later backward, over the whole sequence on a thread of its own
(the kernels hold no GIL), with one BLAS thread each: no thread waits for
another between steps. The shards' weight gradients are summed at the end.
Measured alternatives were slower: a parallel loop per step (Numba's
prange) costs more to fork and join a hundred times than it saves at
B = 32, and BLAS threads inside the step products leave every elementwise
loop, copy and tape write on one core.

A batch too small to give every thread enough rows is not sharded: its
step products run on several threads (each split over Numba's threads on
BLIS, or on OpenBLAS's threads: blas.blas_threads), the rest on the
calling thread. Nor
is a cell whose weights outgrow the caches: every shard would stream them
all each step. `Parallelism.plan` decides from measured thresholds, and
also how many BLAS threads an unsharded run's products may use (small
products on several threads wait for sleeping BLAS threads to wake).
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ...errors import SeqError

# Measured on float32 LSTMs, T = 100, forward+backward (benchmarks/shards.py).
# A shard's products are as efficient as the whole batch's only with enough
# rows (OpenBLAS packs the whole weight for every product, whatever its
# rows), and each shard reads all the weights every step: on 16 cores, 16
# shards of 16 rows at (B, X, H) = (256, 512, 512) took 537 ms against 1159
# unsharded, but 8 shards of 4 rows at (32, 256, 256) 76 ms against 70, and
# at (32, 1024, 1024) every split lost (1019 ms and more against 362). So a
# batch is sharded only when every thread gets a shard of MIN_SHARD_ROWS
# rows or more, and the shard enough product work to pay for its thread.
MIN_SHARD_ROWS = 16
MIN_SHARD_FLOPS = 5e7
# A network's step whose shards run in one parallel loop (emit_shards.py)
# hands them to threads in microseconds, not Python's 50 µs: on 2 cores, the
# CharLM's step (H=128, B=32, forward+backward+loss) in 2 shards took 866
# against 942–1172 µs whole at T = 8, and 261 against 285–322 µs at T = 1.
# Below 16 rows a shard lost at any T (each packs all the weights for every
# product): B=11, T=8, 693 against 531–707 µs.
MIN_LOOP_SHARD_FLOPS = 0.0
# Each shard streams all of the cell's weights through its core every step;
# one product on every BLAS thread streams each part of them once. Past the
# caches that decides it: on 2 cores (an AMD EPYC, 2 MiB of L2 a core,
# 32 MiB of L3), LSTM forward+backward, T = 100, float32, 2 shards against
# one unsharded run: 931 against 788 ms at (32, 1024, 1024) (32 MiB of
# weights), 993 against 877 ms at (64, 1024, 1024), while at 8 MiB
# ((64, 512, 512), (256, 512, 512)) the shards won, 376 against 392 ms and
# 1541 against 1610. On 16 cores every split lost at (32, 1024, 1024).
MAX_SHARD_WEIGHT_BYTES = 16 << 20
# An unsharded step whose products do less work than this runs them on one
# BLAS thread: on 2 cores, B=1, H=64 took 16 ms a forward with two (whole
# scheduler ticks waiting for the second thread) against 0.5 ms with one.
SMALL_STEP_FLOPS = 1 << 20

_THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_count(threads: int | None = None) -> int:
    """How many threads a compiled cell may use: `threads` when given, else
    NUMBA_NUM_THREADS, else OMP_NUM_THREADS, else every core this process may
    run on."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
                or threads < 1:
            raise SeqError(f"threads: expected a positive integer, given {threads!r}")
        return int(threads)
    for var in _THREAD_VARIABLES:
        text = os.environ.get(var, "").strip()
        if text:
            if not text.isdigit() or int(text) < 1:
                raise SeqError(f"{var}={text!r}: expected a positive integer number of threads")
            return int(text)
    return available_cores()


@dataclass(frozen=True)
class Shard:
    """What a shard's forward keeps for its backward."""

    rows: slice  # of the batch
    x: list[np.ndarray]  # its inputs, padding zeroed, in the kernels' order
    tape: list[np.ndarray]  # its forward's tapes


@dataclass(frozen=True)
class RunPlan:
    shards: int  # 1: the kernels run once, on the calling thread
    blas_threads: int  # for the products while the kernels run


@dataclass(frozen=True)
class Parallelism:
    """How a cell's runs use threads: at most `threads`; shards of at least
    `min_rows` rows and `min_flops` of product work each (`min_loop_flops`
    for shards in one parallel loop), and at least `min_shards` of them (by
    default one per thread), or none."""

    threads: int
    min_rows: int = MIN_SHARD_ROWS
    min_flops: float = MIN_SHARD_FLOPS
    min_loop_flops: float = MIN_LOOP_SHARD_FLOPS
    min_shards: int | None = None
    small_step_flops: float = SMALL_STEP_FLOPS
    max_weight_bytes: float = MAX_SHARD_WEIGHT_BYTES

    def plan(self, T: int, B: int, flops_per_row: float, weight_bytes: float = 0,
             in_one_loop: bool = False) -> RunPlan:
        """The plan of a run over T steps of B rows whose step products do
        `flops_per_row` floating-point operations per row with
        `weight_bytes` of weights; `in_one_loop` where its shards would run
        in one parallel loop (a network's step, emit_shards.py), not each
        handed to a thread from Python."""
        shards = min(self.threads, B // max(self.min_rows, 1))
        wanted = self.threads if self.min_shards is None else self.min_shards
        least = self.min_loop_flops if in_one_loop else self.min_flops
        if shards >= max(wanted, 2) and T * (B // shards) * flops_per_row >= least \
                and weight_bytes <= self.max_weight_bytes:
            return RunPlan(shards, 1)
        small = B * flops_per_row < self.small_step_flops
        return RunPlan(1, 1 if small else self.threads)


def shard_rows(B: int, shards: int) -> list[slice]:
    """`shards` runs of consecutive rows of a batch of B, as equal as can be."""
    bounds = [B * i // shards for i in range(shards + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


# Numba's threading layers whose threads take up a parallel loop within
# microseconds: measured on 2 cores, a loop of two iterations called after
# 70 µs of other work took 1.4 µs more than one iteration on OpenMP, 105 µs
# on the workqueue (whose threads sleep on a condition variable).
FAST_LAYERS = ("omp", "tbb")


@functools.lru_cache(maxsize=1)
def parallel_loops_hand_off_fast() -> bool:
    """Whether Numba's threads start a parallel loop fast enough for a
    network's step to run its shards in one (step.py) rather than on
    Python's threads. Starts Numba's threads, on the layer Numba picks
    (NUMBA_THREADING_LAYER, else the first of TBB, OpenMP and its own
    workqueue that loads), unless that variable names the workqueue."""
    import numba
    from numba.np.ufunc import parallel
    if numba.config.THREADING_LAYER == "workqueue":
        return False
    try:
        parallel._launch_threads()
        return numba.threading_layer() in FAST_LAYERS
    except (ValueError, ImportError, RuntimeError):
        return False


_pool_lock = threading.Lock()
_pool: list = [None, 0]  # the executor and its number of workers


def run_each(job, items: list) -> list:
    """`job(item)` for every item at once, the last on the calling thread;
    the results in order. An exception in any job is raised here."""
    with _pool_lock:
        if _pool[1] < len(items) - 1:
            if _pool[0] is not None:
                _pool[0].shutdown(wait=False)
            _pool[0] = ThreadPoolExecutor(len(items) - 1, thread_name_prefix="seqdsl-shard")
            _pool[1] = len(items) - 1
        pool = _pool[0]
    futures = [pool.submit(job, item) for item in items[:-1]]
    last = job(items[-1])
    return [f.result() for f in futures] + [last]


def sum_into_first(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The elementwise sum over parts (each a list of arrays of the same
    shapes), written into the first part; each thread sums a range of every
    array's elements, so the sum runs on as many threads as there are parts."""
    total = [a.reshape(-1) for a in parts[0]]
    rest = [[a.reshape(-1) for a in p] for p in parts[1:]]

    def add_range(i: int) -> None:
        for k, t in enumerate(total):
            lo, hi = t.size * i // len(parts), t.size * (i + 1) // len(parts)
            for p in rest:
                np.add(t[lo:hi], p[k][lo:hi], out=t[lo:hi])
    if rest:
        run_each(add_range, list(range(len(parts))))
    return parts[0]
