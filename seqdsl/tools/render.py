"""DOT source to a picture (SVG, PNG, PDF) with Graphviz's `dot` program,
through the `graphviz` package; a missing `dot` is a one-line error that
says how to install it."""
from __future__ import annotations

from ..errors import SeqError

FORMATS = ("svg", "png", "pdf")

MISSING_DOT = (
    "drawing a picture needs Graphviz's `dot` program, which is not on PATH; install it "
    "(Debian/Ubuntu: `apt install graphviz`, Homebrew: `brew install graphviz`, conda: "
    "`conda install -c conda-forge graphviz`), or write the DOT text with --format dot")


def render(source: str, fmt: str) -> bytes:
    """The picture of DOT `source` in `fmt` (one of FORMATS), as bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"cannot render {fmt!r}: one of {', '.join(FORMATS)}")
    import graphviz
    try:
        # `dot` picks its best renderer (cairo where built with it), which
        # finds fonts through fontconfig: the Greek names come out as letters.
        return graphviz.Source(source, engine="dot").pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise SeqError(MISSING_DOT) from None
    except graphviz.CalledProcessError as e:  # a dot built without cairo, say
        detail = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise SeqError(f"Graphviz's `dot` could not draw {fmt.upper()}: "
                       f"{detail[-1] if detail else f'exit status {e.returncode}'}") from None
