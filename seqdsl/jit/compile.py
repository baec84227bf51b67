"""Generated source → a cached Python module compiled by Numba.

The source is written to `<cache>/<key>.py` (key: a hash of the spec text,
the cell, sizes, dtype and the seqdsl and Numba versions), imported, and its
functions compiled with `numba.njit(cache=True)`, so a second process loads
the machine code from Numba's cache next to the file instead of compiling.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numba


def cache_dir() -> Path:
    """`SEQDSL_CACHE_DIR`, else the user's cache directory."""
    if os.environ.get("SEQDSL_CACHE_DIR"):
        return Path(os.environ["SEQDSL_CACHE_DIR"])
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "seqdsl"


def cache_key(*parts: str) -> str:
    from .. import __version__
    h = hashlib.sha256()
    for p in (*parts, __version__, numba.__version__):
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


@dataclass
class Loaded:
    module: object
    path: Path
    seconds: float  # compiling, or loading from the cache
    cache_hit: bool


def load_module(source: str, key: str, signatures: dict[str, str]) -> Loaded:
    """Write `source` as `<cache>/<key>.py` (unless there already), import it
    and compile each function for its signature (Numba signature strings).

    Functions not in Numba's cache yet are compiled side by side: all but the
    first in child processes, which leave the machine code in the cache for
    this process to load (Numba compiles one function at a time per process).
    """
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"seqdsl_{key}.py"
    if not path.exists() or path.read_text("utf-8") != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source, "utf-8")
        os.replace(tmp, path)  # atomic: a process running beside us never reads half a file
    module = _import(key, path)
    start = time.perf_counter()
    cold = [fn for fn in signatures if not getattr(module, fn).signatures
            and not list((folder / "__pycache__").glob(f"{path.stem}.{fn}-*.nbi"))]
    children = [subprocess.Popen([sys.executable, "-m", "seqdsl.jit.compile", key, str(path),
                                  fn, signatures[fn]], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL) for fn in cold[1:]]
    hits = 0
    for fn, sig in signatures.items():
        dispatcher = getattr(module, fn)
        if fn in cold[1:]:
            children[cold.index(fn) - 1].wait()  # then this loads what the child compiled
        if not dispatcher.signatures:
            try:
                dispatcher.compile(sig)
            except Exception:  # an unreadable cache entry: drop it and compile afresh
                for stale in (folder / "__pycache__").glob(f"{path.stem}.{fn}-*"):
                    stale.unlink()
                dispatcher = getattr(_import(key, path, fresh=True), fn)
                dispatcher.compile(sig)
        hits += sum(dispatcher.stats.cache_hits.values())
    hit = hits == len(signatures) and not cold
    return Loaded(module, path, time.perf_counter() - start, hit)


def _import(key: str, path: Path, fresh: bool = False):
    """The generated module, under the one name Numba's cache records."""
    name = f"seqdsl_generated_{key}"
    if name in sys.modules and not fresh:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # not half a module for the next caller
        raise
    return module


if __name__ == "__main__":  # a child compiling one function into the cache
    _key, _path, _fn, _sig = sys.argv[1:]
    getattr(_import(_key, Path(_path)), _fn).compile(_sig)
