"""Numba kernels for the low-rank-plus-diagonal Gaussian N(mean, W W^T + diag(psi)).

The per-row parts of the exact log-likelihood (Woodbury identity and matrix determinant lemma,
Tipping & Bishop 1999, Appendix; Bishop 2006, eq. 12.43): the matrix products stay in BLAS, the
kernels do what BLAS cannot (row-wise sums; rows with missing entries, each with its own q x q
system). Accumulation is in float64 for every input dtype: the q x q factorisations and sums of
D terms are where precision is lost, and they are O(q^2) / O(D) per row, not the bottleneck.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_FM = {"reassoc", "contract"}
LOG_2PI = 1.8378770664093453


@njit(parallel=True, fastmath=_FM, error_model="numpy", cache=True, nogil=True)
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


@njit(parallel=True, error_model="numpy", cache=True, nogil=True)
def missing_rows_logpdf(out_m, x_md, mean_d, w_dq, inv_psi_d, log_psi_d):
    """Exact log N(x_o | mean_o, W_o W_o^T + Psi_o) of each row's observed entries (x NaN = missing).

    Per row, with o the observed set: M = I + W_o^T Psi_o^-1 W_o (q x q), b = W_o^T Psi_o^-1 r_o,
    log|C_o| = log|M| + sum_o log psi, r^T C_o^-1 r = sum_o r^2/psi - b^T M^-1 b.
    O(|o| q^2 + q^3) per row, Cholesky written out (q is small). A row with nothing observed
    has log-likelihood 0 (the empty marginal).
    """
    Mrows, D = x_md.shape
    q = w_dq.shape[1]
    for i in prange(Mrows):
        M = np.eye(q)  # q, q (float64)
        b = np.zeros(q)
        quad = 0.0
        logdet = 0.0
        n_obs = 0
        for j in range(D):
            v = x_md[i, j]
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
        # Cholesky M = L L^T in place (lower triangle), then c = L^-1 b
        for a in range(q):
            s = M[a, a]
            for k in range(a):
                s -= M[a, k] * M[a, k]
            d = math.sqrt(s)
            M[a, a] = d
            logdet += 2.0 * math.log(d)
            for c in range(a + 1, q):
                t = M[c, a]
                for k in range(a):
                    t -= M[c, k] * M[a, k]
                M[c, a] = t / d
        for a in range(q):
            t = b[a]
            for k in range(a):
                t -= M[a, k] * b[k]
            b[a] = t / M[a, a]
            quad -= b[a] * b[a]
        out_m[i] = -0.5 * (n_obs * LOG_2PI + logdet + quad)

