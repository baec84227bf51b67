"""Checkpoints: a documented format that any numpy can read, written so that
a crash at any moment never loses the last complete one.

A training directory DIR holds named checkpoints (`last`, `best`, ...). The
checkpoint called N is two files:

* `DIR/N.json` -- UTF-8 JSON: the caller's metadata (spec text and hash,
  network, sizes, position, optimiser scalars, history...) plus
  `"format": "seqdsl-checkpoint"`, `"version": 1` and `"arrays"`, the file
  name (in DIR) of the arrays. Non-finite floats are written as Python's json
  writes them (`NaN`, `Infinity`).
* `DIR/N-<16 hex digits>.npz` -- `numpy.savez`, uncompressed, of the
  parameters under `params/<name>` and the optimiser's arrays under
  `optimizer/<key>`; names may be any Unicode (zip stores them as UTF-8).
  Read it with `numpy.load(path, allow_pickle=False)`.

Saving writes the npz to a temporary file, fsyncs it and renames it to its
unique name; then writes the JSON the same way onto `N.json`. That rename is
the commit: before it `N.json` still names the previous, complete npz, after
it the new one. Only then are other npz files of N and left-over temporary
files of N deleted. One process writes a directory at a time.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import zipfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SeqError

FORMAT = "seqdsl-checkpoint"
VERSION = 1
_NAME = re.compile(r"^\w[\w.-]*$")


@dataclass
class Checkpoint:
    """A loaded checkpoint: arrays, the JSON document and where it was read."""

    params: dict[str, np.ndarray]
    optimizer_arrays: dict[str, np.ndarray]
    meta: dict
    path: Path  # the JSON file


# ---- writing --------------------------------------------------------------------------------


def save_checkpoint(directory, name: str, params: dict, optimizer_arrays: dict,
                    meta: dict) -> Path:
    """Write checkpoint `name` in `directory` (created if need be), replacing
    any earlier one atomically; returns the path of its JSON file."""
    d = Path(directory)
    _check_name(name)
    arrays = {f"params/{k}": _plain_array(v, k) for k, v in params.items()}
    arrays.update((f"optimizer/{k}", _plain_array(v, k)) for k, v in optimizer_arrays.items())
    npz = _npz_name(name)
    # Serialise first: metadata that is not JSON must fail before any file is written.
    text = _json_text({**meta, "format": FORMAT, "version": VERSION, "arrays": npz})
    d.mkdir(parents=True, exist_ok=True)
    _write_atomic(d / npz, lambda f: np.savez(f, **arrays))
    return _commit(d, name, npz, text)


def copy_checkpoint(directory, src: str, dst: str) -> None:
    """Make checkpoint `dst` a copy of `src` (e.g. `best` from `last`), by the
    same crash-safe protocol as `save_checkpoint`."""
    d = Path(directory)
    _check_name(dst)
    path, doc = _read_doc(d, src)
    source = _npz_path(path, doc)
    npz = _npz_name(dst)

    def copy(f):
        with open(source, "rb") as s:
            shutil.copyfileobj(s, f, 1 << 20)

    _write_atomic(d / npz, copy)
    _commit(d, dst, npz, _json_text({**doc, "arrays": npz}))


def _commit(d: Path, name: str, npz: str, text: str) -> Path:
    # The npz's rename must be on disk before the JSON that names it.
    _fsync_dir(d)
    path = d / f"{name}.json"
    _write_atomic(path, lambda f: f.write(text.encode("utf-8")))
    _fsync_dir(d)
    _sweep(d, name, keep=npz)
    return path


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


def _fsync_dir(d: Path) -> None:
    # Not every platform can open a directory (Windows); there the rename is
    # as durable as the OS makes it.
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sweep(d: Path, name: str, keep: str) -> None:
    """Delete npz files of `name` other than `keep`, and temporary files of
    `name` that a killed save left behind."""
    n = re.escape(name)
    npz = re.compile(rf"^{n}-[0-9a-f]{{16}}\.npz$")
    tmp = re.compile(rf"^\.(?:{n}\.json|{n}-[0-9a-f]{{16}}\.npz)\.[0-9a-f]{{16}}\.tmp$")
    for entry in os.scandir(d):
        if entry.name != keep and (npz.match(entry.name) or tmp.match(entry.name)):
            with suppress(OSError):
                os.unlink(entry.path)


def _npz_name(name: str) -> str:
    return f"{name}-{secrets.token_hex(8)}.npz"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise SeqError(f"{name!r} is not a checkpoint name",
                       hint="use letters, digits, `_`, `-` and `.`, such as `last` or `best`")


def _plain_array(value, name: str) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.hasobject:
        raise SeqError(f"{name} is an array of Python objects, which a checkpoint cannot hold")
    return a


def _json_text(doc: dict) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=1, default=_json_default)


def _json_default(x):
    # numpy scalars and small arrays slip into metadata easily (a loss, a size).
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"checkpoint metadata holds a {type(x).__name__}, which is not JSON")


# ---- reading --------------------------------------------------------------------------------


def load_checkpoint(directory, name: str = "last") -> Checkpoint:
    """Read checkpoint `name` from `directory`; SeqError (naming the file) if
    it is missing, not a seqdsl checkpoint, or its arrays are lost."""
    path, doc = _read_doc(Path(directory), name)
    npz = _npz_path(path, doc)
    params, opt = {}, {}
    try:
        z = np.load(npz, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an npz archive")
        with z:
            for key in z.files:
                table, _, sub = key.partition("/")
                target = {"params": params, "optimizer": opt}.get(table)
                if target is None or not sub:
                    raise ValueError(f"unexpected array {key!r}")
                value = z[key]
                # NpzFile hands back raw bytes for a member that is not .npy.
                if not isinstance(value, np.ndarray):
                    raise ValueError(f"{key!r} is not a .npy array")
                target[sub] = value
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise SeqError(f"{npz}, the arrays of {path}, is unreadable: {_one_line(e)}",
                       hint="the file is damaged; resume from another checkpoint") from None
    return Checkpoint(params, opt, doc, path)


def _read_doc(d: Path, name: str) -> tuple[Path, dict]:
    _check_name(name)
    if not d.is_dir():
        what = "is not a directory" if d.exists() else "no such directory"
        raise SeqError(f"{d}: {what}", hint="give the --out directory of a training run")
    path = d / f"{name}.json"
    if not path.is_file():
        others = sorted(p.stem for p in d.glob("*.json") if _NAME.match(p.stem))
        hint = f"{d} has {', '.join(others)}" if others else None
        raise SeqError(f"{d} has no checkpoint `{name}` (no {path.name}); "
                       f"train with --out {d} to make one", hint=hint)
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise SeqError(f"{path} cannot be read: {e.strerror}") from None
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise SeqError(f"{path} is not a seqdsl checkpoint "
                       f"(not UTF-8 JSON: {_one_line(e)})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SeqError(f"{path} is not a seqdsl checkpoint (it lacks \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise SeqError(f"{path} is a seqdsl checkpoint of version {doc.get('version')!r}; "
                       f"this seqdsl reads version {VERSION}",
                       hint="use the seqdsl that wrote it, or a newer one")
    return path, doc


def _npz_path(path: Path, doc: dict) -> Path:
    arrays = doc.get("arrays")
    # Only a bare file name in the same directory: a checkpoint must not point
    # a reader elsewhere on the disk.
    if (not isinstance(arrays, str) or arrays in ("", ".", "..") or "/" in arrays
            or "\\" in arrays or "\0" in arrays):
        raise SeqError(f"{path} is not a seqdsl checkpoint (its \"arrays\" is {arrays!r}, "
                       "not a file name)")
    npz = path.parent / arrays
    if not npz.is_file():
        raise SeqError(f"{path} names {arrays}, which is missing from {path.parent}",
                       hint="the arrays were deleted or never copied with the JSON")
    return npz


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ---- compatibility --------------------------------------------------------------------------


def spec_hash(source_text: str) -> str:
    """The sha256 (hex) of a spec's UTF-8 text."""
    return hashlib.sha256(source_text.encode("utf-8")).hexdigest()


