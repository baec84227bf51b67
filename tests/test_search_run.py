"""`seqdsl search` end to end, on Ray: a small search killed midway and
resumed (it must keep the finished trials, not train them again), its
leaderboard and best cells (which must check and retrain with `seqdsl
train` to the score the search gave them), and a search on a two-node Ray
cluster on loopback whose trials ran on both nodes.

The trials are tiny (12 digits, H=8, tens of steps, numpy backend: a trial
is a fraction of a second and compiles nothing), so Ray's start-up is most
of the time."""
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from seqdsl.lang.parse import parse
from seqdsl.search.strategy import Generator
from seqdsl.search.tasks import adding_text, copy_text, resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRU = os.path.join(ROOT, "seqdsl", "lang", "library", "gru.seq")
TINY = ["--task", "adding", "--length", "12", "--examples", "300", "--hidden", "8",
        "--seed", "3"]


def _env(tmp_path) -> dict:
    env = dict(os.environ)
    # Token authentication needs a token shared by every process of a cluster;
    # these clusters live on loopback for one test.
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               SEQDSL_CACHE_DIR=os.environ.get("SEQDSL_CACHE_DIR", str(tmp_path / "cache")))
    return env


def _search(*args, env, **popen):
    return subprocess.Popen([sys.executable, "-m", "seqdsl", "search", *map(str, args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT, **popen)


def _rows(out):
    from seqdsl.search.leaderboard import read_csv
    path = out / "leaderboard.csv"
    return read_csv(path) if path.exists() else []


# ---- without Ray ----------------------------------------------------------------------

def test_synthetic_tasks_are_seeded_and_in_the_training_formats():
    text = adding_text(10, 50, seed=1)
    assert text == adding_text(10, 50, seed=1) != adding_text(10, 50, seed=2)
    for line in text.splitlines():
        digits, total = line.split("\t")
        marked = [ord(c) - ord("a") for c in digits if c.isalpha()]
        assert len(digits) == 10 and len(marked) == 2 and int(total) == sum(marked)
    for line in copy_text(6, 20, seed=1).splitlines():
        chars, labels = line.split("\t")
        labels = labels.split()
        assert len(labels) == len(chars) and labels[-4:] == list(chars[:4])


def test_evolution_is_the_same_whatever_order_trials_finish_in():
    seeds = [parse(open(GRU, encoding="utf-8").read()).definitions[0]]

    def run(order_seed):
        g, running, shuffle = Generator(seeds, "evolution", 12, seed=5, workers=3), [], \
            random.Random(order_seed)
        def finish_one():
            i = running.pop(shuffle.randrange(len(running)))
            g.complete(i, float(len(g.candidates[i].source) % 17))

        while True:
            if len(running) == 3:  # a full cluster: some trial finishes first
                finish_one()
            c = g.suggest()
            if c == "finished":
                break
            if c is None:  # waiting for an older trial
                finish_one()
            else:
                running.append(c.index)
        return [(c.key, c.history) for c in g.candidates]

    first = run(0)
    assert len(first) == 13 and len({k for k, _ in first}) == 13
    assert run(1) == first == run(2)


def test_mutants_that_cannot_train_in_the_network_are_turned_away(tmp_path):
    from seqdsl.search.tasks import network_source
    from seqdsl.search.trial import Budget, NetworkFit
    task = resolve("adding", 0, 8, 50, tmp_path)
    gru = open(GRU, encoding="utf-8").read()
    fits = NetworkFit(task, Budget(), gru + network_source("GRU", 8, task.per_step))
    assert fits(gru, "GRU") is None
    tied = "cell T {\n    input x\n    state c : H\n    c<t> = tanh(c + x)\n}\n"
    assert fits(tied, "T").startswith("network: T needs input size")  # X = H, not the vocabulary
    deaf = "cell D {\n    input x\n    state c : H\n    c<t> = tanh(Wc c + b)\n}\n"
    assert fits(deaf, "D") == "network: its state never reads the input"


def test_a_trial_on_numba_runs_its_network_layer_by_layer(tmp_path):
    """A trial trains a few hundred small steps: compiling its network's step
    as one function (per new cell) would cost more than it saves."""
    from seqdsl.search.tasks import network_source
    from seqdsl.search.trial import Budget, prepare
    task = resolve("adding", 0, 8, 50, tmp_path)
    gru = open(GRU, encoding="utf-8").read()
    net, *_ = prepare(gru + network_source("GRU", 8, task.per_step), task,
                      Budget(backend="numba"))
    assert net.backend == "numba" and net.fused is False


def test_data_tasks_read_the_training_formats(tmp_path):
    text, tagged = tmp_path / "t.txt", tmp_path / "t.tsv"
    text.write_text("anna\nbob\n")
    tagged.write_text("ab\tA B\n")
    assert resolve(f"data:{text}", 0).kind == "lm" and resolve(f"data:{tagged}", 0).kind == "tag"
    with pytest.raises(Exception, match="no such file"):
        resolve(f"data:{tmp_path / 'missing.txt'}", 0)


def test_without_ray_the_command_says_how_to_install_it(run_cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    monkeypatch.delitem(sys.modules, "seqdsl.search.ray_search", raising=False)
    code, _, err = run_cli("search", GRU, "--out", tmp_path / "s")
    assert code == 1 and "pip install 'seqdsl[search]'" in err


def test_a_bad_task_or_cell_is_reported(run_cli, tmp_path):
    pytest.importorskip("ray")
    code, _, err = run_cli("search", GRU, "--cell", "LSTM", "--out", tmp_path / "s")
    assert code == 1 and "--cell LSTM: no such cell" in err and "GRU" in err
    with pytest.raises(Exception, match="adding, copy, names or data:FILE"):
        resolve("sorting", 0)


# ---- an embedded local cluster: kill, resume, check the results ----------------------

@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A 24-mutant search killed after some trials finished, then resumed:
    (its folder, the rows finished before the kill, the resumed run's output)."""
    pytest.importorskip("ray")
    tmp = tmp_path_factory.mktemp("search")
    out, env = tmp / "run", _env(tmp)
    args = [GRU, "--cell", "GRU", *TINY, "--budget", "24", "--steps", "40", "--workers", "2",
            "--out", out]
    p = _search(*args, env=env, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(_rows(out)) < 6 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    before = _rows(out)
    time.sleep(1.0)  # Tune saves its state at every step; give the last finish its save
    assert p.poll() is None, "the search ended before it could be killed:\n" + p.stdout.read()
    os.killpg(p.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    p.wait()
    assert 6 <= len(before) < 26
    # As a kill while Tune copies its state leaves it (seen: every file empty);
    # the resume must put back seqdsl's own copy.
    from seqdsl.search.saved_state import state_files
    cut = state_files(out / "tune")
    assert cut
    for f in cut:
        f.write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "seqdsl", "search", "--resume", "--out", out],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "saved state was cut short by the kill; resuming from the copy" in r.stdout
    return out, before, r.stdout


def test_the_resumed_search_ranks_as_an_uninterrupted_one_would(resumed, tmp_path):
    """Reproducible: the same seed and budget give the same leaderboard, a
    kill and --resume in between or not (times and nodes aside)."""
    out, _, _ = resumed
    again = tmp_path / "again"
    args = [GRU, "--cell", "GRU", *TINY, "--budget", "24", "--steps", "40", "--workers", "2",
            "--out", again]
    p = _search(*args, env=_env(tmp_path))
    printed, _ = p.communicate(timeout=300)
    assert p.returncode == 0, printed

    def board(rows):
        return [(r["rank"], r["cell"], r["score"], r["status"], r["history"]) for r in rows]
    assert board(_rows(again)) == board(_rows(out))


def test_resume_keeps_the_trials_finished_before_the_kill(resumed):
    out, before, printed = resumed
    after = {r["index"]: r for r in _rows(out)}
    for r in before:  # the same result, finished at the same time: not trained again
        assert r["index"] in after, printed
        assert after[r["index"]]["finished_at"] == r["finished_at"], (r, printed)
        assert after[r["index"]]["score"] == r["score"]


def test_the_leaderboard_ranks_distinct_trained_mutants(resumed):
    import json
    out, _, printed = resumed
    rows = _rows(out)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    mutants = [r for r in rows if r["history"][0] == "seed GRU" and len(r["history"]) > 1]
    assert len(rows) == 25 and len(mutants) == 24 >= 20, printed
    assert len({r["index"] for r in rows}) == len({r["cell"] for r in rows}) == 25
    done = [r["score"] for r in rows if r["status"] == "done"]
    assert len(done) >= 20 and done == sorted(done)
    assert all(r["parameters"] > 0 and r["steps"] == 40 for r in rows if r["status"] == "done")
    counts = json.loads((out / "counts.json").read_text())
    assert counts["suggested"] == 24
    assert counts["attempts"] == 24 + counts["duplicates"] + counts["invalid"]
    md = (out / "leaderboard.md").read_text()
    assert md.count("\n| ") == 26 and "seed GRU →" in md
    assert (out / "best.png").stat().st_size > 1000 and "best:" in printed


def test_the_best_cells_check_and_retrain_to_their_score(resumed, run_cli):
    from seqdsl.search.tasks import SearchTask
    from seqdsl.search.trial import Budget, prepare
    from seqdsl.spec import load
    from seqdsl.train.fit import evaluate
    from seqdsl.train.run import load_model
    import json
    out, _, _ = resumed
    best = sorted((out / "best").glob("*.seq"))
    assert len(best) == 5
    for path in best:
        assert run_cli("check", path)[0] == 0
        assert load(str(path)).network("Search")
    row = _rows(out)[0]
    header = best[0].read_text("utf-8").splitlines()
    (command,) = [h[len("# retrain: "):] for h in header if h.startswith("# retrain: ")]
    argv = shlex.split(command)
    assert argv[0] == "seqdsl" and argv[1] == "train"
    assert run_cli(*argv[1:])[0] == 0
    settings = json.loads((out / "search.json").read_text())
    task, budget = SearchTask(**settings["task"]), Budget(**settings["budget"])
    model = load_model(argv[argv.index("--out") + 1], "last", backend="numpy")
    *_, valid = prepare(best[0].read_text("utf-8"), task, budget)
    loss = evaluate(model.net, model.params, valid, budget.batch_size)["loss"]
    assert loss == pytest.approx(row["score"], abs=1e-4)


def test_asha_stops_poor_trials_early_and_ranks_them_after_the_finished(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "asha"
    p = _search(GRU, "--cell", "GRU", *TINY, "--budget", "11", "--steps", "60",
                "--scheduler", "asha", "--workers", "2", "--out", out, env=_env(tmp_path))
    printed, _ = p.communicate(timeout=300)
    assert p.returncode == 0, printed
    rows = _rows(out)
    status = [r["status"] for r in rows]
    assert len(rows) == 12 and "done" in status and "stopped early" in status, printed
    assert all(r["steps"] < 60 for r in rows if r["status"] == "stopped early")
    assert all(r["steps"] == 60 for r in rows if r["status"] == "done")
    # finished trials first: a score from fewer steps is not comparable
    assert status == sorted(status, key=lambda s: s != "done"), status


# ---- a two-node cluster on loopback ----------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args, env):
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    return subprocess.run([ray, *args], env=env, capture_output=True, text=True, timeout=180)


def test_a_search_on_a_two_node_cluster_runs_trials_on_both(tmp_path):
    pytest.importorskip("ray")
    env, port = _env(tmp_path), _free_port()
    address = f"127.0.0.1:{port}"
    # Ray's sockets live in its temp dir, whose path must stay short (107 bytes).
    temp = tempfile.mkdtemp(prefix="seqray")
    try:
        head = _ray("start", "--head", "--port", str(port), "--num-cpus", "1",
                    "--include-dashboard=false", "--temp-dir", os.path.join(temp, "h"),
                    "--disable-usage-stats", env=env)
        assert head.returncode == 0, head.stdout + head.stderr
        node = _ray("start", "--address", address, "--num-cpus", "1",
                    "--temp-dir", os.path.join(temp, "n"), "--disable-usage-stats", env=env)
        assert node.returncode == 0, node.stdout + node.stderr
        # Trials long enough (a second or so) that Tune starts an actor on each node.
        p = _search(GRU, *TINY, "--strategy", "random", "--budget", "5", "--steps", "400",
                    "--address", address, "--out", tmp_path / "run", env=env)
        printed, _ = p.communicate(timeout=300)
        assert p.returncode == 0, printed
    finally:
        _ray("stop", env=env)
        shutil.rmtree(temp, ignore_errors=True)
    rows = _rows(tmp_path / "run")
    assert len(rows) == 6 and all(r["status"] == "done" for r in rows)  # the seed and 5
    assert len({r["node"] for r in rows}) == 2
