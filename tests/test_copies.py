"""The kernels' block copies and transposes (copies.py): the same by name
(C functions, for C-contiguous arrays) as in place (for views), and a
kernel's calls go by name."""
import numpy as np
import pytest
from numba import njit

import seqdsl
from seqdsl.runtime.numba.copies import copy_block, copy_block_t, transpose_into
from seqdsl.spec import library_cells


@njit
def _copies(dst, src, add):
    copy_block(dst, src, 1, 2, 5, 7, 3, 4, add)


@njit
def _copies_t(dst, src, add):
    copy_block_t(dst, src, 1, 2, 5, 7, 3, 4, add)


def _want(dst, src, add, transposed):
    want = dst.copy()
    block = src[3:10, 4:9].T if transposed else src[3:8, 4:11]
    want[1:6, 2:9] = want[1:6, 2:9] + block if add else block
    return want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("view", [False, True])
def test_a_block_copy_is_the_block_by_name_and_in_place(dtype, add, transposed, view):
    rng = np.random.default_rng(7)
    dst = rng.standard_normal((9, 12)).astype(dtype)
    src = rng.standard_normal((12, 14)).astype(dtype)
    if view:  # a column slice: not C-contiguous, so the loops run in place
        dst = np.concatenate([dst, dst], axis=1)[:, :12]
        src = np.concatenate([src, src], axis=1)[:, 1:15]
        assert not dst.flags.c_contiguous and not src.flags.c_contiguous
    want = _want(dst, src, add, transposed)
    (_copies_t if transposed else _copies)(dst, src, add)
    assert np.array_equal(dst, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, cols", [(1, 5), (33, 517), (16, 1024)])
def test_a_transpose_by_name_and_of_a_view_is_the_transpose(dtype, rows, cols):
    src = np.arange(rows * cols, dtype=dtype).reshape(cols, rows)
    for view in (False, True):
        dst = np.full((rows, 2 * cols), np.nan, dtype)[:, :cols] if view \
            else np.full((rows, cols), np.nan, dtype)
        transpose_into(src, dst)
        np.testing.assert_array_equal(dst, src.T)


@njit
def _stacks(st, w, pt, p):
    copy_block(st, w, 0, 0, 4, 3, 0, 0, False)
    transpose_into(pt, p)


def test_compiled_code_calls_the_copies_by_name_without_their_loops():
    """A kernel's arrays are C-contiguous: its copies are calls of the C
    functions, whose loops Numba then neither links nor compiles again."""
    st, w = np.zeros((8, 3), np.float32), np.ones((4, 3), np.float32)
    pt, p = np.ones((6, 2), np.float32), np.zeros((2, 6), np.float32)
    _stacks(st, w, pt, p)
    assert (st[:4] == 1).all() and (p == 1).all()
    code = _stacks.inspect_llvm(_stacks.signatures[0])
    for name in ("copy_block", "transpose"):
        assert f"@seqdsl_{name}_float32(" in code
    assert "copy_block_here" not in code and "transpose_here" not in code


def test_a_cells_kernels_import_the_copies():
    c = seqdsl.instantiate(library_cells()["LSTM"], 8, 5, dtype=np.float32, backend="numba")
    assert "from seqdsl.runtime.numba.copies import copy_block, copy_block_t, transpose_into" \
        in c.source
