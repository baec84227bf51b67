"""What `seqdsl export` and `seqdsl import` share: their arguments, the cell
or network sequence they name, and reading and writing .npz and .pt files."""
from __future__ import annotations

import re
import zipfile

import numpy as np

from ..errors import SeqError
from .common import load, pick_cell


def target_args(p, data: str, data_help: str) -> None:
    p.add_argument("file", metavar="SPEC", help="the .seq file of the cell or network")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--cell", metavar="NAME", help="a cell (RNN, TorchGRU, LSTM, or one "
                       "with their equations); without --cell or --network, the file's only "
                       "cell, else its only network")
    which.add_argument("--network", metavar="NAME", help="a network")
    p.add_argument("--sequence", metavar="NAME", help="the network's sequence whose layers are "
                   "the torch module (default: its only sequence)")
    p.add_argument("--prefix", default="", metavar="TEXT", help="text before the torch names "
                   "(`rnn.` for a model's submodule `rnn`; default none)")
    p.add_argument("data", metavar=data, help=data_help)


class Target:
    """A cell, or a network's sequence, as the arguments name it."""

    def __init__(self, args):
        spec = load(args.file)
        self.cell = self.network = self.sequence = None
        if args.network is None and args.cell is None and spec.networks and not spec.cells:
            args.network = next(iter(spec.networks)) if len(spec.networks) == 1 else None
            if args.network is None:
                raise SeqError(f"{spec.file} defines {len(spec.networks)} networks "
                               f"({', '.join(spec.networks)}): name one",
                               hint=f"--network {next(iter(spec.networks))}")
        if args.network is None:
            if args.sequence is not None:
                raise SeqError("--sequence goes with --network", hint="a cell has no sequences")
            self.cell = pick_cell(spec, args.cell)
            self.what = f"cell {self.cell.name}"
            return
        self.network = spec.network(args.network)
        seqs = list(self.network.sequences)
        if args.sequence is None and len(seqs) > 1:
            raise SeqError(f"network {self.network.name} has {len(seqs)} sequences "
                           f"({', '.join(seqs)}): name one", hint=f"--sequence {seqs[0]}")
        self.sequence = args.sequence or seqs[0]
        self.what = f"sequence `{self.sequence}` of network {self.network.name}"

    def export(self, params, prefix):
        from ..interop import torch as ti
        if self.cell is not None:
            return ti.export_cell(self.cell, params, prefix=prefix)
        return ti.export_network(self.network, self.sequence, params, prefix=prefix)

    def import_(self, state_dict, prefix):
        from ..interop import torch as ti
        if self.cell is not None:
            return ti.import_cell(self.cell, state_dict, prefix=prefix)
        return ti.import_network(self.network, self.sequence, state_dict, prefix=prefix)


def read_npz(path: str) -> dict[str, np.ndarray]:
    hint = "save parameters with np.savez(path, **params)"
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise SeqError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SeqError(f"{path}: is a directory, not an .npz file") from None
    except OSError as e:
        raise SeqError(f"{path}: cannot read it ({e.strerror or e})") from None
    if head == b"\x93NUMPY":
        raise SeqError(f"{path}: a single array, not an .npz file of named arrays", hint=hint)
    if not head.startswith(b"PK"):  # np.load would try it as a pickle, and say so
        raise SeqError(f"{path}: not an .npz file of arrays", hint=hint)
    try:
        with np.load(path, allow_pickle=False) as f:
            other = [n for n in f.zip.namelist() if not n.endswith(".npy")]
            if other:  # np.load would hand these over as bytes
                raise SeqError(f"{path}: not an .npz file of arrays (it holds {other[0]})",
                               hint="a .pt file is read by `seqdsl import`" if any(
                                   n.endswith("data.pkl") for n in other) else hint)
            return {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise SeqError(f"{path}: not an .npz file of arrays ({_first_line(e)})",
                       hint=hint) from None


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez, but at exactly `path` (np.savez adds `.npz`) and with
    any parameter name (a keyword argument could not be named `file`)."""
    try:
        with zipfile.ZipFile(path, "w") as z:
            for name, a in arrays.items():
                with z.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, a, allow_pickle=False)
    except OSError as e:
        raise SeqError(f"{path}: cannot write it ({e.strerror or e})") from None


def read_pt(path: str):
    from ..interop.torch import require_torch
    torch = require_torch(f"reading {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SeqError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SeqError(f"{path}: is a directory, not a .pt file") from None
    except Exception as e:  # torch raises many kinds (UnpicklingError, RuntimeError, ...)
        raise SeqError(f"{path}: not a state_dict that torch.load(weights_only=True) reads "
                       f"({_first_line(e)})",
                       hint="save the module's weights: torch.save(module.state_dict(), path)"
                       ) from None


def write_pt(path: str, state_dict) -> None:
    from ..interop.torch import require_torch
    torch = require_torch(f"writing {path}")
    try:
        torch.save(state_dict, path)
    except (OSError, RuntimeError) as e:  # torch says RuntimeError for a missing folder
        raise SeqError(f"{path}: cannot write it ({getattr(e, 'strerror', None) or e})"
                       ) from None


def _first_line(e: Exception) -> str:
    """The gist of a library's message: its first sentence, without the
    terminal colours and C++ source places torch puts in some."""
    text = re.sub(r"\x1b\[[0-9;]*m|^\[enforce fail at [^\]]*\][ .]*", "", str(e)).strip()
    text = text.splitlines()
    return text[0].split(". ")[0].rstrip(".") if text else type(e).__name__
