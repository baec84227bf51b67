"""Where the parameters of the shipped RNN, TorchGRU and LSTM cells, and of
network layers built from them, sit in the `state_dict` of torch.nn.RNN,
GRU and LSTM. Plain NumPy: torch is needed only to make or read tensors
(`seqdsl.interop.torch`).

A torch module keeps, per layer k and direction, `weight_ih_l{k}` (G·H×in),
`weight_hh_l{k}` (G·H×H), `bias_ih_l{k}` and `bias_hh_l{k}` (G·H), with the
G gates' rows stacked (LSTM: i f g o; GRU: r z n; RNN: one block) and
`_reverse` after the names of the backward direction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import SeqError
from ..ir.graph import Size
from ..ir.lower import CellType
from ..ir.network import Layer, NetworkType

ENTRY = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?")
PARTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Kind:
    """A shipped cell and the torch module that computes the same thing."""

    cell: str  # its name in the library
    file: str
    mode: str  # the torch.nn class
    gates: str  # the suffixes of its parameters, in torch's row order


KINDS = (Kind("RNN", "rnn.seq", "RNN", "a"), Kind("TorchGRU", "gru_torch.seq", "GRU", "rzn"),
         Kind("LSTM", "lstm.seq", "LSTM", "ufco"))
MODES = {k.mode: k for k in KINDS}
COUNTERPARTS = "torch.nn.RNN, GRU and LSTM are the shipped cells " + ", ".join(
    f"{k.cell} ({k.file})" for k in KINDS) + ", with their equations unchanged"


def kind_of(ct: CellType) -> Kind:
    """The torch counterpart of a cell: one whose step graph is a shipped
    cell's (the names of its parameters and states included)."""
    from ..spec import library_cells
    body = _graph_body(ct)
    for k in KINDS:
        if _graph_body(library_cells()[k.cell]) == body:
            return k
    hint = COUNTERPARTS
    if ct.name == "GRU":
        hint = ("the course's GRU (gru.seq) resets the state before its weight and keeps "
                "the update gate's share of the candidate; torch.nn.GRU is TorchGRU "
                "(gru_torch.seq)")
    raise SeqError(f"cell {ct.name} has no torch counterpart", hint=hint)


def _graph_body(ct: CellType) -> str:
    return str(ct.graph).split("\n", 1)[1]  # the first line names the cell


@dataclass(frozen=True)
class Layout:
    """A torch module's constructor arguments; None where seqdsl leaves a
    size open (a network's input size, bound at instantiate)."""

    mode: str
    input_size: int | None
    hidden_size: int | None
    num_layers: int
    bidirectional: bool

    def __str__(self) -> str:
        args = [f"{k}={getattr(self, k)}" for k in ("input_size", "hidden_size", "num_layers",
                                                    "bidirectional")
                if getattr(self, k) is not None]
        return f"nn.{self.mode}(" + ", ".join(args) + ")"

    def suffixes(self) -> list[list[str]]:
        """The state_dict's name endings, per layer and direction."""
        dirs = ["", "_reverse"] if self.bidirectional else [""]
        return [[f"_l{k}{d}" for d in dirs] for k in range(self.num_layers)]


def mismatch(want: Layout, got: Layout, what: str) -> None:
    """An error listing every field where the torch module differs from `want`."""
    diffs = [f"{f} {getattr(want, f)} against {getattr(got, f)}"
             for f in ("input_size", "hidden_size", "num_layers", "bidirectional")
             if getattr(want, f) is not None and getattr(want, f) != getattr(got, f)]
    if want.mode != got.mode:
        diffs.insert(0, f"torch.nn.{want.mode} against {got.mode}")
    if diffs:
        raise SeqError(f"{what} does not match the torch module: " + "; ".join(diffs)
                       + " (seqdsl's against the module's)",
                       hint=f"the torch module is {got}; {what} needs {want}")


# ---- reading a state_dict -----------------------------------------------------------

def read_entries(entries: dict[str, np.ndarray]) -> Layout:
    """The layout of a torch module from its state_dict's names and shapes;
    every entry is accounted for, and every shape and dtype checked."""
    found: dict[tuple[int, bool], dict[str, np.ndarray]] = {}
    leftover = []
    for name, a in entries.items():
        m = ENTRY.fullmatch(name)
        if m is None:
            leftover.append(name)
        else:
            found.setdefault((int(m[2]), bool(m[3])), {})[m[1]] = a
    if leftover:
        hint = ("proj_size is not supported: seqdsl's LSTM passes a on unprojected"
                if any(n.startswith("weight_hr_l") for n in leftover) else
                "pass the recurrent module's own state_dict, or give prefix= (the text "
                "before `weight_ih_l0`)")
        raise SeqError("state_dict entries not used: " + some(leftover), hint=hint)
    dtype_of(entries, "state_dict entry", "state_dict entries")
    if not found:
        raise SeqError("the state_dict has no entries of a torch RNN, GRU or LSTM",
                       hint="expected weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ...")
    layers = 1 + max(k for k, _ in found)
    bidirectional = any(r for _, r in found)
    layout = Layout("?", None, None, layers, bidirectional)
    missing = [f"{p}{s}" for ss in layout.suffixes() for s in ss for p in PARTS
               if p not in found.get(_key(s), {})]
    if missing:
        raise SeqError("state_dict entries missing: " + some(missing),
                       hint="a module made with bias=False has no biases; seqdsl's cells "
                            "have them: export a module with biases (zero ones, if need be)")
    return _check_shapes(entries, layout)


