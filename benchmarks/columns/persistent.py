"""`persist`: seqdsl's LSTM with one thread per block of hidden units for
the whole sequence (the persistent-RNN layout, Diamos et al. 2016), and a
spin barrier between steps instead of a parallel region a step. Each thread
keeps its gates' rows of the weights (they stay in its core's cache) and
its columns of every tape; the threads share only the output state, the
gate gradients, the input weights' stacking and the barrier.

A thread at the barrier spins, then yields its core between tries: on a
machine whose cores are busy with other work, a thread that only spins can
hold the core the thread it waits for needs."""
from __future__ import annotations

import os

import numpy as np

from seqdsl.runtime.numba.blas import blas_threads
from seqdsl.runtime.numba.shards import run_each

from .common import GATES, ONE


# How many times a thread at the barrier spins (a `pause` each, some 50 ns)
# before it yields its core between tries; SEQDSL_BENCH_SPINS overrides it
# (-1: spin only).
SPINS = int(os.environ.get("SEQDSL_BENCH_SPINS", "1000"))


def _kernels():
    """Kernels for `persist`: one thread per block of hidden units for the
    whole sequence, a spin barrier between steps (compiled on first use)."""
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    from seqdsl.runtime.numba.activations import sigmoid, tanh

    def _pointer(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        return cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])

    @intrinsic
    def store_release(typingctx, arr, i, v):
        def codegen(context, builder, sig, args):
            builder.store_atomic(args[2], _pointer(context, builder, sig, args), "release", 8)
            return context.get_dummy_value()
        return types.void(arr, i, v), codegen

    @intrinsic
    def load_acquire(typingctx, arr, i):
        def codegen(context, builder, sig, args):
            return builder.load_atomic(_pointer(context, builder, sig, args), "acquire", 8)
        return arr.dtype(arr, i), codegen

    @intrinsic
    def pause(typingctx):
        def codegen(context, builder, sig, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
            return context.get_dummy_value()
        return types.void(), codegen

    @intrinsic
    def sched_yield(typingctx):
        """The C library's sched_yield (an intrinsic, so the kernels stay cacheable)."""
        def codegen(context, builder, sig, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                "sched_yield")
            builder.call(fn, [])
            return context.get_dummy_value()
        return types.void(), codegen

    jit = dict(nogil=True, cache=True, error_model="numpy")

    spins = SPINS  # a compile-time constant of the kernels

    @njit(**jit)
    def barrier(flags, tid, n, gen):
        """Wait until every one of the n threads has passed `gen` (each
        writes only its own slot, a cache line apart): spinning, and after
        `spins` tries giving its core away between tries (a thread it waits
        for may be waiting for that core)."""
        store_release(flags, tid * 16, gen)
        for k in range(n):
            tries = 0
            while load_acquire(flags, k * 16) < gen:
                if spins < 0 or tries < spins:
                    pause()
                    tries += 1
                else:
                    sched_yield()

    @njit(**jit)
    def own_rows(W, lo, hi, c0, c1):
        """[Wu; Wf; Wo; Wc][:, c0:c1] restricted to hidden units lo:hi of each gate."""
        w = hi - lo
        out = np.empty((4 * w, c1 - c0), W[0].dtype)
        for g in range(4):
            out[g * w:(g + 1) * w] = W[g][lo:hi, c0:c1]
        return out

    @njit(**jit)
    def forward_thread(x2d, Wu, Wf, Wo, Wc, bias, A, out, c0, lengths, lo, hi, tid, n, flags):
        T1, B, H = A.shape
        T, w = T1 - 1, hi - lo
        W = (Wu, Wf, Wo, Wc)
        U = own_rows(W, lo, hi, 0, H)
        Px = np.dot(x2d, own_rows(W, lo, hi, H, Wu.shape[1]).T).reshape((T, B, 4 * w))
        b4 = np.empty(4 * w, x2d.dtype)
        for g in range(4):
            b4[g * w:(g + 1) * w] = bias[g][lo:hi]
        # one array a gate: stores w apart in one array (w known only at run
        # time) would keep LLVM from vectorising the step
        Gu, Gf = np.empty((T, B, w), x2d.dtype), np.empty((T, B, w), x2d.dtype)
        Go, Gc = np.empty((T, B, w), x2d.dtype), np.empty((T, B, w), x2d.dtype)
        TC = np.empty((T, B, w), x2d.dtype)
        C = np.empty((T + 1, B, w), x2d.dtype)
        C[0] = c0[:, lo:hi]
        P = np.empty((B, 4 * w), x2d.dtype)
        PT = np.empty((4 * w, B), x2d.dtype)
        c_new = np.empty((B, w), x2d.dtype)
        a_new = np.empty((B, w), x2d.dtype)
        for t in range(T):
            # made transposed (the orientation OpenBLAS runs fastest), laid out batch-major
            np.dot(U, A[t].T, PT)
            for b in range(B):
                for j in range(4 * w):
                    P[b, j] = PT[j, b]
            for b in range(B):
                if t < lengths[b]:
                    for j in range(w):
                        u = sigmoid(Px[t, b, j] + P[b, j] + b4[j])
                        f = sigmoid(Px[t, b, w + j] + P[b, w + j] + b4[w + j])
                        o = sigmoid(Px[t, b, 2 * w + j] + P[b, 2 * w + j] + b4[2 * w + j])
                        ct = tanh(Px[t, b, 3 * w + j] + P[b, 3 * w + j] + b4[3 * w + j])
                        c = u * ct + f * C[t, b, j]
                        tc = tanh(c)
                        Gu[t, b, j], Gf[t, b, j], Go[t, b, j], Gc[t, b, j] = u, f, o, ct
                        TC[t, b, j] = tc
                        c_new[b, j] = c
                        a_new[b, j] = o * tc
                    # copied after the loop: LLVM vectorises a loop only over
                    # arrays it can tell apart (made here, not given), and not
                    # one that reads C[t] and writes C[t + 1] (5x slower)
                    C[t + 1, b] = c_new[b]
                    A[t + 1, b, lo:hi] = a_new[b]
                    out[t, b, lo:hi] = a_new[b]
                else:
                    for j in range(w):
                        C[t + 1, b, j] = C[t, b, j]
                        A[t + 1, b, lo + j] = A[t, b, lo + j]
                        out[t, b, lo + j] = 0
            barrier(flags, tid, n, t + 1)
        return (Gu, Gf, Go, Gc), TC, C

    @njit(**jit)
    def backward_thread(dout, da, dc, A, x2d, Gu, Gf, Go, Gc, TC, C, Wu, Wf, Wo, Wc, dYs, Sx, dx2d,
                        lengths,
                        lo, hi, tid, n, flags):
        """Writes da, dc (hidden units lo:hi) and its share of dYs and dx;
        returns the gradients of its rows of the stacked weights and biases."""
        T, B, H = dout.shape
        w = hi - lo
        W = (Wu, Wf, Wo, Wc)
        # the recurrent weight's columns lo:hi, its rows in the shared dYs's order
        S = np.empty((w, 4 * H), dout.dtype)
        for k in range(n):
            klo, khi = H * k // n, H * (k + 1) // n
            kw = khi - klo
            for g in range(4):
                S[:, 4 * klo + g * kw:4 * klo + (g + 1) * kw] = W[g][klo:khi, lo:hi].T
        dY = np.empty((T, B, 4 * w), dout.dtype)
        dP = np.empty((B, w), dout.dtype)
        dPT = np.empty((w, B), dout.dtype)
        y = np.empty((4, w), dout.dtype)
        dc_new = np.empty(w, dout.dtype)
        off = 4 * lo
        for t in range(T, -1, -1):
            if t < T:
                np.dot(S, dYs[t].T, dPT)
                for b in range(B):
                    for j in range(w):
                        dP[b, j] = dPT[j, b]
            if t == 0:
                for b in range(B):
                    if lengths[b] > 0:
                        da[b, lo:hi] = dP[b]
                break
            s = t - 1
            for b in range(B):
                if t < T and t < lengths[b]:
                    da[b, lo:hi] = dP[b]
                if s < lengths[b]:
                    da_own, dc_own = da[b, lo:hi].copy(), dc[b, lo:hi].copy()
                    dout_own = dout[s, b, lo:hi].copy()
                    for j in range(w):
                        u, f, o, ct = Gu[s, b, j], Gf[s, b, j], Go[s, b, j], Gc[s, b, j]
                        tc = TC[s, b, j]
                        ga = da_own[j] + dout_own[j]
                        gc = dc_own[j] + ga * o * (ONE - tc * tc)
                        y0 = gc * ct * u * (ONE - u)
                        y1 = gc * C[s, b, j] * f * (ONE - f)
                        y2 = ga * tc * o * (ONE - o)
                        y3 = gc * u * (ONE - ct * ct)
                        y[0, j], y[1, j], y[2, j], y[3, j] = y0, y1, y2, y3
                        dc_new[j] = gc * f
                    # copied after the loop, which then writes only arrays made here
                    dc[b, lo:hi] = dc_new
                    for g in range(4):
                        dY[s, b, g * w:(g + 1) * w] = y[g]
                        dYs[s, b, off + g * w:off + (g + 1) * w] = y[g]
                else:
                    for j in range(4 * w):
                        dY[s, b, j] = 0
                        dYs[s, b, off + j] = 0
            barrier(flags, tid, n, T - s)
        # its rows of dx, from every block's gate gradients: each thread puts
        # its gates' rows of the input weights into the shared Sx first
        for g in range(4):
            Sx[off + g * w:off + (g + 1) * w] = W[g][lo:hi, H:]
        barrier(flags, tid, n, T + 1)
        r0, r1 = T * B * tid // n, T * B * (tid + 1) // n
        np.dot(dYs.reshape((T * B, 4 * H))[r0:r1], Sx, dx2d[r0:r1])
        d2 = dY.reshape((T * B, 4 * w))
        dWh = np.dot(d2.T, A[:T].reshape((T * B, H)))
        dWx = np.dot(d2.T, x2d)
        db = np.zeros(4 * w, dout.dtype)
        for r in range(T * B):
            for j in range(4 * w):
                db[j] += d2[r, j]
        return dWh, dWx, db

    return forward_thread, backward_thread


class PersistentLSTM:
    """seqdsl's LSTM with one thread per block of hidden units for the whole
    sequence (the persistent-RNN layout): each thread keeps its gates' rows
    of the weights (in its core's cache) and its columns of every tape; the
    threads share only the output state, the gate gradients and a barrier a
    step."""

    def __init__(self, H: int, X: int, threads: int):
        self.fwd, self.bwd = _kernels()
        self.H, self.X, self.n = H, X, min(threads, H)

    def forward(self, p, x, lengths, a0, c0):
        T, B, X = x.shape
        H, n = self.H, self.n
        A = np.empty((T + 1, B, H), x.dtype)
        A[0] = a0
        out = np.empty((T, B, H), x.dtype)
        flags = np.zeros(16 * n, np.int64)
        x2d = x.reshape(T * B, X)
        bias = tuple(p["b" + g] for g in GATES)

        def job(k):
            return self.fwd(x2d, *(p["W" + g] for g in GATES), bias, A, out, c0, lengths,
                            H * k // n, H * (k + 1) // n, k, n, flags)
        with blas_threads(1):
            private = run_each(job, list(range(n)))
        return out, (x, lengths, A, private, p)

    def backward(self, tape, dout, da, dc):
        x, lengths, A, private, p = tape
        T, B, H = dout.shape
        n = self.n
        gA, gC = da.copy(), dc.copy()
        dYs = np.empty((T, B, 4 * H), dout.dtype)
        Sx = np.empty((4 * H, self.X), dout.dtype)
        dx = np.empty_like(x)
        flags = np.zeros(16 * n, np.int64)
        x2d = x.reshape(T * B, -1)

        def job(k):
            G, TC, C = private[k]
            return self.bwd(dout, gA, gC, A, x2d, *G, TC, C, *(p["W" + g] for g in GATES), dYs,
                            Sx, dx.reshape(T * B, -1), lengths, H * k // n, H * (k + 1) // n, k, n,
                            flags)
        with blas_threads(1):
            parts = run_each(job, list(range(n)))
        grads = {"W" + g: np.empty((H, H + self.X), dout.dtype) for g in GATES}
        grads |= {"b" + g: np.empty(H, dout.dtype) for g in GATES}
        for k, (dWh, dWx, db) in enumerate(parts):
            lo, hi = H * k // n, H * (k + 1) // n
            w = hi - lo
            for i, g in enumerate(GATES):
                grads["W" + g][lo:hi, :H] = dWh[i * w:(i + 1) * w]
                grads["W" + g][lo:hi, H:] = dWx[i * w:(i + 1) * w]
                grads["b" + g][lo:hi] = db[i * w:(i + 1) * w]
        return grads, dx, gA, gC

