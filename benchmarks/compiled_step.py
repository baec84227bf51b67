"""A design measurement for training small networks: the CharLM's whole
training step as one compiled function, against `Network.loss_and_grad`.

    python benchmarks/compiled_step.py [--rounds 6] [--repeats 10] [--out RESULTS.md]

Why: at CharLM's size (B = 32, H = 128, names of about 7 letters) a training
step spends a sixth to a fifth of its time in Python between the compiled
kernels (argument checks, the layer's lookups and column copies, the head's
rows and targets, the gradients' assembly), spread over some 50 functions,
none over a few per cent; torch spends its own share the same way. The
question this script answers before a code generator is written: how fast
is the step when nothing but the kernels runs between its start and its
end?

`one_function_step` is the step a network-level generator would write for
this network, written by hand: one Numba function that gathers the token
columns, runs the cell's generated forward, the head's generated row
kernels and the cell's generated backward (the very functions
`loss_and_grad` calls, from the same cache) and assembles the gradients.
It is wired for this network's structure only (one LSTM layer reading token
ids, one per-step softmax head with cross-entropy), which it checks, and it
is checked against `loss_and_grad` on every batch before it is timed.

Each way runs in its own process, alternating, over the same batches as
benchmarks/train_charlm.py, with the same Adam; the section "Compiled
network step (a design measurement)" of RESULTS.md is replaced.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rnn import _cpu, _timeit, replace_section  # noqa: E402
from train_charlm import LR, _data  # noqa: E402  (the same batches and sizes)

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Compiled network step (a design measurement)"
PARAMS = ["a.Wu", "a.bu", "a.Wf", "a.bf", "a.Wo", "a.bo", "a.Wc", "a.bc", "Wy", "by"]


def one_function_step(net):
    """`loss_and_grad(params, inputs, lengths, targets)` for the CharLM as
    one compiled function over the network's own compiled kernels."""
    import numpy as np
    from numba import njit

    from seqdsl.runtime.numba.lookup import _add_by_id, _gather
    layer, (head,) = net.layers["a"], net.heads
    cell = layer.runner
    assert list(net.layers) == ["a"] and layer.tokens is not None and head.per_step
    assert [c.name for c in layer.tokens.columns] == ["Wu_rest", "Wf_rest", "Wo_rest", "Wc_rest"]
    assert [k.name for k in layer.tokens.lookups] == ["x_Wu", "x_Wf", "x_Wo", "x_Wc"]
    assert cell._size_args == () and list(net.param_shapes) == PARAMS
    net.loss_and_grad(net.init_params(0), *_example(net))  # compiles the head's rows
    rows = {g.name: r.loaded.module.run for g, r in head.run._compiled.values()}
    forward, backward = cell.loaded.module.forward, cell.loaded.module.backward
    head_forward, head_backward = rows["ŷ.cross_entropy"], rows["ŷ.cross_entropy.backward"]

    @njit(nogil=True, error_model="numpy")
    def step(ids, lengths, targets, Wu, bu, Wf, bf, Wo, bo, Wc, bc, Wy, by):
        T, B = ids.shape
        H, Y = bu.shape[0], by.shape[0]
        # the layer: each weight's columns for a<t-1> (contiguous), and the
        # columns the token ids pick, gathered for every step
        rest = [np.ascontiguousarray(W[:, :H]) for W in (Wu, Wf, Wo, Wc)]
        xs = [np.empty((T, B, H), Wu.dtype) for _ in range(4)]
        for W, x in zip((Wu, Wf, Wo, Wc), xs):
            _gather(W[:, H:], ids, lengths, x)
        zero = np.zeros((B, H), Wu.dtype)
        r = forward(xs[0], xs[1], xs[2], xs[3], lengths, zero, zero, bu, bf, bo, bc,
                    rest[0], rest[1], rest[2], rest[3])
        # the head: the rows of every labelled valid step, their targets one-hot
        n = 0
        for t in range(T):
            for b in range(B):
                if t < lengths[b] and targets[t, b] >= 0:
                    n += 1
        where = np.empty((n, 2), np.int64)
        a = np.empty((n, H), Wu.dtype)
        dense = np.zeros((n, Y), Wu.dtype)
        i = 0
        for t in range(T):
            for b in range(B):
                if t < lengths[b] and targets[t, b] >= 0:
                    where[i, 0], where[i, 1] = t, b
                    a[i] = r[0][t, b]
                    dense[i, targets[t, b]] = 1
                    i += 1
        terms, logp = head_forward(Y, a, dense, Wy, by)
        d_loss = np.full((n, Y), 1.0 / n, Wu.dtype)  # the mean's weight on every term
        d_a, d_Wy, d_by = head_backward(Y, d_loss, a, dense, logp, Wy, by)
        d_out = np.zeros((T, B, H), Wu.dtype)
        for i in range(n):
            d_out[where[i, 0], where[i, 1]] += d_a[i]
        g = backward(d_out, zero, zero, lengths, r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                     r[10], r[11], r[12], r[13], bu, bf, bo, bc, rest[0], rest[1], rest[2],
                     rest[3])
        # each weight's gradient: its columns for a<t-1>, then its token columns
        grads = [np.zeros(Wu.shape, Wu.dtype) for _ in range(4)]
        for k, (d_rest, d_ids) in enumerate(((g[10], g[0]), (g[11], g[1]), (g[12], g[2]),
                                             (g[13], g[3]))):
            grads[k][:, :H] = d_rest
            _add_by_id(grads[k][:, H:], ids, lengths, d_ids)
        loss = np.float64(terms.sum()) / n
        return (loss, grads[0], g[6], grads[1], g[7], grads[2], g[8], grads[3], g[9], d_Wy,
                d_by)

    def loss_and_grad(params, inputs, lengths, targets):
        out = step(inputs["x"], lengths["x"], targets, *(params[k] for k in PARAMS))
        return out[0], dict(zip(PARAMS, out[1:]))
    return loss_and_grad


