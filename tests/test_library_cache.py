"""Numba's cache of seqdsl's compiled library is checked against every file
of the library (library_cache.py): a cached function whose callee, in
another file, has changed since compiles anew instead of running the old
callee's inlined code.

Two small modules stand in for the library (`library_cache.LIBRARY` pointed
at them), each step in a new process, as after an update."""
import subprocess
import sys
import textwrap

import pytest

CALLEE = "from numba import njit\n\n\n@njit(cache=True)\ndef g(x):\n    return x + {}\n"
CALLER = textwrap.dedent("""\
    from numba import njit
    from callee import g


    @njit(cache=True)
    def f(x):
        return g(x) * 10
    """)
RUN = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from seqdsl.runtime.numba import library_cache  # the package installs its locators
    library_cache.LIBRARY = Path(sys.argv[1]).resolve() / sys.argv[2]
    sys.path.insert(0, sys.argv[1])
    import caller
    print(caller.f(1), caller.f.stats.cache_hits.total())
    """)


def _run(folder, library: str) -> tuple[int, int]:
    """f(1) in a new process, and how many of its compiles the cache served."""
    out = subprocess.run([sys.executable, "-c", RUN, str(folder), library],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.parametrize("library, after_the_change", [
    (".", (30, 0)),  # the two files are the library: f compiles anew
    ("elsewhere", (20, 1)),  # they are not: Numba's own check loads f's old code
])
def test_a_changed_callee_compiles_its_cached_callers_anew(tmp_path, library, after_the_change):
    (tmp_path / "caller.py").write_text(CALLER)
    (tmp_path / "callee.py").write_text(CALLEE.format(1))
    assert _run(tmp_path, library) == (20, 0)
    assert _run(tmp_path, library) == (20, 1)  # unchanged: loaded from the cache
    (tmp_path / "callee.py").write_text(CALLEE.format(2))
    assert _run(tmp_path, library) == after_the_change


def test_this_numba_takes_the_library_locators():
    from seqdsl.runtime.numba import library_cache
    assert library_cache.install()  # in place, and installing twice adds nothing
    from numba.core import caching
    assert sum(issubclass(c, library_cache._WholeLibraryStamp)
               for c in caching.CacheImpl._locator_classes) == 3
