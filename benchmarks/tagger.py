"""The shipped Tagger network, seqdsl against PyTorch, side by side in one run.

    python benchmarks/tagger.py [--repeats N] [--rounds N] [--out benchmarks/RESULTS.md]

Forward+backward of the Tagger (`stack(bidirectional(LSTM(H=64)), LSTM(H=64))`,
a linear head and softmax cross-entropy) over a batch of B=32 sequences of
variable length (at most T=50, X=64 features, 10 classes), float32. seqdsl
runs `loss_and_grad` on the numba backend; PyTorch runs the same network as
a PyTorch user writes it: `nn.LSTM(bidirectional=True)` under `nn.LSTM` on
packed sequences, `nn.Linear`, `F.cross_entropy`, `.backward()`. Each
measurement runs in its own process, the two alternating, with the same
number of threads; the medians of repeated runs after warm-up are compared.
The section "Tagger" of RESULTS.md is replaced by this run's table.
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
from rnn import _timeit, replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
B, T, X, H, Y = 32, 50, 64, 64, 10
THREADS = os.cpu_count() or 1


def _batch(seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, X)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, B)
    lengths[0] = T
    targets = rng.integers(0, Y, (T, B))
    targets[np.arange(T)[:, None] >= lengths[None, :]] = -1
    return x, lengths, targets


def work_seqdsl(repeats: int) -> list[float]:
    import numpy as np

    import seqdsl
    spec = seqdsl.load(str(ROOT / "seqdsl/lang/library/tagger.seq"))
    net = seqdsl.instantiate(spec.network("Tagger"), sizes={"X": X, "Y": Y}, dtype=np.float32,
                             backend="numba")
    params = net.init_params(0)
    x, lengths, targets = _batch()
    return _timeit(lambda: net.loss_and_grad(params, x, lengths, targets), repeats)


def work_torch(repeats: int) -> list[float]:
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    first = torch.nn.LSTM(X, H, bidirectional=True)
    second = torch.nn.LSTM(2 * H, H)
    head = torch.nn.Linear(H, Y)
    x, lengths, targets = (torch.from_numpy(a) for a in _batch())
    targets = targets.long()

    def run():
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        h, _ = second(first(packed)[0])
        h, _ = pad_packed_sequence(h, total_length=T)
        logits = head(h)
        loss = torch.nn.functional.cross_entropy(logits.reshape(T * B, Y), targets.reshape(-1),
                                                 ignore_index=-1)
        loss.backward()
    return _timeit(run, repeats)


WORKERS = {"seqdsl": work_seqdsl, "torch": work_torch}


def _measure(impl: str, repeats: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, "--worker", impl, "--repeats", str(repeats)],
                         capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{impl} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["times"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=4,
                    help="alternating rounds; the median over all runs is kept")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps({"times": WORKERS[args.worker](args.repeats)}))
        return
    times = {n: [] for n in WORKERS}
    rounds = []
    for r in range(args.rounds):
        order = list(WORKERS) if r % 2 == 0 else list(WORKERS)[::-1]
        got = {n: _measure(n, args.repeats) for n in order}
        for n, t in got.items():
            times[n] += t
        rounds.append({n: statistics.median(t) for n, t in got.items()})
        print(f"round {r + 1}: " + "  ".join(f"{n} {m * 1e3:.1f} ms" for n, m in
                                           rounds[-1].items()), flush=True)
    med = {n: statistics.median(t) for n, t in times.items()}
    ratios = sorted(r["torch"] / r["seqdsl"] for r in rounds)
    print(f"median: seqdsl {med['seqdsl'] * 1e3:.1f} ms, torch {med['torch'] * 1e3:.1f} ms: "
          f"seqdsl {med['torch'] / med['seqdsl']:.2f}× faster (per round "
          f"{', '.join(f'{q:.2f}' for q in ratios)})")
    _write(Path(args.out), med, ratios)


def _write(path: Path, med: dict, ratios: list[float]) -> None:
    import datetime
    import numba
    import numpy
    import torch
    section = [
        "## Tagger",
        "",
        f"Run {datetime.date.today()} by `python benchmarks/tagger.py`, {THREADS} threads; "
        f"numpy {numpy.__version__}, numba {numba.__version__}, torch {torch.__version__}. "
        f"Forward+backward with the loss, float32, B={B}, T≤{T} (variable lengths), X={X}, "
        f"H={H}, {Y} classes; medians over alternating rounds, each in its own process. "
        "While a compiled network runs, seqdsl keeps NumPy's BLAS at one thread (the "
        "heads' products are small; its spinning threads slowed the kernels' own BLAS "
        "threads 3×, see seqdsl/runtime/numba/blas.py).",
        "",
        "| network | seqdsl ms | torch ms | speed-up vs torch | per round |",
        "|---|---|---|---|---|",
        f"| Tagger: bidirectional LSTM under LSTM, linear head, cross-entropy | "
        f"{med['seqdsl'] * 1e3:.1f} | {med['torch'] * 1e3:.1f} | "
        f"{med['torch'] / med['seqdsl']:.2f}× | {', '.join(f'{q:.2f}×' for q in ratios)} |",
        "",
    ]
    replace_section(path, "## Tagger", section)


if __name__ == "__main__":
    main()
