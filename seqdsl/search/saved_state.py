"""A copy of the last experiment state Tune saved, so that a search killed
at any moment can resume.

Tune writes its state (the trials, the searcher, the search generator) into
a staging folder and then copies it into the experiment's folder in the
background. A search killed during that copy leaves the files there cut
short (seen: all of them empty), and Tune cannot resume from them. So after
every step in which a trial's status changed, the staging folder's state
files, which are complete by then (Tune's loop saves them before its
callbacks run), are copied into `tune-saved/`: a new slot each time, then a
manifest naming the slot, written last and atomically. `repair` puts them
back where Tune reads them when what is there does not load.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from pathlib import Path

PREFIXES = ("experiment_state-", "searcher-state-", "search_gen_state-")
MANIFEST = "manifest.json"


def state_files(folder: Path) -> list[Path]:
    """Tune's state files in `folder` (not the trials' folders)."""
    return sorted(p for p in folder.glob("*") if p.is_file() and p.name.startswith(PREFIXES))


def snapshot(staging: Path, backup: Path) -> None:
    """Copy `staging`'s state files into a new slot of `backup`."""
    files = state_files(staging)
    if not files:
        return
    manifest = _manifest(backup)
    slot = "b" if manifest and manifest["slot"] == "a" else "a"  # never the one in use
    target = backup / slot
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    digests = {}
    for p in files:
        data = p.read_bytes()
        (target / p.name).write_bytes(data)
        digests[p.name] = hashlib.sha256(data).hexdigest()
    _write_atomic(backup / MANIFEST, json.dumps(
        {"slot": slot, "files": digests, "saved_at": time.time()}).encode())


def loads(path: Path) -> bool:
    """Whether a state file is whole: not empty, and JSON or a pickle that loads."""
    try:
        data = path.read_bytes()
        if not data:
            return False
        json.loads(data) if path.suffix == ".json" else pickle.loads(data)
        return True
    except Exception:  # noqa: BLE001 -- any failure to load means it is cut short
        return False


def repair(storage: Path, backup: Path) -> float | None:
    """When a state file in `storage` does not load, put the last copy back
    (the broken files are moved to `backup`/broken). Returns the time
    that copy was saved, or None when nothing needed it or no whole copy
    exists."""
    broken = [p for p in state_files(storage) if not loads(p)]
    if not broken:
        return None
    manifest = _manifest(backup)
    if manifest is None:
        return None
    slot = backup / manifest["slot"]
    copies = {name: slot / name for name in manifest["files"]}
    if not all(p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == digest
               for (name, digest), p in zip(manifest["files"].items(), copies.values())):
        return None
    kept = backup / "broken"  # out of Tune's sight, nothing deleted
    kept.mkdir(exist_ok=True)
    for p in broken:
        os.replace(p, kept / p.name)
    for name, p in copies.items():
        _write_atomic(storage / name, p.read_bytes())
    return float(manifest["saved_at"])


def _manifest(backup: Path) -> dict | None:
    try:
        m = json.loads((backup / MANIFEST).read_text("utf-8"))
        return m if isinstance(m, dict) and m.get("slot") in ("a", "b") else None
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
