"""seqdsl: recurrent cells written as equations, checked, differentiated and run."""
from .errors import SeqError

__version__ = "0.1.0"
__all__ = ["SeqError", "Spec", "instantiate", "load", "loads", "__version__"]


def __getattr__(name: str):
    # The language and its parser load on first use, not with the package: a
    # process that only compiles generated code (numba/compile.py's children)
    # starts 0.25 s sooner.
    if name in ("Spec", "instantiate", "load", "loads"):
        from . import spec
        return getattr(spec, name)
    raise AttributeError(f"module 'seqdsl' has no attribute {name!r}")
