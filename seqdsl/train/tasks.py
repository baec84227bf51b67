"""What a network learns from a data file: the task its shape and the data
imply, the examples, the vocabularies, and the sizes they bind.

- `lm`: one input, an output at every step, a text of one example per line
  (or cut into windows): the course's language model, predicting each next
  token and <EOS>.
- `tag`: one input, an output at every step, `TOKENS<TAB>LABELS` lines with
  one label per token.
- `classify`: one input, an output on each example's last step,
  `TEXT<TAB>LABEL` lines.
- `translate`: two inputs (an encoder's and a decoder's), an output at every
  decoder step, `SOURCE<TAB>TARGET` lines; the decoder reads the target
  shifted right, starting from <EOS>.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SeqError
from ..ir.network import NetworkType
from . import data as D
from .vocab import Labels, Vocabulary

TASKS = ("lm", "tag", "classify", "translate")


@dataclass
class Task:
    """A network's task with its vocabularies: everything needed to turn
    text into examples, and to bind the network's free sizes."""

    kind: str
    inputs: dict[str, Vocabulary]  # network input -> its vocabulary
    labels: Labels | None = None  # a tagger's or classifier's classes
    level: str = "char"
    window: int | None = None  # an lm's running text cut into windows
    extra: dict = field(default_factory=dict)

    @property
    def classes(self) -> int:
        """The number of classes of the network's output."""
        if self.labels is not None:
            return len(self.labels)
        return len(self.inputs[self.target_input])

    @property
    def target_input(self) -> str:
        """The input whose vocabulary the outputs predict (lm, translate)."""
        return list(self.inputs)[-1]

    def to_json(self) -> dict:
        return {"kind": self.kind, "level": self.level, "window": self.window,
                "inputs": {n: v.to_json() for n, v in self.inputs.items()},
                "labels": self.labels.to_json() if self.labels is not None else None}

    @classmethod
    def from_json(cls, d: dict) -> Task:
        return cls(d["kind"], {n: Vocabulary.from_json(v) for n, v in d["inputs"].items()},
                   Labels.from_json(d["labels"]) if d.get("labels") else None,
                   d.get("level", "char"), d.get("window"))


def network_sizes(nt: NetworkType, task: Task) -> dict[str, int]:
    """The network's input sizes (a vocabulary each) and its number of
    classes, as the data binds them."""
    sizes = {}
    for name, _, size in nt.inputs:
        _bind(sizes, size, len(task.inputs[name]), f"input `{name}`'s vocabulary")
    _bind(sizes, nt.heads[0].size, task.classes, f"output `{nt.heads[0].name}`'s classes")
    return sizes


def _bind(sizes: dict, size, value: int, what: str) -> None:
    if size.symbols:
        (symbol,) = size.symbols  # a free size: an input or output symbol alone
        sizes[symbol] = value
    elif size.value() != value:
        raise SeqError(f"{what}: the data has {value}, but the spec fixes {size.value()}")


def infer_task(nt: NetworkType, path: str, task: str | None) -> str:
    """The task `nt` and the data file imply, or `task` checked against them."""
    if len(nt.heads) != 1:
        raise SeqError(f"network {nt.name} has {len(nt.heads)} outputs; training takes one",
                       hint="outputs: " + ", ".join(h.name for h in nt.heads))
    head = nt.heads[0]
    if len(nt.inputs) == 2:
        fits = ["translate"]
    elif len(nt.inputs) != 1:
        fits = []
    elif not head.per_step:
        fits = ["classify"]
    else:  # the first that fits is the default
        fits = ["tag"] if task is None and _has_tabs(path) else ["lm", "tag"]
    if task is not None and task not in fits or not fits:
        shape = (f"{len(nt.inputs)} input(s) and an output "
                 f"{'at every step' if head.per_step else 'on the last step'}")
        raise SeqError(f"--task {task or '?'}: network {nt.name} has {shape}",
                       hint="it can learn: " + (", ".join(fits) or "no task seqdsl "
                                                "trains yet (one or two inputs)"))
    return task or fits[0]


def _has_tabs(path: str) -> bool:
    return "\t" in D.read_text(path)


def build_task(nt: NetworkType, kind: str, path: str, level: str = "char",
               min_count: int = 1, window: int | None = None) -> Task:
    """The task and vocabularies for training `nt` on the data at `path`."""
    names = [n for n, _, _ in nt.inputs]
    if kind == "lm":
        texts = _lm_texts(path, level, window)
        return Task(kind, {names[0]: Vocabulary.build(texts, level, min_count)}, None, level,
                    window)
    pairs = D.read_pairs(path)
    if kind == "translate":
        source, target = _translation_inputs(nt)
        return Task(kind, {
            source: Vocabulary.build([a for a, _ in pairs], level, min_count),
            target: Vocabulary.build([b for _, b in pairs], level, min_count)}, None, level)
    vocab = Vocabulary.build([a for a, _ in pairs], level, min_count)
    labels = Labels.build(lab for _, b in pairs for lab in
                          (b.split() if kind == "tag" else [b.strip()]))
    return Task(kind, {names[0]: vocab}, labels, level)


def examples(task: Task, nt: NetworkType, path: str) -> list[D.Example]:
    """The data file's examples, encoded with the task's vocabularies."""
    if task.kind == "lm":
        (name, vocab), = task.inputs.items()
        return D.language_model_examples(_lm_texts(path, task.level, task.window), vocab, name)
    pairs = D.read_pairs(path)
    if task.kind == "translate":
        source, target = _translation_inputs(nt)
        return D.translation_examples(pairs, task.inputs[source], task.inputs[target],
                                      source, target)
    (name, vocab), = task.inputs.items()
    if task.kind == "tag":
        return D.tagging_examples(pairs, vocab, task.labels, name, path)
    return D.classification_examples(pairs, vocab, task.labels, name)


def _lm_texts(path: str, level: str, window: int | None) -> list[str]:
    return D.read_windows(path, window, level) if window else D.read_lines(path)


def _translation_inputs(nt: NetworkType) -> tuple[str, str]:
    """(the encoder's input, the decoder's): the decoder's is the one the
    output's sequence is read from."""
    seq = nt.heads[0].graph.inputs[0].name if nt.heads[0].graph else None
    names = [n for n, _, _ in nt.inputs]
    while seq in nt.reads:
        seq = nt.reads[seq]
    if seq not in names:
        raise SeqError(f"network {nt.name}: its output reads no input of its own",
                       hint="translate needs an encoder input and a decoder input")
    kinds = {n: k for n, k, _ in nt.inputs}
    if kinds[seq] != "tokens":
        raise SeqError(f"network {nt.name}: the decoder's input `{seq}` must be `: tokens` to "
                       "be fed its own samples", hint=f"input {seq} : tokens")
    return next(n for n in names if n != seq), seq
