"""Generating sequences one token at a time from a trained network.

Each step runs the network's compiled step over one token (T = 1) for all
samples at once, starting from the states the previous step left (the
`states` of `Network.forward`), so a prefix is read once and never again.
Each sample's next token is drawn from the output's distribution, sharpened
or flattened by a temperature, or taken greedily; a sample ends at <EOS>.
"""
from __future__ import annotations

import numpy as np

from ..errors import SeqError
from ..runtime.network import Network
from .data import Batch
from .fit import network_batch
from .tasks import Task


class Sampler:
    """A trained language model or encoder-decoder, ready to generate."""

    def __init__(self, net: Network, params: dict, task: Task):
        if task.kind not in ("lm", "translate"):
            raise SeqError(f"a {_TASK_NAMES[task.kind]} does not generate sequences",
                           hint="sample from a language model (an output at every step, "
                                "trained on lines of text) or an encoder-decoder")
        bidirectional = [n for n in net.layer_names() if n.endswith(".bwd")]
        if bidirectional and task.kind == "lm":
            raise SeqError(f"network {net.type.name} reads its input in both directions "
                           f"({bidirectional[0]}); it cannot generate one token at a time")
        self.net, self.params, self.task = net, params, task
        self.vocab = task.inputs[task.target_input]

    def generate(self, count: int, rng: np.random.Generator, temperature: float = 1.0,
                 prefix: str = "", source: str | None = None, max_length: int = 100,
                 greedy: bool = False) -> list[str]:
        """`count` sequences (after `prefix`, which each one repeats), each
        ending at <EOS> or after `max_length` tokens."""
        if not (temperature > 0 and np.isfinite(temperature)):
            raise SeqError(f"temperature: expected a number > 0, given {temperature}")
        first = np.concatenate([[self.vocab.eos], self.vocab.encode(prefix)]).astype(np.int64)
        probs, states, rest = self._start(first, count, source)
        never = self.vocab.unk  # a sample says what it is, not "unknown"
        out = np.zeros((max_length, count), np.int64)
        done = np.zeros(count, bool)
        n = 0
        for n in range(max_length):
            token = _draw(_without(probs, never), rng, temperature, greedy)
            out[n] = np.where(done, self.vocab.eos, token)
            done |= token == self.vocab.eos
            if done.all() or n + 1 == max_length:
                break
            probs, states = self._step(token, states, rest)
        return [self._join(prefix, self.vocab.decode(_until_eos(out[:n + 1, b], self.vocab.eos)))
                for b in range(count)]

    def _join(self, prefix: str, rest: str) -> str:
        """The prefix as given, then the sample (words with a space between)."""
        if self.vocab.level == "word" and prefix.strip() and rest:
            return prefix.rstrip() + " " + rest
        return prefix + rest

    def check_source(self, source: str | None) -> None:
        """An encoder-decoder needs an input to translate; a language model none."""
        if self.task.kind == "translate" and source is None:
            raise SeqError("an encoder-decoder samples a translation of an input",
                           hint="--input TEXT")
        if self.task.kind == "lm" and source is not None:
            raise SeqError("--input is for an encoder-decoder; a language model continues "
                           "a --prefix")

    def _start(self, first: np.ndarray, count: int, source: str | None):
        """The output's distribution after the first tokens, the states, and
        the inputs every later step repeats (an encoder's, emptied)."""
        self.check_source(source)
        target = self.task.target_input
        ids = {target: np.repeat(first[:, None], count, axis=1)}
        rest = {}
        if self.task.kind == "translate":
            (name,) = [n for n in self.task.inputs if n != target]
            src = np.append(self.task.inputs[name].encode(source), self.vocab.eos)
            ids[name] = np.repeat(src[:, None], count, axis=1)
            rest[name] = np.zeros((1, count), np.int64)  # length 0: the encoder has run
        r = self._run(ids, {}, {n: len(a) for n, a in ids.items()})
        return r[0][-1], r[1], rest

    def _step(self, token, states, rest):
        ids = {self.task.target_input: token[None, :], **rest}
        lengths = {n: 0 if n in rest else 1 for n in ids}
        probs, states = self._run(ids, states, lengths)
        return probs[0], states

    def _run(self, ids, states, lengths):
        B = next(iter(ids.values())).shape[1]
        batch = Batch(ids, {n: np.full(B, n_, np.int64) for n, n_ in lengths.items()},
                      np.zeros((0, B), np.int64), 0)
        inputs, ls = network_batch(self.net, batch)
        r = self.net.forward(self.params, inputs, ls, states)
        (probs,) = r.heads.values()
        return probs, r.final


_TASK_NAMES = {"tag": "tagger", "classify": "classifier"}


def _draw(probs: np.ndarray, rng, temperature: float, greedy: bool) -> np.ndarray:
    """One class per row of `probs` (B, V): the likeliest, or drawn from
    probs ** (1 / temperature), renormalised (softmax of logits / T)."""
    p = np.asarray(probs, np.float64)
    if greedy:
        return p.argmax(axis=1)
    with np.errstate(divide="ignore"):
        logits = np.log(p) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    cdf = np.cumsum(w, axis=1)
    u = rng.random((len(p), 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), p.shape[1] - 1)


def _without(probs: np.ndarray, token: int) -> np.ndarray:
    """`probs` with `token` never drawn (its probability spread over the rest)."""
    p = np.array(probs, np.float64)
    p[:, token] = 0
    total = p.sum(axis=1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1), probs)  # all on it: as is


def _until_eos(ids: np.ndarray, eos: int) -> np.ndarray:
    stop = np.nonzero(ids == eos)[0]
    return ids[:stop[0]] if len(stop) else ids
