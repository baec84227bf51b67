"""What the commands share: argument types (a bad value is a one-line usage
error), the size arguments, loading a file and picking its cell, tables."""
from __future__ import annotations

import argparse
import math
import sys

from ..errors import SeqError

EPILOG = "Errors are reported as file:line:col with the source line; --traceback shows Python's."
TRACEBACK_HELP = "show Python tracebacks on errors"


DEFAULT_HIDDEN = 4
DEFAULT_SIZE = 3  # an input's size, or a network output's number of classes


def definition_args(p, cell_help: str | None = None):
    p.add_argument("--cell", metavar="NAME", help=cell_help or "the cell (default: the file's "
                   "only cell; a library cell such as LSTM may be named too)")
    p.add_argument("--network", metavar="NAME", help="a network of the file instead of a cell "
                   "(default for a file that has networks and no cell)")


def size_args(p):
    p.add_argument("--hidden", type=positive_int, default=None, metavar="N",
                   help=f"a cell's state size H ({DEFAULT_HIDDEN}); a network's are in its spec")
    p.add_argument("--input", type=positive_int, default=None, metavar="N",
                   help=f"input size ({DEFAULT_SIZE}, or what the cell's equations require)")
    p.add_argument("--size", type=size_binding, action="append", default=[], metavar="NAME=N",
                   help="bind any other size symbol, e.g. --size K=5, or a network's number of "
                   f"classes, --size Y=10 ({DEFAULT_SIZE})")


# ---- argument types: a bad value is a one-line usage error ---------------------------

def _whole_number(text: str) -> int:
    digits = text.strip().lstrip("+-")
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number, given {text!r}")
    if len(digits.lstrip("0")) > 18:
        raise argparse.ArgumentTypeError(f"{text.strip()} is too large")
    return int(text)


def positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, given {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, given {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, given {text!r}") from None


def tolerance(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a finite relative error ≥ 0 (e.g. 1e-6), given {text}")
    return value


def positive_number(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, given {text}")
    return value


def fraction(text: str) -> float:
    """A fraction in [0, 1)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), given {text}")
    return value


def size_binding(text: str) -> tuple[str, int]:
    """`NAME=N` with N a positive whole number."""
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=N (e.g. K=5), given {text!r}")
    try:
        return name.strip(), positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected NAME=N with N a positive whole number, given {text!r}") from None


# ---- loading ----------------------------------------------------------------------

def load(path):
    from ..spec import load
    spec = load(path)
    for w in spec.warnings:
        print(w.render(), file=sys.stderr)
    return spec


def pick_cell(spec, name):
    from ..spec import library_cells
    if name is not None and name not in spec.cells and name in library_cells():
        return library_cells()[name]
    if name is None and not spec.cells and spec.networks:
        raise SeqError(f"{spec.file} defines no cell, only networks ({', '.join(spec.networks)})",
                       hint="name a cell with --cell, e.g. --cell LSTM")
    return spec.cell(name)


def pick(spec, args):
    """("cell", CellType) or ("network", NetworkType), as --cell and
    --network name it: by default the file's only cell, or its only network
    when it has no cell."""
    if args.network is not None:
        if args.cell is not None:
            raise SeqError("give --cell or --network, not both")
        return "network", spec.network(args.network)
    if args.cell is None and not spec.cells and spec.networks:
        return "network", spec.network()
    return "cell", pick_cell(spec, args.cell)


def sizes(args, what: str, name: str, symbols: list[str]) -> dict[str, int]:
    """--size bindings; a symbol the cell or network does not have is
    ignored, with a warning naming the ones it has (a typo would otherwise
    go unnoticed)."""
    sizes = {}
    for sym, value in args.size:
        if sym in sizes:
            raise SeqError(f"--size {sym}= given twice ({sizes[sym]} and {value})")
        if sym not in symbols:
            known = ", ".join(symbols) or "none"
            print(f"warning: --size {sym}={value}: {what} {name} has no size `{sym}` "
                  f"(its sizes: {known}); ignored", file=sys.stderr)
            continue
        sizes[sym] = value
    return sizes


def input_size(args, ct) -> int | None:
    """--input, else 3, unless the cell's equations fix the input size."""
    if args.input is None and not ct.constraints:
        return 3
    return args.input


def instantiate_from_args(args, backend: str, announce: bool):
    """The cell or network that FILE, --cell and --network name, at the
    sizes and dtype the arguments give: ("cell" or "network", its type, the
    instance). `announce` says on stderr that a compile is coming."""
    from ..spec import instantiate
    kind, definition = pick(load(args.file), args)
    if announce:
        print(f"compiling {definition.name} ...", file=sys.stderr, flush=True)
    if kind == "network":
        return kind, definition, instantiate(definition, sizes=network_sizes(args, definition),
                                             dtype=args.dtype, backend=backend)
    hidden = DEFAULT_HIDDEN if args.hidden is None else args.hidden
    return kind, definition, instantiate(
        definition, hidden, input_size(args, definition), cell_sizes(args, definition),
        dtype=args.dtype, backend=backend)


def cell_sizes(args, ct) -> dict[str, int]:
    """--size bindings for a cell, and DEFAULT_SIZE for each symbol that
    neither they, --hidden nor --input bind (a sized intermediate's `M`, a
    computed output's `Y`)."""
    bound = sizes(args, "cell", ct.name, ct.symbols)
    by_flags = {s for name, size in ct.states + ct.inputs for s in size.symbols
                if not (ct.computed_output and name == ct.output)}
    for s in ct.symbols:
        if s not in bound and s not in by_flags:
            bound[s] = DEFAULT_SIZE
    return bound


def network_sizes(args, nt) -> dict[str, int]:
    """A network's input sizes and numbers of classes: --input for its only
    input, --size by name, 3 for the others."""
    if args.hidden is not None:
        raise SeqError(f"--hidden: network {nt.name} has its hidden sizes in its spec "
                       "(`LSTM(H=64)`)", hint="give input sizes and numbers of classes with "
                       "--input and --size NAME=N")
    symbols = list(dict.fromkeys([str(s) for _, _, s in nt.inputs] + [str(h.size) for h in
                                                                         nt.heads]))
    bound = sizes(args, "network", nt.name, symbols)
    if args.input is not None:
        if len(nt.inputs) != 1:
            raise SeqError(f"--input: network {nt.name} has {len(nt.inputs)} inputs",
                           hint="give their sizes by name: " + " ".join(
                               f"--size {s}=N" for _, _, s in nt.inputs))
        bound.setdefault(str(nt.inputs[0][2]), args.input)
    return {s: bound.get(s, DEFAULT_SIZE) for s in symbols}


def table(rows, indent=2) -> list[str]:
    if not rows:
        return [" " * indent + "(none)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [" " * indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
