"""A checked network at its sizes: each layer's input and output sizes, the
cells' parameters named by their place in the network (`h.0.fwd.Wu`), and
the heads lowered to step graphs.

`lang/network.py` has checked every name and form of the network; what is
left needs sizes: whether a cell fits the vectors its layer reads, whether
`init=` hands over a state of the right sizes, and the heads' shapes (which
the head lowering infers, as the cell lowering infers a cell's).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Loc, SeqError, SeqWarning
from ..lang.network import CellSignature, LayerSyntax, NetworkScope
from .graph import Size
from .heads import Head, HeadLowering
from .lower import CellType, input_symbol

__all__ = ["Head", "Layer", "NetworkType", "cell_signature", "lower_network"]


@dataclass
class Layer:
    """One node of a layer expression, at its sizes."""

    kind: str  # "cell", "bidirectional" or "stack"
    text: str
    in_size: Size
    out_size: Size
    cell: CellType | None = None
    sizes: dict[str, Size] = field(default_factory=dict)  # the cell's symbols
    children: list["Layer"] = field(default_factory=list)
    init: str | None = None  # a sequence whose final state starts this layer

    def params(self, prefix: str) -> dict[str, tuple[Size, ...]]:
        if self.kind == "cell":
            return {f"{prefix}.{n}": tuple(s.subst(self.sizes) for s in v.shape)
                    for n, v in self.cell.params.items()}
        out = {}
        names = ["fwd", "bwd"] if self.kind == "bidirectional" else [
            str(i) for i in range(len(self.children))]
        for n, child in zip(names, self.children):
            out.update(child.params(f"{prefix}.{n}"))
        return out


@dataclass
class NetworkType:
    name: str
    loc: Loc
    inputs: list[tuple[str, str, Size]]  # (name, "vectors" or "tokens", size)
    sequences: dict[str, Layer]
    heads: list[Head]
    params: dict[str, tuple[Size, ...]]
    kind: str
    warnings: list[SeqWarning] = field(default_factory=list)
    reads: dict[str, str] = field(default_factory=dict)  # sequence -> what its layer reads


def cell_signature(cell: CellType) -> CellSignature:
    """What the network check needs of a cell: the sizes a layer gives it
    by name (its states'; its input's size is the sequence it reads)."""
    input_symbols = {sym for _, size in cell.inputs for sym in size.symbols}
    return CellSignature(cell.name, tuple(s for s in cell.symbols if s not in input_symbols),
                         len(cell.inputs))


def lower_network(scope: NetworkScope, cells: dict[str, CellType]) -> NetworkType:
    """The network `scope` describes, at its sizes, with the cells it names."""
    return _NetworkLowering(scope, cells).run()


class _NetworkLowering:
    def __init__(self, scope: NetworkScope, cells: dict[str, CellType]):
        self.scope = scope
        self.cells = cells
        self.sizes: dict[str, Size] = {}  # sequence name -> size per step
        self.layers: dict[str, Layer] = {}

    def err(self, message, loc) -> SeqError:
        return SeqError(message, loc, source=self.scope.source)

    def run(self) -> NetworkType:
        scope = self.scope
        inputs, symbols = [], set()
        for n, kind in scope.inputs:
            sym = input_symbol(n, symbols | {"H"})
            symbols.add(sym)
            self.sizes[n] = Size.of(sym)
            inputs.append((n, kind, Size.of(sym)))
        for name, syntax in scope.sequences.items():
            layer = self._layer(syntax, self.sizes[scope.reads[name]])
            self.layers[name] = layer
            self.sizes[name] = layer.out_size
        params: dict[str, tuple[Size, ...]] = {}
        for name, layer in self.layers.items():
            params.update(layer.params(name))
        lowering = HeadLowering(self.sizes, symbols, scope.source)
        heads = [lowering.lower(h) for h in scope.heads]
        params.update(lowering.params)
        return NetworkType(scope.name, scope.loc, inputs, dict(self.layers), heads, params,
                           scope.kind, list(scope.warnings), dict(scope.reads))

    def _layer(self, syntax: LayerSyntax, in_size: Size) -> Layer:
        if syntax.kind == "bidirectional":
            fwd, bwd = (self._layer(c, in_size) for c in syntax.children)
            return Layer("bidirectional", syntax.text, in_size, fwd.out_size * 2,
                         children=[fwd, bwd])
        if syntax.kind == "stack":
            children, size = [], in_size
            for c in syntax.children:
                children.append(self._layer(c, size))
                size = children[-1].out_size
            return Layer("stack", syntax.text, in_size, size, children=children)
        return self._cell(syntax, in_size)

    def _cell(self, syntax: LayerSyntax, in_size: Size) -> Layer:
        cell = self.cells[syntax.cell]
        sizes = {s: Size.of(v) for s, v in syntax.sizes.items()}
        sizes[next(iter(cell.inputs[0][1].symbols))] = in_size
        for c in cell.constraints:
            need = c.value.subst(sizes)
            if sizes[c.symbol] != need:
                raise self.err(f"{cell.name} needs input size {need} ({c.symbol} = {c.value}), "
                               f"but this layer reads vectors of size {in_size}", syntax.loc)
        if syntax.init is not None:
            self._check_init(syntax, cell, sizes)
        out = dict(cell.states)[cell.output].subst(sizes)
        return Layer("cell", syntax.text, in_size, out, cell=cell, sizes=sizes, init=syntax.init)

    def _check_init(self, syntax: LayerSyntax, cell: CellType, sizes: dict[str, Size]) -> None:
        """The final state `init=` hands over must have this cell's states' sizes."""
        src = self.layers[syntax.init]
        mine = [(n, s.subst(sizes)) for n, s in cell.states]
        theirs = [(n, s.subst(src.sizes)) for n, s in src.cell.states]
        if [s for _, s in mine] != [s for _, s in theirs]:
            show = lambda st: ", ".join(f"{n}: {s}" for n, s in st)  # noqa: E731
            raise self.err(f"`{syntax.init}`'s final state ({show(theirs)}) does not fit the "
                           f"states of {cell.name} ({show(mine)})", syntax.init_loc)
