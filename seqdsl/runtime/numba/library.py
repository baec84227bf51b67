"""What every generated kernel calls, compiled once: array allocation, the
shortest length and the matrix products (copies.py has the block copies
that stack weights and unstack their gradients).

Numba compiles the NumPy functions a kernel calls (`np.dot`'s checks,
layout cases and BLAS call; `np.empty`, `np.zeros`, `ndarray.min`) anew in
every process that compiles a kernel, and never caches them on their own.
Called from here, they are Numba's cached code of these functions, shared
by every cell and process: a new cell compiles only its own loops. Measured
on the LSTM's forward and backward (float32, 2 cores): 6.0 s cold with
NumPy's calls in the kernels, 4.3 s with the products from here. None of
these runs per row inside the time loop: the products are BLAS calls either
way, to BLIS's AVX-512 kernels or to SciPy's OpenBLAS as gemm.py decides.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.ufunc import parallel

from .gemm import SETTINGS_COUNT, SYMBOLS

# Numba's threading layer, launched before any code here is compiled or
# loaded: the split product below is a parallel loop, and the machine code of
# every function that calls it (dot, dot_into, so every kernel) names the
# layer's functions, which are found only once it is launched (loading
# cached code without them aborts the process). It fixes Numba's number of
# threads (NUMBA_NUM_THREADS) for the process, as a sharded run did before.
parallel._launch_threads()

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
    """a @ b, a new array (on BLIS where gemm.py sends it)."""
    return _dot(a, b, False)


@njit(**_JIT)
def dot_rows(a, b):
    """a @ b for a head's rows (emit_rows.py), a new array: on BLIS where it
    is preferred and takes it, whatever threads the run around it has, so
    that a network's heads make the same products in its compiled step
    (step.py) as layer by layer, where they run on their own (their
    products are small: one thread loses nothing)."""
    return _dot(a, b, True)


@njit(**_JIT)
def dot_into(a, b, out):
    """a @ b, written into `out` (on BLIS where gemm.py sends it)."""
    _dot_into(a, b, out)


def _matrices(*arrays) -> bool:
    return all(isinstance(a, types.Array) and a.ndim == 2 for a in arrays)


def _dot(a, b, rows):
    """dot and dot_rows, typed by the operands' dimensions (compiled code)."""


@overload(_dot)
def _dot_typed(a, b, rows):
    if not _matrices(a, b):
        return lambda a, b, rows: np.dot(a, b)  # a vector's product: NumPy's

    def matrices(a, b, rows):
        parts = 1 if rows else split_parts(a, b)
        if parts > 1:
            out = np.empty((a.shape[0], b.shape[1]), a.dtype)
            blis_split_product(a, b, out, parts)
            return out
        if blis_takes(a, b, rows):
            out = np.empty((a.shape[0], b.shape[1]), a.dtype)
            blis_product(a, b, out)
            return out
        return np.dot(a, b)
    return matrices


def _dot_into(a, b, out):
    """dot_into, typed by the operands' dimensions (compiled code)."""


@overload(_dot_into)
def _dot_into_typed(a, b, out):
    if not _matrices(a, b, out):
        return lambda a, b, out: np.dot(a, b, out)

    def matrices(a, b, out):
        parts = split_parts(a, b)
        if parts > 1 and _layout(out.shape[0], out.shape[1], out.strides, out.itemsize)[0] != 0:
            blis_split_product(a, b, out, parts)
        elif not (blis_takes(a, b) and blis_product(a, b, out)):
            np.dot(a, b, out)
    return matrices


@njit(**_JIT)
def blis_takes(a, b, rows=False):
    """Whether the matrix product a @ b goes to BLIS: products are on BLIS
    now (gemm.use_blis; a head's `rows` whatever the run's threads, where
    BLIS is preferred), this one is at least gemm's limits, and BLIS takes
    both layouts."""
    m, k = a.shape
    n = b.shape[1]
    if (setting(3) if rows else setting(0)) == 0 or n < setting(1) or m * n * k < setting(2) \
            or min(m, k) < 1:
        return False
    return _blis_layouts(a, b)


@njit(**_JIT)
def _blis_layouts(a, b):
    """Whether BLIS takes the layouts of both operands of a @ b."""
    m, k = a.shape
    size = a.itemsize
    return _layout(m, k, a.strides, size)[0] != 0 \
        and _layout(k, b.shape[1], b.strides, size)[0] != 0


