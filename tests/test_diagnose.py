"""The vanishing/exploding-gradient diagnostic (`seqdsl diagnose`): the
course's lesson in numbers, its gradients against finite differences, the
recurrent columns --scale multiplies, and the command's table, plot and
errors."""
import numpy as np
import pytest

import seqdsl
from seqdsl import cli
from seqdsl.cli import diagnose as diagnose_cli
from seqdsl.errors import SeqError
from seqdsl.spec import library_cells
from seqdsl.tools import diagnose as tool

LIB = "seqdsl/lang/library"


@pytest.fixture(scope="module")
def lib():
    return library_cells()


@pytest.fixture(scope="module")
def lesson(lib):
    """Each shipped cell's curve at default initialisation: H=64, X=32,
    T=100, B=16, 3 seeds, the loss on the last step."""
    return {name: tool.gradient_norms(lib[name], steps=100, hidden=64, input=32)
            for name in ("RNN", "GRU", "LSTM")}


@pytest.fixture
def diagnose(run_cli, monkeypatch):
    """`seqdsl diagnose ...` in-process, registered for the test if the CLI
    does not list it yet: (exit status, stdout, stderr)."""
    if diagnose_cli not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + (diagnose_cli,))
    return lambda *args: run_cli("diagnose", *args)


# ---- the lesson in numbers -------------------------------------------------------------

def test_rnn_gradient_vanishes_gru_and_lstm_keep_it(lesson):
    ratio = {name: norms[0] / norms[-1] for name, norms in lesson.items()}
    assert all(norms.shape == (100,) and norms[-1] == pytest.approx(1.0)
               for norms in lesson.values())  # ∂L/∂h<T> is the unit vector r
    assert ratio["RNN"] <= 1e-10  # measured 4.0e-34
    assert ratio["GRU"] >= 1e4 * ratio["RNN"]  # 9.4e-23
    assert ratio["LSTM"] >= 1e4 * ratio["RNN"]  # 3.3e-10
    # The RNN's falls off steadily, step by step, toward the early steps.
    rnn = lesson["RNN"]
    assert (np.diff(np.log(rnn[::10])) > 0).all()


def test_large_recurrent_weights_explode_and_clipping_bounds_them(lib, lesson):
    rnn = lib["RNN"]
    exploding = tool.gradient_norms(rnn, scale=3)
    # ×3 turns 34 orders of magnitude of loss into growth toward early steps:
    # measured 14× at t = 1 (tanh's saturation keeps each step's gain near 1.03).
    assert exploding[0] >= 10 * exploding[-1]
    assert exploding[0] > exploding[49] > exploding[-1]
    assert exploding[0] >= 1e30 * lesson["RNN"][0]
    assert tool.gradient_norms(rnn, scale=5)[0] >= 1e10  # measured 1.7e11
    for scale, clip in ((3, 1.0), (5, 1.0), (5, 0.1)):
        clipped = tool.gradient_norms(rnn, scale=scale, clip_norm=clip)
        assert clipped.max() <= clip * (1 + 1e-12)
        assert clipped[0] >= 0.5 * clip  # clipped, not vanished
    # A clip above every norm leaves the curve as it was.
    np.testing.assert_allclose(tool.gradient_norms(rnn, clip_norm=10), lesson["RNN"],
                               rtol=1e-12)


# ---- exactness --------------------------------------------------------------------------

def _tiny_problem(lib, name="LSTM", steps=6, batch=2):
    cell = seqdsl.instantiate(lib[name], hidden=3, input=2, dtype=np.float64)
    params, x, r = tool.random_problem(cell, steps, batch, seed=1)
    return cell, tool.scale_columns(params, tool.recurrent_columns(cell), 2.0), x, r


def _loss_from(cell, params, x, r, t, states):
    """L = Σ_b r · h<T>, running from the states at step t."""
    final = cell.forward(params, {n: v[t:] for n, v in x.items()}, state0=states).final
    return float((final[cell.output] @ r).sum())


