"""Step products over weights packed once a sequence.

A step's product applies the same stacked weight W (m×k) to a new batch
every step. OpenBLAS packs all of W into its own layout inside every call:
at (m, k, n) = (4096, 1024, 32), the (32, 1024, 1024) LSTM's step, that
packing and streaming is a third of the call (one thread, float32: 3.9 ms,
68 GFLOP/s, against 98 GFLOP/s for n = 256, where it is spread over more
columns). Here W is packed once, before the time loop, into panels of
PANEL_ROWS rows laid out k by k (`pack_rows`), and each step runs a
register-tiled kernel over them (`_tile`): a panel's PANEL_ROWS rows by two
vectors of columns of accumulators stay in registers for the whole k loop,
each step of which loads one value of each row and two vectors of the
batch; a last half vector of columns has a tile of its own. Measured on a
Zen 4 (float32, (4096, 1024, 32)): one thread 2.69 ms (100 GFLOP/s)
against OpenBLAS's 3.91; split over 2 threads 1.41 ms against OpenBLAS's
2.0–2.4 on its 2.

The kernel is written in LLVM IR with vectors of 64 bytes (16 float32, 8
float64): AVX-512's width, which LLVM splits into two halves on a CPU with
AVX2 only. packing.py decides where packed products run and on how many
threads (`packing`, `packed_parts`, gemm.py's PACKED_ limits). A kernel asks
`packed_for_steps` for the panels and `packed_work` for the scratch once a
run, then calls `packed_product` each step: a call by name of a C function
compiled here (by_name.py), so that the kernel does not compile the
product again; the panels are packed by name too.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from . import by_name
from .copies import transpose_here
from .library import setting

PANEL_ROWS = 12  # 12 rows × 2 vectors: 24 accumulators of AVX-512's 32 registers
VECTOR_BYTES = 64
_JIT = dict(cache=True, nogil=True, error_model="numpy")


def _vector_type(dtype, vector_bytes: int) -> ir.VectorType:
    element = ir.FloatType() if dtype == types.float32 else ir.DoubleType()
    return ir.VectorType(element, vector_bytes // (4 if dtype == types.float32 else 8))


def _tile_of(vectors: int, vector_bytes: int = VECTOR_BYTES):
    """The kernel for a tile of PANEL_ROWS rows by `vectors` vectors of
    `vector_bytes` of columns: out[p·R + r, c + i] = Σ_k panels[p, k, r] ·
    b[k, c + i]."""

    @intrinsic
    def tile(typingctx, panels, b, out, p, c):
        if panels.dtype not in (types.float32, types.float64):
            return None

        def codegen(context, builder, signature, args):
            a_ty, b_ty, out_ty = signature.args[:3]
            panel_arr = context.make_array(a_ty)(context, builder, args[0])
            b_arr = context.make_array(b_ty)(context, builder, args[1])
            out_arr = context.make_array(out_ty)(context, builder, args[2])
            p, c = args[3], args[4]
            vec = _vector_type(a_ty.dtype, vector_bytes)
            lanes = vec.count
            i64 = ir.IntType(64)
            k_count, width = cgutils.unpack_tuple(builder, b_arr.shape, 2)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                f"llvm.fma.v{lanes}{'f32' if a_ty.dtype == types.float32 else 'f64'}")
            zero = ir.Constant(vec, [0.0] * lanes)
            accs = [cgutils.alloca_once_value(builder, zero) for _ in range(PANEL_ROWS * vectors)]
            first = builder.mul(builder.mul(p, k_count), ir.Constant(i64, PANEL_ROWS))
            splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

            def vector_at(base, offset):
                at = builder.gep(base, [ir.Constant(i64, offset)])
                return builder.bitcast(at, vec.as_pointer())

            with cgutils.for_range(builder, k_count) as loop:
                k = loop.index
                b_row = builder.gep(b_arr.data, [builder.add(builder.mul(k, width), c)])
                bs = [builder.load(vector_at(b_row, lanes * v), align=1) for v in range(vectors)]
                a_row = builder.gep(panel_arr.data, [
                    builder.add(first, builder.mul(k, ir.Constant(i64, PANEL_ROWS)))])
                for r in range(PANEL_ROWS):
                    a = builder.load(builder.gep(a_row, [ir.Constant(i64, r)]))
                    a = builder.insert_element(ir.Constant(vec, ir.Undefined), a,
                                               ir.Constant(ir.IntType(32), 0))
                    a = builder.shuffle_vector(a, ir.Constant(vec, ir.Undefined), splat)
                    for v in range(vectors):
                        acc = accs[r * vectors + v]
                        builder.store(builder.call(fma, [a, bs[v], builder.load(acc)]), acc)
            top = builder.mul(p, ir.Constant(i64, PANEL_ROWS))
            for r in range(PANEL_ROWS):
                row = builder.add(top, ir.Constant(i64, r))
                out_row = builder.gep(out_arr.data, [builder.add(builder.mul(row, width), c)])
                for v in range(vectors):
                    builder.store(builder.load(accs[r * vectors + v]),
                                  vector_at(out_row, lanes * v), align=1)
            return context.get_dummy_value()
        return types.void(panels, b, out, p, c), codegen
    return tile


_tile2 = _tile_of(2)
_tile1 = _tile_of(1)
# A last half vector of columns (8 float32): a step of 8 rows or fewer, or a
# tail, padded to a whole vector would do twice its multiply-adds.
_tile_half = _tile_of(1, VECTOR_BYTES // 2)


@njit(**_JIT)
def lanes_of(a):
    """Values of a's dtype in one vector."""
    return VECTOR_BYTES // a.itemsize


