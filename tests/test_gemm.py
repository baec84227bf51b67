"""The kernels' products on BLIS (gemm.py, library.py): the same products
as NumPy's in every layout a kernel hands them, only where BLIS is the
faster and on one thread, safe from several threads at once, and off where
asked. Each test sends them to BLIS wherever it is there, whether or not
it is the faster here (gemm.blis_preferred)."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from numba import njit

from seqdsl.runtime.numba import blas, gemm, library
from seqdsl.runtime.numba.gemm import every_product_on_blis
from seqdsl.runtime.numba.shards import parallel_loops_hand_off_fast

NEEDS_BLIS = pytest.mark.skipif(
    not gemm.available(), reason="BLIS's products need the blis package and a CPU with "
    + ", ".join(gemm.NEEDED_FEATURES) + " (they run on OpenBLAS here)")


@pytest.fixture(autouse=True)
def blis_preferred():
    with gemm.blis_preferred():
        yield

TOL = {np.float64: 1e-12, np.float32: 1e-5}
# whether a run on several threads splits its products over Numba's threads
SPLITS = parallel_loops_hand_off_fast()


def operands(m, k, n, dtype, layout, seed=0):
    """a (m×k) and b (k×n) in a layout a kernel hands the products."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    if layout == "column-major":
        return np.asfortranarray(a), np.asfortranarray(b)
    if layout == "transposed views":
        return np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T
    if layout == "rows of a larger array":
        big = rng.standard_normal((2 * m + 3, k + 5)).astype(dtype)
        big[3:3 + 2 * m:2, 2:2 + k] = a
        return big[3:3 + 2 * m:2, 2:2 + k], b
    return a, b


LAYOUTS = ["row-major", "column-major", "transposed views", "rows of a larger array"]
SHAPES = [(37, 41, 45), (1, 8, 33), (33, 8, 1), (1, 1, 1), (16, 128, 512), (5, 1, 7)]


# NumPy's product on rows of a larger array, compiled for the comparison, warns
@NEEDS_BLIS
@pytest.mark.filterwarnings("ignore::numba.NumbaPerformanceWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_products_on_blis_are_numpys_in_every_layout(m, k, n, layout, dtype):
    a, b = operands(m, k, n, dtype, layout)
    want = a.astype(np.float64) @ b.astype(np.float64)
    with every_product_on_blis(), blas.blas_threads(1):
        assert library.blis_takes(a, b)
        got = library.dot(a, b)
        into = np.full((m + 2, n), np.nan, dtype)  # a step product's block of rows
        library.dot_into(a, b, into[1:1 + m])
    assert got.dtype == dtype and got.shape == (m, n)
    scale = np.abs(want).max() * k
    for result in (got, into[1:1 + m]):
        assert np.abs(result - want).max() <= TOL[dtype] * scale
    assert np.isnan(into[0]).all() and np.isnan(into[-1]).all()  # only its rows written


@NEEDS_BLIS
@pytest.mark.parametrize("view", ["reversed rows", "strided rows and columns", "a broadcast row"])
def test_a_layout_blis_does_not_take_goes_to_numpy(view):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 36))
    a = {"reversed rows": a[::-1], "strided rows and columns": a[::2, ::2],
         "a broadcast row": np.broadcast_to(a[0], (40, 36))}[view]
    b = rng.standard_normal((a.shape[1], 40))
    with every_product_on_blis(), blas.blas_threads(1):
        assert not library.blis_takes(a, b)
        got = library.dot(a, b)
    np.testing.assert_allclose(got, a @ b, rtol=1e-12, atol=1e-12)


