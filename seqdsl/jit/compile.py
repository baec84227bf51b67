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
    and compile each function for its signature."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"seqdsl_{key}.py"
    if not path.exists() or path.read_text("utf-8") != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source, "utf-8")
        os.replace(tmp, path)  # atomic: a process running beside us never reads half a file
    name = f"seqdsl_generated_{key}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    start = time.perf_counter()
    hits = 0
    for fn, sig in signatures.items():
        dispatcher = getattr(module, fn)
        if not dispatcher.signatures:
            dispatcher.compile(sig)
        hits += sum(dispatcher.stats.cache_hits.values())
    return Loaded(module, path, time.perf_counter() - start, hits == len(signatures))
