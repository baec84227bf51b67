"""The on-disk cache of compiled cells: where it lives, what an entry holds,
how an entry is checked before anything loads it, and its housekeeping.

An entry is a directory `<root>/<key>/` holding the generated module
`seqdsl_<key>.py`, Numba's index (`.nbi`) and machine code (`.nbc`) in its
`__pycache__`, and a `manifest`: the SHA-256 of every other file of the entry,
itself checksummed and written last. An entry without a manifest that matches
every file is incomplete or damaged, and nothing of it is loaded (Numba
unpickles its files, so a damaged one can crash the process). One process at a
time builds or loads an entry: `<root>/.locks/<key>` is locked meanwhile.

Entries are pruned least recently used first once the cache outgrows its
bound: `SEQDSL_CACHE_MAX_SIZE` (e.g. `500M`, `2G`; 1 GiB by default).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from ...errors import SeqError
from ..validate import format_size

try:
    import fcntl
except ImportError:  # Windows: no locking; atomic writes and the manifest still hold
    fcntl = None

MANIFEST = "manifest"
MANIFEST_HEAD = "seqdsl cache manifest 1 sha256="
LOCKS = ".locks"
DEFAULT_MAX_SIZE = 1 << 30
KEY = re.compile(r"[0-9a-f]{32}")
# What older seqdsl versions left at the top of the cache (one flat folder).
LEGACY = re.compile(r"seqdsl_[0-9a-f]{32}(\.py|\..*\.nb[ic]|\..*\.tmp)")


class CacheWarning(UserWarning):
    """The cache could not be used as it was: it was rebuilt or moved."""


def warn(message: str) -> None:
    """Warn, pointing at the first caller outside seqdsl: the user's code
    that asked for the compile."""
    package = str(Path(__file__).resolve().parents[2])
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, CacheWarning, stacklevel=level)


# ---- where ------------------------------------------------------------------------

def configured_dir() -> Path:
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


def cache_root() -> Path:
    """The configured cache directory when it can be written, else a
    temporary one (with a warning): the cache never stops a compile."""
    wanted = configured_dir()
    problem = unusable(wanted)
    if problem is None:
        return wanted
    root = temporary_root()
    warn(f"cache directory {wanted} is unusable ({problem}); using {root} instead "
         f"(set SEQDSL_CACHE_DIR to a writable directory)")
    return root


def unusable(path: Path) -> str | None:
    """Why `path` cannot hold the cache, or None. Tries a real write: a
    permission check alone says yes to root in a read-only directory."""
    try:
        if path.exists() and not path.is_dir():
            return "a file, not a directory"
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except (OSError, ValueError) as e:
        return getattr(e, "strerror", None) or str(e)
    return None


def temporary_root() -> Path:
    """This user's cache folder in the temporary directory, if it is a real
    directory only they can write; else a fresh one."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    shared = Path(tempfile.gettempdir()) / f"seqdsl-cache-{uid if uid is not None else 'user'}"
    try:
        shared.mkdir(mode=0o700, exist_ok=True)
        st = shared.lstat()
        if (stat.S_ISDIR(st.st_mode) and uid in (None, st.st_uid) and not st.st_mode & 0o022
                and unusable(shared) is None):
            return shared
        return Path(tempfile.mkdtemp(prefix="seqdsl-cache-"))
    except OSError as e:
        raise SeqError(f"no writable directory for compiled code ({e})",
                       hint="set SEQDSL_CACHE_DIR to a writable directory") from None


# ---- writing and checking an entry -----------------------------------------------------

def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, even after a crash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)  # the rename itself


def _fsync(path: Path) -> None:
    if os.name == "nt" and path.is_dir():  # Windows cannot open a folder
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(entry: Path) -> dict[str, Path]:
    """Every file of an entry but its manifest, by path relative to it."""
    found = {}
    for folder, _, names in os.walk(entry):
        for name in names:
            path = Path(folder) / name
            found[path.relative_to(entry).as_posix()] = path
    found.pop(MANIFEST, None)
    return found


