"""What a network's compiled training step is made of, as plain data:
which generated kernels it calls and how each layer and head is wired
(runtime/numba/step.py reads it from a network; emit_step.py writes the
step's source from it)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Kernel:
    """A generated kernel the step calls: its module, function and args."""

    module: str  # the name the kernel's module has in sys.modules
    function: str  # "forward", "backward", "run"
    signature: str  # the Numba signature it was compiled for
    label: str  # what it runs, to name it by: `a forward`, `ŷ loss backward`


@dataclass
class Lookup:
    """Columns `lo:hi` of weight `weight`, picked by the token ids."""

    input: str  # the runner's input it feeds
    weight: str  # network parameter
    lo: int
    hi: int


@dataclass
class Columns:
    """Columns `lo:hi` of weight `weight`, a parameter of the runner."""

    param: str  # the runner's parameter
    weight: str  # network parameter
    lo: int
    hi: int


@dataclass
class CellPart:
    """One cell layer: it reads sequence `reads` (an input's token ids with
    lookups, or vectors) and writes sequence `writes`."""

    prefix: str  # `a`, `h.0`
    reads: str
    writes: str
    forward: Kernel
    backward: Kernel
    size_args: tuple[int, ...]
    inputs: list[str]  # the runner's inputs, in the kernels' order
    states: list[tuple[str, int]]  # (name, size) in the kernels' order
    params: list[str]  # the runner's parameters, in the kernels' order
    own: dict[str, str]  # runner parameter -> network parameter (the cell's own)
    n_tapes: int
    lookups: list[Lookup] = field(default_factory=list)  # empty: vectors
    columns: list[Columns] = field(default_factory=list)
    init: str | None = None  # the cell whose final states it starts from


@dataclass
class BiPart:
    """A bidirectional layer: `forward` reads sequence `reads`, `backward`
    reads it with each example's valid steps in reverse (`reversed`), and
    `writes` is their outputs side by side, the backward copy's put back in
    order (the layers' `reverse_each`)."""

    reads: str
    reversed: str
    writes: str
    tokens: bool
    forward: CellPart
    backward: CellPart
    sizes: tuple[int, int]  # the two outputs' sizes


@dataclass
class HeadPart:
    """One head's loss over its labelled rows (class ids or values already
    made dense targets, a weight per term by the reduction)."""

    name: str
    reads: list[tuple[str, int]]  # (sequence, size): its graph inputs are named so
    params: list[str]  # network parameters, its graph's by the same names
    target: str  # the loss graph's target input
    terms: str  # the loss graph's output
    loss: Kernel
    loss_args: list[str]
    loss_returns: list[str]
    backward: Kernel
    backward_args: list[str]
    backward_returns: list[str]
    loss_sizes: tuple[int, ...]  # the size arguments each kernel takes first
    backward_sizes: tuple[int, ...]


@dataclass
class StepPlan:
    network: str
    inputs: list[tuple[str, str]]  # (name, "tokens" | "vectors")
    lengths_of: dict[str, str]  # sequence -> the input whose lengths it has
    params: dict[str, int]  # network parameter -> its number of dimensions
    layers: list[CellPart | BiPart]  # in the order they run
    heads: list[HeadPart]

    def cells(self) -> list[CellPart]:
        return [c for layer in self.layers
                for c in ((layer.forward, layer.backward) if isinstance(layer, BiPart)
                          else (layer,))]

    def kernels(self) -> list[Kernel]:
        """Every kernel, in the order the step takes their addresses."""
        return ([k for c in self.cells() for k in (c.forward, c.backward)]
                + [k for h in self.heads for k in (h.loss, h.backward)])
