"""The generated module: `forward` and `backward` over whole sequences.

    forward(n_H, n_X, x, lengths, a0, c0, <params>) -> (out, a, c, <inputs>, <tapes>)
    backward(n_H, n_X, dout, da, dc, lengths, <inputs>, <tapes>, <params>)
        -> (dx, da0, dc0, <parameter gradients>)

Three steps: the kernel plan (kernel_plan.py) decides everything from the
step graphs, then emit_forward.py and emit_backward.py write the two
functions from it, into one module with one set of names and constants.

The step graphs are the cell's symbolic ones: the module is written for a
dtype and every size at once, and both functions take the size symbols'
values (`n_H`, `n_X`) first. So its source, and the cache entry it keys,
is the same at every size: a cell is compiled once per dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.graph import Graph, Size
from .emit import Emission
from .emit_backward import emit_backward
from .emit_forward import emit_forward
from .kernel_plan import KernelPlan, make_plan

# From this batch size on, the backward step's product is made transposed:
# measured faster with OpenBLAS from B = 8 (and slower for B = 1).
TRANSPOSED_FROM_BATCH = 8
CHUNK_BYTES = 8 << 20  # the largest stacked weight a forward step's product takes whole


@dataclass
class Generated:
    source: str
    tapes: list[str]  # the forward values passed from forward to backward
    identifiers: frozenset[str] = frozenset()  # every name its Names handed out
    sizes: tuple[str, ...] = ()  # the size symbols both functions take first, in order
    # each step product's stacked weight, (rows, columns), which packed.py may pack
    step_weights: tuple[tuple[Size, Size], ...] = ()


def plan(cell: str, fwd: Graph, bwd: Graph, inputs: list[str], states: list[str],
         output: str, dtype: str) -> KernelPlan:
    """The kernel plan of a cell's step graphs in a dtype (what `generate`
    writes its source from)."""
    if not (dtype.isidentifier() and np.dtype(dtype).kind == "f"):
        raise ValueError(f"generated kernels are for a floating-point dtype, not {dtype!r}")
    return make_plan(cell, fwd, bwd, inputs, states, output, dtype,
                     chunk_bytes=CHUNK_BYTES, transposed_from_batch=TRANSPOSED_FROM_BATCH)


def generate(cell: str, fwd: Graph, bwd: Graph, inputs: list[str], states: list[str],
             output: str, dtype: str) -> Generated:
    """Source text of the module for a cell's step graphs in a dtype, for
    every binding of their size symbols. Names from the spec reach it only
    as identifiers a `Names` made (the size symbols' variables among them),
    or escaped in comments and the docstring; the spec's path not at all."""
    em = Emission(plan(cell, fwd, bwd, inputs, states, output, dtype))
    emit_forward(em)
    emit_backward(em)
    return Generated(em.module(), em.plan.taped, frozenset(em.py.used), tuple(em.plan.sizes),
                     tuple((g.width, g.size) for g in em.plan.step_groups))