def some(names, n: int = 8) -> str:
    """The first n names, and how many there are when that is not all."""
    names = list(map(str, names))
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _key(suffix: str) -> tuple[int, bool]:
    m = re.fullmatch(r"_l(\d+)(_reverse)?", suffix)
    return int(m[1]), bool(m[2])


def _check_shapes(entries, layout: Layout) -> Layout:
    hh = entries["weight_hh_l0"]
    if hh.ndim != 2 or hh.shape[1] == 0 or hh.shape[0] % hh.shape[1]:
        raise SeqError(f"weight_hh_l0 has shape {_shape(hh.shape)}; a torch RNN's is "
                       "(gates × hidden_size) × hidden_size")
    H, G = hh.shape[1], hh.shape[0] // hh.shape[1]
    mode = {len(k.gates): k.mode for k in KINDS}.get(G)
    if mode is None:
        raise SeqError(f"weight_hh_l0 has {G}×{H} rows for hidden size {H}: a torch RNN has "
                       "1×, a GRU 3×, an LSTM 4× hidden_size")
    ih = entries["weight_ih_l0"]
    if ih.ndim != 2:
        raise SeqError(f"weight_ih_l0 has shape {_shape(ih.shape)}; a torch RNN's is "
                       "(gates × hidden_size) × input_size")
    X = ih.shape[1]
    for k, ss in enumerate(layout.suffixes()):
        width = X if k == 0 else H * len(ss)
        for s in ss:
            for part, want in zip(PARTS, [(G * H, width), (G * H, H), (G * H,), (G * H,)]):
                got = entries[part + s].shape
                if got != want:
                    raise SeqError(f"state_dict entry {part}{s} has shape {_shape(got)}; "
                                   f"{mode}(hidden_size={H}) needs {_shape(want)}")
    return Layout(mode, X, H, layout.num_layers, layout.bidirectional)


def _shape(shape) -> str:
    return "×".join(map(str, shape)) if shape else "a scalar"


def dtype_of(arrays: dict[str, np.ndarray], one: str, many: str) -> np.dtype:
    """The one float dtype of all of `arrays` (float32 or float64); `one`
    and `many` word them in messages (`state_dict entry`, `entries`)."""
    dtypes = {}
    for name, a in arrays.items():
        dtypes.setdefault(a.dtype.name, name)
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise SeqError(f"{one} `{dtypes[bad[0]]}` is {bad[0]}; seqdsl runs float32 and float64",
                       hint="convert first (a torch module: module.float() or module.double())")
    if len(dtypes) > 1:
        raise SeqError(f"{many} of different dtypes: " + ", ".join(
            f"`{n}` is {d}" for d, n in dtypes.items()),
            hint="give them all one dtype, float32 or float64")
    return np.dtype(next(iter(dtypes), "float64"))


# ---- one cell's parameters, both ways ------------------------------------------------

def cell_from_torch(kind: Kind, ct: CellType, w_ih, w_hh, b_ih, b_hh) -> dict[str, np.ndarray]:
    """One layer and direction of a torch module as the cell's parameters
    (fresh arrays, in the cell's order)."""
    H = w_hh.shape[1]
    rows = [slice(i * H, (i + 1) * H) for i in range(len(kind.gates))]
    out = {}
    for g, r in zip(kind.gates, rows):
        if kind.mode == "LSTM":  # W[a, x]: the hidden state's columns first
            out[f"W{g}"] = np.concatenate([w_hh[r], w_ih[r]], axis=1)
            out[f"b{g}"] = _fold(b_ih[r], b_hh[r])
        elif kind.mode == "GRU":  # separate biases: un sits inside Γr * (Un c + un)
            out[f"W{g}"], out[f"U{g}"] = w_ih[r].copy(), w_hh[r].copy()
            out[f"b{g}"], out[f"u{g}"] = b_ih[r].copy(), b_hh[r].copy()
        else:
            out["Waa"], out["Wax"], out["ba"] = w_hh.copy(), w_ih.copy(), _fold(b_ih, b_hh)
    return {n: out[n] for n in ct.params}


