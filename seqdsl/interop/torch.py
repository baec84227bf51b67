"""PyTorch interop: the weights of torch.nn.RNN (tanh), GRU and LSTM, of
one or several layers, one direction or both, to and from the shipped cells
RNN, TorchGRU and LSTM and the network sequences built from them.

Conventions (see seqdsl/lang/library/*.seq):
- LSTM: torch's gate rows i, f, g, o are Γu, Γf, c̃, Γo (Wu, Wf, Wc, Wo);
  `W[a, x]` is H×(H+X) with the hidden state's columns first, so each
  W = [weight_hh rows | weight_ih rows]; the two biases fold into one,
  b = bias_ih + bias_hh (export: the sum in bias_ih, zeros in bias_hh).
- RNN: Waa = weight_hh, Wax = weight_ih, ba = bias_ih + bias_hh (folded).
- TorchGRU: rows r, z, n; W = weight_ih rows, U = weight_hh rows, b =
  bias_ih rows, u = bias_hh rows: its biases are torch's, one for one (`un`
  sits inside Γr * (Un c + un) as torch's b_hn does), so nothing is folded.

Imports give NumPy arrays in the state_dict's dtype (float32 or float64);
exports give torch tensors in the parameters' dtype. Every state_dict entry
is used exactly once, and import(export(p)) == p bit for bit.

torch is imported only when a function needs it: importing this module does
not, and importing from NumPy arrays works without it.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from ..errors import SeqError
from ..ir.lower import CellType
from ..ir.network import NetworkType
from .layout import (PARTS, Layout, cell_from_torch, cell_to_torch, dtype_of, kind_of, mismatch,
                     network_slots, read_entries, solve_sizes, some)

__all__ = ["import_cell", "export_cell", "import_network", "export_network", "layout_of",
           "module_for", "require_torch", "Layout"]

INSTALL = "pip install torch==2.13.0, or seqdsl with its extra: pip install 'seqdsl[torch]'"


def require_torch(what: str):
    """The torch module, or a SeqError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise SeqError(f"{what} needs PyTorch, which is not installed", hint=INSTALL) from None
    return torch


# ---- importing --------------------------------------------------------------------

def import_cell(cell: CellType, state_dict, *, prefix: str = "") -> dict[str, np.ndarray]:
    """The parameters of `cell` (RNN, TorchGRU or LSTM) from the state_dict
    of a one-layer, one-direction torch module (or the module itself),
    keyed by the cell's parameter names. `prefix` picks the entries of a
    submodule from a larger model's state_dict (`"encoder.rnn."`)."""
    kind = kind_of(cell)
    entries = _entries(state_dict, prefix)
    got = read_entries(entries)
    if got.num_layers > 1 or got.bidirectional:
        raise SeqError(f"the torch module has {got.num_layers} layer(s)"
                       + (", bidirectional" if got.bidirectional else "")
                       + f"; cell {cell.name} is one layer in one direction",
                       hint="import it into a network whose sequence has its layers "
                            "(import_network; --network on the command line)")
    mismatch(Layout(kind.mode, None, None, 1, False), got, f"cell {cell.name}")
    return cell_from_torch(kind, cell, *(entries[p + "_l0"] for p in PARTS))


def import_network(network: NetworkType, sequence: str, state_dict, *,
                   prefix: str = "") -> dict[str, np.ndarray]:
    """The parameters of one sequence of `network` from a torch module's
    state_dict (or the module), keyed by their names in the network
    (`h.0.fwd.Wu`), in the network's order. The sequence's layers must be
    the module's: its kind of cell, num_layers, bidirectional, hidden size
    and (where the network fixes it) input size."""
    kind, want, slots = network_slots(network, sequence)
    entries = _entries(state_dict, prefix)
    got = read_entries(entries)
    mismatch(want, got, f"sequence `{sequence}` of network {network.name}")
    out = {}
    for suffixes, cells in zip(got.suffixes(), slots):
        for s, (name, layer) in zip(suffixes, cells):
            p = cell_from_torch(kind, layer.cell, *(entries[part + s] for part in PARTS))
            out.update((f"{name}.{n}", v) for n, v in p.items())
    return {n: out[n] for n in network.params if n in out}


def layout_of(state_dict, *, prefix: str = "") -> Layout:
    """The torch module a state_dict is of: mode (RNN, GRU, LSTM), sizes,
    num_layers, bidirectional. A plain state_dict cannot tell an RNN's
    nonlinearity: RNN means tanh here."""
    return read_entries(_entries(state_dict, prefix))


def _entries(source, prefix: str) -> dict[str, np.ndarray]:
    """The state_dict's entries under `prefix` (without it), as NumPy copies."""
    torch = sys.modules.get("torch")  # a tensor or module exists only if torch is loaded
    if torch is not None and isinstance(source, torch.nn.Module):
        _check_module(source)
        source = source.state_dict()
    if not isinstance(source, Mapping):
        raise SeqError(f"expected a state_dict (a mapping of names to tensors or arrays) or a "
                       f"torch module, given {type(source).__name__}")
    picked = {k[len(prefix):]: v for k, v in source.items()
              if isinstance(k, str) and k.startswith(prefix)}
    if prefix and not picked:
        raise SeqError(f"no state_dict entry starts with prefix `{prefix}`",
                       hint="entries: " + (some(source) or "none"))
    return {k: _array(torch, k, v) for k, v in picked.items()}


