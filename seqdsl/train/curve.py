"""The loss curve of a run: `loss.csv` (every step's training loss, and
each epoch's validation loss on the step that ended it) and `loss.png`."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

COLUMNS = ("step", "epoch", "train_loss", "valid_loss")


def rows(losses: list[float], history: list[dict]) -> list[tuple]:
    """One row per step: step, epoch, its training loss, and the epoch's
    validation loss on an epoch's last step (else empty)."""
    ends = {h["step"]: h for h in history}
    epoch, out = 1, []
    for i, loss in enumerate(losses, start=1):
        valid = ends[i].get("valid_loss", "") if i in ends else ""
        out.append((i, epoch, loss, valid))
        if i in ends:
            epoch = ends[i]["epoch"] + 1
    return out


def write(directory, losses: list[float], history: list[dict]) -> None:
    """`loss.csv` and `loss.png` in `directory`, each replaced whole."""
    directory = Path(directory)
    table = rows(losses, history)
    tmp = directory / "loss.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(table)
    os.replace(tmp, directory / "loss.csv")
    if table:
        plot(directory / "loss.png", table)


def plot(path: Path, table: list[tuple]) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only: no screen needed
    import matplotlib.pyplot as plt

    steps = [r[0] for r in table]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [r[2] for r in table], lw=0.8, alpha=0.5, label="training (each step)")
    ax.plot(steps, _smooth([r[2] for r in table]), lw=1.5, label="training (smoothed)")
    ends = [(r[0], r[3]) for r in table if r[3] != "" and math.isfinite(r[3])]
    if ends:
        ax.plot(*zip(*ends), "o-", label="validation (each epoch)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss per target (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _smooth(values: list[float], span: int = 50) -> list[float]:
    """An exponential moving average, as loss curves are usually read."""
    alpha, out, avg = 2 / (span + 1), [], None
    for v in values:
        avg = v if avg is None or not math.isfinite(avg) else alpha * v + (1 - alpha) * avg
        out.append(avg)
    return out
