"""`seqdsl diagnose FILE --cell NAME`: the vanishing/exploding-gradient
diagnostic, as a table and a log-scale plot.

For each cell (FILE's, and each --compare), at its default initialisation
and on random inputs, the norm of ∂L/∂h<t> at every step t for a loss at
the last step, L = Σ over the batch of r·h<T> (r a random unit vector, h the
cell's output state: `a` for the LSTM), so that the last step's norm is 1
and every other step's is the fraction of the loss's gradient that reaches
it. The mean over the batch of each example's norm, and the geometric mean
over --seeds seeds (the mean of the logarithms the plot shows).

    seqdsl diagnose seqdsl/lang/library/rnn.seq --compare GRU --compare LSTM -o grads.png
    seqdsl diagnose seqdsl/lang/library/rnn.seq --scale 3            # exploding
    seqdsl diagnose seqdsl/lang/library/rnn.seq --scale 3 --clip-norm 1

--scale multiplies the recurrent weights: the columns of each weight matrix
that multiply a previous state (in `W[a<t-1>, x<t>]` the first H; the
table's header lists them). --clip-norm clips, after every backward step,
each example's gradient of the states to that norm before it is carried
further back (per-step clipping), so the curve stays below it.
seqdsl/tools/diagnose.py says exactly what is computed, and has the Python
API (`gradient_norms`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ..errors import SeqError
from .common import (EPILOG, cell_sizes, load, pick_cell, positive_int, positive_number,
                     size_binding, table)

FORMATS = (".png", ".svg", ".pdf")


def add_parser(sub) -> None:
    from ..tools import diagnose as tool
    d = sub.add_parser(
        "diagnose", help="measure vanishing and exploding gradients through time",
        description="The vanishing/exploding-gradient diagnostic. At the cell's default "
        "initialisation, on standard-normal inputs and from zero states, the norm of ∂L/∂h<t> "
        "for every step t of a loss on the last step only, L = Σ over the batch of r·h<T> (r a "
        "random unit vector, h the cell's output state), so that the norm is 1 at t = T. Each "
        "example's norm is averaged over the batch, then over the seeds by the geometric mean. "
        "Prints a table (t, the norm, its ratio to the last step's) for each cell, and with -o "
        "saves a log-scale plot with one curve per cell. A plain RNN's gradient vanishes by "
        "tens of orders of magnitude over 100 steps; a GRU's and an LSTM's far less; larger "
        "recurrent weights (--scale) make it explode, and per-step clipping (--clip-norm) "
        "bounds it.", epilog=EPILOG)
    d.add_argument("file", metavar="FILE", nargs="?", help="the .seq file with the cell (not "
                   "with --checkpoint)")
    d.add_argument("--checkpoint", metavar="DIR", help="a trained network's cell, with its "
                   "trained weights, instead of a cell at its initialisation: DIR is what "
                   "`seqdsl train --out` wrote (its best checkpoint)")
    d.add_argument("--layer", metavar="NAME", help="with --checkpoint, the network's layer "
                   "(`a`, `h.0.fwd`; default: its first)")
    d.add_argument("--cell", metavar="NAME", help="the cell (default: the file's only cell; a "
                   "library cell such as LSTM may be named too)")
    d.add_argument("--compare", action="append", default=[], metavar="FILE:CELL",
                   help="another cell to measure and plot beside it: FILE:CELL, a file with "
                   "one cell, or a library cell (GRU, LSTM, ...); repeat for more")
    g = d.add_argument_group("sizes and samples")
    g.add_argument("--steps", type=positive_int, default=tool.DEFAULT_STEPS, metavar="T",
                   help=f"sequence length ({tool.DEFAULT_STEPS})")
    g.add_argument("--hidden", type=positive_int, default=tool.DEFAULT_HIDDEN, metavar="N",
                   help=f"state size H ({tool.DEFAULT_HIDDEN})")
    g.add_argument("--input", type=positive_int, default=None, metavar="N",
                   help=f"input size ({tool.DEFAULT_INPUT}, or what the cell's equations "
                   "require)")
    g.add_argument("--size", type=size_binding, action="append", default=[], metavar="NAME=N",
                   help="bind any other size symbol, e.g. --size K=5")
    g.add_argument("--batch", type=positive_int, default=tool.DEFAULT_BATCH, metavar="B",
                   help=f"examples per seed ({tool.DEFAULT_BATCH})")
    g.add_argument("--seeds", type=positive_int, default=tool.DEFAULT_SEEDS, metavar="N",
                   help=f"seeds 0..N-1, each drawing weights, inputs and r ({tool.DEFAULT_SEEDS})")
    e = d.add_argument_group("what to show")
    e.add_argument("--scale", type=positive_number, default=1.0, metavar="S",
                   help="multiply the recurrent weights (the columns that read a previous "
                   "state) by S, e.g. 3 for the exploding case (1)")
    e.add_argument("--clip-norm", type=positive_number, default=None, metavar="C",
                   help="clip each example's carried state gradient to norm C at every "
                   "backward step, as per-step gradient clipping does")
    e.add_argument("--all", action="store_true",
                   help="a table row for every step (default: t = 1, 2, 5, 10, 20, 50, ... "
                   "and T)")
    e.add_argument("--backend", choices=("numpy", "numba"), default="numpy",
                   help="run the reference interpreter (default) or the compiled code")
    e.add_argument("-o", "--output", metavar="PLOT", help="save the log-scale plot here "
                   "(.png, .svg or .pdf)")
    d.set_defaults(run=run)


def run(args) -> int:
    from ..tools import diagnose as tool
    _check_output(args.output)
    measured = []
    for label, cell, params in _instances(args):
        columns = tool.recurrent_columns(cell)
        if args.scale != 1 and not columns:
            print(f"warning: --scale: cell {cell.type.name} has no weight columns that read a "
                  "previous state; its weights are left as they are", file=sys.stderr)
        norms = tool.measure(cell, args.steps, args.batch, args.seeds, args.scale,
                             args.clip_norm, params=params)
        measured.append((label, cell, columns, norms))
    print("\n".join(_header(args, measured)))
    print()
    print("\n".join(_table(measured, _shown_steps(args.steps, args.all))))
    if args.output:
        _plot(args, measured)
        print(f"plot: {args.output}")
    return 0


# ---- which cells --------------------------------------------------------------------

def _instances(args):
    """(label, cell instance, its trained params or None) for each cell measured."""
    if (args.file is None) == (args.checkpoint is None):
        raise SeqError("give FILE (a cell at its initialisation) or --checkpoint DIR (a trained "
                       "network's), one of them")
    if args.layer is not None and args.checkpoint is None:
        raise SeqError("--layer picks a layer of a --checkpoint's network")
    if args.checkpoint is not None:
        from ..tools.diagnose import trained_cell
        if args.cell or args.compare:
            raise SeqError("--checkpoint measures the trained network's cell; --cell and "
                           "--compare are for cells at their initialisation")
        cell, params = trained_cell(args.checkpoint, args.layer)
        return [(f"{cell.type.name} ({args.checkpoint}, trained)", cell, params)]
    return [(label, _instantiate(args, ct), None) for label, _, ct in _cells(args)]


def _cells(args) -> list[tuple[str, str, object]]:
    """(label, where from, CellType) for FILE's cell and each --compare;
    labels are the cells' names, with their file where two share one."""
    specs: dict[str, object] = {}

    def spec(path):
        if path not in specs:
            specs[path] = load(path)
        return specs[path]
    found = [(args.file, pick_cell(spec(args.file), args.cell))]
    for text in args.compare:
        path, name = _compare(text)
        found.append(("library", _library()[name]) if path is None
                     else (path, pick_cell(spec(path), name)))
    names = [ct.name for _, ct in found]
    return [(ct.name if names.count(ct.name) == 1 else f"{ct.name} ({path})", path, ct)
            for path, ct in found]


