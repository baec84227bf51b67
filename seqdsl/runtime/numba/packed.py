"""Step products over weights packed once a sequence.

A step's product applies the same stacked weight W (m×k) to a new batch
every step. OpenBLAS packs all of W into its own layout inside every call:
at (m, k, n) = (4096, 1024, 32), the (32, 1024, 1024) LSTM's step, that
packing and streaming is a third of the call (one thread, float32: 3.9 ms,
68 GFLOP/s, against 98 GFLOP/s for n = 256, where it is spread over more
columns). Here W is packed once, before the time loop, into panels of
PANEL_ROWS rows laid out k by k (`pack_rows`), and each step runs
register-tiled kernels over them (tiles.py): by vectors of the batch's
columns, or, for a batch of a few columns, by vectors of rows. Measured on
a Zen 4 (float32, (4096, 1024, 32)): one thread 2.69 ms (100 GFLOP/s)
against OpenBLAS's 3.91; split over 2 threads 1.41 ms against OpenBLAS's
2.0–2.4 on its 2. packing.py decides where packed products run and on how many
threads (`packing`, `packed_parts`, gemm.py's PACKED_ limits). A kernel asks
`packed_for_steps` for the panels and `packed_work` for the scratch once a
run, then calls `packed_product` each step: a call by name of a C function
compiled here (by_name.py), so that the kernel does not compile the
product again; the panels are packed by name too.
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit, prange, types
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from . import by_name
from .copies import transpose_here
from .library import setting
from .tiles import NARROW_COLUMNS, PANEL_ROWS, VECTOR_BYTES, narrow_tile, tile1, tile2, tile_half

_JIT = dict(cache=True, nogil=True, error_model="numpy")


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
            tile2(panels, b, out, p, c)
            c += 2 * lanes
        if c + lanes <= width:
            tile1(panels, b, out, p, c)
            c += lanes
        if c < width:
            tile_half(panels, b, out, p, c)


@njit(**_JIT)
def _panels_times_narrow(panels, x, out, first, last):
    """Rows of panels first to last - 1 of out (n × m) = x (n × k, n at
    most NARROW_COLUMNS) times the packed weight's transpose, two panels at
    a time: batch-major as made, so no layout follows. The last one or two
    panels (one alone, or one past out's m columns) are made aside and
    only their rows within m kept."""
    m = out.shape[1]
    whole = min(last, m // PANEL_ROWS)
    p = first
    while p + 2 <= whole:
        narrow_tile(panels, x, out, p, p + 1, p * PANEL_ROWS)
        p += 2
    if p < last:  # at most two left: only the last panel may pass m
        aside = np.empty((x.shape[0], 2 * PANEL_ROWS), out.dtype)
        narrow_tile(panels, x, aside, p, min(p + 1, last - 1), 0)
        top = p * PANEL_ROWS
        for c in range(x.shape[0]):
            for j in range(min(m, last * PANEL_ROWS) - top):
                out[c, top + j] = aside[c, j]


@njit(**_JIT)
def _panels_times_out(panels, b, product, out, first, last):
    """Rows of panels first to last - 1 of the product (_panels_times),
    then those of its first m rows laid out batch-major in out (n × m)."""
    _panels_times(panels, b, product, first, last)
    n, m = out.shape
    lo, hi = first * PANEL_ROWS, min(m, last * PANEL_ROWS)
    if lo < hi:
        transpose_here(product[lo:hi, :n], out[:, lo:hi])


@njit(**_JIT)
def _panels_times_run(panels, b, product, out, first, last, narrow):
    """Rows of panels first to last - 1 of out: by the narrow kernel from
    x itself (b; `narrow`), else _panels_times_out."""
    if narrow:
        _narrow_by_name(panels, b, out, first, last)
    else:
        _panels_times_out(panels, b, product, out, first, last)


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def _panels_times_split(panels, b, product, out, parts, narrow):
    """_panels_times_run over all panels, in `parts` runs of them, one on
    each of Numba's threads (a call each: inside the parallel loop's own
    body the kernel measured 12% slower), so each run lays out its own
    rows: serial, that layout took 39 µs a step at (m, n) = (4096, 32),
    the (32, 1024, 1024) LSTM's step, beside 1.4 ms for the product on 2
    threads (float32, Zen 4)."""
    for s in prange(parts):
        first, last = _run_of(s, parts, panels.shape[0])
        _panels_times_run(panels, b, product, out, first, last, narrow)


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
    columns of x, which no step writes, stay zeros. A narrow product needs
    none (it reads x and writes out as they are)."""
    count, k = panels.shape[0], panels.shape[1]
    if columns <= NARROW_COLUMNS:
        return np.zeros(0, panels.dtype)
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
    work = carray(work_at, (work_length,))
    narrow = n <= NARROW_COLUMNS
    if narrow:  # made from x as it is, batch-major
        b, product = x, work[:0].reshape((0, n))
    else:
        width = _padded(n, lanes_of(x) // 2)
        b = work[:k * width].reshape((k, width))
        transpose_here(x, b[:, :n])  # its padding columns: zeros since packed_work
        product = work[k * width:_work_size(count, k, width)].reshape((count * PANEL_ROWS, width))
    parts = _parts(count, k, n, setting(7))
    if parts > 1:
        _panels_times_split(panels, b, product, out, parts, narrow)
    else:
        _panels_times_run(panels, b, product, out, 0, count, narrow)


def _pack_at(w_at, rows, cols, panels_at, count, k, panel_rows, transposed):
    w = carray(w_at, (rows, cols))
    source = w.T if transposed else w
    panels = carray(panels_at, (count, k, panel_rows))
    parts = min(setting(7), count, rows * cols // setting(13))
    if parts > 1:
        _fill_panels_split(source, panels, parts)
    else:
        _fill_panels(source, panels)


def _narrow_at(panels_at, count, k, rows, x_at, n, x_k, out_at, out_n, m, first, last):
    _panels_times_narrow(carray(panels_at, (count, k, rows)), carray(x_at, (n, x_k)),
                         carray(out_at, (out_n, m)), first, last)


@intrinsic
def _narrow_by_name(typingctx, panels, x, out, first, last):
    return types.void(panels, x, out, first, last), by_name.call("narrow_step")


# By name, the narrow kernel's code is compiled once a dtype, not again in
# each function that calls it: linked into the functions of a step's product
# instead, this module's first compile took 28 s against 17 (15 s before the
# narrow kernel)
by_name.register("narrow_step", _narrow_at, (3, 2, 2), 2)
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
