"""Row shards of the CharLM's compiled training step, a design measurement.

    python benchmarks/step_shards.py [--rounds 3] [--repeats 10] [--out RESULTS.md]

A network's compiled step (runtime/numba/step.py) runs as shards of the
batch's rows, each the whole step with one BLAS thread, all in one parallel
loop (emit_shards.py) where Numba's threads hand off fast, else each handed
to a Python thread where the cells' plan has enough work for that. No
thread waits for another within a step, where the step run whole meets
BLAS's second thread at every product and leaves its elementwise loops,
copies and heads to one core. This measures the ways on the CharLM's
batches (those of benchmarks/train_charlm.py, the same Adam), each in its
own process, alternating:

- *whole*: every batch whole, its products on BLAS's threads;
- *in one loop*: `net.loss_and_grad` as it runs (2 shards of 16 rows);
- *on Python's threads*: the same shards, each handed to a thread from
  Python, as where Numba's threads would hand off slowly;

each checked first against *whole* (loss and gradients to float32
rounding). Each over the 59 batches of 32 rows, and over all 60, whose one
batch of 11 rows is too small to shard and runs whole: on one BLAS thread,
as a network that has sharded keeps its unsharded runs, or on BLAS's
threads. The section "Row shards of the compiled step (a design
measurement)" of RESULTS.md is replaced.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rnn import _cpu, _timeit, replace_section, worker_result  # noqa: E402
from train_charlm import LR, _data  # noqa: E402  (the same batches and sizes)

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Row shards of the compiled step (a design measurement)"
SHARDS = 2
INF = float("inf")
# way: (the cells' plan fields, whether shards run in one loop, whether the
# unsharded batch may use BLAS's threads)
WAYS = {"whole": ({"min_flops": INF, "min_loop_flops": INF}, True, True),
        "in one loop": ({}, True, False),
        "on Python's threads": ({"min_flops": 0}, False, False),
        "in one loop, the 11 rows on BLAS's threads": ({}, True, True)}
RUNS = {"whole, 59 batches of 32": ("whole", "full"),
        "in one loop, 59 batches of 32": ("in one loop", "full"),
        "on Python's threads, 59 batches of 32": ("on Python's threads", "full"),
        "whole, all 60": ("whole", "all"),
        "in one loop, all 60, the 11 rows on one BLAS thread": ("in one loop", "all"),
        "in one loop, all 60, the 11 rows on BLAS's threads":
            ("in one loop, the 11 rows on BLAS's threads", "all")}


def plan(net, way: str) -> None:
    """Every cell's plan, and the step's, as `way` runs them."""
    import dataclasses

    from seqdsl.runtime.numba import step
    from seqdsl.runtime.numba.shards import Parallelism, thread_count
    fields, in_one_loop, blas = WAYS[way]
    for layer in net.layers.values():
        for _, cell in layer.cells():
            cell.runner.parallel = dataclasses.replace(Parallelism(thread_count()), **fields)
    step.parallel_loops_hand_off_fast = lambda: in_one_loop
    guard = _GUARD.setdefault("kept", step.FusedStep._keep_unsharded_runs_on_one_blas_thread)
    step.FusedStep._keep_unsharded_runs_on_one_blas_thread = (lambda self: None) if blas else guard


_GUARD: dict = {}  # the step's own rule for its unsharded runs, kept while a way replaces it


def _largest_difference(net, data, way: str) -> float:
    """The largest difference between `way`'s losses and gradients and those
    of the batches run whole, relative to the largest entry of each, over
    the batches of 32 rows."""
    import numpy as np
    params, worst = net.init_params(1), 0.0
    for inputs, lengths, targets in data:
        plan(net, "whole")
        a, ga = net.loss_and_grad(params, inputs, lengths, targets)
        plan(net, way)
        b, gb = net.loss_and_grad(params, inputs, lengths, targets)
        worst = max(worst, abs(a - b) / abs(a), *(float(np.abs(ga[k] - gb[k]).max() /
                                                        np.abs(ga[k]).max()) for k in ga))
    return worst


def work(run: str, repeats: int) -> dict:
    import numpy as np

    import seqdsl
    from seqdsl.runtime.numba.shards import MIN_SHARD_ROWS
    from seqdsl.train.optim import make_optimizer
    way, which = RUNS[run]
    nt, sizes, batches = _data()
    net = seqdsl.instantiate(nt, sizes=sizes, dtype=np.float32, backend="numba")
    data = [({"x": b.inputs["x"]}, {"x": b.lengths["x"]}, b.targets) for b in batches]
    full = [d for d in data if d[0]["x"].shape[1] >= SHARDS * MIN_SHARD_ROWS]
    differ = _largest_difference(net, full, way) if way != "whole" else 0.0
    plan(net, way)
    params, opt = net.init_params(0), make_optimizer("adam", LR)

    def epoch():
        for inputs, lengths, targets in (full if which == "full" else data):
            opt.step(params, net.loss_and_grad(params, inputs, lengths, targets)[1])

    with net.blas_policy():
        times = _timeit(epoch, repeats)
    return {"times": times, "steps": len(full if which == "full" else data), "differ": differ}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10, help="timed passes per process")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--worker", choices=list(RUNS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(work(args.worker, args.repeats)))
        return
    load = [os.getloadavg()[0]]
    per_run, differ = {r: [] for r in RUNS}, 0.0
    for i in range(args.rounds):
        for run in (list(RUNS) if i % 2 == 0 else list(RUNS)[::-1]):
            res = worker_result(__file__, run, args.repeats)
            per_run[run].append(statistics.median(res["times"]) / res["steps"])
            differ = max(differ, res["differ"])
        print(f"round {i + 1}: " + "; ".join(f"{r} {v[-1] * 1e3:.3f}"
                                             for r, v in per_run.items()), flush=True)
    if differ > 1e-5:
        raise SystemExit(f"the shards' losses and gradients differ by {differ:.1e}")
    load.append(os.getloadavg()[0])
    _write(Path(args.out), per_run, differ, load, args)


def _write(path: Path, per_run: dict, differ: float, load: list, args) -> None:
    import datetime

    import numba
    import numpy
    section = [
        SECTION,
        "",
        f"Run {datetime.date.today()} by `python benchmarks/step_shards.py --rounds "
        f"{args.rounds} --repeats {args.repeats}` on {_cpu()}, {os.cpu_count()} cores; numpy "
        f"{numpy.__version__}, numba {numba.__version__}. The CharLM's training step with Adam "
        "(the batches of *CharLM training*) run whole, against the step in shards of the "
        f"batch's rows ({SHARDS} of 16 rows, each with one BLAS thread), all in one parallel loop "
        f"on Numba's threads ({_layer()}), as `loss_and_grad` runs it, or each handed to a "
        "Python thread (losses and gradients within "
        f"{differ:.1e} of the whole batch's, relative). Each in its own process, alternating; "
        f"ms a step, medians of each process's passes; load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after.",
        "",
        "| run | ms/step, median | per process |",
        "|---|---|---|",
    ]
    for run, v in per_run.items():
        section.append(f"| {run} | {statistics.median(v) * 1e3:.3f} | "
                       + ", ".join(f"{x * 1e3:.3f}" for x in sorted(v)) + " |")
    med = [statistics.median(v) for v in per_run.values()]
    section += [
        "",
        f"In one loop ÷ whole: {med[1] / med[0]:.2f} on the batches of 32, {med[4] / med[3]:.2f} "
        f"over all 60; on Python's threads ÷ whole: {med[2] / med[0]:.2f}. With the batch of 11 "
        f"rows on BLAS's threads, the pass over all 60 took {med[5] / med[4]:.2f}× as long as "
        "with it on one: after every call on several threads, OpenBLAS's threads spin on their "
        "cores for about 0.1 s (a loop of `nop`s that never yields), taking a shard's core. So "
        "a network that has sharded keeps its unsharded runs (an epoch's last, smaller batch, "
        "validation, sampling) on one BLAS thread.",
        "",
    ]
    replace_section(path, SECTION, section)


def _layer() -> str:
    """Numba's threading layer, as a worker picks it."""
    import subprocess
    code = ("import numba; from numba.np.ufunc import parallel; parallel._launch_threads(); "
            "print(numba.threading_layer())")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


if __name__ == "__main__":
    main()
