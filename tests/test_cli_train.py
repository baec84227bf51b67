"""`seqdsl train` and `seqdsl sample` as a user runs them: help, every way
the arguments can be wrong (one line, no traceback), and a full run's files
and samples (see cli_train_support.py for the tiny network and data)."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from seqdsl.cli import _parser
from seqdsl.train.checkpoint import load_checkpoint

from cli_train_support import (  # noqa: F401 (fixtures are used by name)
    FAST, STEPS_PER_EPOCH, TINY, _lines, assert_error, assert_usage_error, cache_dir, files,
    loss_rows, position, trained)


# ---- help ---------------------------------------------------------------------------------

def _options(command: str) -> set[str]:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {s for a in sub.choices[command]._actions for s in a.option_strings
            if s.startswith("--")}


@pytest.mark.parametrize("command,some", [
    ("train", {"--resume", "--clip-norm", "--clip-value", "--max-steps", "--checkpoint-minutes",
               "--overwrite", "--data", "--out", "--epochs", "--lr", "--optimizer"}),
    ("sample", {"--temperature", "--prefix", "--max-length", "--input", "--greedy", "--count",
                "--seed", "--checkpoint"}),
])
def test_help_mentions_every_option(run_cli, command, some):
    options = _options(command)
    assert some <= options  # the parser defines them ...
    code, out, err = run_cli(command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: seqdsl {command}")
    missing = [o for o in sorted(options | {"--traceback"}) if o not in out]
    assert not missing, f"--help does not mention {missing}"  # ... and --help says so


# ---- bad arguments: one line, no traceback ------------------------------------------------

def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


TRAIN_ERRORS = {
    # id: (arguments after `train SPEC`, given tmp_path and the data file; message; hint)
    "unknown network": (lambda t, data: ["--network", "Nope", "--data", data],
                        "has no network `Nope`", "networks: Tiny"),
    "missing data": (lambda t, data: ["--data", t / "no.txt"],
                     "no.txt: no such file", None),
    "empty data": (lambda t, data: ["--data", _write(t / "empty.txt", b"")],
                   "empty.txt: is empty", "at least one example"),
    "blank data": (lambda t, data: ["--data", _write(t / "blank.txt", b" \n\n\t\n")],
                   "blank.txt: is empty (only whitespace)", "at least one example"),
    "NUL byte": (lambda t, data: ["--data", _write(t / "bin.txt", b"abc\n\0def\n")],
                 "bin.txt:2:1: a binary file, not text (a NUL byte)", "UTF-8"),
    "not UTF-8": (lambda t, data: ["--data", _write(t / "latin.txt", b"abc\ncaf\xe9\n")],
                  "latin.txt:2:4: a binary file, not text (byte 0xe9, which is not UTF-8)",
                  "save it as UTF-8"),
    "data is a directory": (lambda t, data: ["--data", t],
                            "is a directory, not a text file", None),
    "classify a per-step network": (
        lambda t, data: ["--data", data, "--task", "classify"],
        "--task classify: network Tiny has 1 input(s) and an output at every step",
        "it can learn: lm, tag"),
    "translate with one input": (
        lambda t, data: ["--data", data, "--task", "translate"],
        "--task translate: network Tiny has 1 input(s)", "it can learn: lm, tag"),
}


@pytest.mark.parametrize("case", list(TRAIN_ERRORS))
def test_bad_training_arguments(run_cli, files, tmp_path, case):
    spec, data = files
    args, message, hint = TRAIN_ERRORS[case]
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", spec, *args(tmp_path, data), "--out", out, *FAST)
    assert_error(code, stdout, err, message, hint)
    assert stdout == ""
    assert not out.exists()  # nothing written for a run that never started


def test_train_without_out_or_spec(run_cli, files):
    spec, data = files
    assert_error(*run_cli("train", spec, "--data", data), "train: --out missing",
                 "--resume DIR")
    assert_error(*run_cli("train", "--data", data), "train: SPEC and --out missing")


def test_an_out_that_holds_a_run_is_refused(run_cli, files, trained):
    spec, data = files
    run, _ = trained
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    code, out, err = run_cli("train", spec, "--data", data, "--out", run, *FAST)
    assert_error(code, out, err, f"{run} already holds a training run",
                 f"continue it with --resume {run}")
    assert "--overwrite" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_overwrite_replaces_a_run_and_keeps_other_files(run_cli, files, tmp_path):
    spec, data = files
    out = tmp_path / "run"
    assert run_cli("train", spec, "--data", data, "--out", out, "--epochs", 2, *FAST)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, stdout, err = run_cli("train", spec, "--data", data, "--out", out, "--epochs", 1,
                                "--overwrite", *FAST)
    assert code == 0, err
    assert len(loss_rows(out)) == STEPS_PER_EPOCH and position(out)["step"] == STEPS_PER_EPOCH
    assert len(list(out.glob("last-*.npz"))) == 1 and len(list(out.glob("best-*.npz"))) == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_errors(run_cli, files, trained, tmp_path):
    spec, _ = files
    run, _ = trained
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(*run_cli("train", "--resume", empty), f"{empty} has no checkpoint `last`")
    assert_error(*run_cli("train", "--resume", tmp_path / "nowhere"), "no such directory",
                 "--out directory of a training run")
    # another spec: here only a hidden size differs
    other = tmp_path / "other.seq"
    other.write_text(TINY.replace("H=8", "H=9"), "utf-8")
    code, out, err = run_cli("train", "--resume", run, other, "--epochs", 4)
    assert_error(code, out, err, "was trained on another spec", "the spec, network and sizes")
    # the same spec (a copy elsewhere) is accepted: the text is compared, not the path;
    # --lr is refused whatever the spec, before anything is trained
    same = tmp_path / "same.seq"
    same.write_text(TINY, "utf-8")
    code, out, err = run_cli("train", "--resume", run, same, "--lr", 0.1)
    assert_error(code, out, err, "--resume continues a run as it began; --lr cannot change",
                 "only --epochs")
    code, out, err = run_cli("train", "--resume", run, "--optimizer", "sgd", "--seed", 3)
    assert_error(code, out, err, "--optimizer, --seed cannot change")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_with_another_spec_names_it(run_cli, trained, tmp_path):
    run, _ = trained
    other = tmp_path / "other.seq"
    other.write_text(TINY.replace("H=8", "H=9"), "utf-8")
    code, out, err = run_cli("train", "--resume", run, other, "--epochs", 4)
    assert code == 1 and str(other) in err.splitlines()[0] and str(run) in err.splitlines()[0]


def test_bad_sample_arguments(run_cli, trained, tmp_path):
    run, _ = trained
    for t in ("0", "-1", "nan", "inf", "x"):
        code, out, err = run_cli("sample", run, "--temperature", t)
        assert_usage_error(code, out, err, "sample", "--temperature",
                           "the temperature must be a number > 0")
    assert_usage_error(*run_cli("sample", run, "--count", 0), "sample", "--count",
                       "expected a positive whole number")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(*run_cli("sample", empty, "--backend", "numpy"),
                 f"{empty} has no checkpoint `last`")
    assert_error(*run_cli("sample", tmp_path / "nowhere", "--backend", "numpy"),
                 "no such directory")


def test_a_prefix_outside_the_vocabulary_is_warned_about(run_cli, trained):
    run, _ = trained
    code, out, err = run_cli("sample", run, "--count", 4, "--prefix", "aQjQ")
    assert code == 0 and "Traceback" not in err
    assert err == "warning: --prefix: 'Q', 'j' not in the vocabulary; read as <UNK>\n"
    lines = out.splitlines()
    assert len(lines) == 4 and all(line.startswith("aQjQ") for line in lines)
    code, out, err = run_cli("sample", run, "--count", 2, "--prefix", "abc")
    assert code == 0 and err == ""  # a known prefix: no warning


# ---- a full run ---------------------------------------------------------------------------

def test_a_full_run_writes_its_checkpoints_curve_and_vocabulary(run_cli, files, trained,
                                                                tmp_path):
    spec, data = files
    run, stdout = trained
    steps = 3 * STEPS_PER_EPOCH
    chars = sorted(set("".join(_lines())))
    lines = stdout.splitlines()
    assert lines[0].startswith(f"training network Tiny (X={len(chars) + 2}, Y={len(chars) + 2}, "
                               "float32) as a language model on ")
    assert "54 examples (6 held out)" in lines[0]
    assert [line.split(":")[0] for line in lines[1:4]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert lines[-1] == (f"finished at epoch 3, step {steps}; checkpoints in {run} (last.json, "
                         f"best.json), loss curve {run}/loss.png")

    names = {p.name for p in run.iterdir()}
    assert {"last.json", "best.json", "loss.csv", "loss.png", "vocab.json"} <= names
    for name in ("last", "best"):  # each JSON names its one npz, which is there
        doc = json.loads((run / f"{name}.json").read_text("utf-8"))
        assert [n for n in names if n.startswith(f"{name}-")] == [doc["arrays"]]
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")]

    assert json.loads((run / "vocab.json").read_text("utf-8")) == {
        "level": "char", "tokens": ["<EOS>", "<UNK>", *chars]}
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    pos = position(run)
    assert (pos["epoch"], pos["batch"], pos["step"]) == (3, 0, steps)
    rows = loss_rows(run)
    assert [int(r[0]) for r in rows] == list(range(1, steps + 1))
    assert [int(r[1]) for r in rows] == [e for e in (1, 2, 3) for _ in range(STEPS_PER_EPOCH)]
    assert [float(r[2]) for r in rows] == pos["losses"]
    ends = [i for i, r in enumerate(rows, 1) if r[3] != ""]
    assert ends == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH, steps]
    assert [float(rows[i - 1][3]) for i in ends] == [h["valid_loss"] for h in pos["history"]]
    best = min(h["valid_loss"] for h in pos["history"])
    assert position(run, "best")["best"] == best

    # The reference interpreter computes the same numbers as the compiled default.
    out = tmp_path / "numpy"
    code, _, err = run_cli("train", spec, "--data", data, "--out", out, "--epochs", 3,
                           "--lr", 0.02, *FAST)
    assert code == 0, err
    np.testing.assert_allclose([float(r[2]) for r in loss_rows(out)], pos["losses"],
                               rtol=1e-4)


def test_sampling_is_repeatable_by_seed(run_cli, trained):
    run, _ = trained
    first = run_cli("sample", run, "--count", 8, "--seed", 1)
    assert first[0] == 0 and first[2] == "", first[2]
    lines = first[1].splitlines()
    assert len(lines) == 8 and len(set(lines)) > 1
    assert run_cli("sample", run, "--count", 8, "--seed", 1) == first
    other = run_cli("sample", run, "--count", 8, "--seed", 2)
    assert other[0] == 0 and other[1].splitlines() != lines
    # the reference interpreter draws the same lines from the same checkpoint
    assert run_cli("sample", run, "--count", 8, "--seed", 1, "--backend", "numpy") == first


@pytest.mark.parametrize("count", [1, 5, 13])
def test_count_is_the_number_of_lines(run_cli, trained, count):
    run, _ = trained
    code, out, _ = run_cli("sample", run, "--count", count, "--seed", count, "--backend", "numpy")
    assert code == 0 and out.endswith("\n") and len(out.splitlines()) == count


def test_greedy_gives_one_sequence_and_limits_hold(run_cli, trained):
    run, _ = trained
    code, out, _ = run_cli("sample", run, "--count", 6, "--greedy", "--prefix", "ab",
                           "--backend", "numpy")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 6 and len(set(lines)) == 1 and lines[0].startswith("ab")
    code, again, _ = run_cli("sample", run, "--count", 6, "--greedy", "--prefix", "ab",
                             "--seed", 9, "--backend", "numpy")
    assert again == out  # the seed does not matter to --greedy
    code, out, _ = run_cli("sample", run, "--count", 30, "--max-length", 2, "--temperature", 3,
                           "--backend", "numpy")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 30
    assert all(len(line.replace("<UNK>", "?")) <= 2 for line in lines)
    assert any(len(line.replace("<UNK>", "?")) == 2 for line in lines)


def test_hidden_and_size_resize_the_layers_and_sampling_follows(run_cli, files, tmp_path):
    spec, data = files
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", spec, "--data", data, "--out", out, "--max-steps", 2,
                                "--hidden", 5, *FAST)
    assert code == 0, err
    assert "with layers at H=5" in stdout
    ck = load_checkpoint(out)
    assert ck.params["a.Wu"].shape[0] == 5 and ck.meta["layer_sizes"] == {"H": 5}
    code, lines, err = run_cli("sample", out, "--count", 2, "--backend", "numpy")
    assert code == 0 and len(lines.splitlines()) == 2, err
    assert_error(*run_cli("train", spec, "--data", data, "--out", tmp_path / "k", "--size",
                          "K=3", *FAST), "network Tiny's layers have no size 'K'", "H")
    assert_error(*run_cli("train", spec, "--data", data, "--out", tmp_path / "k", "--size",
                          "H=3", "--hidden", 4, *FAST), "--hidden 4 and --size H=3 disagree")


REVERSE = """\
network Reverse {
    input x : tokens
    input y : tokens
    e = LSTM(H=6)(x)
    d = LSTM(H=6, init=e<T>)(y)
    output ŷ<t> = softmax(Wy d<t> + by)
}
"""


def test_an_encoder_decoder_trains_on_pairs_and_samples_for_an_input(run_cli, tmp_path):
    spec, data = tmp_path / "rev.seq", tmp_path / "pairs.tsv"
    spec.write_text(REVERSE, "utf-8")
    data.write_text("".join(f"{w}\t{w[::-1]}\n" for w in _lines()), "utf-8")
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", spec, "--data", data, "--out", out, "--max-steps", 3,
                                *FAST)
    assert code == 0, err
    assert "as an encoder-decoder on" in stdout
    assert {"vocab-x.json", "vocab-y.json"} <= {f.name for f in out.iterdir()}
    code, lines, err = run_cli("sample", out, "--input", "abc", "--count", 3, "--max-length",
                               4, "--backend", "numpy")
    assert code == 0 and len(lines.splitlines()) == 3, err
    assert all(len(line) <= 4 for line in lines.splitlines())
    assert_error(*run_cli("sample", out, "--backend", "numpy"),
                 "an encoder-decoder samples a translation of an input", "--input TEXT")


def test_a_word_level_model_samples_words_after_its_prefix(run_cli, tmp_path):
    spec, data = tmp_path / "tiny.seq", tmp_path / "words.txt"
    spec.write_text(TINY, "utf-8")
    data.write_text("".join(" ".join(_lines()[i:i + 4]) + "\n" for i in range(0, 60, 4)),
                    "utf-8")
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", spec, "--data", data, "--out", out, "--level", "word",
                                "--max-steps", 2, *FAST)
    assert code == 0, err
    words = set(" ".join(_lines()).split())
    code, lines, err = run_cli("sample", out, "--prefix", _lines()[0], "--count", 4,
                               "--max-length", 3, "--backend", "numpy")
    assert code == 0, err
    for line in lines.splitlines():
        first, *rest = line.split(" ")
        assert first == _lines()[0] and len(rest) <= 3 and set(rest) <= words, line
    assert_error(*run_cli("sample", out, "--input", "x", "--backend", "numpy"),
                 "--input is for an encoder-decoder")
