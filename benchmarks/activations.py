"""Time 10**7 float32 sigmoid/tanh evaluations in an njit loop.

Compares seqdsl.runtime.numba.activations (vectorisable polynomial kernels) against the
straightforward libm-based njit loops (``math.exp`` / ``np.tanh``, which LLVM
cannot vectorise) and, for reference, NumPy's own whole-array functions.

Run from the repository root:  python benchmarks/activations.py
"""
import math
import os
import sys
import time

import numpy as np
from numba import njit
from scipy.special import expit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
from seqdsl.runtime.numba.activations import sigmoid, tanh  # noqa: E402

N = 10**7
ONE = np.float32(1.0)


@njit
def loop_sigmoid(a, out):
    for i in range(a.size):
        out[i] = sigmoid(a[i])


@njit
def loop_tanh(a, out):
    for i in range(a.size):
        out[i] = tanh(a[i])


@njit
def loop_sigmoid_libm(a, out):
    for i in range(a.size):
        out[i] = ONE / (ONE + math.exp(-a[i]))  # float32 expf per element


@njit
def loop_tanh_libm(a, out):
    for i in range(a.size):
        out[i] = np.tanh(a[i])  # float32 tanhf per element


def best_of(fn, *args, repeat=7):
    fn(*args)  # compile / warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    rng = np.random.default_rng(0)
    a = rng.uniform(-10, 10, N).astype(np.float32)
    out = np.empty_like(a)
    rows = [
        ("sigmoid  seqdsl njit loop", best_of(loop_sigmoid, a, out)),
        ("sigmoid  math.exp njit loop", best_of(loop_sigmoid_libm, a, out)),
        ("sigmoid  scipy.special.expit", best_of(expit, a, out)),
        ("tanh     seqdsl njit loop", best_of(loop_tanh, a, out)),
        ("tanh     np.tanh njit loop", best_of(loop_tanh_libm, a, out)),
        ("tanh     numpy np.tanh(array)", best_of(np.tanh, a, out)),
    ]
    print(f"{N:.0e} float32 evaluations, best of 7")
    for name, t in rows:
        print(f"  {name:32s} {t * 1e3:8.2f} ms  {t / N * 1e9:6.2f} ns/elem")
    print(f"  speed-up sigmoid: {rows[1][1] / rows[0][1]:.1f}x,"
          f"  tanh: {rows[4][1] / rows[3][1]:.1f}x  (vs libm njit loops)")


if __name__ == "__main__":
    main()
