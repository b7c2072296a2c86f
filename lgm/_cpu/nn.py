"""Numba kernels for the layers: the fused Adam update (one pass over the flat parameter vector
instead of the eight full-vector passes of the array expression in ``lgm.nn._adam_xp``)."""

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


# --- convolution data movement (NHWC). Serial on purpose: they run between BLAS calls, whose
# worker threads are still spinning on the other cores; a parallel Numba region there contends
# with them (measured on 2 cores: MLP VAE steps 7x slower, conv 2.4x). With OMP_WAIT_POLICY=passive
# the parallel versions win (conv VAE +20 %), but that policy slows the memory-bound kernels by
# 15-20 % and cannot be scoped to one call, so lgm leaves it alone. Inner loops copy contiguous
# runs of C values.
@njit(cache=True, nogil=True)
def im2col(cols, x, s, p):
    """cols (B, Ho, Wo, k, k, C) <- patches of x (B, H, W, C) with implicit zero padding p."""
    B, Ho, Wo, k, _, C = cols.shape
    H, W = x.shape[1], x.shape[2]
    F = cols.dtype.type
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                for u in range(k):
                    r = i * s + u - p
                    for v in range(k):
                        q = j * s + v - p
                        dst = cols[b, i, j, u, v]
                        if 0 <= r < H and 0 <= q < W:
                            src = x[b, r, q]
                            for c in range(C):
                                dst[c] = src[c]
                        else:
                            for c in range(C):
                                dst[c] = F(0)


@njit(cache=True, nogil=True)
def col2im(out, cols, s, p):
    """out (B, H, W, C) = scatter-add of cols (B, Ho, Wo, k, k, C); padding p is cropped."""
    B, Ho, Wo, k, _, C = cols.shape
    H, W = out.shape[1], out.shape[2]
    out[...] = 0
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                for u in range(k):
                    r = i * s + u - p
                    if r < 0 or r >= H:
                        continue
                    for v in range(k):
                        q = j * s + v - p
                        if q < 0 or q >= W:
                            continue
                        src = cols[b, i, j, u, v]
                        dst = out[b, r, q]
                        for c in range(C):
                            dst[c] += src[c]


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
