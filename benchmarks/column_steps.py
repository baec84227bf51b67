"""A design measurement for many cores at small batches: an LSTM whose time
step is split by hidden units (columns) across threads.

    python benchmarks/column_steps.py [--threads 16] [--shapes 32x256x256,...]
                                      [--kinds persist,cols] [--rounds 2]
                                      [--repeats 5] [--check] [--json FILE]

Why: with a batch too small to shard by rows (B = 32–64 on 16 cores),
seqdsl's step products run on BLAS's threads and everything else in the
step (the fused elementwise loops, copies, tape writes) on one thread; on
16 cores that serial part is most of the time. The question this script
answers before the code generator is changed: is a step split by columns
faster than that, and than torch.nn.LSTM, and how must it synchronise?

The kernels (benchmarks/columns/) are the LSTM of
`seqdsl/lang/library/lstm.seq`, float32, written by hand the way a
column-split generated kernel would run it:

* `persist` — a thread per block of hidden units for the whole sequence,
  a spin barrier between steps (columns/persistent.py);
  `persist-half` the same on half the threads;
* `cols` — a parallel region a step (Numba's `prange`), per Numba
  threading layer (`omp`, `workqueue`, `tbb` where installed)
  (columns/regions.py).

Each is timed in its own process against seqdsl's compiled LSTM as it runs
today and torch.nn.LSTM, alternating, forward+backward, T = 100, every
library's thread count set to --threads. `--check` first compares each
kernel with seqdsl's compiled LSTM (outputs, final states and every
gradient, variable lengths, a length 0, blocks of unequal size).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from rnn import T, _data, _timeit, thread_env  # how every benchmark here times and sets threads


def model(kind: str, H: int, X: int, threads: int):
    """The kernels of `kind`, compiled on first use (the driver needs no Numba)."""
    if kind.startswith("persist"):
        from columns.persistent import PersistentLSTM
        return PersistentLSTM(H, X, threads if kind == "persist" else max(threads // 2, 1))
    from columns.regions import ColumnLSTM
    return ColumnLSTM(H, X, min(threads, H))


# ---- check and workers (each worker runs in a fresh process, prints one JSON line) ----


def check(kind: str, threads: int) -> float:
    """The largest relative error of the column kernels against seqdsl's
    compiled LSTM, over outputs, final states and all gradients."""
    import seqdsl
    from seqdsl.spec import library_cells
    rng = np.random.default_rng(1)
    T_, B, X, H = 9, 7, 5, 11
    cell = seqdsl.instantiate(library_cells()["LSTM"], H, X, dtype=np.float32, backend="numba")
    p = {k: rng.standard_normal(v.shape).astype(np.float32) * 0.5
         for k, v in cell.init_params(0).items()}
    x = rng.standard_normal((T_, B, X)).astype(np.float32)
    lengths = np.array([9, 3, 0, 9, 1, 5, 8], np.int64)
    a0, c0 = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))
    dout = rng.standard_normal((T_, B, H)).astype(np.float32)
    da, dc = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))
    r = cell.forward(p, x, lengths, {"a": a0, "c": c0})
    g = cell.backward(p, r, dout, {"a": da, "c": dc})
    m = model(kind, H, X, threads)
    out, tape = m.forward(p, x, lengths, a0, c0)
    grads, dx, gA, gC = m.backward(tape, dout, da, dc)
    A = tape[2]
    final_c = (np.concatenate([C[-1] for _, _, C in tape[3]], axis=1)
               if kind.startswith("persist")
               else tape[3][-1])
    pairs = [(out, r.outputs), (A[-1], r.final["a"]), (final_c, r.final["c"]),
             (dx, g.inputs["x"]), (gA, g.state0["a"]), (gC, g.state0["c"])]
    pairs += [(grads[k], g.params[k]) for k in grads]
    return max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) for a, b in pairs)


def work(impl: str, B: int, X: int, H: int, repeats: int, threads: int) -> dict:
    x = _data(B, X, H)[0]
    if impl == "torch":
        import torch
        torch.set_num_threads(threads)
        net = torch.nn.LSTM(X, H)
        xt = torch.from_numpy(x)
        times = _timeit(lambda: net(xt)[0].sum().backward(), repeats)
        return {"times": times}
    import numba

    import seqdsl
    from seqdsl.runtime.numba.runtime import _reuse_freed_memory
    from seqdsl.spec import library_cells
    _reuse_freed_memory()  # as a compiled cell's first run does: freed buffers reused
    cell = seqdsl.instantiate(library_cells()["LSTM"], H, X, dtype=np.float32, backend="numba")
    p = cell.init_params(0)
    dout = np.ones((T, B, H), np.float32)
    if impl == "seqdsl":
        def run():
            cell.backward(p, cell.forward(p, x), dout)
        times = _timeit(run, repeats)
        return {"times": times, "layer": None}
    m = model(impl.split(":")[0], H, X, threads)
    lengths = np.full(B, T, np.int64)
    zeros = np.zeros((B, H), np.float32)

    def run():
        out, tape = m.forward(p, x, lengths, zeros, zeros)
        m.backward(tape, dout, zeros, zeros)
    times = _timeit(run, repeats)
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region ran (persist: its own threads)
        layer = None
    return {"times": times, "layer": layer}


# ---- driver ---------------------------------------------------------------------------


def _run_worker(args: dict, threads: int, layer: str | None, timeout: float = 600) -> dict:
    """`args` measured (or checked) in a new process with every library at
    `threads` threads; a kernel that fails leaves the others spinning at
    their barrier, so the process is given `timeout` seconds."""
    env = thread_env(threads)
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(args)],
                         capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def layers_available() -> list[str]:
    import importlib
    found = []
    for layer, mod in (("omp", "omppool"), ("tbb", "tbbpool"), ("workqueue", "workqueue")):
        try:
            importlib.import_module(f"numba.np.ufunc.{mod}")
            found.append(layer)
        except Exception:  # noqa: BLE001 - a layer that does not load is not measured
            pass
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shapes", default="32x256x256,64x512x512,32x1024x1024")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kinds", default="persist,cols")
    ap.add_argument("--layers", default=None, help="threading layers (default: all that load)")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--json", default=None, help="also write every time to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        a = json.loads(args.worker)
        if a.get("check"):
            print(json.dumps({"max_error": check(a["kind"], a["threads"])}))
            return
        print(json.dumps(work(a["impl"], a["B"], a["X"], a["H"], a["repeats"], a["threads"])))
        return
    layers = args.layers.split(",") if args.layers else layers_available()
    kinds = args.kinds.split(",")
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    impls = [("seqdsl", None), ("torch", None)] + [
        (k, None) if k.startswith("persist") else (f"{k}:{lay}", lay)
        for k in kinds for lay in (layers if not k.startswith("persist") else [None])]
    print(f"threads {args.threads}; layers {layers}", flush=True)
    if args.check:
        for k in kinds:
            for lay in (layers if not k.startswith("persist") else [None]):
                r = _run_worker({"check": True, "kind": k, "threads": args.threads}, args.threads,
                                lay)
                print(f"check {k} {lay or ''}: largest relative error "
                      f"{r.get('max_error', r.get('error'))}", flush=True)
    times: dict = {}
    for rnd in range(args.rounds):
        for shape in shapes:
            order = impls if rnd % 2 == 0 else impls[::-1]
            for impl, lay in order:
                B, X, H = shape
                r = _run_worker({"impl": impl, "B": B, "X": X, "H": H, "repeats": args.repeats,
                                 "threads": args.threads}, args.threads, lay)
                key = f"{B}x{X}x{H} {impl}"
                if "error" in r:
                    print(f"{key}: {r['error']}", flush=True)
                    continue
                times.setdefault(key, []).extend(r["times"])
                if args.json:  # after every measurement: a run cut short keeps what it measured
                    Path(args.json).write_text(json.dumps(times, indent=1))
                print(f"{key}: {statistics.median(r['times']) * 1e3:.2f} ms "
                      f"(layer {r.get('layer')})", flush=True)
    print(f"\nmedians, ms, forward+backward, T = {T}, {args.threads} threads")
    names = [i for i, _ in impls]
    print("| (B, X, H) | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for B, X, H in shapes:
        cells = []
        for n in names:
            ts = times.get(f"{B}x{X}x{H} {n}")
            cells.append(f"{statistics.median(ts) * 1e3:.1f}" if ts else "—")
        print(f"| ({B}, {X}, {H}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
