"""A cell compiled by Numba, with the same interface as the reference runtime.

Importing this module changes nothing in the process: the malloc tuning
below happens when a compiled cell first runs forward or backward.
"""
from __future__ import annotations

import ctypes
import os
import sys

import numpy as np

from ...ir.lower import CellType
from ..instance import CellInstance, Grads, Result, Trace
from .compile import Loaded, cache_key, load_module
from .kernels import generate
from . import packing
from .blas import blas_threads
from .shards import Parallelism, Shard, run_each, shard_rows, sum_into_first, thread_count


_malloc_tuned = False  # whether _reuse_freed_memory has run in this process


def _reuse_freed_memory() -> None:
    """Ask glibc to keep freed buffers of up to 32 MiB in the heap instead of
    returning them to the OS: each forward/backward allocates its tapes and
    products anew, and fresh pages cost a page fault each on first touch
    (measured: ~40% of an LSTM step at B=32, H=256). Like PyTorch's caching
    allocator, at the price of holding the memory. It is process-wide, so it
    runs once, when a compiled cell first runs forward or backward (never on
    import). SEQDSL_SYSTEM_MALLOC=1 leaves malloc as it is."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    if os.environ.get("SEQDSL_SYSTEM_MALLOC") or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_top_pad, 64 << 20)


class CompiledCell(CellInstance):
    """`forward`/`backward` run generated, Numba-compiled code; parameters,
    shapes, initialisation and the checks of every argument are the shared
    `CellInstance`'s, as for the reference cell (the generated code trusts
    shapes, so it is never called with unchecked arrays, nor at all when there
    is no step to compute)."""

    backend = "numba"
    dtypes = ("float32", "float64")

    def __init__(self, ct: CellType, sizes: dict[str, int], dtype=np.float64,
                 threads: int | None = None):
        super().__init__(ct, sizes, dtype)
        # `parallel` may be replaced (tests force shards at small sizes with it)
        self.parallel = Parallelism(thread_count(threads))
        # the step products' work per row: each weight matrix is applied once a step
        weights = sum(int(np.prod(s)) for s in self.param_shapes.values() if len(s) == 2)
        self._flops_per_row = 2.0 * weights
        self._weight_bytes = weights * self.dtype.itemsize
        inputs = [n for n, _ in ct.inputs]
        states = [n for n, _ in ct.states]
        self._inputs_order, self._states_order = inputs, states
        # From the symbolic graphs: the source holds no size (the kernels take
        # them), so every size of the cell shares one compiled module.
        gen = generate(ct.name, self.symbolic_forward, self.symbolic_backward, inputs, states,
                       ct.output, self.dtype.name)
        self.source, self._n_tapes = gen.source, len(gen.tapes)
        self._step_weights = [(rows.subst(sizes).value(), cols.subst(sizes).value())
                              for rows, cols in gen.step_weights]
        self._size_args = tuple(sizes[k] for k in gen.sizes)
        # The source holds the cell's name, dtype and every equation, and never
        # its file or sizes: the same cell in two files, or at two sizes,
        # shares one entry.
        key = cache_key(self.dtype.name, self.source)
        self.loaded: Loaded = load_module(self.source, key, self._signatures())

    def _plan(self, T: int, B: int, in_one_loop: bool = False):
        return self.parallel.plan(T, B, self._flops_per_row, self._weight_bytes, in_one_loop)

    def _threads(self, n: int, T: int, B: int):
        """blas_threads for a run of T steps of B rows on `n` threads: with
        its step products packed where they will be (packed.py)."""
        if not self._step_weights:
            return blas_threads(n)
        # Imported here, once the cell's module has loaded the compiled library
        # (compile.py): imported earlier, NUMBA_CACHE_DIR would take its cache.
        from .packed import packs
        return blas_threads(n, packed=packing.packing() and any(
            packs(m, k, B, T, n) for m, k in self._step_weights))

    def _signatures(self) -> dict[str, str]:
        """Numba signatures of the generated functions (C-contiguous arrays)."""
        f = self.dtype.name
        a3, a2, a1 = f"{f}[:, :, ::1]", f"{f}[:, ::1]", f"{f}[::1]"
        params = [a2 if len(s) == 2 else a1 for s in self.param_shapes.values()]
        ins = [a3] * len(self._inputs_order)
        states = [a2] * len(self._states_order)
        sizes = ["int64"] * len(self._size_args)
        fwd = sizes + ins + ["int64[::1]"] + states + params
        bwd = sizes + [a3] + states + ["int64[::1]"] + ins + [a3] * self._n_tapes + params
        return {"forward": "(" + ", ".join(fwd) + ",)", "backward": "(" + ", ".join(bwd) + ",)"}

    @property
    def source_path(self) -> str:
        return str(self.loaded.path)

    def forward(self, params, x, lengths=None, state0=None) -> Result:
        p, xs, T, B, lengths, s0 = self._forward_args(params, x, lengths, state0)
        if T * B == 0:  # no step to run: the kernels would index empty arrays
            out = np.zeros((T, B, self.state_sizes[self.output]), self.dtype)
            final = {n: v.copy() for n, v in s0.items()}
            return Result(out, final, Trace(xs, lengths, s0, [], self.origin))
        _reuse_freed_memory()
        plan = self._plan(T, B)
        with self._threads(plan.blas_threads, T, B):
            if plan.shards > 1:
                return self._forward_shards(p, xs, T, B, lengths, s0,
                                            shard_rows(B, plan.shards))
            res = self._run_forward(p, [xs[n] for n in self._inputs_order], lengths,
                                    [s0[n] for n in self._states_order])
        ns, ni = len(self._states_order), len(xs)
        out, finals = res[0], res[1:1 + ns]
        clean, tapes = res[1 + ns:1 + ns + ni], res[1 + ns + ni:]
        final = dict(zip(self._states_order, finals))
        return Result(out, final, Trace(dict(zip(self._inputs_order, clean)), lengths, s0,
                                        list(tapes), self.origin))

    def _run_forward(self, p, xs: list, lengths, s0: list) -> tuple:
        return self.loaded.module.forward(*self._size_args, *xs, lengths, *s0, *p.values())

    def _forward_shards(self, p, xs, T: int, B: int, lengths, s0, rows: list[slice]) -> Result:
        """Forward with each run of `rows` on its own thread: every shard
        writes its rows of the outputs and final states, and keeps its own
        inputs and tapes for its backward."""
        out = np.empty((T, B, self.state_sizes[self.output]), self.dtype)
        final = {n: np.empty((B, self.state_sizes[n]), self.dtype) for n in self._states_order}
        ns, ni = len(self._states_order), len(xs)

        def run(r: slice) -> Shard:
            res = self._run_forward(p, [np.ascontiguousarray(xs[n][:, r])
                                        for n in self._inputs_order],
                                    np.ascontiguousarray(lengths[r]),
                                    [np.ascontiguousarray(s0[n][r]) for n in self._states_order])
            out[:, r] = res[0]
            for n, a in zip(self._states_order, res[1:1 + ns]):
                final[n][r] = a
            return Shard(r, list(res[1 + ns:1 + ns + ni]), list(res[1 + ns + ni:]))
        shards = run_each(run, rows)
        return Result(out, final, Trace(xs, lengths, s0, shards, self.origin))

    def _tape_holds(self, tape: list, T: int, B: int) -> bool:
        """Each tape as the kernels read it: C-contiguous (T, B, n) arrays,
        or, after a sharded forward, each shard's for its rows, the shards
        covering the batch in order."""
        if tape and all(isinstance(s, Shard) for s in tape):
            starts = [0] + [s.rows.stop for s in tape]
            return (all(s.rows.start == a and s.rows.step is None and s.rows.stop > a
                        for s, a in zip(tape, starts)) and starts[-1] == B
                    and all(self._arrays_hold(s.tape, T, s.rows.stop - s.rows.start)
                            and self._inputs_hold(s.x, T, s.rows.stop - s.rows.start)
                            for s in tape))
        return self._arrays_hold(tape, T, B)

    def _arrays_hold(self, tape: list, T: int, B: int) -> bool:
        return len(tape) == (self._n_tapes if T * B else 0) and all(
            isinstance(a, np.ndarray) and a.dtype == self.dtype and a.flags.c_contiguous
            and a.ndim == 3 and a.shape[:2] == (T, B) for a in tape)

    def _inputs_hold(self, xs: list, T: int, B: int) -> bool:
        return len(xs) == len(self._inputs_order) and all(
            isinstance(a, np.ndarray) and a.dtype == self.dtype and a.flags.c_contiguous
            and a.shape == (T, B, self.input_sizes[n]) for n, a in zip(self._inputs_order, xs))

    def backward(self, params, result: Result, d_outputs=None, d_final=None) -> Grads:
        p, tr, T, B, dout, d_final = self._backward_args(params, result, d_outputs, d_final)
        if T * B == 0:  # no step ran: gradients are zero, d_final passes to the start
            return Grads({k: np.zeros(s, self.dtype) for k, s in self.param_shapes.items()},
                         {n: np.zeros_like(a) for n, a in tr.x.items()},
                         {n: g.copy() for n, g in d_final.items()})
        _reuse_freed_memory()
        if tr.tape and isinstance(tr.tape[0], Shard):
            with blas_threads(1):
                return self._backward_shards(p, tr, dout, d_final)
        plan = self._plan(T, B)
        with self._threads(plan.blas_threads, T, B):
            res = self._run_backward(p, dout, [d_final[n] for n in self._states_order],
                                     tr.lengths, [tr.x[n] for n in self._inputs_order], tr.tape)
        ni, ns = len(self._inputs_order), len(self._states_order)
        return Grads(dict(zip(self.param_shapes, res[ni + ns:])),
                     dict(zip(self._inputs_order, res[:ni])),
                     dict(zip(self._states_order, res[ni:ni + ns])))

    def _run_backward(self, p, dout, d_final: list, lengths, xs: list, tape: list) -> tuple:
        return self.loaded.module.backward(*self._size_args, dout, *d_final, lengths, *xs,
                                           *tape, *p.values())

    def _backward_shards(self, p, tr: Trace, dout, d_final) -> Grads:
        """Backward of a sharded forward, each shard on its own thread as it
        ran forward; the shards' parameter gradients are summed."""
        T, B = dout.shape[:2]
        dx = {n: np.empty((T, B, self.input_sizes[n]), self.dtype) for n in self._inputs_order}
        d0 = {n: np.empty((B, self.state_sizes[n]), self.dtype) for n in self._states_order}
        ni, ns = len(self._inputs_order), len(self._states_order)

        def run(shard: Shard) -> list:
            r = shard.rows
            res = self._run_backward(p, np.ascontiguousarray(dout[:, r]),
                                     [np.ascontiguousarray(d_final[n][r])
                                      for n in self._states_order],
                                     np.ascontiguousarray(tr.lengths[r]), shard.x, shard.tape)
            for n, a in zip(self._inputs_order, res[:ni]):
                dx[n][:, r] = a
            for n, a in zip(self._states_order, res[ni:ni + ns]):
                d0[n][r] = a
            return list(res[ni + ns:])
        params = sum_into_first(run_each(run, tr.tape))
        return Grads(dict(zip(self.param_shapes, params)), dx, d0)
