"""The hand-written column-split LSTMs of benchmarks/column_steps.py (a
design measurement for many cores) compute what seqdsl's compiled LSTM
computes: outputs, final states and every gradient, with variable lengths,
a length 0 and blocks of unequal size. Each runs in its own process, as the
benchmark runs it (a threading layer is chosen once per process)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import column_steps  # noqa: E402


@pytest.mark.parametrize("kind, threads", [("persist", 3), ("persist-half", 4), ("cols", 3)])
def test_column_kernels_match_the_compiled_lstm(kind, threads):
    r = column_steps._run_worker({"check": True, "kind": kind, "threads": threads}, threads, None,
                                 timeout=300)
    assert "max_error" in r, r
    assert r["max_error"] < 1e-6  # float32 rounding
