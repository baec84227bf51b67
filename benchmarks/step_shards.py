"""Row shards of the CharLM's compiled training step, a design measurement.

    python benchmarks/step_shards.py [--rounds 3] [--repeats 10] [--out RESULTS.md]

A network's compiled step (runtime/numba/step.py) runs as shards of the
batch's rows, each the whole step on a thread of its own with one BLAS
thread, where its cells' plan shards (runtime/numba/shards.py: enough work
for each of at least 16 rows). Should smaller steps shard too? No thread
would wait for another within a step, where the step run whole meets BLAS's
second thread at every product and leaves its elementwise loops, copies and
heads to one core. This measures the two on the CharLM's batches (those of
benchmarks/train_charlm.py, the same Adam; its cells' plan runs them
whole), each way in its own process, alternating:

- *whole*: `net.loss_and_grad` as it runs (its products on the BLAS threads);
- *2 shards*: the step's own shards, two of 16 rows, forced by a plan that
  asks no least work of a shard (`min_flops=0`), checked first against
  *whole* (loss and gradients to float32 rounding).

Each over the 59 batches of 32 rows, and over all 60, whose one batch of
11 rows is too small to shard and runs whole, on two BLAS threads as the
step's plan says, or on one. The section "Row shards of the compiled step
(a design measurement)" of RESULTS.md is replaced.
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
# (way, which batches, whether the batch too small to shard keeps to one BLAS thread)
RUNS = {"whole, 59 batches of 32": ("whole", "full", False),
        "2 shards, 59 batches of 32": ("shards", "full", False),
        "whole, all 60": ("whole", "all", False),
        "2 shards, all 60, the 11 rows whole on BLAS's threads": ("shards", "all", False),
        "2 shards, all 60, the 11 rows whole on one BLAS thread": ("shards", "all", True)}
# The cells' plan for each way: sharded wherever there are rows enough, and
# a batch too small to shard on one BLAS thread (no step is big enough for more)
WHOLE = {}
SHARDED = {"min_flops": 0, "min_shards": SHARDS}
ONE_BLAS_THREAD = {"small_step_flops": float("inf")}


def plan(net, **fields) -> None:
    """Every cell's plan with `fields` changed from the default's."""
    import dataclasses

    from seqdsl.runtime.numba.shards import Parallelism, thread_count
    for layer in net.layers.values():
        for _, cell in layer.cells():
            cell.runner.parallel = dataclasses.replace(Parallelism(thread_count()), **fields)


def _largest_difference(net, data) -> float:
    """The largest difference between the two ways' losses and gradients,
    relative to the largest entry of each, over the batches of 32 rows."""
    import numpy as np
    params, worst = net.init_params(1), 0.0
    for inputs, lengths, targets in data:
        plan(net, **WHOLE)
        a, ga = net.loss_and_grad(params, inputs, lengths, targets)
        plan(net, **SHARDED)
        b, gb = net.loss_and_grad(params, inputs, lengths, targets)
        worst = max(worst, abs(a - b) / abs(a), *(float(np.abs(ga[k] - gb[k]).max() /
                                                        np.abs(ga[k]).max()) for k in ga))
    return worst


def work(run: str, repeats: int) -> dict:
    import numpy as np

    import seqdsl
    from seqdsl.train.optim import make_optimizer
    from seqdsl.runtime.numba.shards import MIN_SHARD_ROWS
    way, which, tail_alone = RUNS[run]
    nt, sizes, batches = _data()
    net = seqdsl.instantiate(nt, sizes=sizes, dtype=np.float32, backend="numba")
    data = [({"x": b.inputs["x"]}, {"x": b.lengths["x"]}, b.targets) for b in batches]
    full = [d for d in data if d[0]["x"].shape[1] >= SHARDS * MIN_SHARD_ROWS]
    differ = _largest_difference(net, full) if way == "shards" else 0.0
    plan(net, **(WHOLE if way == "whole" else
                 {**SHARDED, **(ONE_BLAS_THREAD if tail_alone else {})}))
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
        "(the batches of *CharLM training*) as it runs, against the step's own shards forced "
        f"on it: {SHARDS} shards of the batch's rows at once, each with one BLAS thread (losses "
        f"and gradients within {differ:.1e} of the whole batch's, relative). Each in its own "
        "process, alternating; ms a step, medians of each process's passes; load average "
        f"{load[0]:.2f} before, {load[1]:.2f} after. The CharLM's cells' plan runs these "
        "batches whole; bigger steps (a cell's plan with shards) run in shards.",
        "",
        "| run | ms/step, median | per process |",
        "|---|---|---|",
    ]
    for run, v in per_run.items():
        section.append(f"| {run} | {statistics.median(v) * 1e3:.3f} | "
                       + ", ".join(f"{x * 1e3:.3f}" for x in sorted(v)) + " |")
    med = {run: statistics.median(v) for run, v in per_run.items()}
    runs = list(RUNS)
    section += [
        "",
        f"2 shards ÷ whole: {med[runs[1]] / med[runs[0]]:.2f} on the batches of 32; over all "
        f"60, {med[runs[3]] / med[runs[2]]:.2f} with the batch of 11 on BLAS's threads and "
        f"{med[runs[4]] / med[runs[2]]:.2f} on one. After every call on several threads, "
        "OpenBLAS's threads spin on their cores for about 0.1 s (a loop of `nop`s that never "
        "yields), taking the second shard's core: a step this small that shards would need "
        "every other run of the network (an epoch's last, smaller batch, the validation "
        "passes of `seqdsl train`, sampling) kept off BLAS's threads.",
        "",
    ]
    replace_section(path, SECTION, section)


if __name__ == "__main__":
    main()
