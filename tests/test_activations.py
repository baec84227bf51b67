"""Accuracy, saturation, dtype and vectorisation tests for the activations.

References: float32 results are compared with float64 ``scipy.special.expit``
/ ``np.tanh`` (their own error, ~1e-16, is negligible); float64 results with
the same functions evaluated in ``np.longdouble`` (80-bit on x86).
"""
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit, types
from scipy.special import expit

from seqdsl.runtime.numba import activations
from seqdsl.runtime.numba.activations import (MAX_RELATIVE_ERROR, exp, exp_array, sigmoid,
                                              sigmoid_array, tanh, tanh_array)

DTYPES = [np.float32, np.float64]
FUNCS = {"sigmoid": (sigmoid_array, expit), "tanh": (tanh_array, np.tanh),
         "exp": (exp_array, np.exp)}


def finite_domain(name, x):
    """The inputs whose result is a finite number of x's dtype: exp's below
    the log of the largest float (with a margin, where rounding decides)."""
    if name != "exp":
        return x
    return x[x < np.log(float(np.finfo(x.dtype).max)) - 1e-3]


def reference(name, x):
    """High-precision reference, as longdouble (f64 input) or float64 (f32)."""
    ref_dtype = np.longdouble if x.dtype == np.float64 else np.float64
    with np.errstate(all="ignore"):
        return FUNCS[name][1](x.astype(ref_dtype))


