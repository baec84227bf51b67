"""Networks learn: the course's sequence types trained by `fit` on tasks
that only the right structure can solve, with fixed seeds and asserted
accuracies; and gradient clipping as the course tells it.

The data goes through the same path as `seqdsl train`'s: text files, a
task with its vocabularies (train/tasks.py), examples and batches. The
reference interpreter runs them (no compile); the compiled backend computes
the same numbers (tests/test_run_networks.py), and test_cli_train.py trains
on it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import seqdsl
from seqdsl.train import tasks
from seqdsl.train.data import Example, read_lines, split_valid
from seqdsl.train.fit import Config, Diverged, evaluate, fit
from seqdsl.train.sample import Sampler

SPEC = """
network Marker {                      # many-to-many, reading both ways
    input x : tokens
    h = bidirectional(LSTM(H=16))(x)
    output ŷ<t> = softmax(Wy h<t> + by)
}
network Contains {                    # many-to-one
    input x : tokens
    h = GRU(H=16)(x)
    output ŷ = softmax(Wy h<T> + by)
}
network Reverse {                     # encoder-decoder
    input x : tokens
    input y : tokens
    e = LSTM(H=48)(x)
    d = LSTM(H=48, init=e<T>)(y)
    output ŷ<t> = softmax(Wy d<t> + by)
}
cell ReluRNN {
    input x
    state h : H
    h<t> = relu(Wh[h<t-1>, x<t>] + bh)
}
network Deep {
    input x : tokens
    a = ReluRNN(H=16)(x)
    output ŷ<t> = softmax(Wy a<t> + by)
}
"""
QUIET = {"progress": False, "echo": lambda line: None}


@pytest.fixture(scope="module")
def spec():
    return seqdsl.loads(SPEC)


def _train(spec, name, path, kind, config, backend="numpy"):
    """A task from the data file, its network at the data's sizes, and the
    parameters after `fit`; with the held-out examples."""
    nt = spec.network(name)
    task = tasks.build_task(nt, tasks.infer_task(nt, str(path), kind), str(path))
    examples = tasks.examples(task, nt, str(path))
    net = seqdsl.instantiate(nt, sizes=tasks.network_sizes(nt, task), dtype=np.float32,
                             backend=backend)
    params = net.init_params(config.seed)
    tr, va = split_valid(len(examples), 0.15, config.seed)
    valid = [examples[i] for i in va]
    fit(net, params, [examples[i] for i in tr], valid, config, **QUIET)
    return net, params, task, valid


def _labelled(path, rng, marked: float, label) -> str:
    """1,200 lines of 4 to 12 letters of `abcde`, a fraction `marked` with one
    `m` at a random place, each followed by a tab and `label(letters)`."""
    lines = []
    for _ in range(1200):
        s = list(rng.choice(list("abcde"), rng.integers(4, 13)))
        if rng.random() < marked:
            s[rng.integers(len(s))] = "m"
        lines.append("".join(s) + "\t" + label("".join(s)))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_bidirectional_tagger_uses_what_comes_later(spec, tmp_path):
    """Each character is labelled by whether an `m` comes after it: only the
    backward direction can know."""
    def labels(s):
        return " ".join("later" if "m" in s[i + 1:] else "no" for i in range(len(s)))

    path = _labelled(tmp_path / "marker.tsv", np.random.default_rng(1), 0.7, labels)
    net, params, task, valid = _train(spec, "Marker", path, None,
                                      Config(epochs=3, lr=0.01, clip_norm=5))
    assert task.kind == "tag"
    assert evaluate(net, params, valid, 64)["accuracy"] >= 0.95


def test_a_many_to_one_gru_tells_whether_a_sequence_holds_a_token(spec, tmp_path):
    path = _labelled(tmp_path / "contains.tsv", np.random.default_rng(2), 0.5,
                     lambda s: "yes" if "m" in s else "no")
    net, params, task, valid = _train(spec, "Contains", path, None,
                                      Config(epochs=4, lr=0.01, clip_norm=5))
    assert task.kind == "classify"
    assert evaluate(net, params, valid, 64)["accuracy"] >= 0.95


def test_an_encoder_decoder_learns_to_reverse_and_decodes_one_step_at_a_time(spec, tmp_path):
    rng = np.random.default_rng(3)
    words = ["".join(rng.choice(list("abcde"), rng.integers(2, 6))) for _ in range(3000)]
    path = tmp_path / "reverse.tsv"
    path.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words))
    net, params, task, valid = _train(spec, "Reverse", path, None,
                                      Config(epochs=8, lr=0.01, clip_norm=5))
    assert task.kind == "translate"
    assert evaluate(net, params, valid, 64)["accuracy"] >= 0.90
    # Greedy decoding feeds back its own tokens (no teacher): most come out right.
    sampler = Sampler(net, params, task)
    tests = sorted(set(words))[:40]
    right = sum(sampler.generate(1, np.random.default_rng(0), source=w, greedy=True,
                                 max_length=10) == [w[::-1]] for w in tests)
    assert right >= 0.8 * len(tests)


def test_the_charlm_learns_names_and_samples_new_ones():
    spec = seqdsl.load("seqdsl/lang/library/charlm.seq")
    net, params, task, valid = _train(spec, "CharLM", "corpus:names", "lm",
                                      Config(epochs=3, lr=0.01, clip_norm=5))
    uniform = math.log(len(task.inputs["x"]))
    assert evaluate(net, params, valid, 64)["loss"] < 0.7 * uniform
    samples = Sampler(net, params, task).generate(100, np.random.default_rng(0))
    known = set(read_lines("corpus:names"))
    assert sum(s not in known and s != "" for s in samples) > 50
    assert all(set(s) <= set(task.inputs["x"].tokens) for s in samples)


def _deep_examples():
    rng = np.random.default_rng(0)
    return [Example({"x": np.r_[0, s]}, np.r_[s, 0])
            for s in (rng.integers(1, 5, 40) for _ in range(200))]


@pytest.fixture(scope="module")
def deep(spec):
    return seqdsl.instantiate(spec.network("Deep"), sizes={"X": 5, "Y": 5})


def test_large_recurrent_weights_explode_without_clipping(deep):
    """A ReLU RNN over 40 steps with its recurrent weights four times their
    initial scale: the first gradients are huge, and plain SGD blows up."""
    params = deep.init_params(0)
    params["a.Wh"] *= 4
    with pytest.raises(Diverged, match=r"epoch 1, step \d+: the loss is nan.*exploded"):
        fit(deep, params, _deep_examples(), None,
            Config(epochs=3, lr=0.1, optimizer="sgd"), **QUIET)


def test_clipping_the_global_norm_keeps_the_same_run_steady(deep):
    params = deep.init_params(0)
    params["a.Wh"] *= 4
    result = fit(deep, params, _deep_examples(), None,
                 Config(epochs=3, lr=0.1, optimizer="sgd", clip_norm=1.0), **QUIET)
    losses = result.position.losses
    assert losses[0] > 20  # it starts where the unclipped run exploded
    assert all(math.isfinite(v) for v in losses)
    assert np.median(losses[-10:]) < 1.65  # near the entropy of the data (log 4 = 1.39)
