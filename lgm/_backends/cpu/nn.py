"""Numba passes for the layers, with the interface of ``lgm._backends.gpu.nn`` (their
specification): the fused Adam update (one pass over the flat parameter vector instead of the
eight full-vector passes of the array expression), fused bias + ReLU forward and backward.

Serial on purpose: they run between BLAS calls, whose worker threads are still spinning on the
other cores; a parallel Numba region there contends with them (see lgm._backends, threading
policy). Adam's pass was ``parallel=True`` but only ever ran inside that policy, on one thread.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .jit import jit


@jit(parallel=False, fastmath={"contract"})
def _adam(p, m, v, g, lr, b1, b2, eps, c1, c2, tiny):
    F = p.dtype.type
    b1f, b2f, a1, a2 = F(b1), F(b2), F(1 - b1), F(1 - b2)
    step, epsf, ic2, tinyf, zero = F(lr / c1), F(eps), F(1.0 / c2), F(tiny), F(0)
    for i in range(p.shape[0]):
        gi = g[i]
        mi = b1f * m[i] + a1 * gi
        vi = b2f * v[i] + a2 * gi * gi
        # subnormal moments flushed to zero (see adam_step)
        mi = mi if abs(mi) >= tinyf else zero
        vi = vi if vi >= tinyf else zero
        m[i] = mi
        v[i] = vi
        p[i] -= step * mi / (math.sqrt(vi * ic2) + epsf)


def adam_step(p, m, v, g, lr, b1, b2, eps, c1, c2):
    """One Adam update in place on flat vectors (see lgm._backends.gpu.nn.adam_step), except
    that a moment below the smallest normal float (``tiny``) is stored as 0 where that cannot
    matter.

    Why: a parameter whose gradient stops (the encoder's weights of pixels that are almost
    never on, a dead ReLU unit) has its first moment decay by b1 = 0.9 per step through the
    subnormal range, and with a gradient now and then tens of thousands of moments sit there.
    On Intel cores every arithmetic operation on a subnormal takes a microcode assist: the MLP
    VAE's step (batch 128) went from 3.2 to 5.3 ms after 600-900 steps on a Xeon (SkylakeX),
    with 73,000 of Adam's 648,000 first moments subnormal (AMD Zen cores barely slow down).

    When it cannot matter: a flushed v changes the denominator sqrt(v / c2) + eps by at most
    sqrt(tiny / c2), so the flush runs only while that is below eps's last bit (at the default
    eps = 1e-8 always; an eps near sqrt(tiny) turns it off). A flushed m then changes a
    parameter by at most lr / c1 * tiny / eps, below half an ulp of any parameter above ~1e-20
    (float32; tests/test_nn.py checks bit-identical parameters). The GPU's twin keeps the plain
    expression: the GPU computes on subnormals at full speed."""
    info = np.finfo(p.dtype)
    exact = eps >= math.sqrt(float(info.tiny) / c2) * 2.0 ** (info.nmant + 2)
    _adam(p, m, v, g, lr, b1, b2, eps, c1, c2, float(info.tiny) if exact else 0.0)


@njit(cache=True, nogil=True)
def _relu_backward(dy, y):
    F = dy.dtype.type
    for i in range(dy.shape[0]):
        dy[i] = dy[i] if y[i] > 0 else F(0)


def relu_backward(dy, y):
    """dy masked by y > 0: in place when dy is this step's own contiguous temporary."""
    if not (dy.flags.c_contiguous and dy.flags.writeable):
        dy = np.ascontiguousarray(dy).copy()
    _relu_backward(dy.reshape(-1), np.ascontiguousarray(y).reshape(-1))
    return dy


# Layers with few output channels (a decoder's last ConvTranspose2d: N = 1 or 2 columns) get
# column-wise loops: the row-wise ones spend their time on per-row overhead there (the conv
# VAE's 100,352 x 1 output, batch 128: the backward pass 0.39 -> 0.06 ms, measured in one
# process by timing act_bias_backward before and after).
THIN_N = 8


@jit(parallel=False)
def _bias_act_thin(y, b, relu):
    M, N = y.shape
    F = y.dtype.type
    flat = y.reshape(M * N)
    for j in range(N):
        bj = b[j]
        for i in range(j, M * N, N):
            v = flat[i] + bj
            flat[i] = v if (v > 0 or not relu) else F(0)


@njit(cache=True, nogil=True)
def _bias_act(y, b, relu):
    M, N = y.shape
    F = y.dtype.type
    for i in range(M):
        row = y[i]
        for j in range(N):
            v = row[j] + b[j]
            row[j] = v if (v > 0 or not relu) else F(0)


def bias_act(y2, b, relu):
    """y2 (M, N) <- act(y2 + b), in place; act = ReLU or identity. One pass instead of two."""
    if y2.shape[1] < THIN_N and y2.flags.c_contiguous:
        _bias_act_thin(y2, b, relu)
    else:
        _bias_act(y2, b, relu)


@jit(parallel=False)
def _act_bias_backward_thin(acc, dy, y, relu):
    M, N = dy.shape
    F = dy.dtype.type
    d, yf = dy.reshape(M * N), y.reshape(M * N)
    for j in range(N):
        s = 0.0  # float64, as the row-wise loop
        for i in range(j, M * N, N):
            g = d[i]
            if relu:
                g = g if yf[i] > 0 else F(0)
                d[i] = g
            s += g
        acc[j] = s


@njit(cache=True, nogil=True)
def _act_bias_backward(dy, y, relu):
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


def act_bias_backward(dy2, y2, relu):
    """(dy2 masked by y2 > 0 when ``relu``, bias gradient sum_i dy2[i, :] accumulated in
    float64); dy2 is modified in place (it is the step's own temporary). One pass, not two."""
    if not (dy2.flags.c_contiguous and dy2.flags.writeable):
        dy2 = np.ascontiguousarray(dy2).copy()
    y2 = y2 if relu else dy2
    if dy2.shape[1] < THIN_N and y2.flags.c_contiguous:
        acc = np.zeros(dy2.shape[1], np.float64)
        _act_bias_backward_thin(acc, dy2, y2, relu)
        return dy2, acc.astype(dy2.dtype)
    return dy2, _act_bias_backward(dy2, y2, relu)
