"""Backprop-through-time derived by autodiff matches central finite
differences (float64), for the shipped cells and for generated ones."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellgen import cells
from seqdsl.gradcheck import TOLERANCE, gradcheck, random_problem
from seqdsl.spec import instantiate, library_cells, loads

SHIPPED = sorted(library_cells())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cells_gradcheck(name):
    cell = instantiate(library_cells()[name], hidden=4, input=3)
    errors = gradcheck(cell, random_problem(cell, steps=5, batch=3, seed=7))
    assert set(errors) >= set(cell.param_shapes) | {"x"} | {f"{s}<0>" for s in cell.state_sizes}
    assert max(errors.values()) < TOLERANCE, errors


@settings(max_examples=200, deadline=None)
@given(src=cells(), seed=st.integers(0, 2**16))
def test_generated_cells_gradcheck(src, seed):
    cell = instantiate(loads(src, "generated.seq").cell(), hidden=3, input=2)
    pb = random_problem(cell, steps=4, batch=3, seed=seed)
    assert len(set(pb.lengths)) >= 1 and pb.lengths[0] == 4
    errors = gradcheck(cell, pb)
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"{worst}: {errors[worst]:.2e}\n{src}"


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The check can fail: break one gradient rule and it must notice."""
    from seqdsl import autodiff
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
