"""Built-in corpora a data argument names as `corpus:NAME`, so that the demo
needs no download of its own."""
from __future__ import annotations

from importlib import resources

from ..errors import SeqError

PREFIX = "corpus:"
CORPORA = {
    "names": "the 5,163 distinct first names of the 1990 US census (public domain), "
             "lower-cased, one per line, as the `names` package ships them",
}


def is_corpus(path) -> bool:
    return str(path).startswith(PREFIX)


def corpus_text(path) -> str:
    """The text of the corpus `path` (`corpus:NAME`) names."""
    name = str(path)[len(PREFIX):]
    if name not in CORPORA:
        raise SeqError(f"{path}: no such corpus",
                       hint="corpora: " + "; ".join(f"{PREFIX}{n}: {d}"
                                                    for n, d in CORPORA.items()))
    return _names()


def _names() -> str:
    try:
        files = resources.files("names")
    except ModuleNotFoundError:
        raise SeqError("corpus:names needs the `names` package",
                       hint="pip install names") from None
    found = set()
    for list_file in ("dist.male.first", "dist.female.first"):
        for line in files.joinpath(list_file).read_text("ascii").splitlines():
            if line.split():
                found.add(line.split()[0].lower())
    return "\n".join(sorted(found)) + "\n"
