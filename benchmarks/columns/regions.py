"""`cols`: seqdsl's LSTM with every step one parallel region (Numba's
`prange` over blocks of hidden units). A block makes its own columns of the
step's product (one BLAS call per gate, on one BLAS thread), then its
columns of the elementwise step. A step reads the previous state from the
state tape, so a region never reads what another block of the same region
writes. The backward step is one region as well: a block makes its columns
of d a<t> from the later step's gate gradients, then its columns of this
step. The products over all steps run on all of BLAS's threads."""
from __future__ import annotations

import numpy as np

from seqdsl.runtime.numba.blas import blas_threads

from .common import GATES, ONE, dot


def _kernels():
    """The compiled kernels (compiled on first use)."""
    from numba import njit, prange

    from seqdsl.runtime.numba.activations import sigmoid, tanh

    jit = dict(nogil=True, cache=True, error_model="numpy")

    @njit(**jit)
    def fwd_cols(Px, A, C, G, TC, out, lengths, t, lo, hi, P):
        """Columns lo:hi of step t, from this block's products P (4, B, hi - lo)."""
        B, H = A.shape[1], A.shape[2]
        c_new = np.empty(hi - lo, A.dtype)
        for b in range(B):
            if t < lengths[b]:
                for j in range(hi - lo):
                    J = lo + j
                    u = sigmoid(Px[t, b, J] + P[0, b, j])
                    f = sigmoid(Px[t, b, H + J] + P[1, b, j])
                    o = sigmoid(Px[t, b, 2 * H + J] + P[2, b, j])
                    ct = tanh(Px[t, b, 3 * H + J] + P[3, b, j])
                    c = u * ct + f * C[t, b, J]
                    tc = tanh(c)
                    a = o * tc
                    G[t, b, J], G[t, b, H + J], G[t, b, 2 * H + J], G[t, b, 3 * H + J] = \
                        u, f, o, ct
                    TC[t, b, J] = tc
                    c_new[j] = c
                    A[t + 1, b, J] = a
                    out[t, b, J] = a
                C[t + 1, b, lo:hi] = c_new  # not in the loop: it would not be vectorised
            else:
                for J in range(lo, hi):
                    C[t + 1, b, J] = C[t, b, J]
                    A[t + 1, b, J] = A[t, b, J]
                    out[t, b, J] = 0

    @njit(parallel=True, **jit)
    def forward_cols(Px, Uh, A, C, G, TC, out, lengths, blocks):
        """The time loop, one region a step; A[0], C[0] hold the initial states."""
        T, B, H = out.shape
        for t in range(T):
            for k in prange(blocks):
                lo, hi = H * k // blocks, H * (k + 1) // blocks
                P = np.empty((4, B, hi - lo), Px.dtype)
                for g in range(4):
                    np.dot(A[t], Uh[g * H + lo:g * H + hi].T, P[g])
                fwd_cols(Px, A, C, G, TC, out, lengths, t, lo, hi, P)

    @njit(**jit)
    def bwd_cols(dout, gA, gC, C, G, TC, dY, lengths, t, lo, hi, dP, have):
        """Columns lo:hi of the backward step t: first d a<t> for the rows
        step t+1 ran (from its gate gradients, dP), then step t."""
        B, H = gA.shape
        for b in range(B):
            if have and t + 1 < lengths[b]:
                for j in range(hi - lo):
                    gA[b, lo + j] = dP[b, j]
            if t < lengths[b]:
                for j in range(hi - lo):
                    J = lo + j
                    u, f = G[t, b, J], G[t, b, H + J]
                    o, ct = G[t, b, 2 * H + J], G[t, b, 3 * H + J]
                    tc = TC[t, b, J]
                    da = gA[b, J] + dout[t, b, J]
                    dc = gC[b, J] + da * o * (ONE - tc * tc)
                    dY[t, b, J] = dc * ct * u * (ONE - u)
                    dY[t, b, H + J] = dc * C[t, b, J] * f * (ONE - f)
                    dY[t, b, 2 * H + J] = da * tc * o * (ONE - o)
                    dY[t, b, 3 * H + J] = dc * u * (ONE - ct * ct)
                    gC[b, J] = dc * f
            else:
                for J in range(lo, hi):
                    dY[t, b, J] = dY[t, b, H + J] = dY[t, b, 2 * H + J] = \
                        dY[t, b, 3 * H + J] = 0

    @njit(parallel=True, **jit)
    def backward_cols(dout, gA, gC, C, G, TC, dY, Sh, lengths, blocks):
        """The backward time loop, one region a step; gA, gC come in as the
        final states' cotangents and leave as the initial states'. Sh is the
        stacked recurrent weight transposed, (H, 4H)."""
        T, B, H = dout.shape
        for t in range(T, -1, -1):
            for k in prange(blocks):
                lo, hi = H * k // blocks, H * (k + 1) // blocks
                dP = np.empty((B, hi - lo), dout.dtype)
                if t < T:
                    np.dot(dY[t], Sh[lo:hi].T, dP)
                if t > 0:
                    bwd_cols(dout, gA, gC, C, G, TC, dY, lengths, t - 1, lo, hi, dP, t < T)
                else:
                    for b in range(B):
                        if lengths[b] > 0:
                            for j in range(hi - lo):
                                gA[b, lo + j] = dP[b, j]

    return forward_cols, backward_cols


