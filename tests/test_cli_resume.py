"""Runs that stop and go on: exact resumption through the command line,
Ctrl-C, a SIGKILL at a random moment, and a run that diverges."""
import errno
import json
import math
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from seqdsl.train.checkpoint import load_checkpoint

from cli_train_support import (FAST, STEPS_PER_EPOCH, TINY, cache_dir, files,  # noqa: F401
                               loss_rows, position, seqdsl)  # fixtures too


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