@njit(**_JIT)
def pack_rows(w):
    """w (m×k) as panels (⌈m/R⌉, k, R), R = PANEL_ROWS: panel p holds rows
    p·R to p·R + R - 1 (zeros past m) side by side, k by k."""
    m, k = w.shape
    panels = _panels_of(w, m, k)
    _fill_panels(w, panels)
    return panels


@njit(**_JIT)
def _panels_of(w, m, k):
    """Panels for an m×k weight of w's dtype (_fill_panels fills them)."""
    return np.empty((-(-m // PANEL_ROWS), k, PANEL_ROWS), w.dtype)


@njit(**_JIT)
def _fill_panels(w, panels):
    _fill_panels_from(w, panels, 0, panels.shape[0])


@njit(**_JIT)
def _fill_panels_from(w, panels, first, last):
    """Panels first to last - 1 of w's, zeros past its rows; read along w's
    rows, or down its columns where they are contiguous (w a transpose's
    view: read across its rows, a (4096, 1024) weight took 28 ms on one
    thread, 7.0 down its columns)."""
    m, k = w.shape
    by_rows = w.strides[1] <= w.strides[0]
    for p in range(first, last):
        top = p * PANEL_ROWS
        rows = min(PANEL_ROWS, m - top)
        if by_rows:
            for r in range(rows):
                for j in range(k):
                    panels[p, j, r] = w[top + r, j]
        else:
            for j in range(k):
                for r in range(rows):
                    panels[p, j, r] = w[top + r, j]
        for j in range(k):
            for r in range(rows, PANEL_ROWS):
                panels[p, j, r] = 0


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _fill_panels_split(w, panels, parts):
    """_fill_panels in `parts` runs of panels, one on each of Numba's
    threads."""
    for s in prange(parts):
        first, last = _run_of(s, parts, panels.shape[0])
        _fill_panels_from(w, panels, first, last)


@njit(**_JIT)
def _run_of(s, parts, count):
    """Run s of `parts` runs of `count` panels, as equal as whole runs of
    ⌈count / parts⌉ make them: its first panel and the one past its last."""
    per_part = -(-count // parts)
    return min(count, s * per_part), min(count, (s + 1) * per_part)


@njit(**_JIT)
def _panels_times(panels, b, out, first, last):
    """Rows of panels first to last - 1 of out = the packed weight times b
    (k × a whole number of half vectors of columns)."""
    width = b.shape[1]
    lanes = lanes_of(b)
    for p in range(first, last):
        c = 0
        while c + 2 * lanes <= width:
            _tile2(panels, b, out, p, c)
            c += 2 * lanes
        if c + lanes <= width:
            _tile1(panels, b, out, p, c)
            c += lanes
        if c < width:
            _tile_half(panels, b, out, p, c)


@njit(**_JIT)
def _panels_times_out(panels, b, product, out, first, last):
    """Rows of panels first to last - 1 of the product (_panels_times),
    then those of its first m rows laid out batch-major in out (n × m)."""
    _panels_times(panels, b, product, first, last)
    n, m = out.shape
    lo, hi = first * PANEL_ROWS, min(m, last * PANEL_ROWS)
    if lo < hi:
        transpose_here(product[lo:hi, :n], out[:, lo:hi])


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _panels_times_split(panels, b, product, out, parts):
    """_panels_times_out over all panels, in `parts` runs of them, one on
    each of Numba's threads (a call each: inside the parallel loop's own
    body the kernel measured 12% slower), so each run lays out its own
    rows: serial, that layout took 39 µs a step at (m, n) = (4096, 32),
    the (32, 1024, 1024) LSTM's step, beside 1.4 ms for the product on 2
    threads (float32, Zen 4)."""
    for s in prange(parts):
        first, last = _run_of(s, parts, panels.shape[0])
        _panels_times_out(panels, b, product, out, first, last)


@njit(**_JIT)
def packs(m, k, columns, steps, threads):
    """Whether a run of `steps` products of an m×k weight with `columns`
    columns each, on `threads` threads, is within the limits for packing
    its weight: on several threads, only a product large enough to split
    over them (a packed product on one thread of several is slower than
    OpenBLAS's on all)."""
    work = m * k * columns
    least = setting(8) if threads <= 1 else max(setting(8), 2 * setting(12))
    return m * k > 0 and work >= least and setting(9) <= columns <= setting(10) \
        and steps >= setting(11)


@njit(**_JIT)
def _parts(count, k, columns, threads):
    """How many threads a packed product of `count` panels by k by `columns`
    is split over: each part at least PACKED_SPLIT_WORK multiply-adds."""
    return max(min(threads, count, count * PANEL_ROWS * k * columns // setting(12)), 1)


@njit(**_JIT)
def packed_for_steps(w, columns, steps, transposed):
    """The panels of w (`transposed`: of wᵀ) for a run of `steps` step
    products w·x with `columns` columns each, where this run's products are
    packed (packing.packed_parts) and these are within the limits; else no
    panels (0 of them)."""
    m, k = (w.shape[1], w.shape[0]) if transposed else (w.shape[0], w.shape[1])
    if setting(7) < 1 or not packs(m, k, columns, steps, setting(7)):
        return np.zeros((0, k, PANEL_ROWS), w.dtype)
    panels = _panels_of(w, m, k)
    _pack(w, panels, transposed)
    return panels


@njit(**_JIT)
def packed_work(panels, columns):
    """The scratch of a run's packed products of `columns` columns (made
    once a run): x laid out k-major, and the product made transposed, both
    with their columns padded to whole half vectors. Zeroed, so the padding
    columns of x, which no step writes, stay zeros."""
    count, k = panels.shape[0], panels.shape[1]
    return np.zeros(_work_size(count, k, _padded(columns, lanes_of(panels) // 2)),
                    panels.dtype)


@njit(**_JIT)
def _padded(columns, lanes):
    return -(-columns // lanes) * lanes


@njit(**_JIT)
def _work_size(count, k, width):
    """The scratch's length: x k-major (k × width), then the product made
    transposed (count·R × width)."""
    return k * width + count * PANEL_ROWS * width


def _step_at(panels_at, count, k, rows, x_at, n, x_k, out_at, out_n, m, work_at, work_length):
    """out (n × m) = x (n × k) times Wᵀ over W's panels (count, k, R), all
    C-contiguous at the given addresses; on the run's packed threads."""
    panels = carray(panels_at, (count, k, rows))
    x, out = carray(x_at, (n, x_k)), carray(out_at, (out_n, m))
    width = _padded(n, lanes_of(x) // 2)
    work = carray(work_at, (work_length,))
    b = work[:k * width].reshape((k, width))
    transpose_here(x, b[:, :n])  # its padding columns: zeros since packed_work
    product = work[k * width:_work_size(count, k, width)].reshape((count * PANEL_ROWS, width))
    parts = _parts(count, k, n, setting(7))
    if parts > 1:
        _panels_times_split(panels, b, product, out, parts)
    else:
        _panels_times_out(panels, b, product, out, 0, count)


def _pack_at(w_at, rows, cols, panels_at, count, k, panel_rows, transposed):
    w = carray(w_at, (rows, cols))
    source = w.T if transposed else w
    panels = carray(panels_at, (count, k, panel_rows))
    parts = min(setting(7), count, rows * cols // setting(13))
    if parts > 1:
        _fill_panels_split(source, panels, parts)
    else:
        _fill_panels(source, panels)


by_name.register("packed_step", _step_at, (3, 2, 2, 1), 0)
by_name.register("pack", _pack_at, (2, 3), 1)


@intrinsic
def packed_product(typingctx, panels, x, out, work):
    """out (n × m) = x (n × k) times Wᵀ, where panels = pack_rows(W) (W is
    m × k) and work = packed_work(panels, n): a step's product,
    batch-major, made by the C function of its dtype (by_name.py). Every
    array C-contiguous, of one dtype."""
    if not by_name.by_name(panels, x, out, work):
        raise TypingError("packed_product takes C-contiguous arrays of one float dtype")
    return types.void(panels, x, out, work), by_name.call("packed_step")


@intrinsic
def _pack_by_name(typingctx, w, panels, transposed):
    return types.void(w, panels, transposed), by_name.call("pack")


def _pack(w, panels, transposed):
    """panels = pack_rows(w, or wᵀ where `transposed`), made in place: by
    name where w is C-contiguous (compiled code only)."""


@overload(_pack, jit_options=_JIT)
def _pack_either(w, panels, transposed):
    if by_name.by_name(w, panels):
        return lambda w, panels, transposed: _pack_by_name(w, panels, transposed)
    return lambda w, panels, transposed: _fill_panels(w.T if transposed else w, panels)
