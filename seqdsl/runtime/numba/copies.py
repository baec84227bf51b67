"""The kernels' block copies and transposes: compiled once, and called by
name where their arrays are C-contiguous (by_name.py), as a kernel's are;
in place where one is a view (in a network's step). In the LSTM's kernels
they were more than a third of the code Numba linked into each (forward:
6.7 k lines of LLVM IR for the kernel itself, 6.0 k for these loops, once
per variant of their arguments' types).
"""
from __future__ import annotations

from numba import carray, njit, types
from numba.extending import intrinsic, overload

from . import by_name

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def copy_block_here(dst, src, r, c, rows, cols, sr, sc, add):
    """dst[r + i, c + k] = src[sr + i, sc + k] (or += with `add`) for
    i < rows, k < cols. Row by row over views, whose indices from a range
    LLVM knows are not negative, so it vectorises the loop: a 64×64 block
    (float32) took 0.3 µs so, 1.9 indexing dst and src directly."""
    for i in range(rows):
        to, of = dst[r + i, c:c + cols], src[sr + i, sc:sc + cols]
        if add:
            for k in range(cols):
                to[k] += of[k]
        else:
            for k in range(cols):
                to[k] = of[k]


@njit(**_JIT)
def copy_block_t_here(dst, src, r, c, rows, cols, sr, sc, add):
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
def transpose_here(src, dst):
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


# ---- the C functions (by_name.py): each array's address and shape, then integers ----

def _copy_block_at(dst_at, dst_rows, dst_cols, src_at, src_rows, src_cols,
                   r, c, rows, cols, sr, sc, add, transposed):
    _copy_either_here(carray(dst_at, (dst_rows, dst_cols)), carray(src_at, (src_rows, src_cols)),
                      r, c, rows, cols, sr, sc, add != 0, transposed != 0)


def _transpose_at(src_at, src_rows, src_cols, dst_at, dst_rows, dst_cols):
    transpose_here(carray(src_at, (src_rows, src_cols)), carray(dst_at, (dst_rows, dst_cols)))


@njit(**_JIT)
def _copy_either_here(dst, src, r, c, rows, cols, sr, sc, add, transposed):
    if transposed:
        copy_block_t_here(dst, src, r, c, rows, cols, sr, sc, add)
    else:
        copy_block_here(dst, src, r, c, rows, cols, sr, sc, add)


by_name.register("copy_block", _copy_block_at, (2, 2), 8)
by_name.register("transpose", _transpose_at, (2, 2), 0)


@intrinsic
def _copy_by_name(typingctx, dst, src, r, c, rows, cols, sr, sc, add, transposed):
    return (types.void(dst, src, r, c, rows, cols, sr, sc, add, transposed),
            by_name.call("copy_block"))


@intrinsic
def _transpose_by_name(typingctx, src, dst):
    return types.void(src, dst), by_name.call("transpose")


def _copy(dst, src, r, c, rows, cols, sr, sc, add, transposed):
    """copy_block_here (copy_block_t_here where `transposed`), by name where
    it can be (compiled code only)."""


def _transpose(src, dst):
    """transpose_here, by name where it can be (compiled code only)."""


@overload(_copy, jit_options=_JIT)
def _copy_either(dst, src, r, c, rows, cols, sr, sc, add, transposed):
    call = _copy_by_name if by_name.by_name(dst, src) else _copy_either_here
    return lambda dst, src, r, c, rows, cols, sr, sc, add, transposed: call(
        dst, src, r, c, rows, cols, sr, sc, add, transposed)


@overload(_transpose, jit_options=_JIT)
def _transpose_either(src, dst):
    call = _transpose_by_name if by_name.by_name(src, dst) else transpose_here
    return lambda src, dst: call(src, dst)


# What kernels call: each a call by name, or the loops in place for a view.

@njit(**_JIT)
def copy_block(dst, src, r, c, rows, cols, sr, sc, add):
    """dst[r + i, c + k] = src[sr + i, sc + k] (or += with `add`) for
    i < rows, k < cols."""
    _copy(dst, src, r, c, rows, cols, sr, sc, add, False)


@njit(**_JIT)
def copy_block_t(dst, src, r, c, rows, cols, sr, sc, add):
    """dst[r + i, c + k] = src[sr + k, sc + i] (or += with `add`) for
    i < rows, k < cols: a block of src's transpose."""
    _copy(dst, src, r, c, rows, cols, sr, sc, add, True)


@njit(**_JIT)
def transpose_into(src, dst):
    """dst[b, k] = src[k, b]: a step product made transposed, laid out
    batch-major."""
    _transpose(src, dst)
