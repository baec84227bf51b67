"""softplus, log_softmax and log_softmax_vjp: the NumPy evaluation against
direct formulas and at logits of ±1e4, the VJP against float64 finite
differences, and the Numba code against the interpreter; plus the Numba
expression of every elementwise op on extreme arguments."""
from dataclasses import replace

import numpy as np
import pytest

from opsamples import random_env, sample_graph, vjp_error
from seqdsl.ir.autodiff import backward
from seqdsl.ir.ops import ELEMENTWISE, OPS, Scalar
from seqdsl.runtime.interp import evaluate
from seqdsl.spec import instantiate, loads
from seqdsl.tools.gradcheck import gradcheck, random_problem

EXTREME = np.array([-1e4, -1e3, -40.0, -3.0, -0.5, -1e-8, 0.0, 2e-7, 0.7, 5.0, 40.0, 1e3, 1e4])


def _run(op: str, *values, dtype=np.float64):
    """`op` of the given rows, through the interpreter."""
    n = np.shape(values[0])[-1]
    graph = sample_graph(op, n)
    env = {f"x{i}": np.atleast_2d(np.asarray(v, dtype)) for i, v in enumerate(values)}
    return evaluate(graph, env, env["x0"].shape[0], dtype)["y"]


# ---- softplus ---------------------------------------------------------------------

def test_softplus_is_log_one_plus_exp():
    x = np.linspace(-30, 30, 61)
    assert np.allclose(_run("softplus", x)[0], np.log1p(np.exp(x)), rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_is_finite_and_exact_at_extreme_logits(dtype):
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = _run("softplus", EXTREME, dtype=dtype)[0]
    assert y.dtype == dtype and np.isfinite(y).all() and (y >= 0).all()
    assert y[-1] == 1e4 and y[-2] == 1e3 and y[0] == 0 and y[1] == 0
    assert y[6] == np.log(dtype(2))


def test_softplus_vjp_is_g_times_sigmoid():
    graph = sample_graph("softplus", 6)
    rng = np.random.default_rng(0)
    env = random_env(graph, 3, rng, -4, 4)
    assert vjp_error(graph, env, 3, rng) < 1e-8
    assert [e.op for e in backward(graph).eqns] == ["sigmoid", "mul"]


SOFTPLUS_CELL = """cell Soft {
    input x
    state h : H
    h<t> = tanh(W[h, x] + softplus(p)) * 0.5 + softplus(U h - 1) * 0.25
}
"""


def test_softplus_is_a_language_function_that_gradchecks():
    ct = loads(SOFTPLUS_CELL, "soft.seq").cell()
    assert [e.op for e in ct.graph.eqns].count("softplus") == 2
    cell = instantiate(ct, hidden=3, input=2)
    errors = gradcheck(cell, random_problem(cell, steps=4, batch=3, seed=3))
    assert max(errors.values()) < 1e-6, errors


def test_softplus_compiled_equals_interpreter(tmp_path, monkeypatch):
    from test_jit import TOL, compare
    monkeypatch.setenv("SEQDSL_CACHE_DIR", str(tmp_path))
    for dtype in (np.float64, np.float32):
        worst = compare(loads(SOFTPLUS_CELL, "soft.seq").cell(), dtype, hidden=3, input=2,
                        shapes=((4, 3), (3, 9)))
        assert max(worst.values()) < TOL[dtype], (dtype, worst)


# ---- log_softmax ------------------------------------------------------------------

def test_log_softmax_is_the_log_of_softmax():
    x = np.random.default_rng(0).normal(0, 3, (4, 7))
    want = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    assert np.allclose(_run("log_softmax", x), want, rtol=1e-14, atol=1e-14)
    assert np.allclose(np.exp(_run("log_softmax", x)), _run("softmax", x), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_is_finite_and_exact_at_extreme_logits(dtype):
    x = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [1e4, 1e4, -3.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = _run("log_softmax", x, dtype=dtype)
    assert y.dtype == dtype and np.isfinite(y).all()
    assert y[0].tolist() == [0.0, -1e4, -2e4]
    assert np.allclose(y[1], -np.log(3.0), rtol=1e-6) and np.allclose(y[2, :2], -np.log(2.0))


def test_log_softmax_vjp_is_g_minus_softmax_times_the_sum_of_g():
    rng = np.random.default_rng(1)
    y = _run("log_softmax", rng.normal(size=(3, 5)))
    g = rng.normal(size=(3, 5))
    want = g - np.exp(y) * g.sum(axis=-1, keepdims=True)
    assert np.allclose(_run("log_softmax_vjp", y, g), want, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_log_softmax_vjp_matches_finite_differences(scale):
    graph = sample_graph("log_softmax", 5)
    rng = np.random.default_rng(2)
    env = random_env(graph, 3, rng, -scale, scale)
    assert vjp_error(graph, env, 3, rng) < 1e-7


def _with_log_softmax(src: str):
    """The cell with each softmax made a log_softmax (no spelling reaches it)."""
    ct = loads(src, "cell.seq").cell()
    eqns = tuple(replace(e, op="log_softmax") if e.op == "softmax" else e for e in ct.graph.eqns)
    return replace(ct, graph=replace(ct.graph, eqns=eqns))


# softmax and layernorm of a batch row and of a parameter vector, the
# latter computed once before the time loop.
ROWS_CELL = """cell Rows {
    input x
    state h : H
    h<t> = softmax(W[h, x] + b) * 0.5 + tanh(U h) * softmax(p) + layernorm(q) * 0.1
}
"""


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_feature_wise_ops_compiled_equal_interpreter(log, tmp_path, monkeypatch):
    from test_jit import TOL, compare
    monkeypatch.setenv("SEQDSL_CACHE_DIR", str(tmp_path))
    ct = _with_log_softmax(ROWS_CELL) if log else loads(ROWS_CELL, "cell.seq").cell()
    assert ("log_softmax" in str(ct.graph)) == log
    worst = compare(ct, np.float64, hidden=4, input=2, shapes=((4, 3), (2, 9)))
    assert max(worst.values()) < TOL[np.float64], worst


# ---- every elementwise op's Numba expression, at extreme arguments --------------------

def _kernel(ops, dtype):
    """One Numba function writing each op's generated expression per entry."""
    from numba import njit
    from seqdsl.runtime.numba.activations import exp, sigmoid, tanh
    lines = ["def kernel(x, y, out):", "    for i in range(x.shape[0]):"]
    for k, op in enumerate(ops):
        lines.append(f"        out[{k}, i] = {op.code(['x[i]', 'y[i]'][:op.arity])}")
    scope = {"np": np, "exp": exp, "sigmoid": sigmoid, "tanh": tanh, "K0": dtype(0),
             "K1": dtype(1)}
    exec("\n".join(lines), scope)
    return njit(error_model="numpy")(scope["kernel"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_expressions_equal_the_interpreter(dtype):
    ops = [op for op in OPS.values() if op.family == ELEMENTWISE and isinstance(op.code, Scalar)]
    x = EXTREME.astype(dtype)
    y = np.resize(np.array([0.5, -2.0, 3.0, 1e3], dtype), x.shape)
    got = np.empty((len(ops), len(x)), dtype)
    _kernel(ops, dtype)(x, y, got)
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    for k, op in enumerate(ops):
        want = _run(op.name, *(x, y)[:op.arity], dtype=dtype)[0]
        assert got[k].dtype == want.dtype == dtype
        np.testing.assert_allclose(got[k], want, rtol=rtol, atol=np.finfo(dtype).tiny,
                                   err_msg=op.name)
