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

    def __init__(self, ct: CellType, sizes: dict[str, int], dtype=np.float64):
        super().__init__(ct, sizes, dtype)
        inputs = [n for n, _ in ct.inputs]
        states = [n for n, _ in ct.states]
        self._inputs_order, self._states_order = inputs, states
        # From the symbolic graphs: the source holds no size (the kernels take
        # them), so every size of the cell shares one compiled module.
        gen = generate(ct.name, self.symbolic_forward, self.symbolic_backward, inputs, states,
                       ct.output, self.dtype.name)
        self.source, self._n_tapes = gen.source, len(gen.tapes)
        self._size_args = tuple(sizes[k] for k in gen.sizes)
        # The source holds the cell's name, dtype and every equation, and never
        # its file or sizes: the same cell in two files, or at two sizes,
        # shares one entry.
        key = cache_key(self.dtype.name, self.source)
        self.loaded: Loaded = load_module(self.source, key, self._signatures())

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
        res = self.loaded.module.forward(*self._size_args, *(xs[n] for n in self._inputs_order),
                                         lengths,
                                         *(s0[n] for n in self._states_order),
                                         *p.values())
        ns, ni = len(self._states_order), len(xs)
        out, finals = res[0], res[1:1 + ns]
        clean, tapes = res[1 + ns:1 + ns + ni], res[1 + ns + ni:]
        final = dict(zip(self._states_order, finals))
        return Result(out, final, Trace(dict(zip(self._inputs_order, clean)), lengths, s0,
                                        list(tapes), self.origin))

    def _tape_holds(self, tape: list, T: int, B: int) -> bool:
        """Each tape as the kernels read it: C-contiguous (T, B, n) arrays."""
        return len(tape) == (self._n_tapes if T * B else 0) and all(
            isinstance(a, np.ndarray) and a.dtype == self.dtype and a.flags.c_contiguous
            and a.ndim == 3 and a.shape[:2] == (T, B) for a in tape)

    def backward(self, params, result: Result, d_outputs=None, d_final=None) -> Grads:
        p, tr, T, B, dout, d_final = self._backward_args(params, result, d_outputs, d_final)
        if T * B == 0:  # no step ran: gradients are zero, d_final passes to the start
            return Grads({k: np.zeros(s, self.dtype) for k, s in self.param_shapes.items()},
                         {n: np.zeros_like(a) for n, a in tr.x.items()},
                         {n: g.copy() for n, g in d_final.items()})
        _reuse_freed_memory()
        xs = [tr.x[n] for n in self._inputs_order]
        res = self.loaded.module.backward(*self._size_args, dout,
                                          *(d_final[n] for n in self._states_order),
                                          tr.lengths, *xs, *tr.tape, *p.values())
        ni, ns = len(xs), len(self._states_order)
        return Grads(dict(zip(self.param_shapes, res[ni + ns:])),
                     dict(zip(self._inputs_order, res[:ni])),
                     dict(zip(self._states_order, res[ni:ni + ns])))
