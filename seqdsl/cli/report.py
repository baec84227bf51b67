"""`seqdsl report FILE -o report.html`: one self-contained page about a cell
or a network: its source, what `check` infers, the forward and backward step
graphs as pictures, and what `compile` generates (the Numba source with the
user's names, FLOPs per step, the cache entry).

Each section is what the command of the same name prints, run in-process,
so the page says exactly what the commands say.
"""
from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout

from ..errors import SeqError
from .common import EPILOG, definition_args, load, pick, size_args


def add_parser(sub) -> None:
    r = sub.add_parser(
        "report", help="write one self-contained HTML page about a cell or a network",
        description="Write an HTML page (no network access needed to view it: styles and "
        "pictures are inline) with the spec's source, the parameters `check` infers, the "
        "forward and backward step graphs drawn by Graphviz (as DOT text where the `dot` "
        "program is missing), and what `compile` makes of it: the generated Numba source, "
        "FLOPs per step, the cache entry; for a network, its layers and each cell's kernels.",
        epilog=EPILOG)
    r.add_argument("file", metavar="FILE")
    definition_args(r)
    size_args(r)
    r.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="of the compiled kernels (float32)")
    r.add_argument("-o", "--output", default="report.html", metavar="OUT",
                   help="the page to write (report.html)")
    r.set_defaults(run=run)


def run(args) -> int:
    from ..tools.report import Section, numbered, page
    spec = load(args.file)
    kind, definition = pick(spec, args)
    which = ["--network", definition.name] if kind == "network" else ["--cell", definition.name]
    sizes = _size_args(args)
    sections = [Section(f"{args.file}", "text", numbered(spec.source))]
    sections.append(Section("What check infers", "text",
                            _command(["check", args.file] + (which if kind == "network"
                                                             else []))))
    for title, extra in (("The step graph", []), ("The backward step, derived by autodiff",
                                                   ["--backward"])):
        sections.append(_picture(title, ["graph", args.file, *which, *sizes, *extra]))
    print(f"compiling {definition.name} ...", file=sys.stderr, flush=True)
    sections.append(Section("What compile makes of it", "text",
                            _command(["compile", args.file, *which, *sizes,
                                      "--dtype", args.dtype])))
    sections += _sources(args, kind, which, sizes)
    html = page(f"seqdsl report: {kind} {definition.name}", sections)
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(html)
    except OSError as e:
        raise SeqError(f"cannot write {args.output}: {e.strerror}") from None
    print(f"wrote {args.output}")
    return 0


def _size_args(args) -> list[str]:
    out = [] if args.hidden is None else ["--hidden", str(args.hidden)]
    out += [] if args.input is None else ["--input", str(args.input)]
    for name, value in args.size:
        out += ["--size", f"{name}={value}"]
    return out


def _command(argv: list[str]) -> str:
    """What `seqdsl ARGV` prints; its error, as a SeqError, if it fails."""
    from . import main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    if code != 0:
        message = err.getvalue().strip().splitlines()
        raise SeqError(f"report: `seqdsl {' '.join(map(str, argv))}` failed: "
                       + (message[0].removeprefix("error: ") if message else f"status {code}"))
    return out.getvalue()


def _picture(title: str, argv: list[str]):
    """The graph as inline SVG, or as DOT text where `dot` is missing."""
    from ..tools.render import render
    from ..tools.report import Section
    source = _command(argv + ["--format", "dot"])
    try:
        return Section(title, "svg", render(source, "svg").decode("utf-8"))
    except SeqError as e:  # no `dot` program: the DOT text, and how to get pictures
        return Section(title, "text", source, note=e.message)


def _sources(args, kind: str, which: list[str], sizes: list[str]):
    from ..tools.report import Section
    if kind == "cell":
        return [Section("The generated Numba source", "text",
                        _command(["compile", args.file, *which, *sizes, "--dtype", args.dtype,
                                  "--emit", "source"]))]
    from .common import instantiate_from_args
    _, _, net = instantiate_from_args(args, "numba", announce=False)
    return [Section(f"The generated Numba source of layer {prefix} ({c.cell.type.name})",
                    "text", c.runner.source)
            for layer in net.layers.values() for prefix, c in layer.cells()]