@NEEDS_BLIS
def test_blis_takes_a_product_only_on_one_thread_and_from_its_limits():
    a, b = operands(64, 128, 64, np.float32, "row-major")
    small_a, small_b = operands(16, 128, 28, np.float32, "row-major")
    narrow_a, narrow_b = operands(512, 128, 16, np.float32, "row-major")
    with blas.blas_threads(1):
        assert library.blis_takes(a, b)
        assert not library.blis_takes(small_a, small_b)  # under MIN_WORK
        assert not library.blis_takes(narrow_a, narrow_b)  # under MIN_COLUMNS
        with blas.blas_threads(2):
            # a product under SPLIT_WORK a part goes to BLIS on this thread
            # where a run's products are split over threads, else OpenBLAS's
            # threads take it
            assert library.blis_takes(a, b) == SPLITS
        assert library.blis_takes(a, b)
    was = gemm.use_blis(False)
    try:
        assert not library.blis_takes(a, b)
    finally:
        gemm.use_blis(was)


@NEEDS_BLIS
def test_a_heads_products_go_to_blis_whatever_the_threads_around_them():
    """So that a network's heads make the same products in its compiled step
    as layer by layer (library.dot_rows)."""
    a, b = operands(230, 128, 64, np.float32, "row-major")
    with blas.blas_threads(2):  # which restores both switches after it
        gemm.split_products(1)  # a run on OpenBLAS's threads
        gemm.use_blis(False)
        assert not library.blis_takes(a, b) and library.blis_takes(a, b, True)
        got = library.dot_rows(a, b)
    with blas.blas_threads(1):
        assert np.array_equal(got, library.dot(a, b))  # both on BLIS: to the bit


