"""The cache of compiled cells: keys that follow seqdsl's code, entries checked
against their manifest before Numba reads them, concurrent builds, unusable
locations, and `seqdsl cache info|clear|prune`.

The tests that compile run real processes on a private copy of the seqdsl
package (so the keys cannot move while they run), on the smallest cell."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from seqdsl.runtime.numba import cache
from seqdsl.runtime.numba.cache import CacheWarning, damage, parse_size, seal

ROOT = Path(__file__).resolve().parent.parent
RNN = str(ROOT / "seqdsl" / "lang" / "library" / "rnn.seq")
PACKAGE = Path(cache.__file__).resolve().parents[2]

# Runs the smallest cell compiled and by the reference, forward and backward
# (at H=3, X=2 unless given), and says which entry it used, whether it was a
# cache hit, and the difference.
SCRIPT = """
import sys
import numpy as np
from seqdsl.tools.gradcheck import random_problem
from seqdsl.spec import instantiate, load
ct = load(sys.argv[1]).cell(None)
hidden, input = (int(n) for n in sys.argv[2:4]) if len(sys.argv) > 2 else (3, 2)
ref = instantiate(ct, hidden, input, dtype=np.float64)
jit = instantiate(ct, hidden, input, dtype=np.float64, backend="numba")
pb = random_problem(ref, 4, 3, 0)
want = ref.forward(pb.params, pb.x, pb.lengths, pb.state0)
got = jit.forward(pb.params, pb.x, pb.lengths, pb.state0)
dw = ref.backward(pb.params, want, pb.w_out)
dg = jit.backward(pb.params, got, pb.w_out)
err = max([abs(want.outputs - got.outputs).max()]
          + [abs(dw.params[k] - dg.params[k]).max() for k in dw.params])
print(f"entry={jit.loaded.path.parent.name} hit={jit.loaded.cache_hit} err={err:.1e} "
      f"sum={got.outputs.sum() + sum(g.sum() for g in dg.params.values())!r}")
sys.exit(0 if err < 1e-12 else 3)
"""


def run_cell(package: Path, cache_dir: Path, spec: str = RNN, sizes: tuple = (), **env) -> dict:
    proc = run_cell_async(package, cache_dir, spec, sizes, **env)
    out, err = proc.communicate(timeout=300)
    return finished(proc, out, err)


def run_cell_async(package: Path, cache_dir: Path, spec: str = RNN, sizes: tuple = (),
                   **env) -> subprocess.Popen:
    env = {**os.environ, "SEQDSL_CACHE_DIR": str(cache_dir), **env}
    # From the package's folder: `-c` imports from the working directory first.
    return subprocess.Popen([sys.executable, "-c", SCRIPT, spec, *map(str, sizes)], env=env,
                            text=True, cwd=package, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finished(proc, out: str, err: str) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    fields = dict(item.split("=", 1) for item in out.split())
    return {**fields, "stderr": err}


def copy_package(dest: Path) -> Path:
    shutil.copytree(PACKAGE, dest / "seqdsl", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A snapshot of seqdsl for the subprocesses to import."""
    return copy_package(tmp_path_factory.mktemp("pkg"))


@pytest.fixture(scope="module")
def pristine(package, tmp_path_factory):
    """A cache holding the cell's entry, built beside an old 2 MiB entry that
    the automatic size bound (here 1 MiB) removes."""
    folder = tmp_path_factory.mktemp("pristine")
    old = fake_entry(folder, "0" * 32, 2 << 20, age=3600)
    r = run_cell(package, folder, SEQDSL_CACHE_MAX_SIZE="1M")
    assert r["hit"] == "False" and not old.exists()
    assert [e.key for e in cache.entries(folder)] == [r["entry"]]
    return folder, r


def fake_entry(root: Path, key: str, size: int, age: float = 0) -> Path:
    entry = root / key
    (entry / "__pycache__").mkdir(parents=True)
    (entry / f"seqdsl_{key}.py").write_text("x = 1\n")
    (entry / "__pycache__" / f"seqdsl_{key}.f-1.py311.1.nbc").write_bytes(b"\1" * size)
    seal(entry)
    stamp = time.time() - age
    os.utime(entry / "manifest", (stamp, stamp))
    return entry