def evaluate(name, x):
    """Run the kernel with warnings turned into errors; check dtype/finite."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = FUNCS[name][0](x)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert np.isfinite(y).all(), x[~np.isfinite(y)][:10]
    return y


def check_accuracy(name, x):
    """Assert the documented error bounds (`MAX_RELATIVE_ERROR` where the
    true value is a normal number, one subnormal step below that); return
    (max abs, max rel) error."""
    x = finite_domain(name, x)
    y, ref = evaluate(name, x), reference(name, x)
    fi = np.finfo(x.dtype)
    err = np.abs(y.astype(ref.dtype) - ref)
    mag = np.abs(ref)
    normal = mag >= fi.tiny  # sigmoid underflows to subnormals for very negative x
    rel = err[normal] / mag[normal]
    assert rel.max(initial=0) <= MAX_RELATIVE_ERROR[x.dtype], x[normal][np.argmax(rel)]
    assert err[~normal].max(initial=0) <= fi.smallest_subnormal, x[~normal][np.argmax(err[~normal])]
    return float(err.max(initial=0)), float(rel.max(initial=0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_accuracy_check_catches_an_error_above_the_documented_bound(dtype, monkeypatch):
    """Results 5e-7 (float32) or 2e-15 (float64) off fail: the 50× looser
    float32 and 2,500× looser float64 bounds let them pass."""
    x = np.linspace(0.5, 2, 101, dtype=dtype)
    off = {np.float32: 5e-7, np.float64: 2e-15}[dtype]
    bad = (tanh_array(x).astype(np.float64) * (1 + off)).astype(dtype)
    monkeypatch.setitem(FUNCS, "tanh", (lambda a: bad, np.tanh))
    with pytest.raises(AssertionError):
        check_accuracy("tanh", x)


def test_the_asserted_bounds_are_the_documented_ones():
    doc = activations.__doc__
    for dtype, bound in MAX_RELATIVE_ERROR.items():
        assert float(re.search(rf"{dtype.name} <= ([0-9.e-]+)", doc).group(1)) == bound


def log_grid(dtype, n):
    """``n`` log-spaced magnitudes from the smallest normal to the largest
    finite value (plus the edge cases), both signs."""
    fi = np.finfo(dtype)
    lo, hi = np.log(float(fi.tiny)), np.log(float(fi.max))
    mags = np.exp(np.linspace(lo, hi, n, dtype=np.longdouble))
    mags = np.minimum(mags, fi.max).astype(dtype)  # longdouble may round up
    edges = np.array([0.0, fi.smallest_subnormal, fi.tiny, fi.eps, 1.0,
                      np.nextafter(fi.max, 0, dtype=dtype), fi.max], dtype)
    mags = np.concatenate([mags, edges])
    return np.concatenate([mags, -mags])


@pytest.mark.parametrize("name", FUNCS)
def test_float32_dense_grid(name):
    x = np.linspace(-50, 50, 2**22 + 1, dtype=np.float32)
    check_accuracy(name, x)


@pytest.mark.parametrize("name", FUNCS)
def test_float64_dense_grid(name):
    # Covers the sigmoid underflow region (true value down to ~1e-324).
    x = np.linspace(-750, 50, 2**20 + 1) if name == "sigmoid" else \
        np.linspace(-750, 710, 2**20 + 1) if name == "exp" else np.linspace(-25, 25, 2**20 + 1)
    check_accuracy(name, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FUNCS)
def test_whole_range_log_grid(name, dtype):
    check_accuracy(name, log_grid(dtype, 200_000))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FUNCS)
def test_subnormal_and_tiny_inputs(name, dtype):
    fi = np.finfo(dtype)
    x = np.geomspace(float(fi.smallest_subnormal), 1e-3, 2000).astype(dtype)
    x = np.concatenate([x, -x])
    check_accuracy(name, x)
    if name == "exp":  # exp(x) ~ 1 + x: to the last bit near 0
        np.testing.assert_allclose(evaluate(name, x), np.exp(x.astype(np.float64)),
                                   rtol=fi.eps, atol=0)
    if name == "tanh":  # relative accuracy near 0: tanh(x) ~ x
        y = evaluate(name, x)
        tiny = np.abs(x) < np.sqrt(fi.eps)  # x**3/3 is below half an ulp
        np.testing.assert_allclose(y[tiny], x[tiny], rtol=2 * fi.eps, atol=0)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_hypothesis_floats(data):
    width = data.draw(st.sampled_from([32, 64]))
    dtype = np.float32 if width == 32 else np.float64
    values = data.draw(st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=width),
        min_size=1, max_size=64))
    x = np.array(values, dtype=dtype)
    for name in FUNCS:
        check_accuracy(name, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturation_and_special_values(dtype):
    fi = np.finfo(dtype)
    big = np.array([fi.max, -fi.max, 1e4, -1e4, 800.0, -800.0], dtype)
    s, t = evaluate("sigmoid", big), evaluate("tanh", big)
    np.testing.assert_array_equal(s, [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(t, [1, -1, 1, -1, 1, -1])
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, t = sigmoid_array(special), tanh_array(special)
    np.testing.assert_array_equal(s, [1, 0, np.nan, 0.5, 0.5])
    np.testing.assert_array_equal(t, [1, -1, np.nan, 0, 0])
    assert np.signbit(t[4]) and not np.signbit(t[3])  # tanh(-0) == -0


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_overflows_to_inf_and_underflows_to_zero(dtype):
    fi = np.finfo(dtype)
    top = np.log(float(fi.max))
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, top + 0.01, 1e4, fi.max, -1e4, -fi.max,
                  1.0], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = exp_array(x)
    np.testing.assert_array_equal(y[:10], [np.inf, 0, np.nan, 1, 1, np.inf, np.inf, np.inf, 0, 0])
    assert y[10] == pytest.approx(np.e, rel=MAX_RELATIVE_ERROR[np.dtype(dtype)])
    # the subnormal range underflows gradually: halving the result each ln 2
    tiny = exp_array(np.array([np.log(float(fi.smallest_subnormal)) + 2.5], dtype))[0]
    assert 0 < tiny < fi.tiny


@pytest.mark.parametrize("dtype", DTYPES)
def test_symmetries(dtype):
    x = np.concatenate([np.linspace(0, 40, 100_001, dtype=dtype),
                        np.abs(log_grid(dtype, 5000))])
    # tanh is exactly odd; sigmoid(-x) = 1 - sigmoid(x) within rounding.
    np.testing.assert_array_equal(tanh_array(-x), -tanh_array(x))
    total = sigmoid_array(x).astype(np.float64) + sigmoid_array(-x)
    tol = 2e-7 if dtype == np.float32 else 4e-16
    assert np.abs(total - 1).max() <= tol


def test_scalar_calls_from_njit_keep_dtype():
    @njit
    def both(x):
        return sigmoid(x) + tanh(x) + exp(x)  # float32 + float32 stays float32

    for dtype, nbtype in [(np.float32, types.float32),
                          (np.float64, types.float64)]:
        value = both(dtype(0.75))
        sig = [s for s in both.nopython_signatures if s.args[0] == nbtype][0]
        assert sig.return_type == nbtype
        assert abs(value - (expit(0.75) + np.tanh(0.75) + np.exp(0.75))) < 1e-6
    for fn in (sigmoid, tanh, exp):  # the kernels' own specialisations
        for s in fn.nopython_signatures:
            assert s.return_type == s.args[0]


def test_array_helpers_shapes_and_layouts():
    a = np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6)
    for b in (a, a[:, ::2], np.asfortranarray(a), a.T):
        np.testing.assert_allclose(tanh_array(b), np.tanh(b), atol=5e-7)
        np.testing.assert_allclose(sigmoid_array(b), expit(b), atol=5e-7)
        np.testing.assert_allclose(exp_array(b), np.exp(b), rtol=5e-7)
        assert tanh_array(b).shape == b.shape


def test_loop_is_vectorised():
    @njit
    def apply(a, out):
        for i in range(a.size):
            out[i] = sigmoid(a[i]) * tanh(a[i]) + exp(a[i])

    a = np.linspace(-5, 5, 64, dtype=np.float32)
    apply(a, np.empty_like(a))
    llvm = apply.inspect_llvm(apply.signatures[0])
    # No libm call left (which would block vectorisation) ...
    calls = re.findall(r"call [^\n]*@([\w.$]+)\(", llvm)
    libm = [c for c in calls if re.search(r"(^|\.)(exp|expf|tanh|tanhf)\b", c)]
    assert not libm, libm
    # ... and LLVM actually vectorised the float32 loop.
    assert re.search(r"<(4|8|16) x float>", llvm), "loop not vectorised"
