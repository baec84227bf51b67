"""A checked .seq file: its cells and networks, and the shipped library of
cells that networks may use without defining them."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from .lang import syntax as S
from .lang.check import scope_cell
from .errors import SeqError, SeqWarning
from .ir.lower import CellType, lower_cell
from .lang.network import NetworkType, check_network
from .lang.parse import parse, read_source
from .runtime.numpy import Cell, bind_sizes


@dataclass
class Spec:
    file: str
    source: str
    cells: dict[str, CellType]
    networks: dict[str, NetworkType]
    warnings: list[SeqWarning] = field(default_factory=list)

    def cell(self, name: str | None = None) -> CellType:
        """The cell called `name`; without a name, the file's only cell."""
        if name is None:
            if len(self.cells) != 1:
                first = next(iter(self.cells), None)
                raise SeqError(f"{self.file} defines {len(self.cells)} cells"
                               + (f" ({', '.join(self.cells)}): name one" if first else ""),
                               hint=first and f"--cell {first} on the command line, "
                                              f"spec.cell({first!r}) in Python")
            return next(iter(self.cells.values()))
        if name not in self.cells:
            raise SeqError(f"{self.file} has no cell `{name}`",
                           hint="cells: " + (", ".join(self.cells) or "none"))
        return self.cells[name]


def loads(source: str, file: str = "<string>", library: bool = True) -> Spec:
    """Parse and check .seq source text."""
    module = parse(source, file)
    source = module.source  # without a byte-order mark, so columns match the parser's
    cells: dict[str, CellType] = {}
    networks: dict[str, NetworkType] = {}
    warnings: list[SeqWarning] = []
    seen: dict[str, S.CellDef | S.NetworkDef] = {}
    for d in module.definitions:
        if d.name in seen:
            raise SeqError(f"`{d.name}` is defined twice (first at line {seen[d.name].loc.line})",
                           d.loc, source=source)
        seen[d.name] = d
    for d in module.definitions:
        if isinstance(d, S.CellDef):
            ct = lower_cell(scope_cell(d, source))
            cells[d.name] = ct
            warnings += ct.warnings
    known = {**(library_cells() if library else {}), **cells}
    for d in module.definitions:
        if isinstance(d, S.NetworkDef):
            nt = check_network(d, source, known)
            networks[d.name] = nt
            warnings += nt.warnings
    return Spec(file, source, cells, networks, warnings)


def load(path: str) -> Spec:
    """Read, parse and check a .seq file."""
    return loads(read_source(path), path)


@lru_cache(maxsize=1)
def library_cells() -> dict[str, CellType]:
    """The cells of the shipped specs, which every network can use."""
    cells = {}
    for f in sorted(resources.files("seqdsl.lang.library").iterdir(), key=lambda p: p.name):
        if f.name.endswith(".seq"):
            source = f.read_text("utf-8")
            for d in parse(source, f"seqdsl/lang/library/{f.name}").definitions:
                if isinstance(d, S.CellDef):
                    cells[d.name] = lower_cell(scope_cell(d, source))
    return cells


BACKENDS = ("numpy", "numba")


def instantiate(ct: CellType, hidden: int | None = None, input: int | None = None,
                sizes: dict[str, int] | None = None, dtype=np.float64,
                backend: str = "numpy") -> Cell:
    """The cell at concrete sizes and dtype. `backend="numpy"` runs the
    reference interpreter; `"numba"` generates, caches and compiles
    specialised code (same interface, much faster)."""
    bound = bind_sizes(ct, hidden, input, sizes)
    if backend == "numpy":
        return Cell(ct, bound, dtype)
    if backend == "numba":
        from .runtime.numba.runtime import CompiledCell  # numba is imported only when asked for
        return CompiledCell(ct, bound, dtype)
    raise SeqError(f"unknown backend `{backend}`; choose one of {', '.join(BACKENDS)}")