def seal(entry: Path) -> None:
    """Make the entry's files durable, then record their checksums."""
    files = _files(entry)
    for path in files.values():  # Numba wrote its files without fsync
        _fsync(path)
    body = json.dumps({rel: _digest(p) for rel, p in sorted(files.items())}, indent=1).encode()
    head = (MANIFEST_HEAD + hashlib.sha256(body).hexdigest()).encode()
    write_atomic(entry / MANIFEST, head + b"\n" + body)


def damage(entry: Path, expected: dict[str, bytes]) -> str | None:
    """What is wrong with an entry (None: nothing), checked before any of it
    is loaded. `expected` gives the exact content some files must have."""
    if not entry.is_dir() or entry.is_symlink():
        return "not a directory"
    try:
        listed = _read_manifest(entry / MANIFEST)
        if isinstance(listed, str):
            return listed
        files = _files(entry)
        odd = sorted(set(listed) ^ set(files))
        if odd:
            return f"{odd[0]} is {'missing' if odd[0] in listed else 'not in its manifest'}"
        for rel, path in sorted(files.items()):
            if path.is_symlink() or _digest(path) != listed[rel]:
                return f"{rel} does not match its checksum"
        for rel, data in expected.items():
            if hashlib.sha256(data).hexdigest() != listed.get(rel):
                return f"{rel} differs from the code it should hold"
    except OSError as e:
        return f"unreadable: {e}"
    return None


def _read_manifest(path: Path) -> dict[str, str] | str:
    """The manifest's checksums, or why it cannot be trusted."""
    if not path.exists():
        return "incomplete: no manifest (a compile was interrupted)"
    head, _, body = path.read_bytes().partition(b"\n")
    try:
        if head.decode() != MANIFEST_HEAD + hashlib.sha256(body).hexdigest():
            return "the manifest does not match its checksum"
        listed = json.loads(body)
    except ValueError:  # includes a non-UTF-8 byte
        return "the manifest does not match its checksum"
    ok = isinstance(listed, dict) and all(isinstance(v, str) for v in listed.values())
    return listed if ok else "the manifest is malformed"


def touch(entry: Path) -> None:
    """Mark the entry used now (pruning removes the least recently used)."""
    with contextlib.suppress(OSError):
        os.utime(entry / MANIFEST)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if os.path.lexists(path):
        raise OSError(f"cannot remove {path}")


@contextlib.contextmanager
def locked(root: Path, key: str, wait: bool = True):
    """Hold the entry's lock; yields False when `wait` is off and another
    process holds it. The lock files stay: removing one that a process is
    waiting on would let two processes hold 'the' lock."""
    (root / LOCKS).mkdir(exist_ok=True)
    fd = os.open(root / LOCKS / key, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is None:
            yield True
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


# ---- housekeeping ------------------------------------------------------------------------

@dataclass
class Entry:
    key: str
    path: Path
    size: int
    last_used: float


def _size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in _files(path).values()) + (
        (path / MANIFEST).lstat().st_size if (path / MANIFEST).exists() else 0)


def entries(root: Path) -> list[Entry]:
    """The cache's entries, least recently used first."""
    found = []
    for path in root.iterdir() if root.is_dir() else ():
        if KEY.fullmatch(path.name):
            with contextlib.suppress(OSError):  # removed meanwhile by another process
                used = (path / MANIFEST if (path / MANIFEST).exists() else path).stat().st_mtime
                found.append(Entry(path.name, path, _size(path), used))
    return sorted(found, key=lambda e: e.last_used)


def _legacy(root: Path) -> list[Path]:
    """Files older seqdsl versions left in the cache folder; never loaded now."""
    top = [p for p in root.iterdir() if LEGACY.fullmatch(p.name)] if root.is_dir() else []
    old = root / "__pycache__"
    return top + ([p for p in old.iterdir() if LEGACY.fullmatch(p.name)] if old.is_dir() else [])


