"""`seqdsl sample DIR`: novel sequences from a trained language model, or an
encoder-decoder's output for `--input TEXT`, one per line."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .common import EPILOG, non_negative_int, positive_int, positive_number


def add_parser(sub) -> None:
    s = sub.add_parser(
        "sample", help="generate sequences from a trained network",
        description="Run the network trained in DIR one token at a time, feeding each drawn "
        "token back in, until <EOS>: novel sequences from a language model (each beginning "
        "with --prefix), or an encoder-decoder's output for --input. One sequence per line; "
        "the same --seed gives the same lines.", epilog=EPILOG)
    s.add_argument("dir", metavar="DIR", help="a directory `seqdsl train --out` wrote")
    s.add_argument("--count", type=positive_int, default=10, metavar="N",
                   help="how many sequences (10)")
    s.add_argument("--seed", type=non_negative_int, default=0, help="(0)")
    s.add_argument("--temperature", type=_temperature, default=1.0, metavar="T",
                   help="below 1 sharper, more likely sequences; above 1 more varied (1)")
    s.add_argument("--greedy", action="store_true",
                   help="always the likeliest token (the same sequence every time)")
    s.add_argument("--prefix", default="", metavar="TEXT",
                   help="text every sequence starts with")
    s.add_argument("--input", default=None, metavar="TEXT",
                   help="an encoder-decoder's input to translate")
    s.add_argument("--max-length", type=positive_int, default=100, metavar="L",
                   help="tokens at most, after the prefix (100)")
    s.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint (best, or last where there is no best)")
    s.add_argument("--backend", choices=("numpy", "numba"), default="numba", help="(numba)")
    s.set_defaults(run=run)


def _temperature(text: str) -> float:
    try:
        return positive_number(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"the temperature must be a number > 0, given {text}"
                                         ) from None


def run(args) -> int:
    from pathlib import Path

    from ..train.run import load_model
    from ..train.sample import Sampler
    name = args.checkpoint
    if name == "best" and not (Path(args.dir) / "best.json").exists():
        name = "last"
    model = load_model(args.dir, name, args.backend)
    sampler = Sampler(model.net, model.params, model.task)
    sampler.check_source(args.input)
    for what, text in (("--prefix", args.prefix), ("--input", args.input)):
        _warn_unknown(model.task, what, text)
    lines = sampler.generate(args.count, np.random.default_rng(args.seed), args.temperature,
                             args.prefix, args.input, args.max_length, args.greedy)
    for line in lines:
        print(line)
    return 0


def _warn_unknown(task, what: str, text: str | None) -> None:
    """Tokens of `text` outside the vocabulary it is read with become <UNK>."""
    if not text:
        return
    vocab = task.inputs[task.target_input]
    if what == "--input":
        vocab = next((v for n, v in task.inputs.items() if n != task.target_input), vocab)
    unknown = vocab.unknown(text)
    if unknown:
        print(f"warning: {what}: {', '.join(map(repr, unknown))} not in the vocabulary; "
              "read as <UNK>", file=sys.stderr)
