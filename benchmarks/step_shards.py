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
- *2 shards*: the step's compiled function on two shards of 16 rows, run
  here from outside (`shard_step`; not an API), checked first against
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
SHARDS, MIN_ROWS = 2, 16
# (way, which batches, BLAS threads of the batch too small to shard)
RUNS = {"whole, 59 batches of 32": ("whole", "full", None),
        "2 shards, 59 batches of 32": ("shards", "full", None),
        "whole, all 60": ("whole", "all", None),
        "2 shards, all 60, the 11 rows whole on 2 BLAS threads": ("shards", "all", 2),
        "2 shards, all 60, the 11 rows whole on 1 BLAS thread": ("shards", "all", 1)}


def shard_step(net, params, inputs, lengths, targets):
    """`net.loss_and_grad` of the CharLM by its compiled step run on SHARDS
    shards of the batch's rows at once, each with one BLAS thread (reaching
    into the step: a measurement, not an API)."""
    import numpy as np

    from seqdsl.runtime.numba.blas import blas_threads
    from seqdsl.runtime.numba.shards import run_each, shard_rows, sum_into_first
    p, xs, ls = net._checked(params, inputs, lengths)
    step = net._steps[("cross_entropy",)]
    (T, B), head = xs["x"].shape, net.heads[0]
    t, b, dense, weight, _ = head.labelled(ls["x"], T, B, targets, None, None, "mean")
    jobs = []
    for r in shard_rows(B, SHARDS):
        keep = (b >= r.start) & (b < r.stop)
        jobs.append([*step.addresses, np.ascontiguousarray(xs["x"][:, r]), ls["x"][r],
                     *p.values(), t[keep], b[keep] - r.start, dense[keep], weight])
    run = step.loaded.module.loss_and_grad
    with blas_threads(1):
        outs = run_each(lambda args: run(*args), jobs)
    loss = sum(float(out[0].sum()) * weight for out in outs)
    return loss, dict(zip(net.param_shapes, sum_into_first([list(o[1:]) for o in outs])))


def _largest_difference(net, data) -> float:
    """The largest difference between the two ways' losses and gradients,
    relative to the largest entry of each, over the batches of 32 rows."""
    import numpy as np
    params, worst = net.init_params(1), 0.0
    for inputs, lengths, targets in data:
        a, ga = net.loss_and_grad(params, inputs, lengths, targets)
        b, gb = shard_step(net, params, inputs, lengths, targets)
        worst = max(worst, abs(a - b) / abs(a), *(float(np.abs(ga[k] - gb[k]).max() /
                                                        np.abs(ga[k]).max()) for k in ga))
    return worst


def work(run: str, repeats: int) -> dict:
    import numpy as np

    import seqdsl
    from seqdsl.runtime.numba.shards import Parallelism
    from seqdsl.train.optim import make_optimizer
    way, which, tail_threads = RUNS[run]
    nt, sizes, batches = _data()
    net = seqdsl.instantiate(nt, sizes=sizes, dtype=np.float32, backend="numba")
    data = [({"x": b.inputs["x"]}, {"x": b.lengths["x"]}, b.targets) for b in batches]
    full = [d for d in data if d[0]["x"].shape[1] >= SHARDS * MIN_ROWS]
    differ = _largest_difference(net, full) if way == "shards" else 0.0
    params, opt = net.init_params(0), make_optimizer("adam", LR)
    if tail_threads is not None:  # the BLAS threads of the step's plan for the small batch
        for layer in net.layers.values():
            for _, cell in layer.cells():
                cell.runner.parallel = Parallelism(tail_threads)

    def step(inputs, lengths, targets):
        if way == "shards" and inputs["x"].shape[1] >= SHARDS * MIN_ROWS:
            return shard_step(net, params, inputs, lengths, targets)
        return net.loss_and_grad(params, inputs, lengths, targets)

    def epoch():
        for d in (full if which == "full" else data):
            opt.step(params, step(*d)[1])

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
        "(the batches of *CharLM training*) as it runs, against its compiled function run "
        f"on {SHARDS} shards of the batch's rows at once, each with one BLAS thread (losses "
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
        f"60, {med[runs[3]] / med[runs[2]]:.2f} with the batch of 11 on two BLAS threads and "
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
