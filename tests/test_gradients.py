"""Backprop-through-time derived by autodiff matches central finite
differences (float64 and float32), for the shipped cells and for generated
ones; and the check fails on what is not a match (NaN, inf)."""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cellgen import cells, sizes_for
from seqdsl.tools.gradcheck import (TOLERANCE, derivative, gradcheck, random_problem, step,
                                    tolerance)
from seqdsl.spec import instantiate, library_cells, loads

SHIPPED = sorted(library_cells())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cells_gradcheck(name):
    cell = instantiate(library_cells()[name], hidden=4, input=3)
    errors = gradcheck(cell, random_problem(cell, steps=5, batch=3, seed=7))
    assert set(errors) >= set(cell.param_shapes) | {"x"} | {f"{s}<0>" for s in cell.state_sizes}
    assert max(errors.values()) < TOLERANCE, errors


# c grows to 6e4 in four steps while y depends on W4 alone: differenced as
# whole losses, W4's central differences carried 1e-6 of c's rounding.
A_STATE_THAT_GROWS = ("cell Gen {\n    input x\n    state h, c : H\n"
                      "    g1 = (W1[h, h] + c)\n    h<t> = (2 * W3ᵀ h)\n"
                      "    c<t> = (g1 * g1)\n    output y<t> = softmax(W4 h<t> + b0)\n}\n")


# Steep where the problem puts them (a saturating tanh; a layernorm of a
# nearly constant vector): plain central differences at the step erred by
# 1.4e-6 and 4.4e-6 there, by truncation (smaller with a smaller step).
A_STEEP_TANH = ("cell Gen {\n    input x\n    state h : H\n    g0 = h\n"
                "    g1 = (3 * (-(h * W0[h])))\n    h<t> = tanh(W1[x, g1] / 0.5)\n"
                "    output h\n}\n")
A_STEEP_LAYERNORM = ("cell Gen {\n    input x\n    state h : H\n"
                     "    g0 = ((b0 * (W0 - W0ᵀ) h + b1) + h)\n"
                     "    h<t> = σ(W2[h] + b2) * (b1 * layernorm((1 - W1[h, h])) + b1)"
                     " + (1 - σ(W2[h] + b2)) * h\n    output h\n}\n")


@settings(max_examples=200, deadline=None)
@given(src=cells(), seed=st.integers(0, 2**16))
@example(src=A_STATE_THAT_GROWS, seed=0)
@example(src=A_STEEP_TANH, seed=181)
@example(src=A_STEEP_LAYERNORM, seed=5690)
def test_generated_cells_gradcheck(src, seed):
    ct = loads(src, "generated.seq").cell()
    cell = instantiate(ct, hidden=3, input=2, sizes=sizes_for(ct))
    pb = random_problem(cell, steps=4, batch=3, seed=seed)
    errors = gradcheck(cell, pb)
    assert set(errors) == (set(cell.param_shapes) | set(cell.input_sizes)
                           | {f"{s}<0>" for s in cell.state_sizes})
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"{worst}: {errors[worst]:.2e}\n{src}"


@pytest.mark.parametrize("k", [200, 500, 1000])
def test_extrapolated_differences_cancel_the_step_squared_error(k):
    """tanh(k·v) at v = 1/k, steeper with k: central differences at the step
    err by up to 9e-6 (truncation, ∝ k²h²); extrapolated over h and 2h, by
    at most 1e-9."""
    f = lambda v: np.tanh(k * v)  # noqa: E731
    v = 1 / k
    exact = k * (1 - np.tanh(k * v) ** 2)
    h = step(np.float64)
    plain = (f(v + h) - f(v - h)) / (2 * h)
    got = derivative(lambda up, down: f(up) - f(down), v, np.float64)
    assert abs(plain - exact) / exact > 3e-7
    assert abs(got - exact) / exact < 1e-9


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The check can fail: break one gradient rule and it must notice."""
    from seqdsl.ir import autodiff
    cell_type = library_cells()["GRU"]
    broken = dict(autodiff.RULES)
    broken["sigmoid"] = lambda b, e, g: [b.elementwise("mul", g, e.out)]  # σ' is not σ
    monkeypatch.setattr(autodiff, "RULES", broken)
    cell = instantiate(cell_type, hidden=3, input=2)
    errors = gradcheck(cell, random_problem(cell, seed=1))
    assert errors["Wu"] > 1e-2 and errors["Wr"] > 1e-2


def test_lengths_include_empty_and_full_sequences():
    cell = instantiate(library_cells()["RNN"], hidden=2, input=2)
    seen = set()
    for seed in range(20):
        seen |= set(random_problem(cell, steps=5, batch=4, seed=seed).lengths.tolist())
    assert {0, 5} <= seen


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cells_gradcheck_in_float32(name):
    """The step suits the dtype: a float64-sized step (1e-6) is below
    float32 resolution and failed every cell."""
    cell = instantiate(library_cells()[name], hidden=4, input=3, dtype=np.float32)
    errors = gradcheck(cell, random_problem(cell, steps=5, batch=3, seed=7))
    assert max(errors.values()) < tolerance(np.float32), errors


def test_step_and_tolerance_per_dtype():
    assert step(np.float64) == pytest.approx(6.06e-6, rel=1e-2)
    assert step(np.float32) == pytest.approx(4.92e-3, rel=1e-2)
    assert tolerance(np.float64) == TOLERANCE == 1e-6 and tolerance(np.float32) == 1e-2


NAN_CELL = "cell Broken {\n    input x\n    state h : H\n    h<t> = log(-exp(W[h, x]))\n}\n"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_gradcheck_fails_when_gradient_and_differences_are_nan():
    """NaN in both the derived gradient and the differences is no match."""
    cell = instantiate(loads(NAN_CELL, "nan.seq").cell(), hidden=2, input=2)
    pb = random_problem(cell, steps=3, batch=2)
    r = cell.forward(pb.params, pb.x, pb.lengths, pb.state0)
    assert np.isnan(cell.backward(pb.params, r, pb.w_out, pb.w_final).params["W"]).all()
    errors = gradcheck(cell, pb)
    assert errors == {"W": np.inf, "x": np.inf, "h<0>": np.inf}


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_gradcheck_fails_on_a_non_finite_derived_gradient(monkeypatch, bad):
    cell = instantiate(library_cells()["RNN"], hidden=2, input=2)
    pb = random_problem(cell, steps=3, batch=2)
    backward = cell.backward

    def spoiled(*args, **kwargs):
        g = backward(*args, **kwargs)
        g.params["Waa"][0, 0] = bad
        return g
    monkeypatch.setattr(cell, "backward", spoiled)
    errors = gradcheck(cell, pb)
    assert errors["Waa"] == np.inf and errors["Wax"] < TOLERANCE


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_gradcheck_fails_on_a_non_finite_loss():
    """A loss that is not finite fails every entry."""
    cell = instantiate(library_cells()["RNN"], hidden=2, input=2)
    pb = random_problem(cell, steps=3, batch=2)
    pb.w_out[0, 0, 0] = np.inf
    errors = gradcheck(cell, pb)
    assert set(errors.values()) == {np.inf}
