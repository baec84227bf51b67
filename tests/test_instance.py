"""The backends share one instance base and never inherit from each other: what
they accept is the base's, and a Result of one backend is refused by the other."""
import os
import subprocess
import sys

import numpy as np
import pytest

import seqdsl
from seqdsl.errors import SeqError
from seqdsl.runtime import instance
from seqdsl.runtime.instance import CellInstance

RNN = "cell RNN {\n input x\n state h : H\n h<t> = tanh(W x + U h)\n}"


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """The RNN at H=3, X=2, float64, on each backend (one small compile)."""
    old = os.environ.get("SEQDSL_CACHE_DIR")
    os.environ["SEQDSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    ct = seqdsl.loads(RNN).cell()
    yield {b: seqdsl.instantiate(ct, 3, 2, backend=b) for b in ("numpy", "numba")}
    if old is None:
        del os.environ["SEQDSL_CACHE_DIR"]
    else:
        os.environ["SEQDSL_CACHE_DIR"] = old


def backend_classes():
    from seqdsl.runtime.numba.runtime import CompiledCell
    from seqdsl.runtime.numpy import Cell, NumpyCell
    assert Cell is NumpyCell
    return NumpyCell, CompiledCell


def test_both_backends_derive_from_the_base_and_neither_from_the_other():
    reference, compiled = backend_classes()
    assert issubclass(reference, CellInstance) and issubclass(compiled, CellInstance)
    assert not issubclass(compiled, reference)
    assert not issubclass(reference, compiled)


def test_the_base_runs_nothing_itself():
    ct = seqdsl.loads(RNN).cell()
    with pytest.raises(TypeError, match="abstract"):
        CellInstance(ct, {"H": 3, "X": 2})


def test_the_names_the_reference_runtime_always_offered_still_import():
    from seqdsl.runtime import numpy as reference
    for name in ("Origin", "Trace", "Result", "Grads", "UnknownSizeWarning", "bind_sizes"):
        assert getattr(reference, name) is getattr(instance, name)


@pytest.mark.parametrize("made,runs", [("numpy", "numba"), ("numba", "numpy")])
def test_a_result_of_one_backend_is_refused_by_the_other(cells, made, runs):
    p = cells[made].init_params(1)
    x = np.random.default_rng(0).normal(size=(4, 2, 2))
    r = cells[made].forward(p, x)
    assert r.trace.origin.backend == made
    with pytest.raises(SeqError) as e:
        cells[runs].backward(p, r, np.ones((4, 2, 3)))
    assert e.value.message == (
        f"result: made by cell RNN (H=3, X=2, float64) on the {made} backend; "
        f"this is cell RNN (H=3, X=2, float64) on the {runs} backend")
    assert "each backend keeps its own trace" in e.value.hint
    g = cells[made].backward(p, r, np.ones((4, 2, 3)))  # its own backend takes it
    assert set(g.params) == {"W", "U"}


def test_both_backends_agree_through_the_shared_value_and_grad(cells):
    p = cells["numpy"].init_params(1)
    x = np.random.default_rng(0).normal(size=(4, 2, 2))

    def loss(outputs, final):
        return float((outputs ** 2).sum()), 2 * outputs, None
    (v0, g0), (v1, g1) = (cells[b].value_and_grad(p, x, loss, [4, 2]) for b in ("numpy", "numba"))
    assert np.isclose(v0, v1)
    for k in g0.params:
        np.testing.assert_allclose(g0.params[k], g1.params[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g0.inputs["x"], g1.inputs["x"], rtol=1e-10, atol=1e-12)


def test_the_base_loads_no_numba():
    code = ("import seqdsl.runtime.instance, seqdsl.runtime.numpy, sys; "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