@NEEDS_BLIS
@pytest.mark.parametrize("product", [library.dot, library.dot_rows])
def test_a_matrix_times_a_vector_is_numpys(product):
    rng = np.random.default_rng(4)
    a, v = rng.standard_normal((40, 64)), rng.standard_normal(64)
    with every_product_on_blis(), blas.blas_threads(1):
        np.testing.assert_allclose(product(a, v), a @ v, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(product(v[:40], a), v[:40] @ a, rtol=1e-12, atol=1e-12)


@njit(nogil=True)
def _products(a, b, out, times):
    for _ in range(times):
        library.dot_into(a, b, out)


@NEEDS_BLIS
def test_products_on_blis_from_two_threads_at_once_are_each_threads_own():
    """Two threads' products share BLIS's pool of packing buffers: each gets
    its own result, the same to the bit as alone."""
    pairs = [operands(48, 96, 64, np.float32, "row-major", seed=s) for s in (2, 3)]
    with every_product_on_blis(), blas.blas_threads(1):
        alone = [library.dot(a, b) for a, b in pairs]
        outs = [np.empty_like(x) for x in alone]
        threads = [threading.Thread(target=_products, args=(a, b, out, 400))
                   for (a, b), out in zip(pairs, outs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for out, want in zip(outs, alone):
        assert np.array_equal(out, want)


_GROWING_POOL = """
import threading
import numpy as np
from numba import njit
from seqdsl.runtime.numba import gemm, library

@njit(nogil=True)
def products(a, b, out, times):
    for _ in range(times):
        library.dot_into(a, b, out)

rng = np.random.default_rng(0)
small = [rng.standard_normal((64, 64)).astype(np.float32) for _ in range(3)]
large = [rng.standard_normal((2048, 2048)).astype(np.float32) for _ in range(3)]
gemm.use_blis(True)
gemm.set_limits(1, 1, 1 << 40, 32)
products(small[0], small[1], small[2], 1)  # compiled before the race
busy = threading.Thread(target=products, args=(*small, 20000))
busy.start()
products(*large, 1)
busy.join()
assert np.allclose(large[2], large[0] @ large[1], rtol=1e-3, atol=1e-2)
print("ok")
"""


@NEEDS_BLIS
def test_a_large_product_beside_another_threads_small_ones_keeps_the_process():
    """A product whose packing blocks outgrow the ones BLIS's pools were
    sized for, while another thread's product holds one: BLIS 0.7 made the
    pool again to grow it and aborted the process (not all blocks checked
    back in). The pools are sized for seqdsl's context before any product."""
    done = subprocess.run([sys.executable, "-c", _GROWING_POOL], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split() == ["ok"], done.stderr[-2000:]


@NEEDS_BLIS
def test_seqdsl_blis_0_keeps_every_product_on_openblas():
    """... and loads the products' code this process compiled and cached,
    split product and all (its parallel loop names Numba's threading layer,
    which the process must have launched)."""
    library.dot(*operands(64, 64, 64, np.float32, "row-major"))  # compiled and cached
    code = ("from seqdsl.runtime.numba import blas, gemm, library\nimport numpy as np\n"
            "a = np.ones((64, 64), np.float32)\n"
            "with blas.blas_threads(1):\n"
            "    print(gemm.available(), library.blis_takes(a, a))\n"
            "with blas.blas_threads(2):\n"
            "    print(library.split_parts(a, a), library.dot(a, a)[0, 0])\n")
    env = {**os.environ, "SEQDSL_BLIS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["False", "False", "1", "64.0"]


BIG = (256, 512, 64)  # 2^23 multiply-adds: 4 parts of SPLIT_WORK


@NEEDS_BLIS
@pytest.mark.skipif(not SPLITS, reason="Numba's threading layer here is its workqueue: runs "
                    "on several threads keep OpenBLAS's (shards.parallel_loops_hand_off_fast)")
def test_a_large_product_on_several_threads_is_split_over_them():
    a, b = operands(*BIG, np.float32, "row-major")
    small_a, small_b = operands(64, 128, 64, np.float32, "row-major")
    narrow_a, narrow_b = operands(*BIG[:2], 16, np.float32, "row-major")
    with blas.blas_threads(1):
        assert library.split_parts(a, b) == 1
    with blas.blas_threads(2):
        assert library.split_parts(a, b) == 2
        assert library.split_parts(small_a, small_b) == 1  # under SPLIT_WORK a part
        assert library.split_parts(narrow_a, narrow_b) == 1  # under MIN_COLUMNS
    with blas.blas_threads(3):
        assert library.split_parts(a, b) == 3
    with blas.blas_threads(16):
        assert library.split_parts(a, b) == 4  # each part SPLIT_WORK at least
        wide_a, wide_b = operands(64, BIG[1], 256, np.float32, "row-major")  # 4 parts of work
        assert library.split_parts(wide_a, wide_b) == 2  # each part 32 rows at least
    was = gemm.split_products(1)  # a run on OpenBLAS's threads
    try:
        assert library.split_parts(a, b) == 1
    finally:
        gemm.split_products(was)


@NEEDS_BLIS
@pytest.mark.skipif(not SPLITS, reason="no product is split where Numba's threading layer is "
                    "its workqueue")
@pytest.mark.filterwarnings("ignore::numba.NumbaPerformanceWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("m, k, n", [BIG, (37, 41, 45), (5, 1, 7)])
def test_a_split_product_is_the_whole_product_to_the_bit(m, k, n, layout, dtype):
    """Each block of rows is made by the same tiles over k as the whole."""
    a, b = operands(m, k, n, dtype, layout)
    with every_product_on_blis():
        with blas.blas_threads(1):
            whole = library.dot(a, b)
        for threads in (2, 3):
            with blas.blas_threads(threads):
                assert library.split_parts(a, b) == min(threads, m)
                got = library.dot(a, b)
                into = np.full((m + 2, n), np.nan, dtype)  # a step product's block of rows
                library.dot_into(a, b, into[1:1 + m])
            assert np.array_equal(got, whole) and np.array_equal(into[1:1 + m], whole)
            assert np.isnan(into[0]).all() and np.isnan(into[-1]).all()


@pytest.mark.parametrize("setting, there, cores, want", [
    ("", True, ["Haswell"], True),  # OpenBLAS pinned to AVX2 kernels
    ("", True, ["SkylakeX"], False),
    ("", True, ["Haswell", "Cooperlake"], False),  # any OpenBLAS the kernels call
    ("", True, [], True),  # no OpenBLAS found: BLIS, where it is there
    ("1", True, ["SkylakeX"], True),
    ("0", True, ["Haswell"], False),
    ("", False, ["Haswell"], False),
    ("1", False, [], False),
])
def test_blis_is_preferred_only_where_openblas_runs_no_avx512_kernels(setting, there,
                                                                      cores, want):
    assert gemm.blis_is_preferred(setting, there, cores) == want


def _in_a_new_process(**variables) -> tuple[bool, bool, bool, list[str], str]:
    """In a process with these environment variables (and neither
    SEQDSL_BLIS nor OPENBLAS_CORETYPE otherwise): whether BLIS is there,
    whether it is preferred, whether a one-thread run's product goes to it,
    the kernels' OpenBLAS kernels, and what it wrote to stderr."""
    code = ("from seqdsl.runtime.numba import blas, gemm, library\nimport numpy as np\n"
            "a = np.ones((64, 64), np.float32)\n"
            "with blas.blas_threads(1):\n"
            "    on = library.blis_takes(a, a, True)\n"
            "print(gemm.available(), gemm.preferred(), on, *[lib.architecture for lib in "
            "gemm.kernel_blas() if lib.internal_api == 'openblas'])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SEQDSL_BLIS", "OPENBLAS_CORETYPE")}
    done = subprocess.run([sys.executable, "-c", code], env={**env, **variables},
                          capture_output=True, text=True, check=True)
    out = done.stdout.split()
    return out[0] == "True", out[1] == "True", out[2] == "True", out[3:], done.stderr


@pytest.mark.parametrize("variables", [{}, {"OPENBLAS_CORETYPE": "Haswell"},
                                       {"SEQDSL_BLIS": "1"}, {"SEQDSL_BLIS": "0"}],
                         ids=["by default", "OpenBLAS pinned to Haswell", "SEQDSL_BLIS=1",
                              "SEQDSL_BLIS=0"])
def test_a_process_sends_its_products_to_blis_as_the_rule_says(variables):
    there, preferred, on, cores, said = _in_a_new_process(**variables)
    assert preferred == gemm.blis_is_preferred(variables.get("SEQDSL_BLIS", ""), there, cores)
    assert "SEQDSL_BLIS" not in said
    assert on == preferred  # a run on one thread follows it
    if "OPENBLAS_CORETYPE" in variables:
        assert cores and all(c == "Haswell" for c in cores)
        assert preferred == gemm.available()


def test_products_stay_off_blis_where_it_is_not_preferred():
    a, b = operands(64, 128, 64, np.float32, "row-major")
    with gemm.blis_preferred(False), blas.blas_threads(1):
        assert not library.blis_takes(a, b) and not library.blis_takes(a, b, True)
        with blas.blas_threads(2):
            assert library.split_parts(a, b) == 1 and library.split_parts(*operands(
                *BIG, np.float32, "row-major")) == 1


@pytest.mark.parametrize("setting", ["yes", "2", "on"])
def test_a_seqdsl_blis_neither_0_nor_1_warns_and_is_ignored(setting):
    for cores in (["Haswell"], ["SkylakeX"]):
        with pytest.warns(RuntimeWarning, match=f"SEQDSL_BLIS='{setting}': expected 0"):
            got = gemm.blis_is_preferred(setting, True, cores)
        assert got == gemm.blis_is_preferred("", True, cores)


def test_a_process_with_seqdsl_blis_neither_0_nor_1_warns_once_and_keeps_the_rule():
    there, preferred, on, cores, said = _in_a_new_process(SEQDSL_BLIS="yes")
    assert said.count("SEQDSL_BLIS='yes': expected 0") == 1, said
    assert preferred == on == gemm.blis_is_preferred("", there, cores)