def _check_module(m) -> None:
    mode = getattr(m, "mode", None)
    if mode == "RNN_RELU":
        raise SeqError("a torch.nn.RNN with nonlinearity='relu' has no shipped counterpart: "
                       "the RNN cell applies tanh",
                       hint="write a cell with relu: a<t> = relu(Waa a<t-1> + Wax x<t> + ba)")
    if getattr(m, "proj_size", 0):
        raise SeqError(f"a torch.nn.LSTM with proj_size={m.proj_size} has no shipped "
                       "counterpart: seqdsl's LSTM passes a on unprojected")


def _array(torch, name: str, value) -> np.ndarray:
    if torch is not None and isinstance(value, torch.Tensor):
        kind = str(value.dtype).removeprefix("torch.")
        if kind not in ("float32", "float64"):  # bfloat16 has no NumPy dtype: say so first
            raise SeqError(f"state_dict entry `{name}` is {kind}; seqdsl runs float32 and "
                           "float64", hint="convert first: module.float() or module.double()")
        return value.detach().cpu().numpy().copy()
    return np.array(value, copy=True)


# ---- exporting --------------------------------------------------------------------

def export_cell(cell: CellType, params: Mapping, *, prefix: str = "") -> dict:
    """The state_dict (tensors, torch's order) of a one-layer torch module
    that computes `cell` with `params`; load it with
    `module.load_state_dict`. `prefix` goes before every name."""
    torch = require_torch("export_cell")
    kind = kind_of(cell)
    p = _params(params, {n: n for n in cell.params}, f"cell {cell.name}", strict="")
    solve_sizes(cell, p, {n: n for n in p})
    return _tensors(torch, dict(zip((f"{part}_l0" for part in PARTS), cell_to_torch(kind, p))),
                    prefix)


def export_network(network: NetworkType, sequence: str, params: Mapping, *,
                   prefix: str = "") -> dict:
    """The state_dict (tensors, torch's order) of the torch module that
    computes one sequence of `network`. `params` is keyed by network names
    (`h.0.fwd.Wu`); the parameters of other sequences and of heads are
    ignored, but a name under the sequence must be one of its parameters."""
    torch = require_torch("export_network")
    kind, want, slots = network_slots(network, sequence)
    names = [f"{name}.{n}" for cells in slots for name, layer in cells for n in layer.cell.params]
    flat = _params(params, {k: k for k in names}, f"sequence `{sequence}`",
                   strict=f"{sequence}.")
    arrays: dict[str, np.ndarray] = {}
    inputs: dict[str, tuple[int, str]] = {}  # a size the network leaves open, as the params give it
    for suffixes, cells in zip(want.suffixes(), slots):
        for s, (name, layer) in zip(suffixes, cells):
            p = {n: flat[f"{name}.{n}"] for n in layer.cell.params}
            sizes = solve_sizes(layer.cell, p, {n: f"{name}.{n}" for n in p})
            _check_sizes(layer, sizes, name, inputs)
            arrays.update(zip((part + s for part in PARTS), cell_to_torch(kind, p)))
    return _tensors(torch, arrays, prefix)


def _params(given: Mapping, names: dict[str, str], what: str, strict: str) -> dict:
    """`given[names[n]]` as arrays of one float dtype, keyed by n. A name
    starting with `strict` that is not one of `names` is an error."""
    if not isinstance(given, Mapping):
        raise SeqError(f"expected the parameters as a dict of arrays, given {type(given).__name__}")
    missing = [k for k in names.values() if k not in given]
    if missing:
        raise SeqError(f"parameters of {what} missing: " + some(missing),
                       hint="given: " + (some(given) or "none"))
    unknown = [k for k in given if str(k).startswith(strict) and k not in names.values()]
    if unknown:
        raise SeqError(f"parameters not of {what}: " + some(unknown),
                       hint="its parameters: " + some(names.values()))
    out = {}
    for n, k in names.items():
        a = given[k]
        out[n] = a if isinstance(a, np.ndarray) else np.asarray(a)
    dtype_of({names[n]: a for n, a in out.items()}, "parameter", "parameters")
    return out


def _check_sizes(layer, sizes: dict[str, int], name: str, inputs: dict) -> None:
    """That a cell's parameters have the sizes its layer has in the network;
    a size the network leaves open (its input's) is the same for all."""
    for sym, size in layer.sizes.items():
        if size.is_const():
            if sizes[sym] != size.value():
                raise SeqError(f"parameters `{name}.*` have {sym}={sizes[sym]}, but layer "
                               f"`{layer.text}` at `{name}` has {sym}={size.value()}")
            continue
        first = inputs.setdefault(str(size), (sizes[sym], name))
        if first[0] != sizes[sym]:
            raise SeqError(f"parameters `{name}.*` read inputs of size {sizes[sym]}, but "
                           f"`{first[1]}.*` of size {first[0]}")


def _tensors(torch, arrays: dict[str, np.ndarray], prefix: str) -> dict:
    return {prefix + k: torch.from_numpy(a) for k, a in arrays.items()}


def module_for(state_dict, *, prefix: str = ""):
    """A torch.nn.RNN, GRU or LSTM of the state_dict's layout and dtype,
    with its weights loaded (an RNN is made with tanh)."""
    torch = require_torch("module_for")
    entries = _entries(state_dict, prefix)
    lay = read_entries(entries)
    dtype = getattr(torch, dtype_of(entries, "state_dict entry", "state_dict entries").name)
    m = getattr(torch.nn, lay.mode)(lay.input_size, lay.hidden_size, lay.num_layers,
                                    bidirectional=lay.bidirectional, dtype=dtype)
    m.load_state_dict({k: torch.from_numpy(a) for k, a in entries.items()})
    return m
