"""Checkpoints: the on-disk format, load errors, compatibility checks, and
that a process killed while saving never leaves a broken checkpoint."""
import hashlib
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from seqdsl.errors import SeqError
from seqdsl.train.checkpoint import (Checkpoint, check_compatible, copy_checkpoint,
                                     load_checkpoint, save_checkpoint, spec_hash)

ROOT = pathlib.Path(__file__).resolve().parent.parent


def sample():
    rng = np.random.default_rng(0)
    params = {
        "a.Wu": rng.standard_normal((3, 4)).astype(np.float32),
        "a.Γw": rng.standard_normal(5),
        "h.0.fwd.bf": np.array([np.nan, np.inf, -0.0, 1e-320]),  # odd values survive
        "Wy": rng.standard_normal((6, 4))[::2, ::-1],  # not contiguous
        "scale": np.float16(1.5) * np.ones(()),
        "ids": np.arange(4, dtype=np.int64),
        "empty": np.zeros((0, 3), np.float32),
    }
    opt = {"m/a.Γw": rng.standard_normal(5), "v/a.Wu": np.ones((3, 4), np.float32)}
    meta = {"spec": {"file": "cells.seq", "source": "cell a — Γ\n", "hash": spec_hash("x")},
            "network": "lm", "sizes": {"H": 8}, "epoch": 2, "step": 40, "seed": 0,
            "optimizer": {"name": "adam", "t": 40, "lr": 0.001},
            "history": [{"loss": 1.5, "valid": float("nan")}], "best": None}
    return params, opt, meta


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def npz_files(d, name="last"):
    return sorted(p.name for p in d.iterdir() if p.name.startswith(f"{name}-"))


# ---- the format -------------------------------------------------------------------------


def test_round_trip_is_bit_exact(tmp_path):
    params, opt, meta = sample()
    d = tmp_path / "run" / "deep"
    path = save_checkpoint(d, "last", params, opt, meta)
    assert path == d / "last.json"
    ck = load_checkpoint(d)
    assert isinstance(ck, Checkpoint) and ck.path == path
    assert set(ck.params) == set(params) and set(ck.optimizer_arrays) == set(opt)
    assert all(same(ck.params[k], np.asarray(v)) for k, v in params.items())
    assert all(same(ck.optimizer_arrays[k], v) for k, v in opt.items())
    assert ck.meta["format"] == "seqdsl-checkpoint" and ck.meta["version"] == 1
    assert {k: v for k, v in ck.meta.items() if k not in ("format", "version", "arrays")
            } == json.loads(json.dumps(meta))


def test_readable_without_seqdsl(tmp_path):
    params, opt, meta = sample()
    save_checkpoint(tmp_path, "best", params, opt, meta)
    doc = json.loads((tmp_path / "best.json").read_text("utf-8"))
    assert "cell a — Γ" in (tmp_path / "best.json").read_text("utf-8")  # not \u-escaped
    assert doc["arrays"].startswith("best-") and doc["arrays"].endswith(".npz")
    with np.load(tmp_path / doc["arrays"], allow_pickle=False) as z:
        assert set(z.files) == ({f"params/{k}" for k in params}
                                | {f"optimizer/{k}" for k in opt})
        assert same(z["params/a.Γw"], params["a.Γw"])


def test_numpy_scalars_in_meta(tmp_path):
    params, opt, meta = sample()
    meta["loss"] = np.float32(0.5)
    meta["sizes"] = {"H": np.int64(8)}
    save_checkpoint(tmp_path, "last", params, opt, meta)
    assert load_checkpoint(tmp_path).meta["sizes"] == {"H": 8}


def test_unserialisable_meta_writes_nothing(tmp_path):
    params, opt, meta = sample()
    meta["oops"] = object()
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, "last", params, opt, meta)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tmp_path):
    params, opt, meta = sample()
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(SeqError, match="not a checkpoint name"):
            save_checkpoint(tmp_path, bad, params, opt, meta)
    with pytest.raises(SeqError, match="Python objects"):
        save_checkpoint(tmp_path, "last", {"w": np.array([None])}, {}, meta)


