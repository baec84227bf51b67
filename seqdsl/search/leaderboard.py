"""What a search writes as its trials finish: `leaderboard.csv` and
`leaderboard.md` (rank, score, parameters, trial time, the mutation
history), the best cells as `.seq` files that `seqdsl train` retrains, the
plot of the best score against trials (`best.png`) and the counts of
mutants drawn, invalid and duplicated (`counts.json`)."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

COLUMNS = ("rank", "score", "status", "parameters", "trial_seconds", "steps", "index", "cell",
           "parent", "node", "trial_id", "finished_at", "history", "message")


def ranked(rows: list[dict]) -> list[dict]:
    """Rows best first (finished before diverged or stopped early, then by
    score, then by the order suggested), each with its rank."""
    def key(r):
        score = r["score"] if math.isfinite(r["score"]) else math.inf
        return (r["status"] != "done", score, r["index"])
    out = sorted(rows, key=key)
    for i, r in enumerate(out, 1):
        r["rank"] = i
    return out


def _replace(path: Path, text: str) -> None:
    """Write all or nothing: a reader (or a kill) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def write_csv(out: Path, rows: list[dict]) -> None:
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "history": " ; ".join(r["history"]),
                    "score": f"{r['score']:.6f}" if math.isfinite(r["score"]) else "inf",
                    "trial_seconds": f"{r['trial_seconds']:.2f}"})
    _replace(out / "leaderboard.csv", buf.getvalue())


def read_csv(path) -> list[dict]:
    """The rows of a leaderboard.csv, with numbers as numbers."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["score"] = float(r["score"])
        for k in ("rank", "parameters", "steps", "index"):
            r[k] = int(r[k])
        r["trial_seconds"] = float(r["trial_seconds"])
        r["history"] = tuple(r["history"].split(" ; "))
    return rows


def write_markdown(out: Path, rows: list[dict], header: str, counts: dict | None) -> None:
    lines = [f"# Search leaderboard\n\n{header}\n"]
    if counts:
        lines.append(f"{len(rows)} trials finished; mutants drawn {counts['attempts']}: "
                     f"{counts['suggested']} distinct valid (trained), {counts['duplicates']} "
                     f"duplicates, {counts['invalid']} invalid.\n")
    lines.append("| rank | score | status | parameters | trial time (s) | cell | history |")
    lines.append("|---:|---:|---|---:|---:|---|---|")
    for r in rows:
        history = " → ".join(h.replace("|", "\\|") for h in r["history"])
        lines.append(f"| {r['rank']} | {r['score']:.4f} | {r['status']} | {r['parameters']} | "
                     f"{r['trial_seconds']:.2f} | {r['cell']} | {history} |")
    _replace(out / "leaderboard.md", "\n".join(lines) + "\n")


def write_counts(out: Path, counts: dict) -> None:
    _replace(out / "counts.json", json.dumps(counts, indent=2, ensure_ascii=False) + "\n")


def write_best(out: Path, rows: list[dict], sources: dict[int, str], k: int, retrain) -> list:
    """The best `k` finished cells as `best/NN-CELL.seq`: the cell, the
    network it was trained in, and the command that retrains it
    (`retrain(file) -> str`) in a comment."""
    folder = out / "best"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.seq"):  # a cell that has dropped out of the best k
        old.unlink()
    written = []
    for r in [r for r in rows if r["status"] == "done"][:k]:
        path = folder / f"{r['rank']:02d}-{r['cell']}.seq"
        notes = [f"rank {r['rank']}, score {r['score']:.4f}, {r['parameters']} parameters",
                 "history: " + " → ".join(r["history"]), "retrain: " + retrain(path)]
        text = "".join(f"# {n}\n" for n in notes) + sources[r["index"]]
        _replace(path, text)
        written.append(path)
    return written


def write_plot(out: Path, rows: list[dict], unit: str) -> Path:
    """Best score so far against trials, in the order they were suggested."""
    import matplotlib
    matplotlib.use("Agg")  # no display on a search node
    import matplotlib.pyplot as plt
    done = sorted((r for r in rows if math.isfinite(r["score"])), key=lambda r: r["index"])
    best, so_far = [], math.inf
    for r in done:
        so_far = min(so_far, r["score"])
        best.append(so_far)
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["index"] + 1 for r in done]
    ax.scatter(x, [r["score"] for r in done], s=6, alpha=0.4, label="trial")
    ax.step(x, best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation loss ({unit})")
    ax.legend()
    fig.tight_layout()
    path = out / "best.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
