"""What the commands share: argument types (a bad value is a one-line usage
error), the size arguments, loading a file and picking its cell, tables."""
from __future__ import annotations

import argparse
import math
import sys

from ..errors import SeqError

EPILOG = "Errors are reported as file:line:col with the source line; --traceback shows Python's."
TRACEBACK_HELP = "show Python tracebacks on errors"


def size_args(p):
    p.add_argument("--hidden", type=positive_int, default=4, metavar="N", help="state size H (4)")
    p.add_argument("--input", type=positive_int, default=None, metavar="N",
                   help="input size (3, or what the cell's equations require)")
    p.add_argument("--size", type=size_binding, action="append", default=[], metavar="NAME=N",
                   help="bind any other size symbol, e.g. --size K=5")


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


def tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, given {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a finite relative error ≥ 0 (e.g. 1e-6), given {text}")
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


def sizes(args, ct) -> dict[str, int]:
    """--size bindings; a symbol the cell does not have is ignored, with a
    warning naming the ones it has (a typo would otherwise go unnoticed)."""
    sizes = {}
    for name, value in args.size:
        if name in sizes:
            raise SeqError(f"--size {name}= given twice ({sizes[name]} and {value})")
        if name not in ct.symbols:
            known = ", ".join(ct.symbols) or "none"
            print(f"warning: --size {name}={value}: cell {ct.name} has no size `{name}` "
                  f"(its sizes: {known}); ignored", file=sys.stderr)
            continue
        sizes[name] = value
    return sizes


def input_size(args, ct) -> int | None:
    """--input, else 3, unless the cell's equations fix the input size."""
    if args.input is None and not ct.constraints:
        return 3
    return args.input


def instantiate_from_args(args, backend: str, announce: bool):
    """The cell that FILE and --cell name, at the sizes and dtype the
    arguments give; `announce` says on stderr that a compile is coming."""
    from ..spec import instantiate
    ct = pick_cell(load(args.file), args.cell)
    if announce:
        print(f"compiling {ct.name} ...", file=sys.stderr, flush=True)
    return ct, instantiate(ct, args.hidden, input_size(args, ct), sizes(args, ct),
                           dtype=args.dtype, backend=backend)


def table(rows, indent=2) -> list[str]:
    if not rows:
        return [" " * indent + "(none)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [" " * indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
