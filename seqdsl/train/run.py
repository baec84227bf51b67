"""A training run from files: a spec, a network in it, a data file and an
output directory; resuming one; and loading a trained model back.

Everything a run needs to go on is in its checkpoint: the spec's text (not
its path: editing the file later changes nothing), the network and sizes,
the task with its vocabularies, the data file's path and hash, the
configuration, the optimiser's state and the position reached.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import SeqError
from ..runtime.network import Network
from .checkpoint import check_compatible, load_checkpoint, spec_hash
from .corpora import is_corpus
from .data import read_text, split_valid
from .fit import Config, FitResult, fit
from .tasks import Task, build_task, examples, infer_task, network_sizes

AS = {"lm": "a language model", "tag": "a tagger", "classify": "a classifier",
      "translate": "an encoder-decoder"}


@dataclass
class Model:
    """A trained network with its parameters and task (vocabularies)."""

    net: Network
    params: dict[str, np.ndarray]
    task: Task
    meta: dict


def new_run(spec_file: str, network: str | None, data: str, out, config: Config, *,
            task: str | None = None, level: str = "char", min_count: int = 1,
            window: int | None = None, valid_fraction: float = 0.1, backend: str = "numba",
            dtype: str = "float32", progress: bool = True, echo=print,
            overwrite: bool = False, layer_sizes: dict[str, int] | None = None) -> FitResult:
    """Train `network` of `spec_file` on `data` from fresh parameters,
    writing checkpoints and the loss curve to `out` (which must not hold a
    run already, unless `overwrite`); `layer_sizes` overrides the sizes its
    layers give their cells (`{"H": 64}`)."""
    from ..spec import instantiate, load
    out = Path(out)
    if (out / "last.json").exists() and not overwrite:
        raise SeqError(f"{out} already holds a training run",
                       hint=f"continue it with --resume {out}, give another --out, or "
                            "--overwrite to replace it")
    spec = load(spec_file)
    nt = spec.network(network, layer_sizes)
    kind = infer_task(nt, data, task)
    t = build_task(nt, kind, data, level, min_count, window)
    sizes = network_sizes(nt, t)
    all_examples = examples(t, nt, data)
    net = instantiate(nt, sizes=sizes, dtype=np.dtype(dtype), backend=backend)
    params = net.init_params(config.seed)
    train, valid = _split(all_examples, valid_fraction, config.seed)
    resized = "".join(f", {k}={v}" for k, v in (layer_sizes or {}).items())
    echo(f"training {net.describe()}{resized and ' with layers at' + resized[1:]} as "
         f"{AS[kind]} on {data}: {len(train)} examples "
         f"({len(valid)} held out), {_vocab_line(t)}; checkpoints in {out}")
    if overwrite:
        _clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, vocab in t.inputs.items():
        vocab.save(out / (f"vocab-{name}.json" if len(t.inputs) > 1 else "vocab.json"))
    if t.labels is not None:
        t.labels.save(out / "labels.json")
    meta = {"spec": {"file": spec.file, "source": spec.source, "hash": spec_hash(spec.source)},
            "network": nt.name, "layer_sizes": layer_sizes or {}, "sizes": sizes,
            "task": t.to_json(),
            "data": {"path": _absolute(data), "hash": _file_hash(data)},
            "valid_fraction": valid_fraction, "backend": backend}
    return fit(net, params, train, valid, config, out, meta, None, progress, echo)


def resume_run(out, *, spec_file: str | None = None, epochs: int | None = None,
               max_minutes: float | None = None, max_steps: int | None = None,
               backend: str | None = None, progress: bool = True, echo=print,
               checkpoint_minutes: float | None = None) -> FitResult:
    """Continue the run recorded in `out` exactly where it stopped."""
    ck = load_checkpoint(out, "last")
    meta = ck.meta
    if spec_file is not None:
        from ..lang.parse import read_source
        check_compatible(meta, read_source(spec_file), meta["network"], meta["sizes"],
                         directory=str(out), spec_file=spec_file)
    config = Config(**{f.name: meta["config"][f.name] for f in fields(Config)
                       if f.name in meta["config"]})
    if epochs is not None:
        config.epochs = epochs
    config.max_minutes, config.max_steps = max_minutes, max_steps  # this call's own limits
    if checkpoint_minutes is not None:
        config.checkpoint_minutes = checkpoint_minutes
    data = meta["data"]["path"]
    if _file_hash(data) != meta["data"]["hash"]:
        raise SeqError(f"{data} has changed since the run in {out} began; resuming would not "
                       "continue the same run", hint="start a new run with another --out")
    model = _model(meta, ck.params, backend or meta.get("backend", "numba"))
    all_examples = examples(model.task, model.net.type, data)
    train, valid = _split(all_examples, meta["valid_fraction"], config.seed)
    position = meta["position"]
    echo(f"resuming {model.net.describe()} from {out}: epoch {position['epoch'] + 1}, "
         f"step {position['step']}")
    return fit(model.net, model.params, train, valid, config, Path(out), _run_meta(meta), ck,
               progress, echo)


def load_model(directory, name: str = "last", backend: str = "numba") -> Model:
    """The network and parameters of checkpoint `name` in `directory`."""
    ck = load_checkpoint(directory, name)
    return _model(ck.meta, ck.params, backend)


def _model(meta: dict, params: dict, backend: str) -> Model:
    from ..spec import instantiate, loads
    spec = loads(meta["spec"]["source"], meta["spec"]["file"])
    nt = spec.network(meta["network"], meta.get("layer_sizes"))
    net = instantiate(nt, sizes=meta["sizes"], dtype=np.dtype(meta.get("dtype", "float32")),
                      backend=backend)
    missing = [n for n in net.param_shapes if n not in params]
    if missing:
        raise SeqError(f"the checkpoint has no parameter {', '.join(missing)}")
    own = {n: np.ascontiguousarray(params[n], net.dtype) for n in net.param_shapes}
    return Model(net, own, Task.from_json(meta["task"]), meta)


def _run_meta(meta: dict) -> dict:
    """What a checkpoint says of its run, less what `fit` writes itself."""
    return {k: v for k, v in meta.items()
            if k not in ("config", "optimizer", "position", "dtype", "format", "version",
                         "arrays")}


def _absolute(data) -> str:
    """A data file's absolute path (a resumed run may start elsewhere); a
    corpus's name as it is."""
    return str(data) if is_corpus(data) else str(Path(data).resolve())


def _clear_run(out: Path) -> None:
    """The files a run writes, removed (and nothing else in `out`)."""
    for pattern in ("last.json", "best.json", "last-*.npz", "best-*.npz", "loss.csv",
                    "loss.png", "vocab.json", "vocab-*.json", "labels.json"):
        for f in out.glob(pattern):
            f.unlink()


def _split(all_examples, fraction: float, seed: int):
    tr, va = split_valid(len(all_examples), fraction, seed)
    return [all_examples[i] for i in tr], [all_examples[i] for i in va]


def _file_hash(path) -> str:
    """The hash of the text the data argument names (a file or a corpus)."""
    return hashlib.sha256(read_text(path).encode("utf-8")).hexdigest()


def _vocab_line(t: Task) -> str:
    parts = [f"{len(v)} {t.level}s in `{n}`'s vocabulary" for n, v in t.inputs.items()]
    if t.labels is not None:
        parts.append(f"{len(t.labels)} labels")
    return ", ".join(parts)

