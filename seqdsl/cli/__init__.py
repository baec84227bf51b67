"""The `seqdsl` command line."""
from __future__ import annotations

import argparse
import math
import sys
import warnings

import numpy as np

from ..errors import SeqError
from ..ir.graph import Size

EPILOG = "Errors are reported as file:line:col with the source line; --traceback shows Python's."
TRACEBACK_HELP = "show Python tracebacks on errors"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    _traceback_anywhere(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad argument (usage printed) or --help: a status, not a traceback
        return e.code if isinstance(e.code, int) else 2
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args)
    except SeqError as e:
        if args.traceback:
            raise
        if getattr(e, "missing_sizes", None):  # the API's own hint speaks of instantiate()
            e.hint = "pass " + " ".join(f"--size {s}=N" for s in e.missing_sizes)
        print(e.render(), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in seqdsl, not in the input: say so in one line
        if args.traceback:
            raise
        print(f"error: internal error ({type(e).__name__}: {e}); rerun with --traceback "
              "to see where, and please report it", file=sys.stderr)
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings from the library (the cache's, say) as one line, like the CLI's own."""
    print(f"warning: {message}", file=sys.stderr)


def _traceback_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept --traceback after any subcommand too. SUPPRESS keeps a
    subcommand from resetting the value given before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "--traceback" not in sub._option_string_actions:
                    sub.add_argument("--traceback", action="store_true",
                                     default=argparse.SUPPRESS, help=TRACEBACK_HELP)
                _traceback_anywhere(sub)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="seqdsl", epilog=EPILOG,
        description="Recurrent cells written as equations: check them, show their step "
                    "graphs and derived backward steps, compile them to Numba kernels, and "
                    "check their gradients.")
    p.add_argument("--traceback", action="store_true", help=TRACEBACK_HELP)
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    c = sub.add_parser("check", help="parse and check a .seq file; list inferred parameters",
                       description="Parse and check every cell and network of FILE. Lists each "
                       "inferred parameter with its shape, the size constraints the equations "
                       "impose, and warnings. Exit status 0 when clean, 1 on errors.",
                       epilog=EPILOG)
    c.add_argument("file", metavar="FILE")
    c.set_defaults(run=_check)

    g = sub.add_parser("graph", help="print a cell's step graph (IR text or Graphviz DOT)",
                       description="Print the graph IR of one time step of a cell, or of its "
                       "backward step derived by reverse-mode autodiff.", epilog=EPILOG)
    g.add_argument("file", metavar="FILE")
    g.add_argument("--cell", metavar="NAME", help="the cell (default: the file's only cell; "
                   "a library cell such as LSTM may be named too)")
    g.add_argument("--backward", action="store_true", help="show the derived backward step")
    g.add_argument("--format", choices=("text", "dot"), default="text",
                   help="IR text, one equation a line (default), or Graphviz DOT source")
    g.set_defaults(run=_graph)

    m = sub.add_parser("compile", help="generate, compile and cache a cell's Numba kernels",
                       description="Parse, check and differentiate a cell, plan its products, "
                       "generate Python source specialised to its sizes and dtype, and compile it "
                       "with Numba (cached on disk: a second run loads it). Prints a summary: "
                       "parameters, FLOPs per step, where the source is, compile time and "
                       "whether the cache was hit.", epilog=EPILOG)
    m.add_argument("file", metavar="FILE")
    m.add_argument("--cell", metavar="NAME")
    _size_args(m)
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="floating-point type of the compiled code (float32)")
    m.add_argument("--emit", choices=("summary", "source", "graph"), default="summary",
                   help="print the summary (default), the generated source, or the step "
                   "graphs with the product plan")
    m.set_defaults(run=_compile)

    k = sub.add_parser("gradcheck", help="check a cell's gradients against finite differences",
                       description="Run the cell forward and backward through time on random "
                       "weights, a random batch of variable-length sequences and a random "
                       "initial state, and compare every gradient with central finite "
                       "differences. Prints the worst relative error per parameter; exit status "
                       "0 when all are within the tolerance, 1 otherwise.", epilog=EPILOG)
    k.add_argument("file", metavar="FILE")
    k.add_argument("--cell", metavar="NAME")
    _size_args(k)
    k.add_argument("--steps", type=positive_int, default=5, metavar="T",
                   help="sequence length (5)")
    k.add_argument("--batch", type=positive_int, default=3, metavar="B", help="batch size (3)")
    k.add_argument("--seed", type=non_negative_int, default=0, help="random seed (0)")
    k.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="floating-point type of the check (float64); the finite-difference "
                   "step and the default tolerance follow it")
    k.add_argument("--tolerance", type=tolerance, default=None, metavar="E",
                   help="largest relative error accepted (1e-6 in float64, 1e-2 in float32)")
    k.add_argument("--backend", choices=("numpy", "numba"), default="numpy",
                   help="check the reference interpreter (default) or the compiled code")
    k.set_defaults(run=_gradcheck)

    z = sub.add_parser("cache", help="show, clear or prune the cache of compiled cells",
                       description="info: where compiled cells are cached, how many and how "
                       "much space they take; clear: remove them all; prune: remove the least "
                       "recently used until the cache is within SIZE.", epilog=EPILOG)
    z.add_argument("action", choices=("info", "clear", "prune"))
    z.add_argument("--max-size", metavar="SIZE", help="prune's bound, e.g. 500M or 2G "
                   "(default: SEQDSL_CACHE_MAX_SIZE, else 1G)")
    z.set_defaults(run=_cache)
    return p


def _size_args(p):
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


def _load(path):
    from ..spec import load
    spec = load(path)
    for w in spec.warnings:
        print(w.render(), file=sys.stderr)
    return spec


def _pick_cell(spec, name):
    from ..spec import library_cells
    if name is not None and name not in spec.cells and name in library_cells():
        return library_cells()[name]
    if name is None and not spec.cells and spec.networks:
        raise SeqError(f"{spec.file} defines no cell, only networks ({', '.join(spec.networks)})",
                       hint="name a cell with --cell, e.g. --cell LSTM")
    return spec.cell(name)


# ---- check ------------------------------------------------------------------------

def _shape(shape: tuple[Size, ...]) -> str:
    return "×".join(s.paren() for s in shape) if len(shape) > 1 else str(shape[0])


def _check(args) -> int:
    spec = _load(args.file)
    out = []
    for ct in spec.cells.values():
        out.append(f"cell {ct.name}  ({args.file}:{ct.loc.line})")
        out.append("  inputs      " + ", ".join(f"{n}: {s}" for n, s in ct.inputs))
        out.append("  states      " + ", ".join(f"{n}: {s}" for n, s in ct.states)
                   + f"   (output {ct.output})")
        out.append("  parameters")
        rows = []
        for name, v in ct.params.items():
            start = _start(ct.inits.get(name, ("default",)), len(v.shape))
            rows.append((name, _shape(v.shape), "weight" if len(v.shape) == 2 else "vector", start))
        out += _table(rows, indent=4)
        for c in ct.constraints:
            out.append(f"  constraint  input size {c} (required by line {c.loc.line}); "
                       f"instantiate it with that size")
    for nt in spec.networks.values():
        out.append(f"network {nt.name}  ({args.file}:{nt.loc.line})  {nt.kind}")
        out.append("  inputs      " + ", ".join(
            f"{n}: {s}" + (" (one-hot token ids)" if k == "tokens" else "")
            for n, k, s in nt.inputs))
        for name, layer in nt.sequences.items():
            out.append(f"  {name} = {layer.text}   → {layer.out_size} per step")
        for h in nt.heads:
            out.append(f"  output {h.name}{'<t>' if h.per_step else ''}: {h.size}   "
                       f"({'every step' if h.per_step else 'each example’s last step'})")
        out.append("  parameters")
        out += _table([(n, _shape(s), "weight" if len(s) == 2 else "vector")
                       for n, s in nt.params.items()], indent=4)
    print("\n".join(out))
    n_w = len(spec.warnings)
    print(f"ok: {len(spec.cells)} cell(s), {len(spec.networks)} network(s), "
          f"{n_w} warning{'s' if n_w != 1 else ''}")
    return 0


def _start(init: tuple, ndim: int) -> str:
    """How a parameter starts, as `check` lists it."""
    kind, *nums = init
    if kind == "default":
        return "random" if ndim == 2 else "zeros"
    if kind == "const":
        return f"= {nums[0]:g}"
    return f"~ {kind}" + (f"({', '.join(f'{a:g}' for a in nums)})" if nums else "")


def _table(rows, indent=2) -> list[str]:
    if not rows:
        return [" " * indent + "(none)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [" " * indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


# ---- graph ------------------------------------------------------------------------

def _graph(args) -> int:
    from ..ir.autodiff import backward
    from ..ir.dot import to_dot
    spec = _load(args.file)
    ct = _pick_cell(spec, args.cell)
    graph = backward(ct.graph) if args.backward else ct.graph
    print(to_dot(graph) if args.format == "dot" else graph)
    return 0


# ---- gradcheck ----------------------------------------------------------------------

def _sizes(args, ct) -> dict[str, int]:
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


def _input_size(args, ct) -> int | None:
    """--input, else 3, unless the cell's equations fix the input size."""
    if args.input is None and not ct.constraints:
        return 3
    return args.input


def _gradcheck(args) -> int:
    from ..tools.gradcheck import gradcheck, random_problem
    from ..tools.gradcheck import tolerance as tolerance_for
    from ..spec import instantiate
    spec = _load(args.file)
    ct = _pick_cell(spec, args.cell)
    inp = _input_size(args, ct)
    if args.backend == "numba":
        print(f"compiling {ct.name} ...", file=sys.stderr, flush=True)
    cell = instantiate(ct, args.hidden, inp, _sizes(args, ct), dtype=args.dtype,
                       backend=args.backend)
    pb = random_problem(cell, args.steps, args.batch, args.seed)
    errors = gradcheck(cell, pb)
    tol = tolerance_for(args.dtype) if args.tolerance is None else args.tolerance
    sizes = ", ".join(f"{k}={v}" for k, v in cell.sizes.items())
    print(f"gradcheck {ct.name} ({sizes}; T={args.steps}, B={args.batch}, "
          f"lengths {list(map(int, pb.lengths))}; {args.dtype}, {args.backend}, "
          "central differences)")
    rows = [(name, f"{err:.2e}" if math.isfinite(err) else "not finite",
             "ok" if err <= tol else "FAIL") for name, err in errors.items()]
    print("\n".join(_table([("gradient of", "worst rel. error", "")] + rows)))
    bad = [r[0] for r in rows if r[2] == "FAIL"]
    if bad:
        print(f"FAILED: {len(bad)} of {len(rows)} gradients not within {tol:g}: {', '.join(bad)}")
        return 1
    print(f"ok: all {len(rows)} gradients within {tol:g}")
    return 0


# ---- compile --------------------------------------------------------------------------

def _compile(args) -> int:
    from ..runtime.numba.plan import product_groups
    from ..spec import instantiate
    spec = _load(args.file)
    ct = _pick_cell(spec, args.cell)
    inp = _input_size(args, ct)
    if args.emit == "summary":
        print(f"compiling {ct.name} ...", file=sys.stderr, flush=True)
    cell = instantiate(ct, args.hidden, inp, _sizes(args, ct), dtype=args.dtype, backend="numba")
    if args.emit == "source":
        print(cell.source, end="")
        return 0
    groups = product_groups(cell.forward_graph, {n for n, _ in ct.inputs})
    if args.emit == "graph":
        print(cell.forward_graph)
        print()
        print(cell.backward_graph)
        print()
        print("products, one per operand and step (hoisted: one for all steps):")
        for g in groups.values():
            print(f"  {g.operand} ({g.size}) × [" + " | ".join(
                f"{m.weight}[:, {m.cols[0]}:{m.cols[1]}]ᵀ" for m in g.members)
                + f"] → {g.width}" + ("   hoisted out of the time loop" if g.hoisted else ""))
        return 0
    sizes = ", ".join(f"{k}={v}" for k, v in cell.sizes.items())
    print(f"compiled {ct.name} ({sizes}, {args.dtype}) from {args.file}")
    total = sum(int(np.prod(s)) for s in cell.param_shapes.values())
    print(f"  parameters  {total:,} in {len(cell.param_shapes)}: " + ", ".join(
        f"{n} {'×'.join(map(str, s))}" for n, s in cell.param_shapes.items()))
    f_mm, f_ew, b_mm, b_ew = _flops(cell)
    print(f"  FLOPs       per example and step: forward {f_mm + f_ew:,} "
          f"({f_mm:,} in matrix products), backward {b_mm + b_ew:,} ({b_mm:,})")
    print("  products    " + "; ".join(
        f"{g.operand}: {len(g.members)} block(s) → one {g.size}×{g.width}"
        + (" (hoisted)" if g.hoisted else "") for g in groups.values()))
    print(f"  source      {cell.source_path}")
    hit = "cache hit" if cell.loaded.cache_hit else "compiled, now cached"
    print(f"  compile     {cell.loaded.seconds:.2f} s ({hit})")
    return 0


def _flops(cell) -> tuple[int, int, int, int]:
    """Floating-point operations per example and step, forward and backward:
    (matrix products, elementwise) each."""
    def count(graph):
        mm = ew = 0
        for e in graph.eqns:
            rows = e.out.shape[0].value() if e.out.shape else 0
            if e.op == "linear":
                mm += 2 * rows * e.args[0].shape[1].value()
            elif e.op == "linear_t":
                mm += 2 * e.args[0].shape[0].value() * rows
            elif e.op == "outer":
                mm += 2 * rows * e.out.shape[1].value()
            elif e.out.kind == "batch":
                ew += rows
        return mm, ew
    return (*count(cell.forward_graph), *count(cell.backward_graph))


def _cache(args) -> int:
    from ..runtime.numba.cache import command
    print(command(args.action, args.max_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