def test_state_gradient_matches_finite_differences(lib):
    cell, params, x, r = _tiny_problem(lib)
    t = 2
    states = cell.forward(params, {n: v[:t] for n, v in x.items()}).final
    grads = tool.state_gradients(cell, params, x, r)
    h = 1e-6
    for name in cell.state_sizes:  # a, and c held fixed; then c
        numeric = np.zeros_like(states[name])
        for i in np.ndindex(numeric.shape):
            up, down = ({k: v.copy() for k, v in states.items()} for _ in range(2))
            up[name][i] += h
            down[name][i] -= h
            numeric[i] = (_loss_from(cell, params, x, r, t, up)
                          - _loss_from(cell, params, x, r, t, down)) / (2 * h)
        np.testing.assert_allclose(grads[name][t - 1], numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_stepwise_backward_equals_the_direct_definition(lib, name):
    """For every t: forward from step t with the states at t as state0,
    backward with the loss's gradient on the last step; state0's gradient."""
    cell, params, x, r = _tiny_problem(lib, name)
    T, B = next(iter(x.values())).shape[:2]
    grads = tool.state_gradients(cell, params, x, r)
    for t in range(1, T + 1):
        states = cell.forward(params, {n: v[:t] for n, v in x.items()}).final
        result = cell.forward(params, {n: v[t:] for n, v in x.items()}, state0=states) \
            if t < T else None
        for n in cell.state_sizes:
            if result is None:  # t = T: the loss's own gradient
                want = np.outer(np.ones(B), r) if n == cell.output else np.zeros((B, 3))
            else:
                d_final = {cell.output: np.outer(np.ones(B), r)}
                want = cell.backward(params, result, d_final=d_final).state0[n]
            np.testing.assert_allclose(grads[n][t - 1], want, rtol=1e-12, atol=1e-15)


def test_numba_backend_gives_the_same_curve(lib):
    kw = dict(steps=12, hidden=5, input=4, batch=3, seeds=2, scale=2.0)
    np.testing.assert_allclose(tool.gradient_norms(lib["RNN"], backend="numba", **kw),
                               tool.gradient_norms(lib["RNN"], **kw), rtol=1e-10)


# ---- the recurrent columns --scale multiplies ---------------------------------------------

def test_recurrent_columns_of_the_shipped_cells(lib):
    def columns(name):
        cell = seqdsl.instantiate(lib[name], hidden=4, input=3)
        return {w: m.astype(int).tolist() for w, m in tool.recurrent_columns(cell).items()}
    first_h = [1, 1, 1, 1, 0, 0, 0]
    assert columns("RNN") == {"Waa": [1, 1, 1, 1]}  # not Wax
    assert columns("GRU") == {"Wr": first_h, "Wu": first_h, "Wc": first_h}  # Wc[Γr * c, x]
    assert columns("LSTM") == {w: first_h for w in ("Wu", "Wf", "Wo", "Wc")}
    assert columns("TorchGRU") == {w: [1, 1, 1, 1] for w in ("Ur", "Uz", "Un")}


def test_recurrent_columns_follow_values_made_from_states():
    ct = seqdsl.loads("cell C {\n    input x\n    state h : H\n    v = [tanh(h), x]\n"
                      "    g = softmax(h)\n    m = tanh(W1 v) * h\n"
                      "    h<t> = tanh(W2 @ m + U[g, x] + Q[x, h * 2] + Wx x + b)\n}\n").cell("C")
    cell = seqdsl.instantiate(ct, hidden=2, input=3)
    got = {w: m.astype(int).tolist() for w, m in tool.recurrent_columns(cell).items()}
    assert got == {"W1": [1, 1, 0, 0, 0], "W2": [1, 1], "U": [1, 1, 0, 0, 0],
                   "Q": [0, 0, 0, 1, 1]}  # Wx reads only x


def test_scale_columns_scales_only_those_and_copies(lib):
    cell = seqdsl.instantiate(lib["GRU"], hidden=4, input=3)
    params = cell.init_params(0)
    before = {k: v.copy() for k, v in params.items()}
    scaled = tool.scale_columns(params, tool.recurrent_columns(cell), 3.0)
    for k, v in params.items():
        np.testing.assert_array_equal(v, before[k])  # the caller's arrays are untouched
    np.testing.assert_array_equal(scaled["Wc"][:, :4], 3 * params["Wc"][:, :4])
    np.testing.assert_array_equal(scaled["Wc"][:, 4:], params["Wc"][:, 4:])
    np.testing.assert_array_equal(scaled["bc"], params["bc"])


def test_api_errors(lib):
    cell = seqdsl.instantiate(lib["LSTM"], hidden=2, input=2)
    with pytest.raises(SeqError, match="no state `h`"):
        tool.measure(cell, steps=3, state="h")
    with pytest.raises(SeqError, match="clip_norm"):
        tool.measure(cell, steps=3, clip_norm=0)
    assert tool.measure(cell, steps=3, batch=2, seeds=1, state="c").shape == (3,)


# ---- the command --------------------------------------------------------------------------

def test_cli_table_and_plot(diagnose, tmp_path):
    plot = tmp_path / "grads.png"
    code, out, err = diagnose(f"{LIB}/rnn.seq", "--compare", "GRU", "--compare",
                              f"{LIB}/lstm.seq:LSTM", "-o", plot)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert "  RNN   a      H=64, X=32  Waa 64/64" in lines
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["t"])
    assert lines[head].split() == ["t", "RNN", "‖∂L/∂a<t>‖", "ratio", "GRU",
                                   "‖∂L/∂c<t>‖", "ratio", "LSTM", "‖∂L/∂a<t>‖", "ratio"]
    rows = [line.split() for line in lines[head + 1:-1]]
    assert [r[0] for r in rows] == ["1", "2", "5", "10", "20", "50", "100"]
    rnn, gru, lstm = (float(rows[0][i]) for i in (2, 4, 6))
    assert rnn < 1e-10 and gru > 1e4 * rnn and lstm > 1e4 * rnn
    assert rows[-1][1:] == ["1.00e+00"] * 6
    assert lines[-1] == f"plot: {plot}"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_scale_clip_and_every_step(diagnose):
    code, out, _ = diagnose(f"{LIB}/rnn.seq", "--scale", "3", "--clip-norm", "0.5",
                            "--steps", "30", "--all")
    assert code == 0
    assert "recurrent columns (×3)" in out and "clipped to norm 0.5" in out
    head = out.splitlines().index(next(line for line in out.splitlines()
                                       if line.split()[:1] == ["t"]))
    rows = [line.split() for line in out.splitlines()[head + 1:]]
    assert [int(r[0]) for r in rows] == list(range(1, 31))
    assert max(float(r[1]) for r in rows) <= 0.5


