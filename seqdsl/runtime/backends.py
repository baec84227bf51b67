"""The backends a cell runs on, by name: one place that picks the class."""
from __future__ import annotations

from ..errors import SeqError
from ..ir.lower import CellType

BACKENDS = ("numpy", "numba")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise SeqError(f"unknown backend `{backend}`; choose one of {', '.join(BACKENDS)}")
    return backend


def cell_instance(ct: CellType, sizes: dict[str, int], dtype, backend: str):
    """The cell at bound sizes on `backend`: "numpy" runs the reference
    interpreter; "numba" generates, caches and compiles code for the dtype,
    once for every size (the sizes are arguments of the generated kernels)."""
    check_backend(backend)
    if backend == "numpy":
        from .numpy import NumpyCell
        return NumpyCell(ct, sizes, dtype)
    from .numba.runtime import CompiledCell  # numba is imported only when asked for
    return CompiledCell(ct, sizes, dtype)
