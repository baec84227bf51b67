"""`seqdsl train` and `seqdsl sample` as a user runs them: help, every way
the arguments can be wrong (one line, no traceback), a full run's files and
samples, exact resumption through the command line, Ctrl-C, a SIGKILL at a
random moment, and a run that diverges.

The network is a tiny LSTM language model on 60 short lines: one run on the
compiled backend (the default; one compile), the rest on the reference
interpreter (`--backend numpy`), which computes the same numbers without
compiling.
"""
import argparse
import csv
import errno
import io
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from seqdsl.cli import _parser, main
from seqdsl.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent

TINY = """\
network Tiny {
    input x : tokens
    a = LSTM(H=8)(x)
    output ŷ<t> = softmax(Wy a<t> + by)
}
"""
LETTERS = "abcdeilmnorst"  # no `j`, no capitals: --prefix tests use them as unknown
LINES = 60  # 54 training examples, 6 held out (--valid-fraction 0.1)
BATCH = 8
STEPS_PER_EPOCH = math.ceil(54 / BATCH)  # 7: one pool of batches (data.POOL_BATCHES)
FAST = ["--backend", "numpy", "--no-progress", "--batch-size", BATCH]
HEADER = ["step", "epoch", "train_loss", "valid_loss"]


def _lines() -> list[str]:
    rng = random.Random(0)
    return ["".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 7))) for _ in range(LINES)]


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """The compile cache of this module's runs (and their subprocesses) is its own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEQDSL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The spec and the data file: (spec, data)."""
    d = tmp_path_factory.mktemp("files")
    (d / "tiny.seq").write_text(TINY, "utf-8")
    (d / "data.txt").write_text("\n".join(_lines()) + "\n", "utf-8")
    return d / "tiny.seq", d / "data.txt"


def call(*args):
    """The CLI in-process outside a test (a module fixture): (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    """A run of 3 epochs on the default (compiled) backend: (its directory, stdout)."""
    spec, data = files
    out = tmp_path_factory.mktemp("trained") / "run"
    code, stdout, stderr = call("train", spec, "--data", data, "--out", out, "--epochs", 3,
                                "--lr", 0.02, "--batch-size", BATCH, "--no-progress")
    assert code == 0, stderr
    return out, stdout


def seqdsl(*args, cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "seqdsl", *map(str, args)], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def loss_rows(d) -> list[list[str]]:
    with open(Path(d) / "loss.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    return rows[1:]


def position(d, name="last") -> dict:
    return load_checkpoint(d, name).meta["position"]


def assert_error(code, out, err, message, hint=None):
    """One `error:` line (and maybe one `hint:` line) on stderr, status 1, no traceback."""
    assert code == 1, (out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines and lines[0].startswith("error: "), err
    assert message in lines[0], err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), err
    if hint is not None:
        assert len(lines) == 2 and hint in lines[1], err


def assert_usage_error(code, out, err, command, argument, message):
    """argparse's: usage, then `seqdsl CMD: error: argument ...`, status 2."""
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"seqdsl {command}: error: argument {argument}: "
                                           f"{message}"), err


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
                               "float32) as a lm task on ")
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


# ---- resuming -----------------------------------------------------------------------------

@pytest.mark.parametrize("stops", [[10], [3, STEPS_PER_EPOCH]],
                         ids=["mid-epoch-2", "mid-epoch-1-then-at-its-end"])
