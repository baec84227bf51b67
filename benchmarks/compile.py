"""How long a new cell takes to compile, and a known one to load.

    python benchmarks/compile.py [--rounds N] [--out benchmarks/RESULTS.md]

Three measurements, each in a process of its own with an empty seqdsl cache
(SEQDSL_CACHE_DIR in a new temporary folder), repeated --rounds times,
medians reported:

- *cold LSTM*: `instantiate` of the shipped LSTM, float32, H=128, X=64, on
  the numba backend: generating its forward and backward and compiling both
  (seqdsl's own compiled library, which every cell shares, is in Numba's
  cache already, as after any earlier use of seqdsl);
- *second size*: then, in the same process, the same cell at H=256, X=32:
  a cache hit, nothing compiled; and the first size again in a new process
  (the entry loaded from the disk cache);
- *gradcheck of a new 3-gate cell*: `seqdsl gradcheck FILE --backend numba`
  of a cell no cache has seen, end to end as a user runs it (starting
  Python, importing, compiling, checking).

The section "## Compile times" of RESULTS.md is replaced by this run's table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rnn import _cpu, _versions, replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Compile times"
# A cell with three gates that is in no library: compiled anew by every round.
NEW_CELL = """\
cell ThreeGates {
    input x
    state h : H
    Γz = σ(Wz[h, x] + bz)
    Γr = σ(Wr[h, x] + br)
    Γk = σ(Wk[h, x] + bk)
    h̃ = tanh(Wh[Γr * h, x] + bh)
    h<t> = Γz * h̃ + Γk * (1 - Γz) * h
}
"""


def work_lstm() -> dict:
    """In a fresh cache: the cold compile, then a second size, in seconds."""
    import numpy as np

    import seqdsl
    ct = seqdsl.load(str(ROOT / "seqdsl/lang/library/lstm.seq")).cell("LSTM")

    def timed(sizes):
        t0 = time.perf_counter()
        cell = seqdsl.instantiate(ct, sizes=sizes, dtype=np.float32, backend="numba")
        return time.perf_counter() - t0, cell.loaded.cache_hit
    cold, cold_hit = timed({"H": 128, "X": 64})
    second, second_hit = timed({"H": 256, "X": 32})
    return {"cold": cold, "cold_hit": cold_hit, "second": second, "second_hit": second_hit}


def work_load() -> dict:
    """The LSTM's entry, compiled by an earlier process, loaded from the disk."""
    import numpy as np

    import seqdsl
    ct = seqdsl.load(str(ROOT / "seqdsl/lang/library/lstm.seq")).cell("LSTM")
    t0 = time.perf_counter()
    cell = seqdsl.instantiate(ct, sizes={"H": 128, "X": 64}, dtype=np.float32, backend="numba")
    return {"load": time.perf_counter() - t0, "load_hit": cell.loaded.cache_hit}


WORKERS = {"lstm": work_lstm, "load": work_load}


def _worker(name: str, cache: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEQDSL_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, __file__, "--worker", name], capture_output=True,
                         text=True, env=env, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gradcheck(cache: str, folder: Path) -> float:
    spec = folder / "three_gates.seq"
    spec.write_text(NEW_CELL, "utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEQDSL_CACHE_DIR": cache}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "seqdsl", "gradcheck", str(spec), "--backend",
                          "numba"], capture_output=True, text=True, env=env, timeout=900)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"gradcheck failed:\n{out.stdout}\n{out.stderr}")
    return seconds


def one_round() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        got = _worker("lstm", cache)
        got.update(_worker("load", cache))
        got["gradcheck"] = _gradcheck(str(Path(tmp) / "cache2"), Path(tmp))
    if got["cold_hit"] or not (got["second_hit"] and got["load_hit"]):
        raise SystemExit(f"the cache did not behave as measured: {got}")
    return got


ROWS = [("cold", "cold LSTM: forward and backward generated and compiled (H=128, X=64)",
         "< 3 s"),
        ("second", "the same cell at a second size (H=256, X=32), same process: cache hit",
         "< 0.5 s"),
        ("load", "the same cell in a new process, from the disk cache", "—"),
        ("gradcheck", "`seqdsl gradcheck --backend numba` of a new 3-gate cell, end to end",
         "< 10 s")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker]()))
        return
    load = [os.getloadavg()[0]]
    rounds = []
    for r in range(args.rounds):
        rounds.append(one_round())
        print(f"round {r + 1}: " + "  ".join(f"{k} {rounds[-1][k]:.2f} s" for k, *_ in ROWS),
              flush=True)
    load.append(os.getloadavg()[0])
    lines = [SECTION, "",
             f"Run {time.strftime('%Y-%m-%d')} by `python benchmarks/compile.py --rounds "
             f"{args.rounds}` on {_cpu()}, {os.cpu_count()} cores; "
             + ", ".join(f"{k} {v}" for k, v in _versions().items() if k in ("numpy", "numba"))
             + f". Each round in new processes with an empty seqdsl cache; medians over "
             f"the rounds (load average {load[0]:.2f} before, {load[1]:.2f} after).",
             "The fastest round is the nearest to a quiet machine; the target is for one.",
             "", "| what | median s | fastest s | rounds, s | target |", "|---|---|---|---|---|"]
    for key, what, target in ROWS:
        values = sorted(r[key] for r in rounds)
        lines.append(f"| {what} | {statistics.median(values):.2f} | {values[0]:.2f} | "
                     + ", ".join(f"{v:.2f}" for v in values) + f" | {target} |")
    replace_section(Path(args.out), SECTION, lines + [""])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
