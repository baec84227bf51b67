"""What the tests of `seqdsl train` and `seqdsl sample` share: a tiny LSTM
language model and its data, one trained run on the compiled backend, and
helpers that run the CLI and read what a run wrote."""
import csv
import io
import math
import os
import random
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from seqdsl.cli import main
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