@njit(**_JIT)
def split_parts(a, b):
    """Into how many blocks of a's rows the product a @ b is split, each on
    BLIS on a thread of its own (1: not split): as many as the run's
    threads (gemm.split_products), each with at least gemm's SPLIT_WORK and
    SPLIT_ROWS rows, where BLIS takes both layouts and the result has at
    least MIN_COLUMNS columns."""
    m, k = a.shape
    n = b.shape[1]
    parts = min(setting(4), m // setting(6), (m * n * k) // setting(5))
    if parts < 2 or n < setting(1) or k < 1 or not _blis_layouts(a, b):
        return 1
    return parts


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def blis_split_product(a, b, out, parts):
    """out = a @ b on BLIS, in `parts` blocks of rows at once on Numba's
    threads, each a multiple of SPLIT_ROWS rows but the last; each entry is
    made as the whole product on BLIS makes it (the same tiles over k)."""
    m = a.shape[0]
    tile = setting(6)
    per_part = -(-m // parts)  # m / parts, rounded up
    rows = -(-per_part // tile) * tile  # ... and up to whole tiles
    for s in prange(parts):
        lo = s * rows
        hi = min(m, lo + rows)
        if lo < hi:
            blis_product(a[lo:hi], b, out[lo:hi])


@njit(**_JIT)
def blis_product(a, b, out):
    """out = a @ b on BLIS, where `blis_takes(a, b)`; False, with `out`
    untouched, where BLIS does not take out's layout."""
    m, k = a.shape
    n = b.shape[1]
    size = out.itemsize
    rsc, csc = _layout(m, n, out.strides, size)
    if rsc == 0:
        return False
    rsa, csa = _layout(m, k, a.strides, size)
    rsb, csb = _layout(k, n, b.strides, size)
    blis_gemm(a, b, out, 0.0, (rsa, csa, rsb, csb, rsc, csc))
    return True


@njit(**_JIT)
def _layout(m, n, strides, itemsize):
    """An m×n matrix's (row stride, column stride) in elements as BLIS takes
    them, rows or columns laid out one after the other; (0, 0) for any
    other layout (a stride of part of an element, a negative or zero stride,
    both strides over 1), which NumPy's product handles."""
    if strides[0] % itemsize or strides[1] % itemsize:
        return 0, 0
    rs, cs = strides[0] // itemsize, strides[1] // itemsize
    if (m > 1 and rs < 1) or (n > 1 and cs < 1):
        return 0, 0
    if m == 1 and n == 1:
        return 1, 1
    # a dimension of length 1 has no stride to speak of: the one that makes
    # a vector a row-major or column-major matrix
    if m == 1:
        rs = n if cs == 1 else 1
    if n == 1:
        cs = m if rs == 1 else 1
    if rs == 1 and cs >= m:
        return rs, cs
    if cs == 1 and rs >= n:
        return rs, cs
    return 0, 0


# BLIS's products, as gemm.py finds them (in this file, so that Numba's cache
# of the functions above, which holds this code, changes with it)

def _external_global(builder, name: str, ty):
    module = builder.module
    try:
        return module.get_global(name)
    except KeyError:
        g = ir.GlobalVariable(module, ty, name=name)
        g.linkage = "external"
        return g


@intrinsic
def setting(typingctx, index):
    """_SETTINGS[index], read where it is now (compiled code)."""
    if not isinstance(index, types.IntegerLiteral):
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        table = _external_global(builder, SYMBOLS["settings"], ir.ArrayType(i64, SETTINGS_COUNT))
        at = builder.gep(table, [ir.Constant(ir.IntType(32), 0),
                                 ir.Constant(ir.IntType(32), index.literal_value)])
        return builder.load(at)
    return types.int64(index), codegen


@intrinsic
def blis_gemm(typingctx, a, b, out, beta, strides):
    """BLIS's gemm: out = a @ b + beta * out, each matrix with its strides
    in elements (`strides`: rsa, csa, rsb, csb, rsc, csc)."""
    dtype = out.dtype
    symbol = SYMBOLS["sgemm" if dtype == types.float32 else "dgemm"]

    def codegen(context, builder, signature, args):
        va, vb, vout, vbeta, vstrides = args
        arrays = [context.make_array(t)(context, builder, v)
                  for t, v in zip(signature.args[:3], (va, vb, vout))]
        i64, i32, i8p = ir.IntType(64), ir.IntType(32), ir.IntType(8).as_pointer()
        real = context.get_value_type(dtype).as_pointer()
        stride = [builder.extract_value(vstrides, i) for i in range(6)]
        ra, rout = (cgutils.unpack_tuple(builder, arrays[i].shape, 2) for i in (0, 2))
        alpha = cgutils.alloca_once_value(builder, context.get_constant(dtype, 1.0))
        beta_at = cgutils.alloca_once_value(builder, context.cast(
            builder, vbeta, signature.args[3], dtype))
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i64, i64, i64, real]
                               + [real, i64, i64] * 2 + [real] + [real, i64, i64] + [i8p, i8p])
        fn = cgutils.get_or_insert_function(builder.module, fnty, symbol)
        blis_context = builder.bitcast(
            _external_global(builder, SYMBOLS["context"], ir.IntType(8)), i8p)
        no_transpose = ir.Constant(i32, 0)  # the strides give each layout
        builder.call(fn, [no_transpose, no_transpose, rout[0], rout[1], ra[1], alpha,
                          arrays[0].data, stride[0], stride[1],
                          arrays[1].data, stride[2], stride[3], beta_at,
                          arrays[2].data, stride[4], stride[5],
                          blis_context, ir.Constant(i8p, None)])
        return context.get_dummy_value()
    return types.none(a, b, out, beta, strides), codegen


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