class ColumnLSTM:
    """seqdsl's LSTM (lstm.seq) forward and backward, a parallel region a step."""

    def __init__(self, H: int, X: int, blocks: int):
        self.fwd, self.bwd = _kernels()
        self.H, self.X, self.blocks = H, X, blocks

    def stack(self, p: dict):
        """The gates' weights stacked: recurrent part, input part, the
        recurrent part transposed, and the biases."""
        H = self.H
        W = np.concatenate([p["W" + g] for g in GATES])  # (4H, H + X)
        b = np.concatenate([p["b" + g] for g in GATES])
        return (np.ascontiguousarray(W[:, :H]), np.ascontiguousarray(W[:, H:]),
                np.ascontiguousarray(W[:, :H].T), b)

    def forward(self, p, x, lengths, a0, c0):
        T, B, _ = x.shape
        Uh, Wx, Sh, b = self.stack(p)
        Px = dot(x.reshape(T * B, -1), Wx.T).reshape(T, B, 4 * self.H)
        Px += b
        A = np.empty((T + 1, B, self.H), x.dtype)
        C = np.empty_like(A)
        A[0], C[0] = a0, c0
        G = np.empty((T, B, 4 * self.H), x.dtype)
        TC = np.empty((T, B, self.H), x.dtype)
        out = np.empty((T, B, self.H), x.dtype)
        with blas_threads(1):  # a region's own products: one BLAS thread each
            self.fwd(Px, Uh, A, C, G, TC, out, lengths, self.blocks)
        return out, (x, lengths, A, C, G, TC, Uh, Wx, Sh)

    def backward(self, tape, dout, da, dc):
        x, lengths, A, C, G, TC, Uh, Wx, Sh = tape
        T, B, H = dout.shape
        dY = np.empty((T, B, 4 * H), dout.dtype)
        gA, gC = da.copy(), dc.copy()
        with blas_threads(1):  # a region's own products: one BLAS thread each
            self.bwd(dout, gA, gC, C, G, TC, dY, Sh, lengths, self.blocks)
        d2 = dY.reshape(T * B, 4 * H)
        dW = dot(d2.T, np.concatenate([A[:T].reshape(T * B, H), x.reshape(T * B, -1)], axis=1))
        db = d2.sum(axis=0)
        dx = dot(d2, Wx).reshape(x.shape)
        grads = {}
        for i, g in enumerate(GATES):
            grads["W" + g] = dW[i * H:(i + 1) * H]
            grads["b" + g] = db[i * H:(i + 1) * H]
        return grads, dx, gA, gC