@pytest.mark.parametrize("args, message", [
    (["--compare", "x.seq:"], "--compare 'x.seq:': expected FILE:CELL"),
    (["--compare", ":GRU"], "--compare ':GRU': expected FILE:CELL"),
    (["--compare", "Nope"], "--compare 'Nope': no library cell of that name"),
    (["--compare", "missing.seq:GRU"], "missing.seq"),
    (["--cell", "Nope"], "has no cell `Nope`"),
    (["-o", "plot.jpeg"], "-o plot.jpeg: give a file name ending in .png, .svg, .pdf"),
    (["-o", "no/such/dir/plot.png"], "no such directory"),
])
def test_cli_errors_are_one_line(diagnose, args, message):
    code, out, err = diagnose(f"{LIB}/rnn.seq", "--steps", "3", *args)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and message in err.splitlines()[0]
    assert "Traceback" not in err and len([line for line in err.splitlines()
                                           if line.startswith("error")]) == 1


def test_cli_network_file_needs_a_cell(diagnose):
    code, _, err = diagnose(f"{LIB}/tagger.seq", "--steps", "3")
    assert code == 1 and "defines no cell" in err
    code, out, _ = diagnose(f"{LIB}/tagger.seq", "--cell", "LSTM", "--steps", "3",
                            "--hidden", "4", "--input", "3")
    assert code == 0 and "  LSTM  a      H=4, X=3" in out


def test_a_trained_networks_cell_is_measured_with_its_trained_weights(tmp_path):
    """--checkpoint DIR: the first layer's cell of a network `seqdsl train`
    wrote, with the weights it learned (a run of a few steps is enough to
    tell them from a fresh initialisation)."""
    from seqdsl.cli import main
    from seqdsl.tools.diagnose import measure, trained_cell
    from seqdsl.train.checkpoint import load_checkpoint
    spec, data, out = tmp_path / "lm.seq", tmp_path / "lines.txt", tmp_path / "run"
    spec.write_text("network LM {\n    input x : tokens\n    a = LSTM(H=6)(x)\n"
                    "    output ŷ<t> = softmax(Wy a<t> + by)\n}\n", "utf-8")
    data.write_text("abc\nbcd\ncab\ndab\n" * 5, "utf-8")
    assert main(["train", str(spec), "--data", str(data), "--out", str(out), "--max-steps", "3",
                 "--backend", "numpy", "--no-progress", "--lr", "0.1"]) == 0
    cell, params = trained_cell(out)
    saved = load_checkpoint(out, "best").params  # the best, where there is one
    assert set(params) == set(cell.param_shapes)
    assert np.array_equal(params["Wu"], saved["a.Wu"].astype(np.float64))
    fresh = measure(cell, steps=10, batch=4, seeds=1)
    trained = measure(cell, steps=10, batch=4, seeds=1, params=params)
    assert trained.shape == (10,) and trained[-1] == pytest.approx(1.0)
    assert not np.allclose(fresh, trained)
    with pytest.raises(SeqError, match="has no layer `b`"):
        trained_cell(out, "b")