def _library() -> dict:
    from ..spec import library_cells
    return library_cells()


def _compare(text: str) -> tuple[str | None, str | None]:
    """--compare's value as (file or None for the library, cell or None for
    the file's only cell)."""
    expected = "expected FILE:CELL (e.g. other.seq:GRU), a .seq file or a library cell"
    if ":" in text:
        path, _, name = text.rpartition(":")
        if not path.strip() or not name.strip():
            raise SeqError(f"--compare {text!r}: {expected}")
        return path, name
    if text in _library():
        return None, text
    if text.endswith(".seq") or Path(text).is_file():
        return text, None
    raise SeqError(f"--compare {text!r}: no library cell of that name ({', '.join(_library())}) "
                   f"and no such file; {expected}")


def _instantiate(args, ct):
    from ..spec import instantiate
    from ..tools.diagnose import default_input
    if args.backend == "numba":
        print(f"compiling {ct.name} ...", file=sys.stderr, flush=True)
    return instantiate(ct, args.hidden, default_input(ct, args.input),
                       cell_sizes(args, ct), dtype=np.float64,
                       backend=args.backend)


# ---- the table ----------------------------------------------------------------------

def _header(args, measured) -> list[str]:
    lines = ["‖∂L/∂h<t>‖ for a loss at the last step, L = Σ over the batch of r·h<T> "
             "(r: a random unit vector; h: each cell's output state)",
             f"T={args.steps} steps, B={args.batch} examples (mean of their norms), "
             f"{args.seeds} seed(s) (geometric mean); "
             f"{'trained weights' if args.checkpoint else 'default initialisation'}, float64, "
             f"{'numpy' if args.checkpoint else args.backend} backend"]
    recurrent = "recurrent columns" + (f" (×{args.scale:g})" if args.scale != 1 else "")
    rows = [("cell", "state", "sizes", recurrent)]
    for label, cell, columns, _ in measured:
        bound = ", ".join(f"{k}={v}" for k, v in cell.sizes.items())
        cols = ", ".join(f"{w} {m.sum()}/{m.size}" for w, m in columns.items()) or "none"
        rows.append((label, cell.output, bound, cols))
    lines += table(rows)
    if args.clip_norm is not None:
        lines.append(f"the carried gradient of the states clipped to norm {args.clip_norm:g} per "
                     "example at every backward step")
    return lines