def _fold(b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """b_ih + b_hh, taking b_ih as it is where b_hh is zero, so that an
    exported bias (the sum in b_ih, zeros in b_hh) comes back bit for bit,
    -0.0 included."""
    return np.where(b_hh == 0, b_ih, b_ih + b_hh)


def cell_to_torch(kind: Kind, p: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The cell's parameters as torch's weight_ih, weight_hh, bias_ih,
    bias_hh (fresh C-contiguous arrays)."""
    g = kind.gates
    if kind.mode == "LSTM":
        H = p["bu"].shape[0]
        w_hh = np.concatenate([p[f"W{k}"][:, :H] for k in g])
        w_ih = np.concatenate([p[f"W{k}"][:, H:] for k in g])
        b_ih = np.concatenate([p[f"b{k}"] for k in g])
        b_hh = np.zeros_like(b_ih)
    elif kind.mode == "GRU":
        w_ih, w_hh = (np.concatenate([p[f"{w}{k}"] for k in g]) for w in "WU")
        b_ih, b_hh = (np.concatenate([p[f"{b}{k}"] for k in g]) for b in "bu")
    else:
        w_ih, w_hh, b_ih = p["Wax"].copy(), p["Waa"].copy(), p["ba"].copy()
        b_hh = np.zeros_like(b_ih)
    return [np.ascontiguousarray(a) for a in (w_ih, w_hh, b_ih, b_hh)]


def solve_sizes(ct: CellType, p: dict[str, np.ndarray], names: dict[str, str]) -> dict[str, int]:
    """The sizes (H, X) the arrays `p` give the cell's parameters, every
    shape checked; `names` words each parameter in messages."""
    bound: dict[str, int] = {}
    progress = True
    while progress:  # a dimension with one unknown symbol fixes it (H from bu, then X)
        progress = False
        for n, v in ct.params.items():
            if p[n].ndim != len(v.shape):
                continue
            for s, d in zip(v.shape, p[n].shape):
                rest = s.subst(bound)
                if len(rest.symbols) == 1:
                    sym = next(iter(rest.symbols))
                    if rest.coeff(sym) == 1:
                        bound[sym] = d - (rest - Size.of(sym)).value()
                        progress = True
    for n, v in ct.params.items():
        want = tuple(s.subst(bound) for s in v.shape)
        if any(not s.is_const() for s in want) or tuple(s.value() for s in want) != p[n].shape \
                or any(s.value() < 1 for s in want):
            dims = "×".join(s.paren() for s in v.shape)
            raise SeqError(f"parameter `{names[n]}` has shape {_shape(p[n].shape)}, which does "
                           f"not fit the others as {dims} of cell {ct.name} ("
                           + ", ".join(f"{k}={x}" for k, x in bound.items()) + ")")
    return bound


# ---- networks: a sequence's layers as a torch module's -------------------------------

Slots = list[list[tuple[str, Layer]]]  # per torch layer, per direction: (name prefix, cell)


def network_slots(net: NetworkType, sequence: str) -> tuple[Kind, Layout, Slots]:
    """The cells of a sequence per torch layer and direction, with their
    names' prefixes (`h.0.fwd`), their kind and the layout they need."""
    if sequence not in net.sequences:
        raise SeqError(f"network {net.name} has no sequence `{sequence}`",
                       hint="its sequences: " + ", ".join(net.sequences))
    slots = _torch_layers(net.sequences[sequence], sequence, net.name)
    what = f"sequence `{sequence}` of network {net.name}"
    if len({len(s) for s in slots}) > 1:
        raise SeqError(f"{what} is bidirectional at some layers only",
                       hint="a torch module is bidirectional at every layer or at none")
    cells = [layer for s in slots for _, layer in s]
    kinds = {kind_of(c.cell).mode: c.cell.name for c in cells}
    if len(kinds) > 1:
        raise SeqError(f"{what} mixes cells " + ", ".join(kinds.values()),
                       hint="a torch module has one kind of cell at every layer")
    hidden = {c.out_size.value() for c in cells}
    if len(hidden) > 1:
        raise SeqError(f"{what} has layers of hidden sizes " + ", ".join(map(str, sorted(hidden))),
                       hint="a torch module has one hidden_size at every layer")
    first = cells[0].in_size
    layout = Layout(next(iter(kinds)), first.value() if first.is_const() else None,
                    hidden.pop(), len(slots), len(slots[0]) == 2)
    return kind_of(cells[0].cell), layout, slots


def _torch_layers(layer: Layer, prefix: str, net: str) -> Slots:
    if layer.kind == "cell":
        return [[(prefix, layer)]]
    if layer.kind == "bidirectional":
        if any(c.kind != "cell" for c in layer.children):
            raise SeqError(f"`{layer.text}` in network {net}: a bidirectional layer of more "
                           "than one cell has no torch counterpart",
                           hint="torch runs both directions at every layer: write "
                                "stack(bidirectional(LSTM(H=...)), bidirectional(LSTM(H=...)))")
        return [[(f"{prefix}.fwd", layer.children[0]), (f"{prefix}.bwd", layer.children[1])]]
    out = []
    for i, child in enumerate(layer.children):
        out += _torch_layers(child, f"{prefix}.{i}", net)
    return out
