"""Every array is checked at the API boundary, on both backends, with one
SeqError naming the argument and the shapes and dtypes expected and given;
empty batches run; runs too large for the machine are refused up front;
importing seqdsl changes nothing in the process."""
import os
import re
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

import seqdsl
from seqdsl.runtime import validate
from seqdsl.errors import SeqError
from seqdsl.spec import instantiate, library_cells

LSTM = library_cells()["LSTM"]
BACKENDS = ["numpy", "numba"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    old = os.environ.get("SEQDSL_CACHE_DIR")
    os.environ["SEQDSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield os.environ["SEQDSL_CACHE_DIR"]
    if old is None:
        del os.environ["SEQDSL_CACHE_DIR"]
    else:
        os.environ["SEQDSL_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def cells(cache_dir):
    """The LSTM at H=4, X=3, float64, on each backend (one compile)."""
    return {"numpy": instantiate(LSTM, 4, 3), "numba": instantiate(LSTM, 4, 3, backend="numba")}


def problem(T=5, B=3, seed=0):
    rng = np.random.default_rng(seed)
    p = instantiate(LSTM, 4, 3).init_params(1)
    p = {k: v + rng.normal(0, 0.1, v.shape) for k, v in p.items()}
    return p, rng.normal(size=(T, B, 3))


def error_of(call) -> str:
    with pytest.raises(SeqError) as e:
        call()
    return str(e.value)


# ---- parameters ----------------------------------------------------------------------

def _bad_params(p):
    return {
        "weight too small": ({**p, "Wu": p["Wu"][:, :5]},
                             r"params\['Wu'\]: expected shape \(4, 7\) \(H×\(H\+X\)\), float64; "
                             r"given shape \(4, 5\), float64"),
        "weight transposed": ({**p, "Wu": p["Wu"].T.copy()}, r"given shape \(7, 4\).*transposed"),
        "weight too large": ({**p, "Wu": np.pad(p["Wu"], ((0, 2), (0, 2)))},
                             r"given shape \(6, 9\)"),
        "bias too short": ({**p, "bu": p["bu"][:2]},
                           r"params\['bu'\]: expected shape \(4,\) \(H\), float64; "
                           r"given shape \(2,\)"),
        "bias a scalar": ({**p, "bu": 0.3}, r"params\['bu'\]: .*given shape \(\), float64"),
        "missing": ({k: v for k, v in p.items() if k not in ("bu", "Wf")},
                    r"params: missing bu, Wf.*hint: cell LSTM's parameters: Wu, bu, Wf"),
        "extra": ({**p, "Wz": p["Wu"]}, r"params: unknown 'Wz'"),
        "booleans": ({**p, "bu": np.ones(4, bool)}, r"params\['bu'\]: .*given shape \(4,\), bool"),
        "complex": ({**p, "bu": np.ones(4, complex)}, r"given shape \(4,\), complex128"),
        "strings": ({**p, "bu": "zeros"}, r"params\['bu'\]: .*given str"),
        "not a dict": (list(p.values()), r"params: expected a dict of arrays by name, given list"),
    }


@pytest.mark.parametrize("case", list(_bad_params(problem()[0])))
def test_a_malformed_parameter_is_refused_alike_on_both_backends(cells, case):
    # Before: the numba backend ran on these, reading out of bounds or truncating.
    p, x = problem()
    params, message = _bad_params(p)[case]
    texts = {b: error_of(lambda: cells[b].forward(params, x)) for b in BACKENDS}
    assert texts["numpy"] == texts["numba"]
    assert re.search(message, texts["numba"], re.S), texts["numba"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_checks_its_parameters_and_gradients(cells, backend):
    cell = cells[backend]
    p, x = problem()
    r = cell.forward(p, x)
    narrow = {**p, "Wf": p["Wf"][:, :4].copy()}
    assert "params['Wf']: expected shape (4, 7)" in error_of(lambda: cell.backward(narrow, r))
    for dout in (np.ones((5, 3, 6)), np.ones((7, 3, 4)), np.ones((5, 4, 4)), np.ones((5, 3))):
        text = error_of(lambda: cell.backward(p, r, dout))
        assert (f"d_outputs: expected shape (5, 3, 4) (T, B, output size), float64; "
                f"given shape {dout.shape}") in text
    assert "d_final: unknown state 'h'" in error_of(
        lambda: cell.backward(p, r, d_final={"h": np.ones((3, 4))}))
    assert "d_final['c']: expected shape (3, 4) (B, size)" in error_of(
        lambda: cell.backward(p, r, d_final={"c": np.ones((3, 5))}))
    assert "d_final: this cell has states a, c, given one array" in error_of(
        lambda: cell.backward(p, r, d_final=np.ones((3, 4))))


@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_lengths_and_initial_states_are_checked(cells, backend):
    cell = cells[backend]
    p, x = problem()
    checks = [
        (lambda: cell.forward(p, x[..., :2]), "x: expected shape (5, 3, 3) (T, B, size)"),
        (lambda: cell.forward(p, x[0]), "x: expected shape (T, B, 3), float64; given shape (3, 3)"),
        (lambda: cell.forward(p, {"y": x}), "x: missing x; unknown 'y'"),
        (lambda: cell.forward(p, x, lengths=[2.5, 1, 1]), "given [2.5, 1.0, 1.0] (float64)"),
        (lambda: cell.forward(p, x, lengths=[True, True, False]), "lengths: expected 3 integers"),
        (lambda: cell.forward(p, x, lengths=[5, 1]), "lengths: expected 3 integers in 0..5"),
        (lambda: cell.forward(p, x, lengths=[5, -1, 1]), "given [5, -1, 1]"),
        (lambda: cell.forward(p, x, lengths=[6, 1, 1]), "given [6, 1, 1]"),
        (lambda: cell.forward(p, x, state0={"a": np.ones((3, 5))}),
         "state0['a']: expected shape (3, 4) (B, size), float64; given shape (3, 5)"),
        (lambda: cell.forward(p, x, state0={"h": np.ones((3, 4))}), "state0: unknown state 'h'"),
        (lambda: cell.forward(p, x, state0=np.ones((3, 4))), "this cell has states a, c"),
    ]
    for call, message in checks:
        assert message in error_of(call)


def test_a_cell_of_two_inputs_takes_them_by_name_with_one_t_and_b():
    ct = seqdsl.loads("cell Two {\n input x, y\n state h : H\n h<t> = tanh(W[h, x, y] + b)\n}\n")
    cell = instantiate(ct.cell(), 4, sizes={"X": 3, "Y": 2})
    p, x, y = cell.init_params(), np.ones((5, 2, 3)), np.ones((5, 2, 2))
    assert cell.forward(p, {"x": x, "y": y}).outputs.shape == (5, 2, 4)
    assert "x: this cell has 2 inputs, given one array (shape (5, 2, 3), float64)" in error_of(
        lambda: cell.forward(p, x))
    assert "x['y']: expected shape (5, 2, 2) (T, B of the first input, size)" in error_of(
        lambda: cell.forward(p, {"x": x, "y": y[:, :1]}))
    assert "hint: cell Two's inputs: x, y" in error_of(lambda: cell.forward(p, {"x": x}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_conversions_give_the_numbers_of_well_formed_arrays(cells, backend):
    cell = cells[backend]
    p, x = problem()
    want = cell.forward(p, x, lengths=[5, 2, 0])
    fortran = {k: np.asfortranarray(v) for k, v in p.items()}
    strided = {k: np.repeat(v, 2, axis=-1)[..., ::2] for k, v in p.items()}
    for q, xx, lengths in ((fortran, x, np.array([5, 2, 0], np.int32)),
                           (strided, np.asfortranarray(x), np.array([5.0, 2.0, 0.0])),
                           ({k: v.tolist() for k, v in p.items()}, x.tolist(), [5, 2, 0])):
        got = cell.forward(q, xx, lengths)
        np.testing.assert_array_equal(got.outputs, want.outputs)
        ones = np.ones((5, 3, 4))
        g, g_want = cell.backward(q, got, ones), cell.backward(p, want, ones)
        for k in g.params:
            np.testing.assert_array_equal(g.params[k], g_want.params[k])


def test_a_value_beyond_float32_is_refused_not_made_infinite():
    cell = instantiate(LSTM, 4, 3, dtype=np.float32)
    p, x = problem()
    x[1, 2, 0] = 1e300
    assert "x: value 1e+300 does not fit in float32" in error_of(lambda: cell.forward(p, x))


# ---- results -----------------------------------------------------------------------

def test_a_result_from_the_other_backend_is_refused(cells):
    p, x = problem()
    for made, runs in (("numpy", "numba"), ("numba", "numpy")):
        r = cells[made].forward(p, x)
        text = error_of(lambda: cells[runs].backward(p, r))
        assert (f"result: made by cell LSTM (H=4, X=3, float64) on the {made} backend; "
                f"this is cell LSTM (H=4, X=3, float64) on the {runs} backend") in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_result_of_another_cell_is_refused_and_one_of_a_twin_taken(cells, backend):
    p, x = problem()
    other = instantiate(LSTM, 5, 3, backend=backend)
    r = other.forward(other.init_params(), x)
    assert "result: made by cell LSTM (H=5, X=3, float64)" in error_of(
        lambda: cells[backend].backward(p, r))
    twin = instantiate(LSTM, 4, 3, backend=backend)
    r = twin.forward(p, x)
    g = cells[backend].backward(p, r, np.ones((5, 3, 4)))
    np.testing.assert_array_equal(g.params["Wu"],
                                  twin.backward(p, r, np.ones((5, 3, 4))).params["Wu"])
    assert "result: expected the Result of this cell's forward, given dict" in error_of(
        lambda: cells[backend].backward(p, {"outputs": r.outputs}))
    r.outputs = r.outputs[:, :2]
    assert ("result: its outputs or trace are not as its forward made them (expected outputs "
            "of shape (5, 3, 4), float64; given shape (5, 2, 4)") in error_of(
        lambda: cells[backend].backward(p, r))


# ---- empty batches ------------------------------------------------------------------

@pytest.mark.parametrize("T,B,lengths", [(5, 0, None), (0, 3, None), (4, 3, [0, 0, 0])])
def test_empty_batches_run_and_agree_on_both_backends(cells, T, B, lengths):
    # Before: B = 0 crashed the numba backend (min of an empty array).
    p, _ = problem()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(T, B, 3))
    s0 = {"a": rng.normal(size=(B, 4)), "c": rng.normal(size=(B, 4))}
    d_final = {"a": rng.normal(size=(B, 4)), "c": rng.normal(size=(B, 4))}
    got = {}
    for b in BACKENDS:
        r = cells[b].forward(p, x, lengths, s0)
        got[b] = (r, cells[b].backward(p, r, np.ones((T, B, 4)), d_final))
    for r, g in got.values():
        assert r.outputs.shape == (T, B, 4) and not r.outputs.any()
        np.testing.assert_array_equal(r.final["c"], s0["c"])
        assert all(not v.any() for v in g.params.values())
        assert g.inputs["x"].shape == (T, B, 3) and not g.inputs["x"].any()
        np.testing.assert_array_equal(g.state0["a"], d_final["a"])


# ---- memory -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,itemsize", [(np.float64, 8), (np.float32, 4)])
def test_sizes_beyond_the_machine_are_refused_with_the_figure(dtype, itemsize):
    # Before: NumPy allocated until it failed (298 GiB at H = 200000, in float64 for any cell).
    H = 1_000_000
    n = 4 * H * (H + 3) + 4 * H
    text = error_of(lambda: instantiate(LSTM, H, 3, dtype=dtype))
    assert (f"cell LSTM (H={H}, X=3, {np.dtype(dtype).name}): its parameters need about "
            f"{n * itemsize / 2**30:,.1f} GiB, more than the") in text
    assert "of memory available" in text and "hint: use smaller sizes" in text


def test_a_run_beyond_free_memory_is_refused_before_allocating(cells, monkeypatch):
    p, _ = problem()
    x = np.zeros((1000, 300, 3))
    monkeypatch.setattr(validate, "available_memory", lambda: 100 << 20)
    for b in BACKENDS:
        text = error_of(lambda: cells[b].forward(p, x))
        assert "a forward run over T=1000, B=300 needs about" in text
        assert "MiB, more than the 100.0 MiB of memory available" in text
    monkeypatch.undo()
    cell = instantiate(LSTM, 2048, 3)  # 128.2 MiB of parameters, and a block of draws
    monkeypatch.setattr(validate, "available_memory", lambda: 100 << 20)
    assert "its parameters need about 130.2 MiB, more than the 100.0 MiB" in error_of(
        cell.init_params)


def test_float32_parameters_are_made_in_float32():
    c32, c64 = instantiate(LSTM, 1024, 3, dtype=np.float32), instantiate(LSTM, 1024, 3)
    tracemalloc.start()
    p32 = c32.init_params(7)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    p64 = c64.init_params(7)
    nbytes = sum(v.nbytes for v in p32.values())
    assert all(v.dtype == np.float32 for v in p32.values())
    assert peak < 1.2 * nbytes  # before: a float64 copy of each weight, and its scaled copy
    for k in p64:
        np.testing.assert_array_equal(p32[k], p64[k].astype(np.float32))


# ---- sizes --------------------------------------------------------------------------

def test_size_errors_speak_the_api():
    text = error_of(lambda: instantiate(LSTM, hidden=4))
    assert "no size given for X" in text
    assert "hint: pass input=N (or sizes={'X': N}) to instantiate" in text
    assert "--" not in text
    assert instantiate(LSTM, np.int64(4), np.int32(3)).sizes == {"H": 4, "X": 3}
    assert "hidden: expected a positive integer, given True" in error_of(
        lambda: instantiate(LSTM, True, 3))
    assert "size H must be a positive integer, not 2.0" in error_of(
        lambda: instantiate(LSTM, sizes={"H": 2.0, "X": 3}))
    assert "dtype: expected a float dtype, given int32" in error_of(
        lambda: instantiate(LSTM, 4, 3, dtype=np.int32))
    assert "dtype: expected float32 or float64, given float16" in error_of(
        lambda: instantiate(LSTM, 4, 3, dtype=np.float16, backend="numba"))


# ---- warnings -----------------------------------------------------------------------

def test_large_inputs_give_ieee_values_without_runtime_warnings():
    src = "cell S {\n input x\n state h : H\n h<t> = tanh(log(1 + exp(W x)))\n}\n"
    cell = instantiate(seqdsl.loads(src).cell(), 2, 1)
    x = np.array([1e3, -1e3, 1e300]).reshape(3, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # before: overflow in exp, divide by zero in log
        r = cell.forward({"W": np.ones((2, 1))}, x)
        np.testing.assert_array_equal(r.outputs[:, 0, 0], [1.0, 0.0, 1.0])
        for dtype in (np.float32, np.float64):
            lstm = instantiate(LSTM, 4, 3, dtype=dtype)
            big = np.full((2, 2, 3), 1e30) * np.array([1, -1])[None, :, None]
            r = lstm.forward(lstm.init_params(), big)
            g = lstm.backward(lstm.init_params(), r, np.ones((2, 2, 4)))
            assert np.isfinite(r.outputs).all()
            assert all(np.isfinite(v).all() for v in g.params.values())


# ---- import -------------------------------------------------------------------------

def test_import_seqdsl_loads_no_numba():
    code = "import seqdsl, sys; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


SPY = """
import ctypes, sys
calls = []
real = ctypes.CDLL
class Libc:
    def mallopt(self, *args):
        calls.append(args)
ctypes.CDLL = lambda name, *a, **k: Libc() if "libc.so" in str(name) else real(name, *a, **k)
import numpy as np, seqdsl
from seqdsl.runtime.numba import runtime
from seqdsl.spec import library_cells
cell = seqdsl.instantiate(library_cells()["LSTM"], 4, 3, backend="numba")
print(runtime._malloc_tuned, len(calls))
r = cell.forward(cell.init_params(), np.ones((2, 1, 3)))
cell.backward(cell.init_params(), r)
print(runtime._malloc_tuned, len(calls), calls[0])
"""


def test_malloc_is_tuned_when_compiled_code_first_runs_not_on_import(cells, cache_dir):
    # Before: importing seqdsl.runtime.numba.runtime called mallopt.
    env = {k: v for k, v in os.environ.items() if k != "SEQDSL_SYSTEM_MALLOC"}
    out = subprocess.run([sys.executable, "-c", SPY], capture_output=True, text=True,
                         env={**env, "SEQDSL_CACHE_DIR": cache_dir}, check=True).stdout
    before, after = out.strip().splitlines()
    assert before == "False 0"
    if sys.platform.startswith("linux"):
        assert after == f"True 3 (-3, {32 << 20})"


def test_a_size_the_cell_lacks_is_warned_about_and_ignored():
    from seqdsl.runtime.numpy import UnknownSizeWarning
    ct = seqdsl.loads("cell RNN {\n input x\n state h : H\n h<t> = tanh(W x + U h)\n}").cell()
    with pytest.warns(UnknownSizeWarning, match=r"cell RNN has no size 'h' \(its sizes: H, X\)"):
        cell = seqdsl.instantiate(ct, sizes={"H": 4, "X": 3, "h": 8})
    assert cell.sizes == {"H": 4, "X": 3}
