"""Numba kernels for the low-rank-plus-diagonal Gaussian N(mean, W W^T + diag(psi)).

The per-row parts of the exact log-likelihood (Woodbury identity and matrix determinant lemma,
Tipping & Bishop 1999, Appendix; Bishop 2006, eq. 12.43): the matrix products stay in BLAS, the
kernels do what BLAS cannot (row-wise sums; rows with missing entries, each with its own q x q
system; the M-step sums with missing values are matrix products, in lgm/_backends/batched.py).
Accumulation is in float64 for every input dtype: the q x q factorisations and sums of D terms
are where precision is lost, and they are O(q^2) / O(D) per row, not the bottleneck.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .jit import jit, helper

LOG_2PI = 1.8378770664093453


@jit()
def row_stats(quad_n, flags_n, x_nd, mean_d, inv_psi_d):
    """One pass over x: quad[n] = sum_j (x[n, j] - mean[j])^2 / psi[j] (float64 accumulation)
    and flags[n] = 1 if the row has a NaN (a missing value), 2 if it has an inf (3: both).
    NaN and inf propagate into the sum, so the flags come from it without a second test per
    element; rows with a NaN are rescored by ``missing_rows_logpdf``."""
    N, D = x_nd.shape
    for n in prange(N):
        acc = 0.0
        for j in range(D):
            r = np.float64(x_nd[n, j]) - np.float64(mean_d[j])
            acc += r * r * inv_psi_d[j]
        quad_n[n] = acc
        f = 0
        if not (acc < np.inf):  # NaN or +inf: find out which, for this row only
            for j in range(D):
                v = x_nd[n, j]
                if v != v:
                    f |= 1
                elif v == np.inf or v == -np.inf:
                    f |= 2
        flags_n[n] = f


@jit(fastmath=())
def missing_rows_logpdf(out_m, x_md, mean_d, w_dq, inv_psi_d, log_psi_d):
    """Exact log N(x_o | mean_o, W_o W_o^T + Psi_o) of each row's observed entries (x NaN = missing).

    Per row, with o the observed set: M = I + W_o^T Psi_o^-1 W_o (q x q), b = W_o^T Psi_o^-1 r_o,
    log|C_o| = log|M| + sum_o log psi, r^T C_o^-1 r = sum_o r^2/psi - b^T M^-1 b.
    O(|o| q^2 + q^3) per row. A row with nothing observed has log-likelihood 0.
    """
    Mrows = x_md.shape[0]
    q = w_dq.shape[1]
    for i in prange(Mrows):
        M = np.empty((q, q))
        b = np.empty(q)
        quad, logdet, n_obs = _observed_system(x_md[i], mean_d, w_dq, inv_psi_d, log_psi_d, M, b)
        _forward(M, b)  # b <- L^-1 b, so |b|^2 = b^T M^-1 b
        for a in range(q):
            quad -= b[a] * b[a]
        out_m[i] = -0.5 * (n_obs * LOG_2PI + logdet + quad)


@helper()
def _chol_inplace(A):
    """Lower Cholesky factor of the SPD matrix A, in place; returns log det A."""
    n = A.shape[0]
    logdet = 0.0
    for a in range(n):
        s = A[a, a]
        for k in range(a):
            s -= A[a, k] * A[a, k]
        d = math.sqrt(s)
        A[a, a] = d
        logdet += 2.0 * math.log(d)
        for c in range(a + 1, n):
            t = A[c, a]
            for k in range(a):
                t -= A[c, k] * A[a, k]
            A[c, a] = t / d
    return logdet


@helper()
def _forward(L, b):
    """b <- L^-1 b (L lower triangular), in place."""
    for a in range(L.shape[0]):
        t = b[a]
        for k in range(a):
            t -= L[a, k] * b[k]
        b[a] = t / L[a, a]


@helper()
def _chol_solve(L, b):
    """Solve (L L^T) x = b in place of b."""
    _forward(L, b)
    for a in range(L.shape[0] - 1, -1, -1):
        t = b[a]
        for k in range(a + 1, L.shape[0]):
            t -= L[k, a] * b[k]
        b[a] = t / L[a, a]


@helper()
def _observed_system(x_d, mean_d, w_dq, inv_psi_d, log_psi_d, M, b):
    """For one row with NaN = missing: fill M = I + W_o^T Psi_o^-1 W_o (lower triangle, then its
    Cholesky factor in place) and b = W_o^T Psi_o^-1 (x_o - mean_o); return (r^T Psi_o^-1 r,
    log|W_o W_o^T + Psi_o| (determinant lemma), number of observed entries)."""
    q = M.shape[0]
    for a in range(q):
        b[a] = 0.0
        for c in range(q):
            M[a, c] = 1.0 if a == c else 0.0
    quad = 0.0
    logdet = 0.0
    n_obs = 0
    for j in range(x_d.shape[0]):
        v = x_d[j]
        if v != v:
            continue
        n_obs += 1
        r = np.float64(v) - np.float64(mean_d[j])
        ip = inv_psi_d[j]
        quad += r * r * ip
        logdet += log_psi_d[j]
        for a in range(q):
            wa = np.float64(w_dq[j, a]) * ip
            b[a] += wa * r
            for c in range(a + 1):
                M[a, c] += wa * np.float64(w_dq[j, c])
    logdet += _chol_inplace(M)
    return quad, logdet, n_obs


@jit(fastmath=())
def missing_estep(ez_nq, sig_nqq, ll_n, x_nd, mean_d, w_dq, inv_psi_d, log_psi_d):
    """E-step with missing values (NaN), one row at a time on its observed set o:
    Sigma_n = (I + W_o^T Psi_o^-1 W_o)^-1, E[t_n] = Sigma_n W_o^T Psi_o^-1 (x_o - mean_o), and
    the row's exact log-likelihood (as missing_rows_logpdf). O(|o| q^2 + q^3) per row."""
    N = x_nd.shape[0]
    q = w_dq.shape[1]
    for n in prange(N):
        M = np.empty((q, q))
        b = np.empty(q)
        quad, logdet, n_obs = _observed_system(x_nd[n], mean_d, w_dq, inv_psi_d, log_psi_d, M, b)
        # Sigma = M^-1 column by column, E[t] = M^-1 b, quad -= b^T M^-1 b
        e = b.copy()
        _chol_solve(M, e)
        for a in range(q):
            quad -= b[a] * e[a]
            ez_nq[n, a] = e[a]
        col = np.zeros(q)
        for a in range(q):
            for c in range(q):
                col[c] = 1.0 if c == a else 0.0
            _chol_solve(M, col)
            for c in range(q):
                sig_nqq[n, c, a] = col[c]
        ll_n[n] = -0.5 * (n_obs * LOG_2PI + logdet + quad)