def check_compatible(meta: dict, spec_source: str, network: str, sizes: dict, *,
                     directory=None, spec_file: str | None = None) -> None:
    """SeqError listing every way the checkpoint (`meta`) differs from the
    spec text, network and sizes now given."""
    where = str(directory) if directory is not None else "the checkpoint"
    problems = []
    saved_hash = _saved_hash(meta)
    now_hash = spec_hash(spec_source)
    if saved_hash is not None and saved_hash != now_hash:
        whose = f"{spec_file}'s" if spec_file else "this spec's"
        problems.append(f"{where} was trained on another spec (its hash {saved_hash[:12]} "
                        f"differs from {whose}, {now_hash[:12]})")
    saved_net = meta.get("network")
    if saved_net is not None and saved_net != network:
        problems.append(f"{where} holds network {saved_net}, not {network}")
    saved_sizes = meta.get("sizes") or {}
    for key in sorted(set(saved_sizes) | set(sizes), key=str):
        old = saved_sizes.get(key, "not set")
        new = sizes.get(key, "not set")
        if old != new:
            problems.append(f"{key}: {old} in the checkpoint, {new} now")
    if problems:
        raise SeqError("; ".join(problems),
                       hint="give the spec, network and sizes the run was started with, "
                            "or train afresh with another --out")


def _saved_hash(meta: dict) -> str | None:
    spec = meta.get("spec")
    if isinstance(spec, dict):
        if isinstance(spec.get("hash"), str):
            return spec["hash"]
        if isinstance(spec.get("source"), str):
            return spec_hash(spec["source"])
    saved = meta.get("spec_hash")
    return saved if isinstance(saved, str) else None