def flip_bytes(path: Path, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(middle + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- real processes ----------------------------------------------------------------------

def test_a_second_process_loads_the_checked_entry(package, pristine, tmp_path):
    folder, first = pristine
    shutil.copytree(folder, tmp_path / "c")
    r = run_cell(package, tmp_path / "c")
    assert r["hit"] == "True" and r["entry"] == first["entry"] and r["sum"] == first["sum"]
    assert "CacheWarning" not in r["stderr"]


def test_the_same_cell_in_another_file_shares_the_entry(package, pristine, tmp_path):
    folder, first = pristine
    shutil.copytree(folder, tmp_path / "c")
    elsewhere = tmp_path / "another folder" / "copy.seq"
    elsewhere.parent.mkdir()
    elsewhere.write_text("# the same cell, elsewhere\n" + Path(RNN).read_text("utf-8"), "utf-8")
    r = run_cell(package, tmp_path / "c", str(elsewhere))
    assert r["hit"] == "True" and r["entry"] == first["entry"]
    assert [e.key for e in cache.entries(tmp_path / "c")] == [first["entry"]]


def test_another_size_in_another_process_loads_the_same_entry(package, pristine, tmp_path):
    """The generated source holds no size: a cell at new sizes is a cache
    hit, and its results still match the reference (the script checks)."""
    folder, first = pristine
    shutil.copytree(folder, tmp_path / "c")
    r = run_cell(package, tmp_path / "c", sizes=(7, 5))
    assert r["hit"] == "True" and r["entry"] == first["entry"] and r["sum"] != first["sum"]
    assert [e.key for e in cache.entries(tmp_path / "c")] == [first["entry"]]


@pytest.mark.parametrize("kind", [".py", ".nbi", ".nbc", "manifest"])
def test_a_corrupt_cache_file_is_rebuilt_with_a_warning(package, pristine, tmp_path, kind):
    folder, first = pristine
    shutil.copytree(folder, tmp_path / "c")
    entry = tmp_path / "c" / first["entry"]
    damaged = [p for p in entry.rglob("*") if p.is_file() and p.name.endswith(kind)]
    assert damaged
    for path in damaged:
        flip_bytes(path)
    if kind == ".py":  # the flipped bytes are no longer UTF-8
        with pytest.raises(UnicodeDecodeError):
            damaged[0].read_bytes().decode("utf-8")
    r = run_cell(package, tmp_path / "c")
    assert "CacheWarning" in r["stderr"] and "rebuilding it" in r["stderr"], r
    assert r["hit"] == "False" and r["sum"] == first["sum"]
    again = run_cell(package, tmp_path / "c")  # the rebuilt entry checks out
    assert again["hit"] == "True" and "CacheWarning" not in again["stderr"], again


def test_a_change_to_seqdsl_code_misses_the_cache(package, pristine, tmp_path):
    folder, first = pristine
    shutil.copytree(folder, tmp_path / "c")
    edited = copy_package(tmp_path / "pkg")
    activations = edited / "seqdsl" / "runtime" / "numba" / "activations.py"
    activations.write_text(activations.read_text("utf-8") + "# edited\n", "utf-8")
    r = run_cell(edited, tmp_path / "c")
    assert r["hit"] == "False" and r["entry"] != first["entry"] and r["sum"] == first["sum"]


def test_concurrent_compiles_of_one_entry_all_succeed(package, tmp_path):
    elsewhere = tmp_path / "numba-cache-dir"
    procs = [run_cell_async(package, tmp_path / "c", NUMBA_CACHE_DIR=str(elsewhere))
             for _ in range(3)]
    results = [finished(p, *p.communicate(timeout=300)) for p in procs]
    assert len({r["sum"] for r in results}) == 1 and len({r["entry"] for r in results}) == 1
    assert sorted(r["hit"] for r in results) == ["False", "True", "True"]  # one built it
    assert all("CacheWarning" not in r["stderr"] for r in results)
    [entry] = cache.entries(tmp_path / "c")
    assert damage(entry.path, {}) is None
    assert any(p.suffix == ".nbc" for p in entry.path.rglob("*"))
    assert not elsewhere.exists() or not any(elsewhere.iterdir())  # Numba's files stay in it


def test_an_unusable_location_falls_back_with_a_warning(package, pristine, tmp_path):
    folder, first = pristine
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    shutil.copytree(folder, tmp_path / "tmp" / f"seqdsl-cache-{os.getuid()}")
    r = run_cell(package, a_file / "cache", TMPDIR=str(tmp_path / "tmp"))
    assert "CacheWarning" in r["stderr"] and "unusable (Not a directory)" in r["stderr"]
    assert "Traceback" not in r["stderr"] and r["sum"] == first["sum"]
    assert r["hit"] == "True"  # this user's temporary cache, kept between runs


# ---- the manifest -----------------------------------------------------------------------

def test_the_manifest_catches_any_change_to_an_entry(tmp_path):
    entry = fake_entry(tmp_path, "1" * 32, 1000)
    assert damage(entry, {f"seqdsl_{'1' * 32}.py": b"x = 1\n"}) is None
    assert "differs" in damage(entry, {f"seqdsl_{'1' * 32}.py": b"x = 2\n"})
    for path in sorted(entry.rglob("*")):
        if path.is_file():
            kept = path.read_bytes()
            flip_bytes(path, count=1)
            assert damage(entry, {}) is not None, path.name
            path.write_bytes(kept)
    assert damage(entry, {}) is None
    (entry / "__pycache__" / "stray.nbi").write_bytes(b"")
    assert damage(entry, {}) == "__pycache__/stray.nbi is not in its manifest"
    (entry / "__pycache__" / "stray.nbi").unlink()
    (entry / f"seqdsl_{'1' * 32}.py").unlink()
    assert damage(entry, {}) == f"seqdsl_{'1' * 32}.py is missing"
    (entry / "manifest").unlink()
    assert damage(entry, {}).startswith("incomplete")


def test_a_non_utf8_manifest_is_damage_not_a_crash(tmp_path):
    entry = fake_entry(tmp_path, "2" * 32, 10)
    (entry / "manifest").write_bytes(b"\xff\xfe" + (entry / "manifest").read_bytes())
    assert damage(entry, {}) == "the manifest does not match its checksum"


def test_cache_key_follows_seqdsl_code(tmp_path, monkeypatch):
    from seqdsl.runtime.numba import compile as jit_compile
    fingerprint = jit_compile.code_fingerprint.__wrapped__  # not the one kept for the process
    copy = copy_package(tmp_path) / "seqdsl"
    before = fingerprint(copy)
    activations = copy / "runtime" / "numba" / "activations.py"
    activations.write_text(activations.read_text("utf-8") + "# edited\n", "utf-8")
    assert fingerprint(copy) != before
    key = jit_compile.cache_key("source")
    monkeypatch.setattr(jit_compile, "code_fingerprint", lambda: "other code")
    jit_compile.environment.cache_clear()
    try:
        assert jit_compile.cache_key("source") != key
    finally:
        monkeypatch.undo()
        jit_compile.environment.cache_clear()
    assert jit_compile.cache_key("source") == key
    assert any(part.startswith("target ") and len(part) > 20 for part in jit_compile.environment())


# ---- locations ------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_unusable_cache_dirs_give_a_temporary_one(tmp_path, monkeypatch, where):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    wanted = {"file": a_file, "under-file": a_file / "sub",
              "proc": Path("/proc/seqdsl-cache-test")}[where]
    monkeypatch.setenv("SEQDSL_CACHE_DIR", str(wanted))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.warns(CacheWarning, match="unusable"):
        root = cache.cache_root()
    assert root.parent == tmp_path and root.is_dir()
    with pytest.warns(CacheWarning):
        info = cache.command("info")
    assert f"location  {root}  (temporary: {wanted} is unusable)" in info


def test_a_shared_temporary_dir_others_can_write_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shared = tmp_path / f"seqdsl-cache-{os.getuid()}"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    root = cache.temporary_root()
    assert root != shared and root.parent == tmp_path


# ---- housekeeping -----------------------------------------------------------------------

def test_parse_size():
    assert parse_size("500M") == 500 << 20 and parse_size("2G") == 2 << 30
    assert parse_size("1.5GiB") == 3 << 29 and parse_size("800") == 800
    assert parse_size("64kb") == 64 << 10
    for bad in ("", "12X", "-1G", "G"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_prune_removes_least_recently_used_entries_not_in_use(tmp_path):
    a, b, c = (fake_entry(tmp_path, ch * 32, 1000, age=age)
               for ch, age in (("a", 300), ("b", 200), ("c", 100)))
    cache.touch(a)  # used just now: the most recently used
    size = cache.entries(tmp_path)[0].size
    with cache.locked(tmp_path, "b" * 32):  # being loaded by another process
        assert cache.prune(tmp_path, 2 * size) == (1, size)
    assert a.exists() and b.exists() and not c.exists()
    assert cache.prune(tmp_path, 0, keep={"a" * 32}) == (1, size)
    assert a.exists() and not b.exists()


def test_cli_cache_info_prune_clear(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SEQDSL_CACHE_DIR", str(tmp_path))
    for c, age in (("a", 300), ("b", 200), ("c", 100)):
        fake_entry(tmp_path, c * 32, 100_000, age)
    (tmp_path / f"seqdsl_{'d' * 32}.py").write_text("")  # left by an older seqdsl
    (tmp_path / "notes.txt").write_text("not ours")
    code, out, _ = run_cli("cache", "info")
    assert code == 0 and f"location  {tmp_path}" in out and "entries   3 entries, 29" in out
    assert "bound     1.0 GiB" in out
    code, out, _ = run_cli("cache", "prune", "--max-size", "200K")
    assert code == 0 and out.startswith("removed 1 entry") and "entries   2 entries" in out
    assert not (tmp_path / ("a" * 32)).exists()
    code, _, err = run_cli("cache", "prune", "--max-size", "12X")
    assert code == 1 and "--max-size 12X: expected a size such as 500M or 2G" in err
    code, _, err = run_cli("cache", "info", "--max-size", "1G")
    assert code == 1 and "--max-size applies to `seqdsl cache prune`" in err
    code, out, _ = run_cli("cache", "clear")
    assert code == 0 and out.startswith("removed 2 entries")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", "notes.txt"]


def test_bad_size_bound_in_the_environment_warns(monkeypatch):
    monkeypatch.setenv("SEQDSL_CACHE_MAX_SIZE", "lots")
    with pytest.warns(CacheWarning, match="SEQDSL_CACHE_MAX_SIZE=lots"):
        assert cache.max_size_from_env() == cache.DEFAULT_MAX_SIZE
    monkeypatch.setenv("SEQDSL_CACHE_MAX_SIZE", "2G")
    assert cache.max_size_from_env() == 2 << 30

