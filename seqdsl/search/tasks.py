"""The tasks a search ranks cells by, each phrased in the training formats
(`seqdsl.train.tasks`) so that a ranked cell retrains with `seqdsl train`:

- `adding`: the adding problem (Hochreiter & Schmidhuber 1997) with digits
  for tokens. Each step reads a digit, marked (`a`..`j` for 0..9) or not
  (`0`..`9`); two are marked, one in each half, and the network names
  their sum (0..18) on the last step. Training's targets are classes, so
  the sum is a class and the loss cross-entropy (the IR's `mse` loss has
  no data format yet): a `classify` data file, `TEXT<TAB>SUM`.
- `copy`: recall over a long span. A few symbols, a long gap of `-`, then
  `:`; from `:` on the network repeats the symbols. A `tag` data file: one
  label per character, `_` where there is nothing to recall.
- `names`: a character language model on the built-in `corpus:names`; the
  score is in bits per character.
- `data:FILE`: a user's file as `seqdsl train` reads it (`lm`, or `tag`
  when its lines hold tabs); the score is the validation loss, in bits
  per token for `lm`, in nats for `tag`.

Synthetic data is generated from the search's seed, so a trial on any node
makes the same file a driver writes for retraining.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import SeqError

SYNTHETIC = ("adding", "copy")
NAMED = SYNTHETIC + ("names",)
# Sizes of the synthetic tasks: (sequence length or gap, examples).
DEFAULT_SIZES = {"adding": (30, 2000), "copy": (20, 2000)}
COPY_SYMBOLS, COPY_COUNT = "abcdefgh", 4


@dataclass(frozen=True)
class SearchTask:
    """What a trial trains on: a data file (or corpus) in a training format,
    the training task kind, and how its loss becomes a score."""

    name: str  # adding, copy, names, data:FILE
    data: str  # a path or corpus:names
    kind: str  # lm, tag or classify (seqdsl.train.tasks)
    per_step: bool  # the network's head: an output at every step, or the last only
    bits: bool = False  # the score in bits (the loss / ln 2)
    # (name, size, count, seed) of a synthetic task: a node without `data`
    # (another machine of a cluster) makes the same file again.
    synthetic: tuple | None = None

    def score(self, loss: float) -> float:
        return loss / math.log(2) if self.bits else loss

    @property
    def unit(self) -> str:
        return "bits/char" if self.bits else "nats"

    def here(self) -> SearchTask:
        """This task with a data file that exists on this node."""
        if self.synthetic is None or Path(self.data).exists():
            return self
        return replace(self, data=str(data_file(*self.synthetic)))


def adding_text(length: int, count: int, seed: int) -> str:
    """`count` lines of the adding problem over `length` digits."""
    rng = random.Random(f"adding:{seed}")
    lines = []
    half = max(length // 2, 1)
    for _ in range(count):
        digits = [rng.randrange(10) for _ in range(length)]
        marks = {rng.randrange(half), half + rng.randrange(length - half)}
        text = "".join("abcdefghij"[d] if i in marks else str(d) for i, d in enumerate(digits))
        lines.append(f"{text}\t{sum(digits[i] for i in marks)}")
    return "\n".join(lines) + "\n"


def copy_text(gap: int, count: int, seed: int) -> str:
    """`count` lines of the copy task with a gap of `gap` steps."""
    rng = random.Random(f"copy:{seed}")
    lines = []
    for _ in range(count):
        symbols = [rng.choice(COPY_SYMBOLS) for _ in range(COPY_COUNT)]
        text = "".join(symbols) + "-" * gap + ":" + "-" * (COPY_COUNT - 1)
        labels = ["_"] * (COPY_COUNT + gap) + symbols
        lines.append(f"{text}\t{' '.join(labels)}")
    return "\n".join(lines) + "\n"


def synthetic_text(name: str, size: int, count: int, seed: int) -> str:
    return (adding_text if name == "adding" else copy_text)(size, count, seed)


def data_file(name: str, size: int, count: int, seed: int, directory=None) -> Path:
    """The synthetic task's data written as a file in `directory` (default:
    a per-node temporary folder), once: trials on a node share it."""
    text = synthetic_text(name, size, count, seed)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    folder = Path(directory) if directory else Path(tempfile.gettempdir()) / "seqdsl-search"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{size}-{count}-seed{seed}-{digest}.tsv"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # trials may write it at once
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)
    return path


def parse_task(spec: str) -> tuple[str, str | None]:
    """(`adding`|`copy`|`names`|`data`, the file for data:FILE) from --task."""
    if spec in NAMED:
        return spec, None
    if spec.startswith("data:") and len(spec) > len("data:"):
        return "data", spec[len("data:"):]
    raise SeqError(f"--task {spec}: expected adding, copy, names or data:FILE",
                   hint="data:FILE trains on your own file in the formats of `seqdsl train`")


def resolve(spec: str, seed: int, size: int | None = None, count: int | None = None,
            directory=None) -> SearchTask:
    """The task --task names, with its data file made (synthetic tasks)."""
    name, path = parse_task(spec)
    if name in SYNTHETIC:
        default_size, default_count = DEFAULT_SIZES[name]
        made = (name, size or default_size, count or default_count, seed)
        data = data_file(*made, directory)
        kind = "classify" if name == "adding" else "tag"
        return SearchTask(spec, str(data.resolve()), kind, per_step=(kind != "classify"),
                          synthetic=made)
    if name == "names":
        return SearchTask(spec, "corpus:names", "lm", per_step=True, bits=True)
    from ..train.data import read_text
    text = read_text(path)  # a missing file is reported now, not in every trial
    kind = "tag" if "\t" in text else "lm"
    return SearchTask(spec, str(Path(path).resolve()), kind, per_step=True, bits=(kind == "lm"))


def network_source(cell_name: str, hidden: int, per_step: bool,
                   network: str = "Search") -> str:
    """The network a candidate cell is trained in: one layer of it over
    tokens, and a softmax at every step or on each example's last step."""
    head = "ŷ<t> = softmax(Wy h<t> + by)" if per_step else "ŷ = softmax(Wy h<T> + by)"
    return (f"network {network} {{\n"
            f"    input x : tokens\n"
            f"    h = {cell_name}(H={hidden})(x)\n"
            f"    output {head}\n"
            f"}}\n")