def _example(net):
    """A tiny batch, to compile with."""
    import numpy as np
    return {"x": np.array([[1], [2]])}, {"x": np.array([2])}, np.array([[2], [3]])


def _check(net, step, data) -> float:
    """The largest relative difference of the compiled step's loss and
    gradients from `loss_and_grad`'s over every batch (both take the
    parameters as they train); it must be float32 rounding."""
    import numpy as np
    params = net.init_params(1)
    worst = 0.0
    for inputs, lengths, targets in data:
        want, wg = net.loss_and_grad(params, inputs, lengths, targets)
        got, gg = step(params, inputs, lengths, targets)
        worst = max([worst, abs(got - want) / abs(want)] + [
            float(np.abs(gg[k] - wg[k]).max() / max(np.abs(wg[k]).max(), 1e-30)) for k in wg])
    return worst


def work(way: str, repeats: int) -> dict:
    import numpy as np

    import seqdsl
    from seqdsl.train.optim import make_optimizer
    nt, sizes, batches = _data()
    net = seqdsl.instantiate(nt, sizes=sizes, dtype=np.float32, backend="numba")
    data = [({"x": b.inputs["x"]}, {"x": b.lengths["x"]}, b.targets) for b in batches]
    step, worst = net.loss_and_grad, 0.0
    if way == "one function":
        step = one_function_step(net)
        worst = _check(net, step, data)
        assert worst < 1e-5, f"the compiled step differs from loss_and_grad by {worst:.2g}"
    params, opt = net.init_params(0), make_optimizer("adam", LR)

    def epoch():
        for inputs, lengths, targets in data:
            opt.step(params, step(params, inputs, lengths, targets)[1])

    with net.blas_policy():
        times = _timeit(epoch, repeats)
    return {"times": times, "steps": len(data), "worst": worst}


WAYS = ("loss_and_grad", "one function")


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
    per_round, worst, steps = [], 0.0, None
    for r in range(args.rounds):
        got = {}
        for way in (WAYS if r % 2 == 0 else WAYS[::-1]):
            out = subprocess.run([sys.executable, __file__, "--worker", way, "--repeats",
                                  str(args.repeats)], capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=1800)
            if out.returncode != 0:
                raise SystemExit(f"{way} failed:\n{out.stderr}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            got[way], steps = statistics.median(res["times"]) / res["steps"], res["steps"]
            worst = max(worst, res["worst"])
        per_round.append(got)
        print(f"round {r + 1}: " + "  ".join(f"{w} {got[w] * 1e3:.3f} ms/step" for w in WAYS),
              flush=True)
    load.append(os.getloadavg()[0])
    med = {w: statistics.median(g[w] for g in per_round) for w in WAYS}
    ratios = sorted(g["one function"] / g["loss_and_grad"] for g in per_round)
    print("medians: " + ", ".join(f"{w} {m * 1e3:.3f} ms/step" for w, m in med.items())
          + f"; one function / loss_and_grad per round: {', '.join(f'{q:.2f}' for q in ratios)}"
          + f"; largest difference {worst:.1e}; load average {load[0]:.2f} / {load[1]:.2f}")
    _write(Path(args.out), med, ratios, worst, steps, load, args)


def _write(path: Path, med: dict, ratios: list, worst: float, steps: int, load: list,
           args) -> None:
    import datetime

    import numba
    import numpy
    section = [
        SECTION,
        "",
        f"Run {datetime.date.today()} by `python benchmarks/compiled_step.py --rounds "
        f"{args.rounds} --repeats {args.repeats}` on {_cpu()}; numpy {numpy.__version__}, "
        f"numba {numba.__version__}. The CharLM's training step (the batches, sizes and "
        "Adam of *CharLM training* above) as seqdsl runs it, `Network.loss_and_grad` and "
        "the optimiser, against the same step with `loss_and_grad` replaced by one Numba "
        "function that calls the same compiled kernels with nothing in between (written by "
        "hand as a network-level generator would write it, `one_function_step`). Checked "
        "first on all "
        f"{steps} batches: loss and gradients within {worst:.1e} (relative) of "
        "`loss_and_grad`'s. Each way in its own process, alternating; medians of the rounds' "
        f"medians; load average {load[0]:.2f} before, {load[1]:.2f} after.",
        "",
        "| step | ms/step |",
        "|---|---|",
        f"| `loss_and_grad` + Adam (as today) | {med['loss_and_grad'] * 1e3:.3f} |",
        f"| one compiled function + Adam | {med['one function'] * 1e3:.3f} |",
        "",
        "One function ÷ `loss_and_grad`, per round: "
        + ", ".join(f"{q:.2f}" for q in ratios) + ".",
        "",
    ]
    replace_section(path, SECTION, section)


if __name__ == "__main__":
    main()
