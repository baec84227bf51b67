"""How many shards a compiled cell's batch should be split into: the
measurement behind seqdsl/runtime/numba/shards.py's thresholds.

    python benchmarks/shards.py [--threads N] [--shapes 32x256x256,...] [--out FILE.json]

For each (B, X, H), the shipped LSTM's forward+backward (float32, T=100) on
N threads (default: every core), run every way in one process, the ways
alternating round by round: unsharded with N BLAS threads in the products
("serial"), split into k shards for k = 2, 4, 8, ... up to N and B (one BLAS
thread each), and as the default plan chooses ("default"). Prints the
median milliseconds of each way and writes them as JSON with --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = [(1, 32, 64), (32, 64, 128), (32, 256, 256), (64, 512, 512), (256, 512, 512),
          (32, 1024, 1024)]
T = 100


def _forced(shards: int):
    """A plan that splits every batch into `shards` shards, whatever its
    rows, work or weights."""
    from seqdsl.runtime.numba.shards import Parallelism
    return Parallelism(shards, min_rows=1, min_flops=0, max_weight_bytes=float("inf"))


def ways(threads: int, B: int) -> dict:
    from seqdsl.runtime.numba.shards import Parallelism
    out = {"default": Parallelism(threads), "serial": Parallelism(threads, min_rows=B + 1)}
    k = 2
    while k <= min(threads, B):
        out[f"{k} shards"] = _forced(k)
        k *= 2
    if min(threads, B) & (min(threads, B) - 1):  # not a power of two: try it too
        out[f"{min(threads, B)} shards"] = _forced(min(threads, B))
    return out


def measure(B: int, X: int, H: int, threads: int, rounds: int, repeats: int) -> dict:
    import numpy as np

    import seqdsl
    from seqdsl.spec import library_cells
    c = seqdsl.instantiate(library_cells()["LSTM"], H, X, dtype=np.float32, backend="numba")
    p = c.init_params(0)
    x = np.random.default_rng(0).standard_normal((T, B, X)).astype(np.float32)
    dout = np.ones((T, B, H), np.float32)
    options = ways(threads, B)
    times = {w: [] for w in options}
    for r in range(rounds):
        for w in (list(options) if r % 2 == 0 else list(options)[::-1]):
            c.parallel = options[w]
            c.backward(p, c.forward(p, x), dout)  # warm-up
            for _ in range(repeats):
                t0 = time.perf_counter()
                c.backward(p, c.forward(p, x), dout)
                times[w].append(time.perf_counter() - t0)
    c.parallel = options["default"]
    plan = c._plan(T, B)
    return {"median_ms": {w: 1e3 * statistics.median(t) for w, t in times.items()},
            "default_plan": [plan.shards, plan.blas_threads]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shapes", default=None, metavar="BxXxH,...")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the results as JSON here too")
    args = ap.parse_args()
    shapes = ([tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
              if args.shapes else SHAPES)
    results = []
    for B, X, H in shapes:
        res = measure(B, X, H, args.threads, args.rounds, args.repeats)
        results.append({"B": B, "X": X, "H": H, "threads": args.threads, **res})
        best = min(res["median_ms"], key=res["median_ms"].get)
        cells = ", ".join(f"{w} {ms:.2f}" for w, ms in res["median_ms"].items())
        print(f"({B}, {X}, {H}) on {args.threads} threads, ms: {cells}; best: {best}; "
              f"default plan (shards, BLAS threads) = {tuple(res['default_plan'])}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