def _shown_steps(T: int, every: bool) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... below T, and T; or every step."""
    if every:
        return list(range(1, T + 1))
    steps, decade = [], 1
    while decade < T:
        steps += [s for s in (decade, 2 * decade, 5 * decade) if s < T]
        decade *= 10
    return steps + [T]


def _table(measured, steps: list[int]) -> list[str]:
    head = ["t"]
    for label, cell, _, _ in measured:
        head += [f"{label} ‖∂L/∂{cell.output}<t>‖", "ratio"]
    rows = [tuple(head)]
    for t in steps:
        row = [str(t)]
        for _, _, _, norms in measured:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = norms[t - 1] / norms[-1]
            row += [_number(norms[t - 1]), _number(ratio)]
        rows.append(tuple(row))
    return table(rows)


def _number(v: float) -> str:
    return f"{v:.2e}" if np.isfinite(v) and v != 0 else str(float(v))


# ---- the plot -----------------------------------------------------------------------

def _check_output(path: str | None) -> None:
    """Refuse a plot file that cannot be written before measuring anything."""
    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise SeqError(f"-o {path}: give a file name ending in {', '.join(FORMATS)}")
    if not p.parent.is_dir():
        raise SeqError(f"-o {path}: no such directory: {p.parent}")
    if p.is_dir():
        raise SeqError(f"-o {path}: is a directory")


def _plot(args, measured) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only: no screen needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    t = np.arange(1, args.steps + 1)
    for label, cell, _, norms in measured:
        shown = np.where(np.isfinite(norms) & (norms > 0), norms, np.nan)  # log scale: > 0 only
        ax.plot(t, shown, lw=1.5, label=f"{label} ({cell.output})")
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("‖∂L/∂h<t>‖")
    notes = [f"loss at t = {args.steps}", f"mean of {args.batch} examples, {args.seeds} seed(s)"]
    if args.scale != 1:
        notes.append(f"recurrent weights ×{args.scale:g}")
    if args.clip_norm is not None:
        notes.append(f"clipped to {args.clip_norm:g} per step")
    ax.set_title(", ".join(notes), fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp" + out.suffix)  # never leave half a file
    try:
        fig.savefig(tmp)
        os.replace(tmp, out)
    except OSError as e:
        raise SeqError(f"-o {args.output}: cannot write it ({e.strerror or e})") from None
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
