"""The kernels' matrix products: on BLIS's AVX-512 kernels where the CPU has
them and SciPy's OpenBLAS, which the kernels' `np.dot` calls, runs kernels
without AVX-512; else on that OpenBLAS.

OpenBLAS picks its kernels for the CPU when it loads, and the environment
can pin them (OPENBLAS_CORETYPE=Haswell: AVX2 only, half the speed of its
AVX-512 ones on an AMD EPYC, Zen 5). The `blis` package (a dependency on
x86-64; BSD) carries BLIS 0.7 with its Skylake-X (AVX-512) kernels, but
BLIS's own CPU check calls newer AVX-512 CPUs (AMD's Zen 4 and 5)
"generic" and runs its slow C kernels there. So seqdsl builds BLIS's
Skylake-X context itself wherever the CPU has the AVX-512 subsets those
kernels use, checks one product of each layout against NumPy's, and passes
that context to every product. Measured on one thread (float32, GFLOP/s):
on a Zen 5 with OpenBLAS pinned to Haswell, an LSTM step's
(32×256)·(256×1024) 137 against 100, (64×512)·(512×2048) 180 against 113,
1024³ 225 against 124; but on a Zen 4 (whose AVX-512 units are 256 bits
wide) against OpenBLAS's own SkylakeX kernels, µs, (m, k, n) =
(4096, 1024, 32) 5065 against 4008, (2048, 512, 32) 862 against 743,
1024³ level (21.3 against 21.6 ms). So BLIS takes the products only where
OpenBLAS's kernels lack AVX-512 (`preferred`; SEQDSL_BLIS=1 sends them to
BLIS wherever it is there, SEQDSL_BLIS=0 nowhere).

This BLIS runs on one thread, so it takes the products of every run whose
products are on one BLAS thread (every shard of a sharded run, small runs,
a network's heads), from MIN_COLUMNS and MIN_WORK on. A run planned on n
BLAS threads (`blas.blas_threads(n)`, n > 1) splits each product of at
least SPLIT_WORK a part into up to n blocks of rows, each on BLIS on one of
Numba's threads (`split_products`), where Numba's threads take up a
parallel loop within microseconds (OpenMP, TBB: shards.py); else it keeps
OpenBLAS's threads. (Split over Numba's threads on OpenBLAS's own AVX-512
kernels instead, a part each on one thread, the Zen 4's products were no
faster than on OpenBLAS's two threads: (4096, 1024, 32) 2007 against 2110
µs, (2048, 512, 32) 454 against 392.)
Compiled code (library.py) reads the choice, and finds BLIS's functions
and context, through symbols registered here by name, so cached code holds
no address of the process that compiled it.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import warnings
from functools import lru_cache

import llvmlite.binding as llvm
import numpy as np

# the AVX-512 subsets BLIS's Skylake-X kernels use, as LLVM names them
NEEDED_FEATURES = ("avx512f", "avx512dq", "avx512bw", "avx512vl")
_CONTEXT_BYTES = 1 << 16  # far above BLIS's cntx_t; only BLIS writes it

# Where BLIS's products are the faster, measured on one thread (AMD EPYC,
# Zen 5, float32, µs, BLIS against OpenBLAS's Haswell kernels): from 32
# columns of the result on, (m, k, n) = (1024, 256, 32) 118 against 161,
# (2048, 512, 128) 1387 against 2454; at 16 columns (a step's product for a
# shard of 16 rows, made transposed) BLIS's 32×12 tiles are half empty:
# (1024, 256, 16) 124 against 89; and below about 2^18 multiply-adds its
# fixed cost of some 4 µs a call shows: (16, 128, 28) 4.8 against 2.7.
MIN_COLUMNS = 32
MIN_WORK = 1 << 18

# The least work (multiply-adds) of each part of a product split over
# threads. Measured on 2 cores (µs; split in 2 on BLIS, against OpenBLAS's
# Haswell kernels on its 2 threads): (m, k, n) = (4096, 1024, 32), the
# (32, 1024, 1024) LSTM's step, 914–1023 against 1398–1655; (2048, 512,
# 32) 220–360 against 312–320; (4096, 1024, 1600) 30–31 ms against 55–56;
# (1024, 256, 32), 2^22.0 in all, 82–91 against 78: about level, so each
# part does at least 2^21.
SPLIT_WORK = 1 << 21
SPLIT_ROWS = 32  # each part a whole number of tiles of BLIS's float32 kernel (32×12)

# A cell's step products run over its weights packed once a sequence
# (packed.py) where the CPU has AVX-512. Measured on a Zen 4 (float32, µs,
# on 2 threads, each with the step's transposes, against OpenBLAS's own
# AVX-512 kernels on its 2 threads), (m, k, n) = (4096, 1024, 32), the
# (32, 1024, 1024) LSTM's step: 1774 against 2789; (2048, 512, 32) 395
# against 602; (2048, 512, 64) 1003 against 1184; (4096, 1024, 128) 6972
# against 8542. Level at (4096, 1024, 256); far slower for a column or
# two, which are padded to half a vector ((4096, 1024, 1): 813 against 133
# padded to a whole one). With 4 to 8 columns, in a half-vector tile, on one
# thread: (1024, 256, 8) 55 against 88 µs (79 padded to a whole vector),
# (512, 128, 4) 11 against 19, (2048, 512, 4) 188 against 291; with 2,
# (1024, 256, 2) 43 against 50; the (8, 256, 256) LSTM 19.8 against 22.1 ms.
# Packing costs about two step products ((4096, 1024): 5.3 ms), so a run of
# few steps keeps OpenBLAS. On one thread (a shard's, or a small run's) it
# wins from 2^18 multiply-adds, in 100-step loops against OpenBLAS on one
# thread: (256, 64, 16) 6.1 against 8.0 µs, (512, 128, 16) 24 against 34,
# (1024, 256, 16) 80 against 110; level at (256, 64, 8), 2^17. In whole
# runs (LSTM forward+backward, T = 100, 2 shards of 16 rows): (B, X, H) =
# (32, 64, 128) 15.1 against 16.1 ms, (32, 256, 256) 63 against 71.
# On several threads a packed product split into parts of less than 2^20
# lost to OpenBLAS's own threads, and one left whole on one thread lost too
# ((1024, 256, 8) alone 79–83 µs, on OpenBLAS's 2 threads 62), so on
# several threads only a product of two such parts or more is packed. In
# whole runs on 2 threads (LSTM forward+backward, ms; parts of at least
# 2^22, 2^21, 2^20): (16, 256, 256) 41.8, 35.7, 35.7; (16, 192, 192) 25.2,
# 25.5, 23.1; (8, 128, 128), at 2^20 whole, 6.4 in all three. On a Zen 4,
# medians of 3 processes a limit, alternating (parts of at least 2^20,
# 2^19, 2^18): (4, 256, 256), whose step's product of 2^20 is split only
# from 2^19 on, 16.1, 11.7, 11.7; (4, 512, 512) 45.5, 44.7, 53.1; (8, 128,
# 128) 5.6, 5.7, 8.1; (4, 128, 128) 3.8, 3.7, 4.5; (16, 128, 128) 13.9,
# 13.1, 12.7; (16, 256, 256) 37.9, 37.7, 38.1.
# From 2 columns to 4 the narrow kernel takes the product (tiles.py), 2.5 to
# 4 times faster than OpenBLAS; a single column stays on OpenBLAS's gemv.
# Whole runs, LSTM forward+backward on 2 threads (medians of 3 processes,
# alternating, ms, against the column tiles from 4 columns, OpenBLAS below):
# (2, 512, 512) 25.6 against 55.8, (2, 1024, 1024) 102 against 235, (4,
# 256, 256) 9.2 against 12.6, (4, 512, 512) 33.5 against 44.4.
PACKED_MIN_WORK = 1 << 18
PACKED_MIN_COLUMNS = 2
PACKED_MAX_COLUMNS = 128
PACKED_MIN_STEPS = 16
PACKED_SPLIT_WORK = 1 << 19  # the least multiply-adds of a thread's part
# The least values of a weight each of a run's packed threads packs: the
# packing, once a run, is serial work beside step products split over those
# threads. Measured on a Zen 4 (float32, ms, 2 threads against 1): a
# (4096, 1024) weight, the (32, 1024, 1024) LSTM's, 3.4 against 6.5 (7.8
# zeroed first, as before); (1024, 256) 0.043 against 0.082.
PACK_SPLIT_VALUES = 1 << 16

# Read by compiled code at every product: [on BLIS now, MIN_COLUMNS,
# MIN_WORK, BLIS preferred, parts to split a product into, SPLIT_WORK,
# SPLIT_ROWS, threads of a packed step product (0: none packed),
# PACKED_MIN_WORK, PACKED_MIN_COLUMNS, PACKED_MAX_COLUMNS, PACKED_MIN_STEPS,
# PACKED_SPLIT_WORK, PACK_SPLIT_VALUES]
# (tests lower the limits to send small products to BLIS, split them, or
# pack them; a head's products go to BLIS wherever it is preferred,
# library.dot_rows).
_SETTINGS = (ctypes.c_int64 * 14)(0, MIN_COLUMNS, MIN_WORK, 0, 1, SPLIT_WORK, SPLIT_ROWS,
                                  0, PACKED_MIN_WORK, PACKED_MIN_COLUMNS, PACKED_MAX_COLUMNS,
                                  PACKED_MIN_STEPS, PACKED_SPLIT_WORK, PACK_SPLIT_VALUES)
SETTINGS_COUNT = len(_SETTINGS)
SYMBOLS = {"settings": "seqdsl_gemm_settings",
            "sgemm": "seqdsl_blis_sgemm_ex", "dgemm": "seqdsl_blis_dgemm_ex",
            "context": "seqdsl_blis_context"}


def _setting() -> str:
    """SEQDSL_BLIS as set ("" where it is not; see blis_is_preferred)."""
    return os.environ.get("SEQDSL_BLIS", "").strip()


@lru_cache(maxsize=1)
def _blis():
    """(library, context) where the blis package is installed, the CPU has
    the AVX-512 its Skylake-X kernels use, its products check out, and
    SEQDSL_BLIS is not 0; else None."""
    if _setting() == "0":
        return None
    features = llvm.get_host_cpu_features()
    if not all(features.get(f) for f in NEEDED_FEATURES):
        return None
    try:
        import blis.cy
    except ImportError:
        return None
    lib = ctypes.CDLL(blis.cy.__file__)
    if not all(hasattr(lib, f) for f in ("bli_init", "bli_cntx_init_skx",
                                         "bli_sgemm_ex", "bli_dgemm_ex")):
        return None
    lib.bli_init()
    context = ctypes.create_string_buffer(_CONTEXT_BYTES)
    lib.bli_cntx_init_skx(context)
    _size_pools_for(lib, context)
    if not all(_checks_out(lib, context, dtype) for dtype in (np.float32, np.float64)):
        warnings.warn("seqdsl: BLIS's products on this CPU differ from NumPy's; "
                      "the kernels keep OpenBLAS", RuntimeWarning, stacklevel=2)
        return None
    return lib, context


def _size_pools_for(lib, context) -> None:
    """BLIS's pools of packing blocks made again, their blocks sized for
    `context`'s products. bli_init sizes them for the context BLIS chose
    (on a Zen 4, "generic", with smaller blocks than Skylake-X's); a product
    on `context` then asks for a larger block, and BLIS 0.7 makes the pool
    again to grow it, which aborts the process ("bli_pool_finalize(): ...
    not all blocks were checked back in") when another thread's product
    holds one of its blocks: a split product's parts did, at (B, X, H) =
    (16, 512, 512). Sized once here, before any product, no pool grows."""
    for prefix in ("bli_membrk", "bli_pba"):  # BLIS 0.7's name, then later ones'
        query = getattr(lib, f"{prefix}_query", None)
        if query is not None:
            query.restype = ctypes.c_void_p
            pools = ctypes.c_void_p(query())
            getattr(lib, f"{prefix}_finalize_pools")(pools)
            getattr(lib, f"{prefix}_init_pools")(context, pools)
            return


def _checks_out(lib, context, dtype) -> bool:
    """One product of each layout BLIS is handed, against NumPy's."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 41)).astype(dtype)
    b = rng.standard_normal((41, 45)).astype(dtype)
    fn = lib.bli_sgemm_ex if dtype == np.float32 else lib.bli_dgemm_ex
    real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    one, zero = real(1), real(0)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for x, y in ((a, b), (np.asfortranarray(a), np.asfortranarray(b))):
        out = np.full((37, 45), np.nan, dtype)
        i64 = ctypes.c_int64
        rs = [i64(s // x.itemsize) for m in (x, y, out) for s in m.strides]
        fn(0, 0, i64(37), i64(45), i64(41), ctypes.byref(one),
           ctypes.c_void_p(x.ctypes.data), rs[0], rs[1],
           ctypes.c_void_p(y.ctypes.data), rs[2], rs[3], ctypes.byref(zero),
           ctypes.c_void_p(out.ctypes.data), rs[4], rs[5], context, None)
        if not np.allclose(out, x @ y, rtol=tol, atol=tol):
            return False
    return True


@ctypes.CFUNCTYPE(None)
def _never_called():
    """What BLIS's symbols name where there is no BLIS: the switch stays
    off, so compiled code never calls them."""


def _register_symbols() -> None:
    found = _blis()
    llvm.add_symbol(SYMBOLS["settings"], ctypes.addressof(_SETTINGS))
    if found is None:
        stub = ctypes.cast(_never_called, ctypes.c_void_p).value
        for name in ("sgemm", "dgemm", "context"):
            llvm.add_symbol(SYMBOLS[name], stub)
        return
    lib, context = found
    for name, fn in (("sgemm", lib.bli_sgemm_ex), ("dgemm", lib.bli_dgemm_ex)):
        llvm.add_symbol(SYMBOLS[name], ctypes.cast(fn, ctypes.c_void_p).value)
    llvm.add_symbol(SYMBOLS["context"], ctypes.addressof(context))


_register_symbols()


def available() -> bool:
    """Whether the kernels' products can run on BLIS here."""
    return _blis() is not None


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


# OpenBLAS's names for its kernels that use AVX-512 (openblas_get_corename)
AVX512_OPENBLAS_CORES = ("skylakex", "cooperlake", "sapphirerapids")


def blis_is_preferred(setting: str, blis_there: bool, openblas_cores: list[str]) -> bool:
    """Whether the kernels' products go to BLIS: where it is there, as
    SEQDSL_BLIS (`setting`) says ("0": never, "1": always), by default only
    where no OpenBLAS the kernels call runs AVX-512 kernels of its own
    (`openblas_cores`, as each reports its kernels). Any other setting
    warns and is ignored."""
    if setting not in ("", "0", "1"):
        warnings.warn(f"SEQDSL_BLIS={setting!r}: expected 0 (never BLIS) or 1 (BLIS wherever "
                      "it is there); ignored: the kernels' products go to BLIS only where "
                      "OpenBLAS runs kernels without AVX-512", RuntimeWarning, stacklevel=2)
    if not blis_there or setting == "0":
        return False
    return setting == "1" or not any(c.lower() in AVX512_OPENBLAS_CORES
                                     for c in openblas_cores)


@lru_cache(maxsize=1)
def _preferred_here() -> bool:
    cores = [getattr(lib, "architecture", None) or "" for lib in kernel_blas()
             if lib.internal_api == "openblas"]
    return blis_is_preferred(_setting(), available(), cores)


_PREFERENCE: list = [None]  # blis_preferred's choice inside its block


def preferred() -> bool:
    """Whether the kernels' products go to BLIS here (blis_is_preferred)."""
    if _PREFERENCE[0] is not None:
        return _PREFERENCE[0] and available()
    return _preferred_here()


_SETTINGS[0] = _SETTINGS[3] = int(preferred())


@contextlib.contextmanager
def blis_preferred(on: bool = True):
    """Inside the block, runs send their products to BLIS (where it is
    there) as where it is the faster, or (with `on` False) keep them off
    it, whatever `preferred` says here: for tests and benchmarks. The
    switches a run sets (blas.blas_threads) follow it in runs begun inside
    the block; a head's products follow it at once."""
    was, heads = _PREFERENCE[0], _SETTINGS[3]
    _PREFERENCE[0] = bool(on)
    _SETTINGS[3] = int(preferred())
    try:
        yield
    finally:
        _PREFERENCE[0], _SETTINGS[3] = was, heads


def use_blis(on: bool) -> bool:
    """Send the kernels' products to BLIS (where available) or OpenBLAS;
    returns the choice it replaced."""
    was = bool(_SETTINGS[0])
    _SETTINGS[0] = int(on and available())
    return was


def split_products(parts: int) -> int:
    """Split each large product over up to `parts` of Numba's threads, on
    BLIS (1: none; where BLIS is not there, none); returns the number it
    replaced. Only for a run on this thread that is not itself on Numba's
    threads (blas.blas_threads decides)."""
    was = int(_SETTINGS[4])
    _SETTINGS[4] = max(int(parts), 1) if available() else 1
    return was


def set_limits(min_columns: int = MIN_COLUMNS, min_work: int = MIN_WORK,
               split_work: int = SPLIT_WORK,
               split_rows: int = SPLIT_ROWS) -> tuple[int, int, int, int]:
    """The smallest product BLIS takes (columns of the result, multiply-adds),
    and the least work and the multiple of rows of each part of a split
    one; returns the limits they replaced. Tests lower them to 1 to run
    every product of a small problem on BLIS, split where the run's are."""
    return _replace_limits((1, 2, 5, 6), (min_columns, min_work, split_work, split_rows))


def _replace_limits(indices: tuple[int, ...], values: tuple[int, ...]) -> tuple[int, ...]:
    """_SETTINGS at `indices` set to `values` (at least 1); the ones replaced."""
    was = tuple(_SETTINGS[i] for i in indices)
    for i, v in zip(indices, values):
        _SETTINGS[i] = max(int(v), 1)
    return was


@contextlib.contextmanager
def every_product_on_blis(on: bool = True):
    """Inside the block, every product a one-thread run begun in it makes
    goes to BLIS, and a run on several threads splits every product it
    can, however small, whether or not BLIS is the faster here (with `on`;
    else nothing changes): for tests, whose problems are all below the
    limits."""
    if not on:
        yield
        return
    was = set_limits(1, 1, 1, 1)
    try:
        with blis_preferred():
            yield
    finally:
        set_limits(*was)

