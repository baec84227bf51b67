"""The CharLM's training step with `loss_and_grad` as one compiled function
(runtime/numba/step.py) against the same step run layer by layer.

    python benchmarks/compiled_step.py [--rounds 6] [--repeats 10] [--out RESULTS.md]

Why: at CharLM's size (B = 32, H = 128, names of about 7 letters) a step run
layer by layer spent a sixth to a fifth of its time in Python between the
compiled kernels (argument checks, the layer's lookups and column copies,
the head's rows and targets, the gradients' assembly), spread over some 50
functions. The compiled step runs all of that in one generated Numba
function that calls the same kernels by address; Python keeps the argument
checks and the heads' labelled rows.

Both ways train over the same batches as benchmarks/train_charlm.py, with
the same Adam, each in its own process, alternating; `net.fused = False`
runs layer by layer. The compiled step runs each batch whole here, as the
layers do (its shards: benchmarks/step_shards.py). Before timing, each
checks that the two give the same loss and gradients on every batch (to
the bit). The section "Compiled training step" of RESULTS.md is replaced.
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
SECTION = "## Compiled training step"


def whole(net) -> None:
    """Every batch run whole, as layer by layer runs the CharLM's: the step's
    shards are measured by benchmarks/step_shards.py."""
    import dataclasses

    from seqdsl.runtime.numba.shards import Parallelism, thread_count
    for layer in net.layers.values():
        for _, cell in layer.cells():
            cell.runner.parallel = dataclasses.replace(Parallelism(thread_count()),
                                                       min_loop_flops=float("inf"))


def _differences(net, data) -> int:
    """How many of the batches' losses and gradients differ between the two
    ways (from the same parameters); they must not."""
    import numpy as np
    params = net.init_params(1)
    differ = 0
    for inputs, lengths, targets in data:
        got = []
        for fused in (True, False):
            net.fused = fused
            got.append(net.loss_and_grad(params, inputs, lengths, targets))
        (a, ga), (b, gb) = got
        differ += a != b or any(not np.array_equal(ga[k], gb[k]) for k in ga)
    return differ


def work(way: str, repeats: int) -> dict:
    import numpy as np

    import seqdsl
    from seqdsl.train.optim import make_optimizer
    nt, sizes, batches = _data()
    net = seqdsl.instantiate(nt, sizes=sizes, dtype=np.float32, backend="numba")
    data = [({"x": b.inputs["x"]}, {"x": b.lengths["x"]}, b.targets) for b in batches]
    whole(net)
    differ = _differences(net, data)
    net.fused = way == "compiled step"
    params, opt = net.init_params(0), make_optimizer("adam", LR)

    def epoch():
        for inputs, lengths, targets in data:
            opt.step(params, net.loss_and_grad(params, inputs, lengths, targets)[1])

    with net.blas_policy():
        times = _timeit(epoch, repeats)
    return {"times": times, "steps": len(data), "differ": differ}


WAYS = ("layer by layer", "compiled step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10, help="timed passes per process")
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--worker", choices=WAYS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(work(args.worker, args.repeats)))
        return
    load = [os.getloadavg()[0]]
    per_round, differ, steps = [], 0, None
    for r in range(args.rounds):
        got = {}
        for way in (WAYS if r % 2 == 0 else WAYS[::-1]):
            res = worker_result(__file__, way, args.repeats)
            got[way], steps = statistics.median(res["times"]) / res["steps"], res["steps"]
            differ = max(differ, res["differ"])
        per_round.append(got)
        print(f"round {r + 1}: " + "  ".join(f"{w} {got[w] * 1e3:.3f} ms/step" for w in WAYS),
              flush=True)
    if differ:
        raise SystemExit(f"the two ways differ on {differ} batches")
    load.append(os.getloadavg()[0])
    med = {w: statistics.median(g[w] for g in per_round) for w in WAYS}
    ratios = sorted(g["compiled step"] / g["layer by layer"] for g in per_round)
    print("medians: " + ", ".join(f"{w} {m * 1e3:.3f} ms/step" for w, m in med.items())
          + f"; compiled / layer by layer per round: {', '.join(f'{q:.2f}' for q in ratios)}"
          + f"; load average {load[0]:.2f} / {load[1]:.2f}")
    _write(Path(args.out), med, ratios, steps, load, args)


def _write(path: Path, med: dict, ratios: list, steps: int, load: list, args) -> None:
    import datetime

    import numba
    import numpy
    section = [
        SECTION,
        "",
        f"Run {datetime.date.today()} by `python benchmarks/compiled_step.py --rounds "
        f"{args.rounds} --repeats {args.repeats}` on {_cpu()}; numpy {numpy.__version__}, "
        f"numba {numba.__version__}. The CharLM's training step (the batches, sizes and "
        "Adam of *CharLM training*): `Network.loss_and_grad` as one compiled "
        "function that calls the cell's and the head's generated kernels by address "
        "(`seqdsl/runtime/numba/step.py`, the default on the numba backend) against the "
        "same network run layer by layer (`net.fused = False`), each batch run whole both "
        "ways (the step's shards: *Row shards of the compiled step*). Both give the same loss "
        f"and gradients on all {steps} batches, to the bit (checked before timing). Each "
        "way in its own process, alternating; medians of the rounds' medians; load "
        f"average {load[0]:.2f} before, {load[1]:.2f} after.",
        "",
        "| step | ms/step |",
        "|---|---|",
        f"| layer by layer + Adam | {med['layer by layer'] * 1e3:.3f} |",
        f"| compiled step + Adam | {med['compiled step'] * 1e3:.3f} |",
        "",
        "Compiled ÷ layer by layer, per round: " + ", ".join(f"{q:.2f}" for q in ratios) + ".",
        "",
    ]
    replace_section(path, SECTION, section)


if __name__ == "__main__":
    main()