def test_a_resumed_run_is_the_run_never_stopped(run_cli, files, tmp_path, stops):
    spec, data = files
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("train", spec, "--data", data, "--out", a, "--epochs", 2, *FAST)[0] == 0
    code, out, err = run_cli("train", spec, "--data", data, "--out", b, "--epochs", 2,
                             "--max-steps", stops[0], *FAST)
    assert code == 0, err
    epoch = (stops[0] - 1) // STEPS_PER_EPOCH + 1
    assert out.splitlines()[-1] == (
        f"stopped after --max-steps at epoch {epoch}, step {stops[0]}; checkpoints in {b} "
        f"({'last.json, best.json' if epoch > 1 else 'last.json'}), loss curve {b}/loss.png; "
        f"continue with: seqdsl train "
        f"--resume {b}")
    assert len(loss_rows(b)) == stops[0] == position(b)["step"]
    for stop in stops[1:]:
        code, out, err = run_cli("train", "--resume", b, "--max-steps", stop,
                                 "--backend", "numpy", "--no-progress")
        assert code == 0 and position(b)["step"] == stop, err
    code, out, err = run_cli("train", "--resume", b, "--backend", "numpy", "--no-progress")
    assert code == 0, err
    assert out.splitlines()[0].startswith("resuming network Tiny (")
    assert out.splitlines()[-1].startswith(f"finished at epoch 2, step {2 * STEPS_PER_EPOCH};")

    assert loss_rows(b) == loss_rows(a)  # the same steps, losses and validation losses
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca.params.keys() == cb.params.keys()
    for name in ca.params:
        assert ca.params[name].dtype == cb.params[name].dtype
        assert ca.params[name].tobytes() == cb.params[name].tobytes(), name
    assert ca.optimizer_arrays.keys() == cb.optimizer_arrays.keys()
    for name in ca.optimizer_arrays:
        assert ca.optimizer_arrays[name].tobytes() == cb.optimizer_arrays[name].tobytes(), name
    pa, pb = ca.meta["position"], cb.meta["position"]
    for h in pa["history"] + pb["history"]:
        del h["tokens_per_second"]  # a timing
    assert pa == pb


def test_resume_can_go_on_to_more_epochs(run_cli, files, tmp_path):
    spec, data = files
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("train", spec, "--data", data, "--out", a, "--epochs", 3, *FAST)[0] == 0
    assert run_cli("train", spec, "--data", data, "--out", b, "--epochs", 1, *FAST)[0] == 0
    code, out, err = run_cli("train", "--resume", b, "--epochs", 3, "--no-progress",
                             "--backend", "numpy")
    assert code == 0, err
    assert [line.split(":")[0] for line in out.splitlines()[1:3]] == ["epoch 2/3", "epoch 3/3"]
    assert loss_rows(b) == loss_rows(a)


def test_resume_from_another_directory(run_cli, files, tmp_path, monkeypatch):
    spec, data = files
    start = tmp_path / "start"
    start.mkdir()
    (start / "tiny.seq").write_text(TINY, "utf-8")
    (start / "data.txt").write_bytes(data.read_bytes())
    monkeypatch.chdir(start)
    code, _, err = run_cli("train", "tiny.seq", "--data", "data.txt", "--out", "run",
                           "--max-steps", 2, *FAST)
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("train", "--resume", start / "run", "--epochs", 1,
                             "--backend", "numpy", "--no-progress")
    assert code == 0, err


def test_the_stop_message_names_only_checkpoints_that_exist(run_cli, files, tmp_path):
    spec, data = files
    out = tmp_path / "run"
    code, stdout, _ = run_cli("train", spec, "--data", data, "--out", out, "--max-steps", 2,
                              *FAST)
    assert code == 0 and not (out / "best.json").exists()
    assert "best.json" not in stdout.splitlines()[-1]


# ---- Ctrl-C and SIGKILL -------------------------------------------------------------------

def _wait_for_step(d: Path, above: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until last.json in `d` records a step above `above`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if json.loads((d / "last.json").read_text("utf-8"))["position"]["step"] > above:
                return
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before a checkpoint: "
                        + proc.stderr.read())
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)


def _straight_run_matches(run_cli, files, tmp_path, run: Path, batch_size: int) -> None:
    """Resume `run` to the end of its epoch, and compare it with a run never stopped."""
    spec, data = files
    epochs = position(run)["epoch"] + 1
    code, out, err = run_cli("train", "--resume", run, "--epochs", epochs, "--backend", "numpy",
                             "--no-progress")
    assert code == 0, err
    assert out.splitlines()[-1].startswith(f"finished at epoch {epochs}, step ")
    straight = tmp_path / "straight"
    code, _, err = run_cli("train", spec, "--data", data, "--out", straight, "--epochs", epochs,
                           "--backend", "numpy", "--no-progress", "--batch-size", batch_size)
    assert code == 0, err
    assert loss_rows(run) == loss_rows(straight)
    last, other = load_checkpoint(run), load_checkpoint(straight)
    for name in last.params:
        assert last.params[name].tobytes() == other.params[name].tobytes(), name


