"""Text data for training: reading files, turning texts into examples of token
ids, splitting off a validation set, and batching by similar length."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import SeqError
from .corpora import corpus_text, is_corpus
from .vocab import LEVELS, Labels, Vocabulary

BOM = b"\xef\xbb\xbf"
POOL_BATCHES = 50  # batches sorted together: enough for even lengths, few enough to stay random
TEXT_HINT = "training data is a UTF-8 text file; save it as UTF-8 (not UTF-16 or Latin-1)"
PAIRS_HINT = "each line is INPUT, one tab, then LABELS"


def read_text(path) -> str:
    """The UTF-8 text of a data file, BOM removed and \\r\\n as \\n; or
    of a built-in corpus, `corpus:NAME` (corpora.py)."""
    if is_corpus(path):
        return corpus_text(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise SeqError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SeqError(f"{path}: is a directory, not a text file") from None
    except OSError as e:
        raise SeqError(f"{path}: cannot read it ({e.strerror or e})") from None
    if data.startswith(BOM):
        data = data[len(BOM):]
    _check_binary(path, data)
    text = data.decode("utf-8").replace("\r\n", "\n")
    if not text.strip():
        what = "is empty" if not text else "is empty (only whitespace)"
        raise SeqError(f"{path}: {what}", hint="a data file needs at least one example")
    return text


def _check_binary(path, data: bytes) -> None:
    nul = data.find(b"\0")
    try:
        data.decode("utf-8")
        bad = -1
    except UnicodeDecodeError as e:
        bad = e.start
    # Report whichever comes first, so the place named is the first thing wrong.
    first = min(p for p in (nul, bad, len(data)) if p >= 0)
    if first == len(data):
        return
    line, col = _place(data, first)
    what = "a NUL byte" if first == nul else f"byte 0x{data[first]:02x}, which is not UTF-8"
    raise SeqError(f"{path}:{line}:{col}: a binary file, not text ({what})", hint=TEXT_HINT)


def _place(data: bytes, pos: int) -> tuple[int, int]:
    """Line and column (in characters, from 1) of byte offset `pos`."""
    start = data.rfind(b"\n", 0, pos) + 1
    line = data.count(b"\n", 0, pos) + 1
    # Everything before the first bad byte decodes, so this counts characters as an editor does.
    col = len(data[start:pos].decode("utf-8", errors="replace")) + 1
    return line, col


def read_lines(path) -> list[str]:
    """One example per non-blank line, trailing whitespace removed."""
    return [line.rstrip() for line in read_text(path).split("\n") if line.strip()]


def read_windows(path, size: int, level: str = "char") -> list[str]:
    """A running text cut into consecutive windows of `size` tokens (the last may be shorter)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise SeqError(f"a window must be a whole number of tokens >= 1, not {size!r}")
    if level not in LEVELS:
        raise SeqError(f"unknown token level {level!r}; expected one of {', '.join(LEVELS)}")
    text = read_text(path)
    if level == "char":
        return [text[i:i + size] for i in range(0, len(text), size)]
    words = text.split()
    return [" ".join(words[i:i + size]) for i in range(0, len(words), size)]


class Pair(tuple):
    """(input, labels), a plain 2-tuple that also remembers its line in the file."""

    def __new__(cls, inputs: str, labels: str, line: int):
        self = super().__new__(cls, (inputs, labels))
        self.line = line
        return self


def read_pairs(path) -> list[tuple[str, str]]:
    """The labelled format: each non-blank line is INPUT<TAB>LABELS."""
    pairs = []
    for n, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        tabs = line.count("\t")
        if tabs == 0:
            raise SeqError(f"{path}:{n}: no tab; expected INPUT<TAB>LABELS", hint=PAIRS_HINT)
        if tabs > 1:
            col = line.index("\t", line.index("\t") + 1) + 1
            raise SeqError(f"{path}:{n}:{col}: a second tab; expected INPUT<TAB>LABELS "
                           "with exactly one tab", hint=PAIRS_HINT)
        inputs, labels = line.split("\t")
        labels = labels.strip()
        if not inputs.strip():
            raise SeqError(f"{path}:{n}: nothing before the tab; expected INPUT<TAB>LABELS",
                           hint=PAIRS_HINT)
        if not labels:
            raise SeqError(f"{path}:{n}: nothing after the tab; expected INPUT<TAB>LABELS",
                           hint=PAIRS_HINT)
        pairs.append(Pair(inputs, labels, n))
    return pairs


@dataclass
class Example:
    """One training example: token ids by input name, and what to predict."""

    inputs: dict[str, np.ndarray]  # input name -> (T,) int64 token ids
    target: np.ndarray  # (T,) int64 per-step class ids, or 0-d for a whole-sequence label


def _ids(*parts) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in parts])


def language_model_examples(texts: Iterable[str], vocab: Vocabulary,
                            input_name: str) -> list[Example]:
    """Input <EOS> + ids, target ids + <EOS>: each step predicts the next input, then the end."""
    out = []
    for text in texts:
        ids = vocab.encode(text)
        out.append(Example({input_name: _ids(vocab.eos, ids)}, _ids(ids, vocab.eos)))
    return out


def _line(pair, i: int) -> int:
    # Pairs from read_pairs know their line; others are counted from 1.
    return getattr(pair, "line", i + 1)


