"""Numba kernels for the layers: the fused Adam update (one pass over the flat parameter vector
instead of the eight full-vector passes of the array expression in ``lgm.nn._adam_xp``), fused
bias + ReLU forward and backward passes."""

from __future__ import annotations

import math

import numpy as np

from numba import njit, prange


@njit(parallel=True, fastmath={"contract"}, error_model="numpy", cache=True, nogil=True)
def adam_step(p, m, v, g, lr, b1, b2, eps, c1, c2):
    F = p.dtype.type
    b1f, b2f, a1, a2 = F(b1), F(b2), F(1 - b1), F(1 - b2)
    step, epsf, ic2 = F(lr / c1), F(eps), F(1.0 / c2)
    for i in prange(p.shape[0]):
        gi = g[i]
        mi = b1f * m[i] + a1 * gi
        vi = b2f * v[i] + a2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= step * mi / (math.sqrt(vi * ic2) + epsf)


# --- layer kernels. Serial on purpose: they run between BLAS calls, whose worker threads are still
# spinning on the other cores; a parallel Numba region there contends with them (see
# lgm._cpu.kernels.im2col).
@njit(cache=True, nogil=True)
def relu_backward(dy, y):
    """dy *= (y > 0), in place, on flat views."""
    F = dy.dtype.type
    for i in range(dy.shape[0]):
        dy[i] = dy[i] if y[i] > 0 else F(0)


@njit(cache=True, nogil=True)
def bias_act(y, b, relu):
    """y (M, N) <- act(y + b), in place; act = ReLU or identity. One pass instead of two."""
    M, N = y.shape
    F = y.dtype.type
    for i in range(M):
        row = y[i]
        for j in range(N):
            v = row[j] + b[j]
            row[j] = v if (v > 0 or not relu) else F(0)


@njit(cache=True, nogil=True)
def act_bias_backward(dy, y, relu):
    """dy (M, N) <- dy * (y > 0) in place when relu; returns the bias gradient sum_i dy[i, :]
    (accumulated in float64, returned in dy's dtype). One pass instead of two."""
    M, N = dy.shape
    F = dy.dtype.type
    acc = np.zeros(N, np.float64)
    for i in range(M):
        row = dy[i]
        yr = y[i]
        for j in range(N):
            g = row[j]
            if relu:
                g = g if yr[j] > 0 else F(0)
                row[j] = g
            acc[j] += g
    return acc.astype(dy.dtype)