def test_ctrl_c_saves_and_says_how_to_resume(run_cli, files, tmp_path):
    spec, data = files
    out = tmp_path / "run"
    proc = seqdsl("train", spec, "--data", data, "--out", out, "--backend", "numpy",
                  "--no-progress", "--batch-size", 4, "--epochs", 500,
                  "--checkpoint-minutes", 0.005, cwd=tmp_path)
    try:
        _wait_for_step(out, 0, proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "error" not in stderr, stderr
    last = stdout.splitlines()[-1]
    m = re.fullmatch(r"interrupted; saved at epoch (\d+), step (\d+); checkpoints in (\S+) "
                     r"\(.*\), loss curve \S+; continue with: seqdsl train --resume (\S+)", last)
    assert m, last
    assert m[3] == m[4] == str(out)
    ck = load_checkpoint(out, "last")
    pos = ck.meta["position"]
    assert (int(m[1]), int(m[2])) == (pos["epoch"] + 1, pos["step"])
    assert pos["step"] >= 1 and len(pos["losses"]) == pos["step"]
    assert pos["step"] == (pos["epoch"] * math.ceil(54 / 4) + pos["batch"])
    rows = loss_rows(out)
    assert len(rows) == pos["step"] and [float(r[2]) for r in rows] == pos["losses"]
    _straight_run_matches(run_cli, files, tmp_path, out, 4)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_ctrl_c_before_training_starts_is_quiet(files, tmp_path):
    spec, _ = files
    fifo = tmp_path / "data.fifo"
    os.mkfifo(fifo)
    proc = seqdsl("train", spec, "--data", fifo, "--out", tmp_path / "run", "--backend",
                  "numpy", "--no-progress", cwd=tmp_path)
    writer = None
    try:
        deadline = time.monotonic() + 60
        while writer is None:  # opens once the CLI has the pipe open to read the data
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                assert e.errno == errno.ENXIO and time.monotonic() < deadline
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.01)
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # while it waits for the data
        _, stderr = proc.communicate(timeout=60)
    finally:
        if writer is not None:
            os.close(writer)
        proc.kill()
        proc.wait()
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == 130


def test_sigkill_at_any_moment_leaves_a_checkpoint_to_resume(run_cli, files, tmp_path):
    spec, data = files
    out = tmp_path / "run"
    rng = random.Random(3)
    step = 0
    for kill in range(3):
        args = (["train", spec, "--data", data, "--out", out, "--epochs", 500,
                 "--batch-size", 4] if kill == 0 else ["train", "--resume", out])
        proc = seqdsl(*args, "--backend", "numpy", "--no-progress", "--checkpoint-minutes",
                      0.001, cwd=tmp_path)
        try:
            _wait_for_step(out, step, proc)
            time.sleep(rng.uniform(0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        ck = load_checkpoint(out, "last")  # whole, whenever the kill came
        pos = ck.meta["position"]
        assert pos["step"] > step and len(pos["losses"]) == pos["step"]
        assert all(np.isfinite(a).all() for a in ck.params.values())
        step = pos["step"]
    _straight_run_matches(run_cli, files, tmp_path, out, 4)


# ---- divergence ---------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_run_stops_with_the_epoch_and_step(run_cli, files, tmp_path):
    """At --lr 1e38 plain SGD overflows float32 on the second step; the
    checkpoint saved after the first (--checkpoint-minutes tiny) is kept."""
    spec, data = files
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", spec, "--data", data, "--out", out, "--lr", 1e38,
                                "--optimizer", "sgd", "--epochs", 3, "--checkpoint-minutes",
                                1e-6, *FAST)
    assert code == 1 and "Traceback" not in err
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    i = lines.index(errors[0])
    assert re.fullmatch(r"error: epoch 1, step 2: the loss is (inf|nan) \(gradients exploded\); "
                        r"the last good checkpoint, .*last\.json, is kept", errors[0]), err
    assert lines[i + 1] == ("hint: clip the gradients (--clip-norm 5) or lower the learning "
                            "rate (--lr 1e+37)")
    assert all(line.startswith("warning: ") for line in lines[:i] + lines[i + 2:]), err
    assert stdout.splitlines()[0].startswith("training network Tiny")
    pos = position(out)
    assert pos["step"] == 1 and all(math.isfinite(x) for x in pos["losses"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_huge_loss_keeps_the_epoch_line_short(run_cli, files, tmp_path):
    spec, data = files
    code, out, err = run_cli("train", spec, "--data", data, "--out", tmp_path / "run",
                             "--lr", 1e6, "--optimizer", "sgd", "--epochs", 1, *FAST)
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if line.startswith("epoch 1/1")]
    assert len(line) < 200, line
