"""Step products over packed weights (packed.py): the product against
NumPy's at every kind of edge (rows not a whole panel, columns not a whole
vector, one row, one column, k = 1), on one thread and split over two; the
packing's layout; which runs pack (gemm.py's limits and SEQDSL_PACKED). The
kernels that call them are compared with the reference in test_jit.py, on
paths that pack every step product."""
import os
import subprocess
import sys

import numpy as np
import pytest

from numba import njit

from seqdsl.runtime.numba import gemm, packing
from seqdsl.runtime.numba.packed import (PANEL_ROWS, _parts, pack_rows, packed_for_steps,
                                         packed_product, packed_work, packs)


@njit
def product(panels, x, out):
    """A step product as a kernel makes it: the scratch made, then used."""
    packed_product(panels, x, out, packed_work(panels, x.shape[0]))

TOL = {np.float64: 1e-13, np.float32: 1e-5}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (12, 5, 16), (13, 7, 17), (37, 64, 33),
                                     (24, 3, 8), (50, 40, 2), (11, 1, 40),
                                     # narrow: panels in pairs, a last one alone, a last
                                     # one past m, on each thread's run of panels
                                     (23, 9, 3), (36, 6, 4), (49, 17, 1), (60, 8, 4),
                                     (121, 33, 2), (12, 2, 3), (5, 4, 4)])
def test_packed_product_is_the_product(m, k, n, threads, dtype):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    w = rng.standard_normal((m, k)).astype(dtype)
    x = rng.standard_normal((n, k)).astype(dtype)
    guarded = np.full(n * m + PANEL_ROWS, np.nan, dtype)  # what follows out stays as it was
    out = guarded[:n * m].reshape(n, m)
    with packing.every_step_product_packed():  # split over the threads, however small
        was = packing.packed_parts(threads)
        try:
            product(pack_rows(w), x, out)
        finally:
            packing.packed_parts(was)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    assert np.abs(out - want).max() <= TOL[dtype] * max(1.0, np.abs(want).max())
    assert np.isnan(guarded[n * m:]).all()


def test_the_product_takes_only_c_contiguous_arrays_of_one_dtype():
    from numba.core.errors import TypingError
    panels = pack_rows(np.ones((4, 3)))
    with pytest.raises(TypingError, match="C-contiguous arrays of one float dtype"):
        product(panels, np.ones((3, 2)).T, np.ones((2, 4)))  # x transposed: not C
    with pytest.raises(TypingError, match="C-contiguous arrays of one float dtype"):
        product(panels, np.ones((2, 3), np.float32), np.ones((2, 4)))


def test_panels_hold_rows_side_by_side():
    w = np.arange(26 * 3, dtype=np.float64).reshape(26, 3)
    panels = pack_rows(w)
    assert panels.shape == (3, 3, PANEL_ROWS)
    for p in range(3):
        for r in range(PANEL_ROWS):
            row = p * PANEL_ROWS + r
            want = w[row] if row < 26 else np.zeros(3)
            assert (panels[p, :, r] == want).all()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("m, k", [(26, 3), (37, 64), (12, 5), (1, 1)])
def test_packing_on_threads_and_from_a_transpose_makes_the_same_panels(m, k, threads):
    """The panels a run packs, split over its threads (however small, in
    every_step_product_packed) or not, from w or from its transpose's rows,
    are pack_rows(w)'s: every row in place, zeros past m, whatever the
    memory held before."""
    w = np.random.default_rng(m * k).standard_normal((m, k))
    want = pack_rows(w)
    for _ in range(3):  # new panels land in freed memory that held other values
        np.full(want.size * 4, np.nan)
        with packing.every_step_product_packed():
            was = packing.packed_parts(threads)
            try:
                got = packed_for_steps(w, 4, 100, False)
                from_transpose = packed_for_steps(np.ascontiguousarray(w.T), 4, 100, True)
            finally:
                packing.packed_parts(was)
        assert np.array_equal(got, want) and np.array_equal(from_transpose, want)


