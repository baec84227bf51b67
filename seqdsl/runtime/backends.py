"""The backends a cell runs on, by name: one place that picks the class."""
from __future__ import annotations

from ..errors import SeqError
from ..ir.lower import CellType

BACKENDS = ("numpy", "numba")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise SeqError(f"unknown backend `{backend}`; choose one of {', '.join(BACKENDS)}")
    return backend


def cell_instance(ct: CellType, sizes: dict[str, int], dtype, backend: str,
                  threads: int | None = None):
    """The cell at bound sizes on `backend`: "numpy" runs the reference
    interpreter; "numba" generates, caches and compiles code for the dtype,
    once for every size (the sizes are arguments of the generated kernels),
    and runs on up to `threads` threads (see numba/shards.py)."""
    check_backend(backend)
    if backend == "numpy":
        if threads not in (None, 1):
            raise SeqError(f"threads={threads!r}: the numpy backend (the reference) runs on "
                           "one thread", hint='backend="numba" runs on several')
        from .numpy import NumpyCell
        return NumpyCell(ct, sizes, dtype)
    from .numba.runtime import CompiledCell  # numba is imported only when asked for
    return CompiledCell(ct, sizes, dtype, threads)
