"""Training the shipped CharLM, seqdsl against PyTorch, side by side in one run.

    python benchmarks/train_charlm.py [--repeats N] [--rounds N] [--out benchmarks/RESULTS.md]

Training throughput, in target tokens per second, of the CharLM
(seqdsl/lang/library/charlm.seq: one-hot token input, `LSTM(H=128)`, a
softmax head over the vocabulary) on the built-in names corpus, float32,
batches of 32 names as `seqdsl train` makes them (`batch_order`, `collate`),
Adam with lr 0.005, no clipping. One step is the loss, its gradient and the
optimiser's update. seqdsl runs `net.loss_and_grad` and the optimiser of
`seqdsl.train.optim` on the numba backend, as `seqdsl.train.fit` does (NumPy's
BLAS at one thread around it, `net.blas_policy()`). PyTorch runs the same
model as a PyTorch user writes it: `nn.Embedding` fixed to the identity (the
one-hot input), `nn.LSTM`, `nn.Linear`, `F.cross_entropy(ignore_index=-1)`,
`torch.optim.Adam`, in two variants: (a) on `pack_padded_sequence(..,
enforce_sorted=False)`, (b) on the padded batch, the padding's targets
ignored (a language model's outputs at the valid steps are the same, so
the loss is too). Every implementation trains over the same fixed list of
batches, collated before the clock starts; one timed run is one pass over
them. Each measurement runs in its own process, the implementations
alternating, with the same number of threads; the medians of repeated passes
after warm-up are compared. The section "CharLM training" of RESULTS.md is
replaced by this run's table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rnn import _cpu, _timeit, replace_section, worker_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
B, H, LR, BATCHES = 32, 128, 0.005, 60
CORPUS = "corpus:names"
THREADS = os.cpu_count() or 1
SECTION = "## CharLM training"


def _data():
    """The network type, its sizes and BATCHES batches of the corpus's first
    epoch (seed 0), collated: the same for every implementation."""
    import numpy as np

    import seqdsl
    from seqdsl.train import tasks
    from seqdsl.train.data import batch_order, collate
    spec = seqdsl.load(str(ROOT / "seqdsl/lang/library/charlm.seq"))
    nt = spec.network("CharLM")
    task = tasks.build_task(nt, "lm", CORPUS)
    examples = tasks.examples(task, nt, CORPUS)
    sizes = tasks.network_sizes(nt, task)
    lengths = np.array([len(e.target) for e in examples])
    order = batch_order(lengths, B, seed=0, epoch=0)[:BATCHES]  # 162 in the epoch
    batches = [collate(examples, idx) for idx in order]
    return nt, sizes, batches


def _result(times: list[float], batches, losses: list[float], **extra) -> dict:
    return {"times": times, "tokens": sum(b.tokens for b in batches), "steps": len(batches),
            "loss": losses[-1], **extra}


def work_seqdsl(repeats: int) -> dict:
    import numpy as np

    import seqdsl
    from seqdsl.train.optim import make_optimizer
    nt, sizes, batches = _data()
    net = seqdsl.instantiate(nt, sizes=sizes, dtype=np.float32, backend="numba")
    params = net.init_params(0)
    opt = make_optimizer("adam", LR)
    data = [({"x": b.inputs["x"]}, {"x": b.lengths["x"]}, b.targets) for b in batches]
    losses, parts = [], []  # per pass: mean loss; (forward+backward, optimiser) seconds

    def epoch():
        total = grad_s = opt_s = 0.0
        for inputs, lengths, targets in data:
            t0 = time.perf_counter()
            loss, grads = net.loss_and_grad(params, inputs, lengths, targets)
            t1 = time.perf_counter()
            opt.step(params, grads)
            t2 = time.perf_counter()
            grad_s += t1 - t0
            opt_s += t2 - t1
            total += loss
        losses.append(total / len(data))
        parts.append((grad_s, opt_s))

    with net.blas_policy():  # as Trainer.run: the optimiser's NumPy too
        times = _timeit(epoch, repeats)
    kept = parts[-len(times):]
    return _result(times, batches, losses, vocab=sizes["X"], grad=[g for g, _ in kept],
                   opt=[o for _, o in kept])


def _work_torch(repeats: int, packed: bool) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    nt, sizes, batches = _data()
    V, Y = sizes["X"], sizes["Y"]
    embed = torch.nn.Embedding(V, V)
    with torch.no_grad():
        embed.weight.copy_(torch.eye(V))  # one-hot rows: the same input as seqdsl's
    embed.weight.requires_grad_(False)
    lstm = torch.nn.LSTM(V, H)
    head = torch.nn.Linear(H, Y)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=LR)
    data = [(torch.from_numpy(b.inputs["x"]), torch.from_numpy(b.lengths["x"]),
             torch.from_numpy(b.targets)) for b in batches]
    losses = []

    def step(x, lengths, targets):
        T = x.shape[0]
        opt.zero_grad()
        if packed:
            seq = pack_padded_sequence(embed(x), lengths, enforce_sorted=False)
            a, _ = pad_packed_sequence(lstm(seq)[0], total_length=T)
        else:
            a, _ = lstm(embed(x))
        logits = head(a)
        loss = F.cross_entropy(logits.reshape(-1, Y), targets.reshape(-1), ignore_index=-1)
        loss.backward()
        opt.step()
        return loss.item()

    def epoch():
        losses.append(sum(step(*d) for d in data) / len(data))

    return _result(_timeit(epoch, repeats), batches, losses, vocab=V)


WORKERS = {"seqdsl": work_seqdsl,
           "torch packed": lambda repeats: _work_torch(repeats, packed=True),
           "torch padded": lambda repeats: _work_torch(repeats, packed=False)}
TORCH = [n for n in WORKERS if n != "seqdsl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20,
                    help=f"timed passes over the {BATCHES} batches per process")
    ap.add_argument("--rounds", type=int, default=10,
                    help="alternating rounds; the median over all runs is kept")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.repeats)))
        return
    load = [os.getloadavg()[0]]  # other work on the machine, noted with the results
    times = {n: [] for n in WORKERS}
    grad, opt, rounds, losses = [], [], [], {n: [] for n in WORKERS}
    tokens = steps = vocab = None
    for r in range(args.rounds):
        order = list(WORKERS) if r % 2 == 0 else list(WORKERS)[::-1]
        got = {n: worker_result(__file__, n, args.repeats) for n in order}
        for n, res in got.items():
            times[n] += res["times"]
            losses[n].append(res["loss"])
            if tokens is None:
                tokens, steps, vocab = res["tokens"], res["steps"], res["vocab"]
            assert (res["tokens"], res["steps"], res["vocab"]) == (tokens, steps, vocab), \
                "different batches"
        grad += got["seqdsl"]["grad"]
        opt += got["seqdsl"]["opt"]
        rounds.append({n: statistics.median(res["times"]) for n, res in got.items()})
        print(f"round {r + 1}: " + "  ".join(
            f"{n} {rounds[-1][n] / steps * 1e3:.2f} ms/step (loss {got[n]['loss']:.3f})"
            for n in WORKERS), flush=True)
    load.append(os.getloadavg()[0])
    med = {n: statistics.median(t) for n, t in times.items()}
    # A round whose median is 1.5x the overall one was slowed by other work; it is kept.
    disturbed = sum(any(r[n] > 1.5 * med[n] for n in WORKERS) for r in rounds)
    print(f"load average {load[0]:.2f} before, {load[1]:.2f} after; {disturbed} of "
          f"{len(rounds)} rounds disturbed")
    parts = {"forward+backward": statistics.median(grad), "Adam step": statistics.median(opt)}
    ratios = {n: sorted(r[n] / r["seqdsl"] for r in rounds) for n in TORCH}
    for n, m in med.items():
        line = f"{n}: {m / steps * 1e3:.2f} ms/step, {tokens / m:,.0f} tokens/s"
        if n != "seqdsl":
            line += (f"; seqdsl {m / med['seqdsl']:.2f}× its tokens/s (per round "
                     f"{', '.join(f'{q:.2f}' for q in ratios[n])})")
        print(line)
    print("seqdsl step: " + ", ".join(f"{k} {v / steps * 1e3:.2f} ms" for k, v in parts.items()))
    final = {n: statistics.median(v) for n, v in losses.items()}
    print("mean training loss of the last pass: "
          + ", ".join(f"{n} {v:.3f}" for n, v in final.items()))
    _write(Path(args.out), med, ratios, parts, tokens, steps, final, load, disturbed,
           vocab)




def _write(path: Path, med: dict, ratios: dict, parts: dict, tokens: int, steps: int,
           final: dict, load: list[float], disturbed: int, vocab: int) -> None:
    import datetime
    import numba
    import numpy
    import torch

    def ms(s):
        return f"{s / steps * 1e3:.2f}"

    def rate(s):
        return f"{tokens / s:,.0f}"

    what = {"seqdsl": "seqdsl (numba): `loss_and_grad` + Adam",
            "torch packed": "PyTorch, `pack_padded_sequence(enforce_sorted=False)`",
            "torch padded": "PyTorch, padded batch, padding's targets ignored"}
    section = [
        SECTION,
        "",
        f"Run {datetime.date.today()} by `python benchmarks/train_charlm.py` on {_cpu()}, "
        f"{THREADS} threads (torch.set_num_threads({THREADS})); numpy {numpy.__version__}, "
        f"numba {numba.__version__}, torch {torch.__version__}. "
        f"Training throughput of the shipped CharLM (one-hot input over {vocab} tokens, "
        f"LSTM(H={H}), softmax head) on `{CORPUS}`, float32, B={B}, Adam lr={LR}, no "
        "clipping. A step is the loss, its gradient and the optimiser's update: for seqdsl "
        "`net.loss_and_grad` on the numba backend and `seqdsl.train.optim`'s Adam, as "
        "`seqdsl train` steps (less its divergence check); for PyTorch the same model as a "
        f"PyTorch user writes it, `nn.Embedding({vocab}, {vocab})` fixed to the identity "
        f"(exactly the one-hot input), `nn.LSTM({vocab}, {H})`, `nn.Linear`, "
        "`F.cross_entropy(ignore_index=-1)`, `torch.optim.Adam`, either on "
        "`pack_padded_sequence(enforce_sorted=False)` or on the padded batch with the "
        "padding's targets ignored (the valid steps' outputs, so the loss, are the same). "
        f"All train over the same {steps} batches of `batch_order(seed=0, epoch=0)` "
        f"({tokens:,} target tokens, {tokens / steps:.0f} a batch), collated before timing; "
        "one timed run is one pass over them, the parameters training on from pass to pass. "
        f"Medians over {len(next(iter(ratios.values())))} alternating rounds, each in its own "
        f"process. The machine was shared (1-minute load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after); {disturbed} of the rounds had an implementation's median "
        "over 1.5× its overall median and are kept in the medians (see *per round*).",
        "",
        "| implementation | ms/step | tokens/s | seqdsl's tokens/s ÷ this | per round |",
        "|---|---|---|---|---|",
    ]
    for n, m in med.items():
        speed = "—" if n == "seqdsl" else f"{m / med['seqdsl']:.2f}×"
        per = "—" if n == "seqdsl" else ", ".join(f"{q:.2f}×" for q in ratios[n])
        section.append(f"| {what[n]} | {ms(m)} | {rate(m)} | {speed} | {per} |")
    section += [
        "",
        "The seqdsl step in parts (informational, timed within the same passes): "
        + "; ".join(f"{k} {ms(v)} ms/step" for k, v in parts.items()) + ". "
        "Mean training loss over the last pass (medians over processes; both start "
        "from their own initialisation): "
        + ", ".join(f"{n} {v:.3f}" for n, v in final.items()) + ".",
        "",
    ]
    replace_section(path, SECTION, section)


if __name__ == "__main__":
    main()
