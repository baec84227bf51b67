"""The NumPy reference runtime: sequences, lengths, initial states, dtypes."""
import numpy as np
import pytest

from seqdsl.errors import SeqError
from seqdsl.spec import instantiate, library_cells, loads


def lstm(dtype=np.float64, hidden=4, input=3):
    return instantiate(library_cells()["LSTM"], hidden, input, dtype=dtype)


def test_lstm_step_matches_the_equations():
    cell = lstm()
    rng = np.random.default_rng(0)
    p = {k: rng.normal(size=v.shape) for k, v in cell.init_params(1).items()}
    x = rng.normal(size=(1, 2, 3))
    a0, c0 = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    r = cell.forward(p, x, state0={"a": a0, "c": c0})
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    ax = np.concatenate([a0, x[0]], axis=1)
    gu, gf, go = (sig(ax @ p[f"W{g}"].T + p[f"b{g}"]) for g in "ufo")
    c = gu * np.tanh(ax @ p["Wc"].T + p["bc"]) + gf * c0
    np.testing.assert_allclose(r.final["c"], c, rtol=1e-12)
    np.testing.assert_allclose(r.outputs[0], go * np.tanh(c), rtol=1e-12)


def test_variable_lengths_freeze_state_zero_outputs_and_ignore_padding():
    cell = lstm()
    p = cell.init_params(3)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3, 3))
    lengths = np.array([6, 2, 0])
    r = cell.forward(p, x, lengths)
    # Each example alone, cut to its own length, gives the same final state.
    for b, n in enumerate(lengths):
        alone = cell.forward(p, x[:n, b:b + 1]) if n else None
        want = alone.final["a"][0] if n else np.zeros(4)
        np.testing.assert_allclose(r.final["a"][b], want, rtol=1e-13)
        assert not r.outputs[n:, b].any()
    # Padding can hold anything, NaN included: results and gradients don't change.
    x_nan = x.copy()
    x_nan[2:, 1] = np.nan
    x_nan[:, 2] = np.inf
    r2 = cell.forward(p, x_nan, lengths)
    np.testing.assert_array_equal(r.outputs, r2.outputs)
    g = cell.backward(p, r, np.ones_like(r.outputs))
    g2 = cell.backward(p, r2, np.ones_like(r2.outputs))
    for k in g.params:
        np.testing.assert_array_equal(g.params[k], g2.params[k])
    assert not g.inputs["x"][2:, 1].any() and not g.inputs["x"][:, 2].any()


def test_initial_state_and_its_gradient_pass_through_empty_sequences():
    cell = lstm()
    p = cell.init_params(0)
    s0 = {"a": np.full((2, 4), 0.3), "c": np.full((2, 4), -0.2)}
    x = np.zeros((3, 2, 3))
    r = cell.forward(p, x, lengths=[3, 0], state0=s0)
    np.testing.assert_array_equal(r.final["a"][1], s0["a"][1])
    g = cell.backward(p, r, d_final={"a": np.ones((2, 4)), "c": np.ones((2, 4))})
    np.testing.assert_array_equal(g.state0["a"][1], np.ones(4))  # untouched by any step
    assert not np.allclose(g.state0["a"][0], 1)


@pytest.mark.parametrize("T,B", [(1, 1), (1, 4), (5, 1)])
def test_tiny_shapes(T, B):
    cell = lstm()
    r = cell.forward(cell.init_params(), np.ones((T, B, 3)))
    assert r.outputs.shape == (T, B, 4)
    g = cell.backward(cell.init_params(), r, np.ones((T, B, 4)))
    assert g.inputs["x"].shape == (T, B, 3) and g.state0["c"].shape == (B, 4)


def test_float32_stays_float32_and_agrees_with_float64():
    c32, c64 = lstm(np.float32), lstm(np.float64)
    p = c64.init_params(5)
    x = np.random.default_rng(2).normal(size=(7, 3, 3))
    r32, r64 = c32.forward(p, x), c64.forward(p, x)
    assert r32.outputs.dtype == np.float32 and r32.final["c"].dtype == np.float32
    np.testing.assert_allclose(r32.outputs, r64.outputs, rtol=1e-4, atol=1e-6)
    g32 = c32.backward(p, r32, np.ones_like(r32.outputs))
    g64 = c64.backward(p, r64, np.ones_like(r64.outputs))
    assert all(v.dtype == np.float32 for v in g32.params.values())
    for k in g64.params:
        np.testing.assert_allclose(g32.params[k], g64.params[k], rtol=1e-3, atol=1e-5)


def test_initialisation_follows_the_spec():
    cell = lstm(hidden=8, input=5)
    p = cell.init_params(seed=4)
    assert p["Wu"].shape == (8, 13) and np.abs(p["Wu"]).max() <= 1 / np.sqrt(13)
    assert (p["bf"] == 1).all() and (p["bu"] == 0).all()
    np.testing.assert_array_equal(p["Wu"], cell.init_params(seed=4)["Wu"])
    spec = loads("cell C {\n input x\n state h : H\n param U ~ orthogonal\n param W ~ normal(0.01)\n"
                 " param b ~ uniform(0.5)\n h<t> = tanh(U h + W x + b)\n}\n")
    c = instantiate(spec.cell(), 6, 2)
    q = c.init_params(0)
    np.testing.assert_allclose(q["U"] @ q["U"].T, np.eye(6), atol=1e-12)
    assert abs(q["W"].std() - 0.01) < 0.005 and np.abs(q["b"]).max() <= 0.5


def test_bad_runtime_arguments_are_explained():
    cell = lstm()
    with pytest.raises(SeqError, match=r"x: expected shape \(2, 3, 3\) \(T, B, size\)"):
        cell.forward(cell.init_params(), np.ones((2, 3, 5)))
    with pytest.raises(SeqError, match="lengths: expected 3 integers in 0..2"):
        cell.forward(cell.init_params(), np.ones((2, 3, 3)), lengths=[1, 2, 3])


def test_value_and_grad_is_forward_then_backward():
    cell = lstm()
    p = cell.init_params(1)
    x = np.random.default_rng(3).normal(size=(4, 2, 3))

    def loss(outputs, final):
        return 0.5 * (outputs ** 2).sum(), outputs, None
    value, g = cell.value_and_grad(p, x, loss, lengths=[4, 2])
    r = cell.forward(p, x, [4, 2])
    assert value == pytest.approx(0.5 * (r.outputs ** 2).sum())
    np.testing.assert_array_equal(g.params["Wo"], cell.backward(p, r, r.outputs).params["Wo"])