def _label_ids(labels: Labels, names: list[str], where: str) -> np.ndarray:
    try:
        return np.array([labels.encode(n) for n in names], dtype=np.int64)
    except SeqError as e:
        raise SeqError(f"{where}: {e.message}", hint=e.hint) from None


def tagging_examples(pairs, vocab: Vocabulary, labels: Labels, input_name: str,
                     path="<data>") -> list[Example]:
    """One label per token of the input: the labels are space-separated."""
    out = []
    for i, pair in enumerate(pairs):
        text, tags = pair
        tokens, names = vocab.split(text), tags.split()
        where = f"{path}:{_line(pair, i)}"
        if len(tokens) != len(names):
            raise SeqError(f"{where}: {len(tokens)} tokens but {len(names)} labels",
                           hint=f"a tagger needs one space-separated label per {vocab.level} "
                                "of the input")
        out.append(Example({input_name: vocab.encode(text)}, _label_ids(labels, names, where)))
    return out


def classification_examples(pairs, vocab: Vocabulary, labels: Labels, input_name: str,
                            path="<data>") -> list[Example]:
    """One label for the whole input (the text after the tab)."""
    out = []
    for i, pair in enumerate(pairs):
        text, label = pair
        where = f"{path}:{_line(pair, i)}"
        target = _label_ids(labels, [label.strip()], where)[0]
        out.append(Example({input_name: vocab.encode(text)}, np.array(target, dtype=np.int64)))
    return out


def translation_examples(pairs, source: Vocabulary, target: Vocabulary, source_name: str,
                         target_name: str) -> list[Example]:
    """The encoder reads the source + <EOS>, the decoder <EOS> + the target (shifted right)."""
    if source_name == target_name:
        raise SeqError(f"the source and the target input are both named {source_name!r}",
                       hint="a translation network reads two inputs with different names")
    out = []
    for text, translation in pairs:
        src, tgt = source.encode(text), target.encode(translation)
        out.append(Example({source_name: _ids(src, source.eos),
                            target_name: _ids(target.eos, tgt)}, _ids(tgt, target.eos)))
    return out


def split_valid(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and valid indices (each sorted), chosen by a seeded permutation."""
    if not 0 <= fraction < 1:  # NaN fails this too
        raise SeqError(f"the validation fraction must be in [0, 1), not {fraction!r}",
                       hint="0.1 keeps a tenth of the examples for validation; 0 keeps none")
    if n < 0:
        raise SeqError(f"cannot split {n} examples")
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    k = int(round(n * fraction))
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    return np.sort(perm[k:]), np.sort(perm[:k])


def batch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch as index arrays, of examples of similar length.

    Depends on (lengths, batch_size, seed, epoch) only, so a resumed run
    repeats an interrupted epoch exactly."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise SeqError(f"the batch size must be a whole number >= 1, not {batch_size!r}")
    if seed < 0 or epoch < 0:
        raise SeqError(f"seed and epoch must be >= 0, not {seed} and {epoch}")
    lengths = np.asarray(lengths).reshape(-1)
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(len(lengths)).astype(np.int64)
    pool = POOL_BATCHES * int(batch_size)
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class Batch:
    """Examples stacked time-major and padded to the longest."""

    inputs: dict[str, np.ndarray]  # name -> (T, B) int64 ids, 0 past each length
    lengths: dict[str, np.ndarray]  # name -> (B,) int64
    targets: np.ndarray  # (T, B) int64, -1 past each target's length; or (B,) for whole-sequence labels
    tokens: int  # number of labelled targets (entries >= 0)


def _pad(seqs: list[np.ndarray], fill: int) -> np.ndarray:
    """(T, B): sequence b down column b, `fill` past its end. Written in one
    masked assignment, not a strided copy per sequence (a batch of 32 names:
    16 against 5 us)."""
    lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
    out = np.full((int(lengths.max(initial=0)), len(seqs)), fill, dtype=np.int64)
    if len(out):
        # the transposed view's valid entries, in C order, are the sequences one after another
        out.T[np.arange(len(out))[None, :] < lengths[:, None]] = np.concatenate(seqs)
    return out


def collate(examples: list[Example], idx) -> Batch:
    """The batch of `examples[i]` for i in `idx`, in that order."""
    chosen = [examples[i] for i in np.asarray(idx).astype(np.int64).reshape(-1).tolist()]
    if not chosen:
        raise SeqError("cannot make a batch of no examples")
    names = list(chosen[0].inputs)
    if any(list(e.inputs) != names for e in chosen):
        raise SeqError(f"the examples of a batch read different inputs (not all {names})")
    inputs = {n: _pad([e.inputs[n] for e in chosen], 0) for n in names}
    lengths = {n: np.array([len(e.inputs[n]) for e in chosen], dtype=np.int64) for n in names}
    # 0: a label a sequence; 1: one a step (np.ndim only for what is not an array: it is slow)
    dims = {e.target.ndim if isinstance(e.target, np.ndarray) else np.ndim(e.target)
            for e in chosen}
    if dims == {0}:
        targets = np.array([int(e.target) for e in chosen], dtype=np.int64)
    elif dims == {1}:
        targets = _pad([e.target for e in chosen], -1)
    else:
        raise SeqError("a batch mixes whole-sequence labels and per-step targets")
    return Batch(inputs, lengths, targets, int((targets >= 0).sum()))