def test_saving_again_replaces_and_sweeps(tmp_path):
    params, opt, meta = sample()
    save_checkpoint(tmp_path, "last", params, opt, meta)
    save_checkpoint(tmp_path, "best", params, opt, meta)
    hexes = "0123456789abcdef"
    stale = [".last.json.0123456789abcdef.tmp", f".last-{hexes}.npz.{hexes}.tmp",
             f"last-{hexes}.npz"]
    kept = ["notes.txt", f".best.json.{hexes}.tmp", f"lastly-{hexes}.npz"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"junk")
    params["a.Γw"] = params["a.Γw"] + 1
    save_checkpoint(tmp_path, "last", params, opt, {**meta, "step": 41})
    names = {p.name for p in tmp_path.iterdir()}
    assert not names & set(stale)
    assert set(kept) <= names
    assert len(npz_files(tmp_path, "last")) == 1 and len(npz_files(tmp_path, "best")) == 1
    ck = load_checkpoint(tmp_path)
    assert ck.meta["step"] == 41 and same(ck.params["a.Γw"], params["a.Γw"])
    assert load_checkpoint(tmp_path, "best").meta["step"] == 40


def test_copy_checkpoint(tmp_path):
    params, opt, meta = sample()
    save_checkpoint(tmp_path, "last", params, opt, meta)
    copy_checkpoint(tmp_path, "last", "best")
    copy_checkpoint(tmp_path, "last", "best")  # again: the older copy is swept
    assert len(npz_files(tmp_path, "best")) == 1
    save_checkpoint(tmp_path, "last", {"w": np.zeros(1)}, {}, {**meta, "step": 99})
    best = load_checkpoint(tmp_path, "best")
    assert best.meta["step"] == 40 and best.meta["arrays"].startswith("best-")
    assert all(same(best.params[k], np.asarray(v)) for k, v in params.items())
    with pytest.raises(SeqError, match="no checkpoint `nope`"):
        copy_checkpoint(tmp_path, "nope", "best")


# ---- load errors ------------------------------------------------------------------------


def load_error(d, name="last") -> SeqError:
    with pytest.raises(SeqError) as e:
        load_checkpoint(d, name)
    assert "\n" not in e.value.message
    return e.value


def test_no_such_directory(tmp_path):
    e = load_error(tmp_path / "missing")
    assert str(tmp_path / "missing") in e.message and "no such directory" in e.message
    (tmp_path / "file").write_text("x")
    assert "not a directory" in load_error(tmp_path / "file").message


def test_no_checkpoint(tmp_path):
    e = load_error(tmp_path)
    assert f"{tmp_path} has no checkpoint" in e.message and "--out" in e.message
    params, opt, meta = sample()
    save_checkpoint(tmp_path, "best", params, opt, meta)
    assert "best" in load_error(tmp_path, "last").hint


@pytest.mark.parametrize("content, words", [
    (b"{not json", "not a seqdsl checkpoint"),
    (b"\xff\xfe{}", "not a seqdsl checkpoint"),
    (b"[1, 2]", "not a seqdsl checkpoint"),
    (b'{"format": "other", "version": 1}', "not a seqdsl checkpoint"),
    (b'{"format": "seqdsl-checkpoint", "version": 2, "arrays": "x.npz"}', "version 2"),
    (b'{"format": "seqdsl-checkpoint", "version": 1, "arrays": "../x.npz"}', "not a file name"),
    (b'{"format": "seqdsl-checkpoint", "version": 1}', "not a file name"),
])
def test_not_a_checkpoint(tmp_path, content, words):
    (tmp_path / "last.json").write_bytes(content)
    e = load_error(tmp_path)
    assert str(tmp_path / "last.json") in e.message and words in e.message


