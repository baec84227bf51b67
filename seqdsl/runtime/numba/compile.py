"""Generated source → a cached Python module compiled by Numba.

The source is written to `<cache>/<key>/seqdsl_<key>.py`, imported, and its
functions compiled with `numba.njit(cache=True)`, so a second process loads
the machine code Numba left in the entry's `__pycache__` instead of
compiling. The key covers the generated source and everything else that
shapes the machine code: seqdsl's own code (the generated module calls its
activations), the Numba, llvmlite, NumPy and Python versions and the CPU
target. An entry is checked against its manifest before Numba reads any of it
(see `cache.py`).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numba
from numba.core import config

from ...errors import SeqError
from . import cache
from .cache import cache_root, locked, temporary_root, warn
from .library_cache import fingerprint_of

PACKAGE = Path(__file__).resolve().parents[2]  # seqdsl/
# The most run-time alias checks LLVM's loop vectoriser may add to a loop (its
# default: 128). See _allow_alias_checks.
ALIAS_CHECKS = 1024
_alias_checks_allowed = False  # whether _allow_alias_checks has run in this process


def _allow_alias_checks() -> None:
    """Let LLVM vectorise a loop that needs up to ALIAS_CHECKS run-time alias
    checks. The vectoriser checks every written array against every other
    array a loop reads, grouping the reads of one array only where their
    offsets differ by a constant. With sizes as run-time values, the blocks
    of a stacked product sit at offsets such as `2 * n_H`: each is a group of
    its own, and a fused LSTM step needs about 130 checks. Past the default
    bound of 128 the loop stayed scalar: measured 2× slower at H=64 (0.38 ms
    against 0.18 ms a forward over 100 steps). The checks run once per row,
    not per entry. LLVM's options are process-wide: this changes, for every
    later Numba compile in the process, only which loops may be vectorised
    (Numba itself sets SVML the same way). It runs once, before seqdsl
    first compiles, never on import."""
    global _alias_checks_allowed
    if _alias_checks_allowed:
        return
    _alias_checks_allowed = True
    import llvmlite.binding
    llvmlite.binding.set_option("seqdsl",
                                f"-vectorize-memory-check-threshold={ALIAS_CHECKS}")


@functools.lru_cache(maxsize=None)
def code_fingerprint(package: Path = PACKAGE) -> str:
    """A hash of every Python file of seqdsl: a change to any code that shapes
    the generated module, or that it calls, makes new cache keys."""
    return fingerprint_of(package)


@functools.lru_cache(maxsize=None)
def environment() -> tuple[str, ...]:
    """What besides the source decides the machine code Numba caches."""
    import llvmlite
    import numpy
    from numba.core.registry import cpu_target
    triple, cpu, features = cpu_target.target_context.codegen().magic_tuple()
    return (f"seqdsl code {code_fingerprint()}", f"numba {numba.__version__}",
            f"llvmlite {llvmlite.__version__}", f"numpy {numpy.__version__}",
            f"python {sys.version} {sys.implementation.cache_tag}",
            f"target {triple} {cpu} {features}")


def cache_key(*parts: str) -> str:
    """The entry for the generated module the parts describe (its source among
    them), in this environment."""
    from ... import __version__
    h = hashlib.sha256()
    for p in (*parts, __version__, *environment()):
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:32]


@dataclass
class Loaded:
    module: object
    path: Path
    seconds: float  # compiling, or loading from the cache
    cache_hit: bool


def load_module(source: str, key: str, signatures: dict[str, str]) -> Loaded:
    """The generated module of cache entry `key` with each function compiled
    for its signature (Numba signature strings): loaded from the entry when it
    checks out against its manifest, else (re)built. A cache that fails on the
    way moves to a temporary folder, with a warning."""
    root = cache_root()
    try:
        return _load_entry(root, source, key, signatures)
    except OSError as e:
        warn(f"the cache at {root} failed ({e}); compiling in a temporary folder instead")
    try:
        return _load_entry(temporary_root(), source, key, signatures)
    except OSError as e:
        raise SeqError(f"no writable directory for compiled code ({e})",
                       hint="set SEQDSL_CACHE_DIR to a writable directory") from None


def _load_entry(root: Path, source: str, key: str, signatures: dict[str, str]) -> Loaded:
    entry = root / key
    path = entry / f"seqdsl_{key}.py"
    with locked(root, key):  # one process builds an entry; the others then load it
        problem = cache.damage(entry, {path.name: source.encode()}) if entry.exists() else "new"
        if problem not in (None, "new"):
            warn(f"cache entry {entry} is unusable ({problem}); rebuilding it")
        if problem is not None:
            _create(entry, path, source)
        try:
            loaded = _compile_all(key, path, signatures, fresh=problem is not None)
        except Exception as e:  # Numba refused a checked entry (it should not): rebuild it
            if problem is not None:
                with contextlib.suppress(OSError):  # no half entry to warn about next time
                    cache.remove(entry)
                raise
            warn(f"cache entry {entry} could not be loaded ({type(e).__name__}: {e}); "
                 f"rebuilding it")
            _create(entry, path, source)
            loaded, problem = _compile_all(key, path, signatures, fresh=True), "reloaded"
        if problem is not None or not loaded.cache_hit:
            cache.seal(entry)
        else:
            cache.touch(entry)
    if problem is not None:
        cache.prune_after_write(root, key)
    return loaded


def _create(entry: Path, path: Path, source: str) -> None:
    if entry.exists() or entry.is_symlink():
        cache.remove(entry)
    entry.mkdir(parents=True)
    cache.write_atomic(path, source.encode())


def _compile_all(key: str, path: Path, signatures: dict[str, str], fresh: bool) -> Loaded:
    """Compile (or load from Numba's cache) each function of the module.

    Functions not in Numba's cache yet are compiled side by side: all but the
    last in child processes, which leave the machine code in the entry for
    this process to load (Numba compiles one function at a time per process).
    This process compiles the last (a cell's backward, the largest), while
    the children start up: that way the child's start (0.7 s on 2 cores)
    overlaps the longer compile.
    """
    start = time.perf_counter()
    earlier = None if fresh else sys.modules.get(_module_name(key))
    numba_dir = path.parent / "__pycache__"
    cold = [fn for fn in signatures
            if not (earlier is not None and getattr(earlier, fn).signatures)
            and not list(numba_dir.glob(f"{path.stem}.{fn}-*.nbi"))]
    # Started before this process imports the module, so that both do it at
    # once (0.25 s on 2 cores: loading the compiled library). Run from the
    # folder holding this seqdsl: `-m` imports from the working directory
    # first, where another seqdsl may be.
    children = {fn: subprocess.Popen([sys.executable, "-m", "seqdsl.runtime.numba.compile", key,
                                      str(path), fn, signatures[fn]], cwd=PACKAGE.parent,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for fn in cold[:-1]}
    module = _import(key, path, fresh)
    _allow_alias_checks()
    hits = 0
    for fn in sorted(signatures, key=lambda fn: fn in children):  # this process's own first
        sig, dispatcher = signatures[fn], getattr(module, fn)
        if fn in children:
            children[fn].wait()  # then this loads what the child compiled
        if dispatcher.signatures:  # compiled earlier in this process (another size): a hit
            hits += 1
            continue
        dispatcher.compile(sig)
        hits += sum(dispatcher.stats.cache_hits.values())
    hit = hits == len(signatures) and not cold
    return Loaded(module, path, time.perf_counter() - start, hit)


def _module_name(key: str) -> str:
    return f"seqdsl_generated_{key}"


def _import(key: str, path: Path, fresh: bool = False):
    """The generated module, under the one name Numba's cache records.

    Executed from its source rather than imported, so Python leaves no
    bytecode file in the entry beside Numba's."""
    name = _module_name(key)
    if name in sys.modules and not fresh:
        return sys.modules[name]
    code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        with _numba_caches_in_tree():
            exec(code, module.__dict__)
    except BaseException:
        del sys.modules[name]  # not half a module for the next caller
        raise
    _keep_caches_in(module, path.parent / "__pycache__")
    return module


@contextlib.contextmanager
def _numba_caches_in_tree():
    """Numba puts a function's cache beside its file unless NUMBA_CACHE_DIR
    (or a locator list) sends it elsewhere, where no manifest covers it."""
    names = [n for n in ("CACHE_DIR", "CACHE_LOCATOR_CLASSES") if hasattr(config, n)]
    saved = [getattr(config, n) for n in names]
    for n in names:
        setattr(config, n, "")
    try:
        yield
    finally:
        for n, value in zip(names, saved):
            setattr(config, n, value)


def _keep_caches_in(module, folder: Path) -> None:
    """A function whose Numba cache would land outside the entry is not
    cached at all: nothing unchecked is ever loaded."""
    from numba.core.caching import NullCache
    for fn in vars(module).values():
        where = getattr(getattr(fn, "_cache", None), "_cache_path", None)
        if getattr(fn, "__module__", None) == module.__name__ and where is not None \
                and Path(where) != folder:
            fn._cache = NullCache()


if __name__ == "__main__":  # a child compiling one function into the cache
    _key, _path, _fn, _sig = sys.argv[1:]
    _allow_alias_checks()
    getattr(_import(_key, Path(_path)), _fn).compile(_sig)
