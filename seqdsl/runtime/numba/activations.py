"""Fast, accurate scalar ``sigmoid``, ``tanh`` and ``exp`` for Numba-compiled code.

``math.exp`` / ``math.tanh`` compile to scalar libm calls, which stop LLVM
from vectorising the loops the seqdsl code generator emits.  The functions
here use only arithmetic, comparisons/selects and bit manipulation, so a loop
that calls them is vectorised like any other arithmetic loop.

Both functions are generic ``njit`` functions: they compile a specialisation
per argument type, and all constants are typed like the argument (see
``_consts``), so float32 code stays float32 -- a bare Python literal such as
``0.5`` would be float64 in Numba and silently promote the whole expression.

Algorithm (the same for both dtypes, constants per dtype):

* ``z <= 0`` is split as ``z = k*ln2 + r`` with integer ``k`` and
  ``|r| <= ln2/2`` (Cody-Waite: ``ln2 = LN2_HI + LN2_LO`` where ``LN2_HI``
  has trailing zero bits so ``k*LN2_HI`` is exact for the ``k`` we meet).
* ``expm1(r)`` comes from its Taylor polynomial ``r + r^2*(1/2! + r/3! + ...)``
  (degree 7 for float32, 13 for float64).  With ``|r| <= 0.3466`` the
  truncation error relative to ``expm1(r)`` is about ``|r|^n/(n+1)!``:
  1.5e-8 (1/4 ulp) for float32 and 1.2e-17 (1/20 ulp) for float64, so
  rounding dominates.  Measured end-to-end (``MAX_RELATIVE_ERROR``), relative
  to the true value wherever that is a normal number: float32 <= 2.1e-7
  (exhaustive over all finite inputs: at most 2.01e-7, sigmoid near -7.57;
  tanh 1.78e-7; exp 8.9e-8), float64 <= 4e-16 (8e8 samples: at most
  3.94e-16; exp, 2e7 samples: 1.57e-16).  Where the true value is subnormal
  (sigmoid or exp of large negative x) the error is at most one subnormal
  step.
* ``2**k`` is built by writing ``k + bias`` into the exponent field.
* ``sigmoid(x) = 1/(1+t)`` or ``t/(1+t)`` with ``t = exp(-|x|) <= 1``, so
  nothing cancels; ``2**k`` is applied as two halves so that results in the
  subnormal range underflow gradually and ``t`` reaches exactly 0.
* ``exp(x) = 2**k * (1 + q)``, ``2**k`` applied as two halves as in
  ``sigmoid`` (the softmaxes' rows call it, so their loops are vectorised).
* ``tanh(|x|) = -m/(2+m)`` with ``m = expm1(-2|x|) = 2**k*q + (2**k - 1)``.
  For ``k == 0`` this is the polynomial itself, so small ``x`` keep full
  relative accuracy (no ``1 - exp`` cancellation; tiny ``x`` give ``x``);
  the sign is put back with ``copysign`` so ``tanh`` is exactly odd.

Large ``|x|`` are clamped before reduction (the result has already saturated
there), so no input overflows; NaN in gives NaN out.

From Python, ``sigmoid``/``tanh`` also work on scalars (Numba returns a Python
float); use ``sigmoid_array``/``tanh_array`` to keep the dtype.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

__all__ = ["sigmoid", "tanh", "exp", "sigmoid_array", "tanh_array", "exp_array",
           "MAX_RELATIVE_ERROR"]

# The accuracy promised above, per dtype; the tests assert it.
MAX_RELATIVE_ERROR = {np.dtype(np.float32): 2.1e-7, np.dtype(np.float64): 4e-16}

# error_model='numpy': float division needs no ZeroDivisionError branch (which
# would block vectorisation).  fastmath={'contract'} only allows fusing a*b+c
# into an FMA (as accurate or better; the last bit may vary by CPU).  Full
# fastmath is deliberately *not* used: reassociation would undo the Cody-Waite
# split and 'nnan' would drop the NaN handling.
# The kernels are ordinary (not numba-inline='always') functions: LLVM inlines
# them into the caller anyway, and this way they keep their own flags even
# when the caller is compiled with fastmath=True or the python error model.
_JIT = dict(cache=True, fastmath={"contract"}, error_model="numpy")


# --------------------------------------------------------------------------
# LLVM intrinsics (vectorisable: roundps / cvtps2dq / shifts, no libm)
# --------------------------------------------------------------------------
@intrinsic
def _rint(typingctx, x):
    """Round a float to the nearest integer (ties to even), same dtype."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        fty = args[0].type
        fn = builder.module.declare_intrinsic(
            "llvm.rint", [fty], ir.FunctionType(fty, [fty]))
        return builder.call(fn, args)

    return x(x), codegen


@intrinsic
def _pow2(typingctx, k):
    """``2.0**k`` for an integer-valued float ``k`` in the normal exponent
    range (-126..127 for float32, -1022..1023 for float64), same dtype."""
    if not isinstance(k, types.Float):
        return None
    mant = 23 if k.bitwidth == 32 else 52
    bias = 127 if k.bitwidth == 32 else 1023

    def codegen(context, builder, sig, args):
        ity = ir.IntType(k.bitwidth)
        e = builder.add(builder.fptosi(args[0], ity), ity(bias))
        return builder.bitcast(builder.shl(e, ity(mant)), args[0].type)

    return k(k), codegen


# --------------------------------------------------------------------------
# Typed constants
# --------------------------------------------------------------------------
def _taylor(ftype, degree):
    """Coefficients 1/n! for n = degree..2 (highest first), typed."""
    return tuple(ftype(1.0 / math.factorial(n)) for n in range(degree, 1, -1))