def prune(root: Path, max_size: int, keep: set[str] = frozenset()) -> tuple[int, int]:
    """Remove least recently used entries (not `keep`, not in use) until the
    entries take at most `max_size` bytes: (entries removed, bytes freed)."""
    found = entries(root)
    total = sum(e.size for e in found)
    removed = freed = 0
    for e in found:
        if total <= max_size:
            break
        if e.key in keep:
            continue
        with locked(root, e.key, wait=False) as mine:
            if mine:
                remove(e.path)
                total, removed, freed = total - e.size, removed + 1, freed + e.size
    return removed, freed


def clear(root: Path) -> tuple[int, int, int]:
    """Remove every entry not in use, and what older versions left:
    (entries removed, bytes freed, entries left because in use)."""
    removed = freed = busy = 0
    for e in entries(root):
        with locked(root, e.key, wait=False) as mine:
            if mine:
                remove(e.path)
                removed, freed = removed + 1, freed + e.size
            else:
                busy += 1
    for path in _legacy(root):
        freed += path.lstat().st_size
        remove(path)
    with contextlib.suppress(OSError):  # the old layout's folder, once empty
        (root / "__pycache__").rmdir()
    return removed, freed, busy


def prune_after_write(root: Path, key: str) -> None:
    """The automatic bound, applied after a new entry is written."""
    with contextlib.suppress(OSError):
        prune(root, max_size_from_env(), keep={key})


# ---- sizes, and the `seqdsl cache` command -------------------------------------------------

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """`500M`, `2G`, `1.5GiB`, `800` (bytes): binary multiples."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.I)
    if not m:
        raise ValueError(text)
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def max_size_from_env() -> int:
    text = os.environ.get("SEQDSL_CACHE_MAX_SIZE", "").strip()
    if not text:
        return DEFAULT_MAX_SIZE
    try:
        return parse_size(text)
    except ValueError:
        warn(f"SEQDSL_CACHE_MAX_SIZE={text} is not a size such as 500M or 2G; "
             f"using {format_size(DEFAULT_MAX_SIZE)}")
        return DEFAULT_MAX_SIZE


def command(action: str, max_size: str | None = None) -> str:
    """What `seqdsl cache info|clear|prune [--max-size SIZE]` prints."""
    if max_size is not None and action != "prune":
        raise SeqError(f"--max-size applies to `seqdsl cache prune`, not `{action}`")
    if max_size is None:
        bound, why = max_size_from_env(), "SEQDSL_CACHE_MAX_SIZE, else 1 GiB"
    else:
        bound, why = _size_arg(max_size), "--max-size"
    root = cache_root()
    if action == "clear":
        removed, freed, busy = clear(root)
        left = f"; {busy} in use by another process, left" if busy else ""
        return f"removed {_entries(removed)} ({format_size(freed)}) from {root}{left}"
    if action == "prune":
        removed, freed = prune(root, bound)
        return (f"removed {_entries(removed)} ({format_size(freed)}), least recently used "
                f"first\n" + _info(root, bound, why))
    return _info(root, bound, why)


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError:
        raise SeqError(f"--max-size {text}: expected a size such as 500M or 2G "
                       "(K, M, G, T: binary multiples; no unit: bytes)") from None


def _info(root: Path, bound: int, why: str) -> str:
    found = entries(root)
    source = "from SEQDSL_CACHE_DIR" if os.environ.get("SEQDSL_CACHE_DIR") else "the default"
    if root != configured_dir():
        source = f"temporary: {configured_dir()} is unusable"
    return "\n".join([
        f"location  {root}  ({source})",
        f"entries   {_entries(len(found))}, {format_size(sum(e.size for e in found))}",
        f"bound     {format_size(bound)} ({why}); beyond it the least recently used "
        f"entries are removed"] + _legacy_line(root))


def _legacy_line(root: Path) -> list[str]:
    old = _legacy(root)
    size = sum(p.lstat().st_size for p in old)
    return [f"old       {len(old)} files of an older seqdsl, {format_size(size)} "
            f"(`seqdsl cache clear` removes them)"] if old else []