def test_arrays_missing(tmp_path):
    params, opt, meta = sample()
    save_checkpoint(tmp_path, "last", params, opt, meta)
    (tmp_path / npz_files(tmp_path)[0]).unlink()
    e = load_error(tmp_path)
    assert str(tmp_path / "last.json") in e.message and "missing" in e.message


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle", "foreign"])
def test_arrays_unreadable(tmp_path, damage):
    params, opt, meta = sample()
    save_checkpoint(tmp_path, "last", params, opt, meta)
    npz = tmp_path / npz_files(tmp_path)[0]
    if damage == "truncate":
        npz.write_bytes(npz.read_bytes()[:300])
    elif damage == "garbage":
        npz.write_bytes(b"\0" * 1000)
    elif damage == "pickle":
        np.savez(npz, **{"params/w": np.array([{"a": 1}], dtype=object)})
    else:
        with zipfile.ZipFile(npz, "w") as z:
            z.writestr("params/w.npy", b"not an npy file")
    e = load_error(tmp_path)
    assert str(npz) in e.message and "unreadable" in e.message


# ---- compatibility ----------------------------------------------------------------------


def test_spec_hash():
    assert spec_hash("cell Γ") == hashlib.sha256("cell Γ".encode("utf-8")).hexdigest()
    assert spec_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_check_compatible():
    meta = {"spec": {"hash": spec_hash("spec one")}, "network": "lm",
            "sizes": {"H": 128, "E": 16}}
    check_compatible(meta, "spec one", "lm", {"H": 128, "E": 16})
    with pytest.raises(SeqError) as e:
        check_compatible(meta, "spec two", "lm", {"H": 128, "E": 16},
                         directory="runs/a", spec_file="two.seq")
    assert "runs/a was trained on another spec" in e.value.message
    assert f"its hash {spec_hash('spec one')[:12]}" in e.value.message
    assert "differs from two.seq's" in e.value.message
    with pytest.raises(SeqError, match="holds network lm, not tagger"):
        check_compatible(meta, "spec one", "tagger", {"H": 128, "E": 16})
    with pytest.raises(SeqError) as e:
        check_compatible(meta, "spec one", "lm", {"H": 64, "E": 16, "L": 2})
    assert "H: 128 in the checkpoint, 64 now" in e.value.message
    assert "L: not set in the checkpoint, 2 now" in e.value.message
    assert "E:" not in e.value.message and "spec" not in e.value.message


def test_check_compatible_hashes_source_when_no_hash():
    meta = {"spec": {"source": "a"}, "network": "n", "sizes": {}}
    check_compatible(meta, "a", "n", {})
    with pytest.raises(SeqError, match="another spec"):
        check_compatible(meta, "b", "n", {})


# ---- a real crash -----------------------------------------------------------------------

CHILD = """
import sys, numpy as np
from seqdsl.train.checkpoint import save_checkpoint
i = int(sys.argv[2])
while True:
    i += 1
    params = {"a.Wu": np.full(1_500_000, i, np.float64),
              "a.Γw": np.full(2_000_000, i, np.float32)}
    opt = {"m/a.Wu": np.full(500_000, i, np.float64)}
    save_checkpoint(sys.argv[1], "last", params, opt, {"iteration": i})
"""


def check_consistent(ck):
    i = ck.meta["iteration"]
    arrays = list(ck.params.values()) + list(ck.optimizer_arrays.values())
    assert len(arrays) == 3
    for a in arrays:
        assert a[0] == i and a[-1] == i and np.all(a == i)
    return i


def saved_iteration(d) -> int:
    # os.replace makes last.json either the old document or the new, never half.
    try:
        return json.loads((d / "last.json").read_text("utf-8"))["iteration"]
    except FileNotFoundError:
        return -1


def test_killed_while_saving(tmp_path):
    rng = random.Random(7)
    d = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for run in range(5):
        start = 1000 * run  # this run's saves are numbered above it
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(d), str(start)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(rng.uniform(0.2, 1.5))
            deadline = time.monotonic() + 20
            while saved_iteration(d) <= start:
                assert child.poll() is None, child.stderr.read().decode()
                assert time.monotonic() < deadline, "the child never saved"
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
            child.stderr.close()
        assert check_consistent(load_checkpoint(d)) > start
    # A save after the crash clears whatever the killed one left behind.
    save_checkpoint(d, "last", {"w": np.zeros(1)}, {}, {"iteration": 0})
    assert [p.name for p in d.iterdir() if p.name != "last.json"] == npz_files(d)
    assert len(npz_files(d)) == 1
