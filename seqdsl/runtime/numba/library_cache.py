"""Numba's cache of seqdsl's compiled library, checked against all of it.

Numba checks a cached function against its own file only (a hash of it).
But a library function's machine code holds the code of the functions it
calls from other files: packed.py's step product inlines tiles.py's
kernels. After an update that changes tiles.py and not packed.py (a `git
pull` on an editable install), packed.py's cached machine code would still
load, and run the old kernels: a bug fixed in the source would live on in
the cache. So every function of this package (the library, seqdsl's own
compiled code) is cached with a stamp of its file and of every Python file
of the package: a change to any of them compiles the library anew, once.

Generated kernels live elsewhere and have keys of their own (compile.py).
`install` runs from the package's `__init__`, before any of its modules
compiles or loads a function. Where Numba keeps no list of cache locators
to extend (a Numba other than the ones this was written for), it does
nothing and Numba's own per-file check stays.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent  # the files whose functions the stamp covers


def library_fingerprint() -> str:
    """A hash of every Python file of the library (read once a process)."""
    return _fingerprint_once(LIBRARY)


@functools.lru_cache(maxsize=None)
def _fingerprint_once(folder: Path) -> str:
    return fingerprint_of(folder)


def fingerprint_of(folder: Path) -> str:
    """A hash of every Python file under `folder`, as they are now."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _in_library(py_file: str) -> bool:
    try:
        return Path(py_file).resolve().is_relative_to(LIBRARY)
    except (OSError, ValueError):
        return False


class _WholeLibraryStamp:
    """A Numba cache locator's mixin: only for the library's files, and
    with the library's fingerprint in every function's stamp."""

    def get_source_stamp(self):
        return super().get_source_stamp(), library_fingerprint()

    @classmethod
    def from_function(cls, py_func, py_file):
        return super().from_function(py_func, py_file) if _in_library(py_file) else None


def _locators(caching) -> list[type]:
    """Numba's file-backed locators, each with the whole library's stamp."""
    bases = [getattr(caching, name, None) for name in
             ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")]
    return [type(f"Library{base.__name__}", (_WholeLibraryStamp, base), {})
            for base in bases if isinstance(base, type)]


def install() -> bool:
    """Put the library's locators ahead of Numba's own (once); whether they
    are in place."""
    from numba.core import caching
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    classes = getattr(impl, "_locator_classes", None)
    if not isinstance(classes, list):
        return False
    if not any(issubclass(c, _WholeLibraryStamp) for c in classes):
        classes[:0] = _locators(caching)
    return any(issubclass(c, _WholeLibraryStamp) for c in classes)
