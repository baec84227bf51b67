"""What every generated kernel calls, compiled once: array allocation, the
shortest length, the matrix products, and the block copies that stack
weights and unstack their gradients.

Numba compiles the NumPy functions a kernel calls (`np.dot`'s checks,
layout cases and BLAS call; `np.empty`, `np.zeros`, `ndarray.min`) anew in
every process that compiles a kernel, and never caches them on their own.
Called from here, they are Numba's cached code of these functions, shared
by every cell and process: a new cell compiles only its own loops. Measured
on the LSTM's forward and backward (float32, 2 cores): 6.0 s cold with
NumPy's calls in the kernels, 4.3 s with the products from here. None of
these runs per row inside the time loop: the products are BLAS calls either
way.
"""
import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def empty(shape, dtype):
    return np.empty(shape, dtype)


@njit(**_JIT)
def zeros(shape, dtype):
    return np.zeros(shape, dtype)


@njit(**_JIT)
def shortest(lengths):
    """The smallest of a batch's lengths (there is at least one)."""
    m = lengths[0]
    for n in lengths:
        m = min(m, n)
    return m


@njit(**_JIT)
def dot(a, b):
    """a @ b, a new array."""
    return np.dot(a, b)


@njit(**_JIT)
def dot_into(a, b, out):
    """a @ b, written into `out`."""
    np.dot(a, b, out)


@njit(**_JIT)
def copy_block(dst, src, r, c, rows, cols, sr, sc, add):
    """dst[r + i, c + k] = src[sr + i, sc + k] (or += with `add`) for
    i < rows, k < cols."""
    for i in range(rows):
        if add:
            for k in range(cols):
                dst[r + i, c + k] += src[sr + i, sc + k]
        else:
            for k in range(cols):
                dst[r + i, c + k] = src[sr + i, sc + k]


@njit(**_JIT)
def copy_block_t(dst, src, r, c, rows, cols, sr, sc, add):
    """dst[r + i, c + k] = src[sr + k, sc + i] (or += with `add`) for
    i < rows, k < cols: a block of src's transpose. In blocks of 16 rows of
    `src`, so each cache line read is used whole."""
    for k0 in range(0, cols, 16):
        for i in range(rows):
            for k in range(k0, min(k0 + 16, cols)):
                if add:
                    dst[r + i, c + k] += src[sr + k, sc + i]
                else:
                    dst[r + i, c + k] = src[sr + k, sc + i]


@njit(**_JIT)
def transpose_into(src, dst):
    """dst[b, k] = src[k, b]: a step product made transposed, laid out
    batch-major. The loop order follows the shape, as measured (float32,
    one thread, AMD Zen 5): row by row of dst below 16 rows (or 32 for
    narrow products); else blocks of 8 columns of dst, or for a wide dst
    (1024 columns or more, whose rows lie a multiple of 4 KiB apart and
    share cache sets) blocks of 16, so each line is written whole. At
    (32 rows, 512): 8.7 µs row by row, 2.7 in blocks of 8; at (128, 2048):
    241 µs, 82 in blocks of 16."""
    rows, cols = dst.shape
    if rows >= 16 and cols >= 1024:
        _transpose_blocks(src, dst, 16)
    elif rows >= 32:
        _transpose_blocks(src, dst, 8)
    else:
        for b in range(rows):
            for k in range(cols):
                dst[b, k] = src[k, b]


@njit(**_JIT)
def _transpose_blocks(src, dst, width):
    rows, cols = dst.shape
    whole = cols - cols % width
    # a literal trip count (8 or 16) lets LLVM unroll and vectorise the block
    if width == 16:
        for k0 in range(0, whole, 16):
            for b in range(rows):
                for k in range(16):
                    dst[b, k0 + k] = src[k0 + k, b]
    else:
        for k0 in range(0, whole, 8):
            for b in range(rows):
                for k in range(8):
                    dst[b, k0 + k] = src[k0 + k, b]
    for b in range(rows):
        for k in range(whole, cols):
            dst[b, k] = src[k, b]


@njit(**_JIT)
def rows_among(t, b, target, lo, hi):
    """A head's labelled rows (steps `t`, examples `b`, dense targets) whose
    example is among lo:hi, the examples numbered from lo: a shard's rows."""
    keep = np.flatnonzero((b >= lo) & (b < hi))
    return t[keep], b[keep] - lo, np.ascontiguousarray(target[keep])


@njit(**_JIT)
def total_of(terms):
    """The sum of a head's loss terms, in float64."""
    total = 0.0
    for v in terms.ravel():
        total += v
    return total


@njit(**_JIT)
def columns_of(a, lo, hi):
    """a[:, lo:hi] as a new C-contiguous array: a shard's rows of a
    (T, B, ...) sequence."""
    return np.ascontiguousarray(a[:, lo:hi])


@njit(**_JIT)
def put_flat(row, start, a):
    """row[start:start + a.size] = a's entries, in order."""
    flat = a.reshape(a.size)
    for i in range(a.size):
        row[start + i] = flat[i]
