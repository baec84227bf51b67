"""`seqdsl train SPEC --network NAME --data FILE --out DIR`: train a
network, checkpointing to DIR; `seqdsl train --resume DIR` continues."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import SeqError
from .common import (EPILOG, fraction, non_negative_int, positive_int, positive_number,
                     size_binding)


def add_parser(sub) -> None:
    t = sub.add_parser(
        "train", help="train a network on a data file, with checkpoints and a loss curve",
        description="Train NETWORK of SPEC on the text in --data, saving checkpoints (`last`, "
        "and `best` by validation loss), the vocabulary and the loss curve (loss.csv, loss.png) "
        "in --out. The task follows from the network and the data: a language model (one "
        "input, an output at every step, one example per line), a tagger (TOKENS<TAB>LABELS), "
        "a classifier (an output on the last step, TEXT<TAB>LABEL) or an encoder-decoder (two "
        "inputs, SOURCE<TAB>TARGET). Ctrl-C saves and stops; --resume DIR continues exactly "
        "where a run stopped.", epilog=EPILOG)
    t.add_argument("spec", nargs="?", metavar="SPEC", help="the .seq file (with --resume: "
                   "optional, checked to be the spec the run was trained on)")
    t.add_argument("--network", metavar="NAME", help="the network (default: the file's only one)")
    t.add_argument("--data", metavar="FILE", help="the training text (UTF-8), or a built-in "
                   "corpus: corpus:names (5,163 first names)")
    t.add_argument("--out", metavar="DIR", help="where checkpoints and the loss curve go")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    t.add_argument("--overwrite", action="store_true",
                   help="replace a run already in --out (its checkpoints are deleted)")
    _data_args(t.add_argument_group("data"))
    _optimisation_args(t.add_argument_group("optimisation"))
    _size_args(t.add_argument_group("sizes"))
    _running_args(t.add_argument_group("running"))
    t.set_defaults(run=run)


def _data_args(data) -> None:
    data.add_argument("--task", choices=("lm", "tag", "classify", "translate"),
                      help="what to learn (default: what the network and data imply)")
    data.add_argument("--level", choices=("char", "word"), default="char",
                      help="tokens are characters (default) or words")
    data.add_argument("--min-count", type=positive_int, default=1, metavar="N",
                      help="tokens seen fewer times become <UNK> (1)")
    data.add_argument("--window", type=positive_int, default=None, metavar="N",
                      help="a language model's text as one running text cut into windows of "
                      "N tokens (default: one example per line)")
    data.add_argument("--valid-fraction", type=fraction, default=0.1, metavar="F",
                      help="examples held out for validation (0.1)")


def _optimisation_args(opt) -> None:
    opt.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                     help="passes over the data (10; with --resume: the new total)")
    opt.add_argument("--batch-size", type=positive_int, default=32, metavar="B", help="(32)")
    opt.add_argument("--lr", type=positive_number, default=0.005, help="learning rate (0.005)")
    opt.add_argument("--optimizer", choices=("sgd", "momentum", "adam"), default="adam",
                     help="(adam)")
    opt.add_argument("--clip-norm", type=positive_number, default=None, metavar="N",
                     help="scale the gradients so that their global norm is at most N")
    opt.add_argument("--clip-value", type=positive_number, default=None, metavar="V",
                     help="clip each gradient entry to [-V, V]")
    opt.add_argument("--seed", type=non_negative_int, default=0, help="(0)")


def _size_args(net) -> None:
    net.add_argument("--hidden", type=positive_int, default=None, metavar="N",
                     help="every layer's H (LSTM(H=128) in the spec becomes LSTM(H=N))")
    net.add_argument("--size", type=size_binding, action="append", default=[], metavar="NAME=N",
                     help="any size a layer gives its cell, by name, e.g. --size H=64 (the "
                     "inputs' and outputs' sizes come from the data)")


def _running_args(run_) -> None:
    run_.add_argument("--max-minutes", type=positive_number, default=None, metavar="M",
                      help="save and stop after M minutes")
    run_.add_argument("--max-steps", type=positive_int, default=None, metavar="N",
                      help="save and stop after N optimiser steps in all")
    run_.add_argument("--checkpoint-minutes", type=positive_number, default=None, metavar="M",
                      help="also save every M minutes within an epoch (1; with --resume: the "
                      "run's own unless given)")
    run_.add_argument("--backend", choices=("numpy", "numba"), default=None,
                      help="compiled kernels (numba, default) or the reference interpreter")
    run_.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                      help="(float32)")
    run_.add_argument("--no-progress", action="store_true", help="no progress bar")


# What a run keeps from its start (the defaults, as add_parser sets them).
_RUN_OWN = {"network": None, "data": None, "out": None, "task": None, "level": "char",
            "min_count": 1, "window": None, "valid_fraction": 0.1, "batch_size": 32,
            "lr": 0.005, "optimizer": "adam", "clip_norm": None, "clip_value": None, "seed": 0,
            "dtype": "float32", "overwrite": False, "hidden": None, "size": []}


def _layer_sizes(args) -> dict[str, int]:
    sizes = {}
    for name, value in args.size:
        if name in sizes and sizes[name] != value:
            raise SeqError(f"--size {name}= given twice ({sizes[name]} and {value})")
        sizes[name] = value
    if args.hidden is not None:
        if sizes.get("H", args.hidden) != args.hidden:
            raise SeqError(f"--hidden {args.hidden} and --size H={sizes['H']} disagree")
        sizes["H"] = args.hidden
    return sizes


def run(args) -> int:
    from ..train.fit import Config
    from ..train.run import new_run, resume_run
    progress = not args.no_progress and sys.stderr.isatty()
    if args.resume:
        fixed = [f"--{n.replace('_', '-')}" for n, default in _RUN_OWN.items()
                 if getattr(args, n) != default]
        if fixed:
            raise SeqError(f"--resume continues a run as it began; {', '.join(fixed)} cannot "
                           "change", hint="only --epochs, --max-minutes, --max-steps, "
                           "--checkpoint-minutes and --backend may be given with --resume")
        result = resume_run(args.resume, spec_file=args.spec, epochs=args.epochs,
                            max_minutes=args.max_minutes, max_steps=args.max_steps,
                            backend=args.backend, progress=progress,
                            checkpoint_minutes=args.checkpoint_minutes or 1.0)
        out = args.resume
    else:
        missing = [f for f, v in (("SPEC", args.spec), ("--data", args.data),
                                  ("--out", args.out)) if v is None]
        if missing:
            raise SeqError(f"train: {' and '.join(missing)} missing",
                           hint="seqdsl train SPEC --data FILE --out DIR, or --resume DIR")
        config = Config(epochs=args.epochs or 10, batch_size=args.batch_size, lr=args.lr,
                        optimizer=args.optimizer, clip_norm=args.clip_norm,
                        clip_value=args.clip_value, seed=args.seed,
                        max_minutes=args.max_minutes, max_steps=args.max_steps,
                        checkpoint_minutes=args.checkpoint_minutes or 1.0)
        result = new_run(args.spec, args.network, args.data, args.out, config, task=args.task,
                         level=args.level, min_count=args.min_count, window=args.window,
                         valid_fraction=args.valid_fraction, backend=args.backend or "numba",
                         dtype=args.dtype, progress=progress, overwrite=args.overwrite,
                         layer_sizes=_layer_sizes(args))
        out = args.out
    said = {"done": "finished", "max-steps": "stopped after --max-steps",
            "max-minutes": "stopped after --max-minutes",
            "interrupted": "interrupted; saved"}[result.stopped]
    saved = [n for n in ("last.json", "best.json") if (Path(out) / n).exists()]
    print(f"{said} at epoch {result.position.epoch + (result.stopped != 'done')}, step "
          f"{result.position.step}; checkpoints in {out} ({', '.join(saved)}), loss curve "
          f"{out}/loss.png" + ("" if result.stopped == "done" else
                               f"; continue with: seqdsl train --resume {out}"))
    return 130 if result.stopped == "interrupted" else 0