def test_runs_pack_within_the_limits_only():
    w = np.ones((4096, 1024), np.float32)
    with packing.packing_forced(True):
        was = packing.packed_parts(2)
        try:
            assert packed_for_steps(w, 32, 100, False).shape == (342, 1024, PANEL_ROWS)
            # its transpose: 1024 rows of 4096
            assert packed_for_steps(w, 32, 100, True).shape == (86, 4096, PANEL_ROWS)
            assert packs(4096, 1024, 32, 100, 2)
            for columns, steps in ((1, 100), (1024, 100), (32, 4)):  # too few or many
                assert not packs(4096, 1024, columns, steps, 2)
                assert packed_for_steps(w, columns, steps, False).shape[0] == 0
            assert not packs(128, 32, 32, 100, 1)  # too little work
            assert not packs(512, 128, 8, 100, 2)  # too little to split over threads
            assert packs(512, 128, 8, 100, 1)  # but enough for one
            assert packs(1024, 256, 4, 100, 2)  # two parts of PACKED_SPLIT_WORK
        finally:
            packing.packed_parts(was)
    with packing.packing_forced(False):
        was = packing.packed_parts(2)  # a run where packing is off packs nothing
        try:
            assert packed_for_steps(w, 32, 100, False).shape[0] == 0
        finally:
            packing.packed_parts(was)


@pytest.mark.parametrize("count, k, columns, threads, parts", [
    (342, 1024, 32, 2, 2),  # the (32, 1024, 1024) LSTM's step: 2^27 multiply-adds
    (342, 1024, 32, 512, 256),  # each part at least PACKED_SPLIT_WORK
    (86, 256, 16, 2, 2),  # (1024, 256, 16): 2^22
    (86, 256, 4, 2, 2),  # (1024, 256, 4), the (4, 256, 256) LSTM's step: 2^20
    (43, 128, 8, 2, 1),  # (512, 128, 8): 2^19, too little to split
    (1, 4096, 128, 4, 1),  # one panel: one part
])
def test_a_packed_product_is_split_only_into_parts_of_enough_work(count, k, columns, threads,
                                                                 parts):
    assert gemm.PACKED_SPLIT_WORK == 1 << 19
    assert _parts(count, k, columns, threads) == parts


def test_forcing_packs_every_step_product_then_restores_the_limits():
    limits = packing.set_packed_limits()
    packing.set_packed_limits(*limits)
    with packing.every_step_product_packed():
        assert packs(1, 1, 1, 1, 1) and packs(1, 1, 2, 1, 2)
    assert packing.set_packed_limits() == limits == (
        gemm.PACKED_MIN_WORK, gemm.PACKED_MIN_COLUMNS,
        gemm.PACKED_MAX_COLUMNS, gemm.PACKED_MIN_STEPS, gemm.PACKED_SPLIT_WORK,
        gemm.PACK_SPLIT_VALUES)


def test_the_rule_follows_seqdsl_packed():
    assert packing.packing_is_on("", True) and not packing.packing_is_on("", False)
    assert packing.packing_is_on("1", False) and not packing.packing_is_on("0", True)
    with pytest.warns(RuntimeWarning, match="SEQDSL_PACKED='2'"):
        assert packing.packing_is_on("2", True)


@pytest.mark.parametrize("value, want", [("0", "False"), ("1", "True")])
def test_a_new_process_reads_seqdsl_packed(value, want):
    code = "from seqdsl.runtime.numba import packing; print(packing.packing())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "SEQDSL_PACKED": value}, check=True)
    assert out.stdout.split() == [want]


def test_a_cell_knows_the_weights_its_step_products_apply():
    import seqdsl
    from seqdsl.spec import library_cells
    cell = seqdsl.instantiate(library_cells()["LSTM"], 5, 3, backend="numba")
    assert cell._step_weights == [(20, 5)]  # the four gates' blocks for a<t-1>, stacked
