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
from .ir.network import NetworkType, cell_signature, lower_network
from .lang.network import NetworkScope, check_network, resized
from .lang.parse import parse, read_source
from .runtime.backends import cell_instance, check_backend
from .runtime.network import Network, bind_network_sizes
from .runtime.numpy import bind_sizes


@dataclass
class Spec:
    file: str
    source: str
    cells: dict[str, CellType]
    networks: dict[str, NetworkType]
    warnings: list[SeqWarning] = field(default_factory=list)
    scopes: dict[str, NetworkScope] = field(default_factory=dict, repr=False)
    known: dict[str, CellType] = field(default_factory=dict, repr=False)  # cells networks use

    def cell(self, name: str | None = None) -> CellType:
        """The cell called `name`; without a name, the file's only cell."""
        if name is None:
            return self._only("cell", self.cells)
        if name not in self.cells:
            if name in self.networks:
                raise SeqError(f"`{name}` in {self.file} is a network, not a cell",
                               hint=f"--network {name} on the command line, "
                                    f"spec.network({name!r}) in Python")
            raise SeqError(f"{self.file} has no cell `{name}`",
                           hint="cells: " + (", ".join(self.cells) or "none"))
        return self.cells[name]

    def _only(self, kind: str, defined: dict):
        """The file's only cell or network, or an error saying how to pick one."""
        if len(defined) != 1:
            first = next(iter(defined), None)
            raise SeqError(f"{self.file} defines {len(defined)} {kind}s"
                           + (f" ({', '.join(defined)}): name one" if first else ""),
                           hint=first and f"--{kind} {first} on the command line, "
                                          f"spec.{kind}({first!r}) in Python")
        return next(iter(defined.values()))

    def network(self, name: str | None = None,
                layer_sizes: dict[str, int] | None = None) -> NetworkType:
        """The network called `name`; without a name, the file's only network.
        `layer_sizes` replaces its layers' size arguments by name
        (`{"H": 64}`: every `LSTM(H=128)` becomes `LSTM(H=64)`)."""
        if layer_sizes:
            nt = self.network(name)
            return lower_network(resized(self.scopes[nt.name], layer_sizes), self.known)
        if name is None:
            return self._only("network", self.networks)
        if name not in self.networks:
            what = " (it is a cell)" if name in self.cells else ""
            raise SeqError(f"{self.file} has no network `{name}`{what}",
                           hint="networks: " + (", ".join(self.networks) or "none"))
        return self.networks[name]


def loads(source: str, file: str = "<string>", library: bool = True) -> Spec:
    """Parse and check .seq source text."""
    module = parse(source, file)
    source = module.source  # without a byte-order mark, so columns match the parser's
    cells: dict[str, CellType] = {}
    networks: dict[str, NetworkType] = {}
    scopes: dict[str, NetworkScope] = {}
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
    signatures = {n: cell_signature(ct) for n, ct in known.items()}
    for d in module.definitions:
        if isinstance(d, S.NetworkDef):
            # Names and forms first, then sizes: one network at a time, so an
            # error in the first network is the one reported.
            scopes[d.name] = check_network(d, source, signatures)
            nt = lower_network(scopes[d.name], known)
            networks[d.name] = nt
            warnings += nt.warnings
    return Spec(file, source, cells, networks, warnings, scopes, known)


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


def instantiate(definition: CellType | NetworkType, hidden: int | None = None,
                input: int | None = None, sizes: dict[str, int] | None = None, dtype=np.float64,
                backend: str = "numpy", threads: int | None = None):
    """A cell or a network at concrete sizes and dtype. `backend="numpy"`
    runs the reference interpreter; `"numba"` generates, caches and compiles
    code for the dtype, once for every size (same interface, much faster). A network's hidden sizes
    are written in its spec; `input` and `sizes` give its input sizes (a
    tokens input's is its vocabulary) and its outputs' numbers of classes.
    `threads` bounds the threads the numba backend runs on (default:
    NUMBA_NUM_THREADS, else OMP_NUM_THREADS, else every core)."""
    check_backend(backend)
    if isinstance(definition, NetworkType):
        if hidden is not None:
            raise SeqError(f"hidden: network {definition.name} has its hidden sizes in its "
                           "spec (`LSTM(H=64)`)", hint="give input sizes and numbers of "
                           "classes with input= and sizes=")
        return Network(definition, bind_network_sizes(definition, input, sizes), dtype, backend,
                       threads)
    if not isinstance(definition, CellType):
        raise SeqError(f"instantiate: expected a cell or a network of a loaded spec, given "
                       f"{type(definition).__name__}", hint="spec.cell(name) or "
                       "spec.network(name)")
    return cell_instance(definition, bind_sizes(definition, hidden, input, sizes), dtype,
                         backend, threads)