# (ln2_hi, ln2_lo): Cephes (float32, ln2_hi = 355/512) and fdlibm (float64,
# ln2_hi with 21 trailing zero bits) split constants.
# sig_cut: exp(-sig_cut) rounds to 0 in that dtype (below half the smallest
# subnormal) -> sigmoid is exactly 0/1 beyond.  tanh_cut: tanh rounds to 1.
# exp_cut: exp(exp_cut) overflows to inf (past log of the largest float).
_CONSTS = {
    32: dict(ln2=(0.693359375, -2.12194440e-4), deg=7, sig_cut=104.0,
             tanh_cut=10.0, exp_cut=89.0),
    64: dict(ln2=(6.93147180369123816490e-01, 1.90821492927058770002e-10),
             deg=13, sig_cut=746.0, tanh_cut=20.0, exp_cut=710.0),
}


def _consts(x):
    """(ZERO, HALF, ONE, TWO, LOG2E, LN2_HI, LN2_LO, SIG_CUT, TANH_CUT, EXP_CUT)."""


def _poly(x):
    """Taylor coefficients of (expm1(r) - r) / r^2, highest degree first."""


@overload(_consts)
def _consts_impl(x):
    if not isinstance(x, types.Float) or x.bitwidth not in _CONSTS:
        raise TypingError("sigmoid/tanh/exp need a float32 or float64 argument")
    c, F = _CONSTS[x.bitwidth], np.dtype(str(x)).type
    values = tuple(F(v) for v in (0.0, 0.5, 1.0, 2.0, 1.0 / math.log(2.0),
                                  *c["ln2"], c["sig_cut"], c["tanh_cut"], c["exp_cut"]))
    return lambda x: values


@overload(_poly)
def _poly_impl(x):
    if isinstance(x, types.Float) and x.bitwidth in _CONSTS:
        coeffs = _taylor(np.dtype(str(x)).type, _CONSTS[x.bitwidth]["deg"])
        return lambda x: coeffs


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------
@njit(**_JIT)
def _reduce(z):
    """For ``z`` clamped to [-SIG_CUT, EXP_CUT]: ``(k, q)`` with ``exp(z) =
    2**k * (1 + q)``, ``k`` an integer-valued float and ``q = expm1(r)``,
    ``|r| <= ln2/2``."""
    _, _, _, _, log2e, ln2_hi, ln2_lo, _, _, _ = _consts(z)
    k = _rint(z * log2e)
    r = (z - k * ln2_hi) - k * ln2_lo
    coeffs = _poly(z)
    p = coeffs[0]
    for c in coeffs[1:]:  # Horner; the tuple loop is fully unrolled by LLVM
        p = p * r + c
    return k, r + (r * r) * p


@njit(**_JIT)
def _scaled(kq, x):
    """``2**k * (1 + q)`` for ``(k, q)`` from ``_reduce``, ``2**k`` applied as
    two factors: results in the subnormal range underflow gradually, and
    ones past the largest float overflow to inf."""
    _, half, one, _, _, _, _, _, _, _ = _consts(x)
    k, q = kq
    k1 = _rint(k * half)
    return ((one + q) * _pow2(k1)) * _pow2(k - k1)


@njit(**_JIT)
def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))`` for a float32/float64 scalar,
    returned in the same dtype."""
    zero, _, one, _, _, _, _, sig_cut, _, _ = _consts(x)
    a = abs(x)
    a = a if a < sig_cut else sig_cut  # saturated beyond; also catches NaN
    t = _scaled(_reduce(-a), x)  # exp(-|x|), in [0, 1]
    s = one / (one + t)
    y = s if x >= zero else t * s
    return y if x == x else x


@njit(**_JIT)
def tanh(x):
    """Hyperbolic tangent of a float32/float64 scalar, same dtype."""
    _, _, one, two, _, _, _, _, tanh_cut, _ = _consts(x)
    a = abs(x)
    a = a if a < tanh_cut else tanh_cut  # tanh(a) rounds to 1 beyond
    k, q = _reduce(-two * a)
    s = _pow2(k)
    m = s * q + (s - one)  # expm1(-2a), exact reconstruction for k == 0
    y = math.copysign(-m / (two + m), x)
    return y if x == x else x


@njit(**_JIT)
def exp(x):
    """``e**x`` of a float32/float64 scalar, same dtype: 0 below
    ``-SIG_CUT`` (and at -inf), inf past the largest float, NaN for NaN."""
    _, _, _, _, _, _, _, sig_cut, _, exp_cut = _consts(x)
    z = x if x > -sig_cut else -sig_cut  # also takes NaN (given back below)
    z = z if z < exp_cut else exp_cut
    y = _scaled(_reduce(z), x)
    return y if x == x else x


# --------------------------------------------------------------------------
# Array helpers
# --------------------------------------------------------------------------
@njit(cache=True)
def _apply(a, which):
    """``which`` (0: sigmoid, 1: tanh, 2: exp) of every element of a
    float32/float64 array (new array, same shape and dtype)."""
    src = a.ravel()  # C-order view (or copy if a is not C-contiguous)
    out = np.empty(src.size, a.dtype)
    for i in range(src.size):
        x = src[i]
        out[i] = sigmoid(x) if which == 0 else tanh(x) if which == 1 else exp(x)
    return out.reshape(a.shape)


def sigmoid_array(a):
    """Element-wise :func:`sigmoid` of a float32/float64 array."""
    return _apply(a, 0)


def tanh_array(a):
    """Element-wise :func:`tanh` of a float32/float64 array."""
    return _apply(a, 1)


def exp_array(a):
    """Element-wise :func:`exp` of a float32/float64 array."""
    return _apply(a, 2)
