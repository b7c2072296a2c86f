"""The batched (matrix-product) formulation of the missing-value kernels, which the GPU backend
runs on cupy, checked here on numpy against the Numba kernels and a dense scipy oracle.

Tolerances: both compute in float64 from the same inputs; they differ in summation order (BLAS
blocks vs a sequential loop) and in the q x q solve (LU / inverse vs Cholesky), so values agree
to ~1e-12 relative; 1e-9 leaves room for conditioning (M = I + W^T Psi^-1 W, cond <= ~1e3 here).
"""

import numpy as np
import pytest
import scipy.stats as st

from lgm._backends import batched as bat
from lgm._backends.cpu import lowrank as k


def _problem(rng, N, D, q, dtype, frac=0.3):
    W = (rng.standard_normal((D, q)) * 1.5).astype(dtype)
    mean = rng.standard_normal(D).astype(dtype)
    psi = rng.uniform(0.2, 2.0, D)
    X = (rng.standard_normal((N, q)) @ W.T + mean + rng.standard_normal((N, D)) * np.sqrt(psi)).astype(dtype)
    X[rng.random((N, D)) < frac] = np.nan
    X[0] = np.nan  # a row with nothing observed
    X[1, :] = 1.0  # a complete row
    return X, mean, W, psi


def _close(a, b, tol=1e-9):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.all(np.abs(a - b) <= tol * (1 + np.abs(b))), np.abs(a - b).max()


@pytest.mark.parametrize("N,D,q", [(50, 7, 1), (300, 33, 4), (64, 5, 4)])
def test_missing_rows_logpdf_and_estep_match_numba(dtype, rng, N, D, q):
    X, mean, W, psi = _problem(rng, N, D, q, dtype)
    args = (X, mean, W, 1.0 / psi, np.log(psi))
    got, want = np.empty(N), np.empty(N)
    bat.missing_rows_logpdf(np, got, *args)
    k.missing_rows_logpdf(want, *args)
    _close(got, want)
    assert got[0] == 0.0  # nothing observed: log-likelihood 0
    # dense oracle on a few rows' observed entries
    C = W.astype(np.float64) @ W.T.astype(np.float64) + np.diag(psi)
    for i in (1, 3, 4):
        o = ~np.isnan(X[i])
        ref = st.multivariate_normal(mean[o], C[np.ix_(o, o)]).logpdf(X[i, o].astype(np.float64))
        _close(got[i], ref)
    ez, sig, ll = np.empty((N, q)), np.empty((N, q, q)), np.empty(N)
    ez2, sig2, ll2 = np.empty((N, q)), np.empty((N, q, q)), np.empty(N)
    bat.missing_estep(np, ez, sig, ll, *args)
    k.missing_estep(ez2, sig2, ll2, *args)
    _close(ez, ez2)
    _close(sig, sig2)
    _close(ll, want)
    _close(ll2, want)
    _close(sig[0], np.eye(q))  # nothing observed: the prior


def _mstep_reference(X, ez, sig):
    """The per-feature sums written out row by row: A_d = sum over rows observing d of
    E[[t;1][t;1]^T] (lower triangle of the q x q block, plus the last row and corner)."""
    N, D = X.shape
    q = ez.shape[1]
    A, c, sxx, nd = np.zeros((D, q + 1, q + 1)), np.zeros((D, q + 1)), np.zeros(D), np.zeros(D)
    for d in range(D):
        for n in range(N):
            v = float(X[n, d])
            if np.isnan(v):
                continue
            z = np.append(ez[n], 1.0)
            full = np.outer(z, z)
            full[:q, :q] += sig[n]
            A[d] += np.tril(full)
            c[d] += v * z
            sxx[d] += v * v
            nd[d] += 1
    return A, c, sxx, nd


def test_missing_mstep_stats_match_row_by_row_sums(dtype, rng):
    N, D, q = 120, 9, 3
    X, mean, W, psi = _problem(rng, N, D, q, dtype)
    ez, sig, ll = np.empty((N, q)), np.empty((N, q, q)), np.empty(N)
    k.missing_estep(ez, sig, ll, X, mean, W, 1.0 / psi, np.log(psi))
    A = np.full((D, q + 1, q + 1), 0.5)  # accumulates onto what is there
    c, sxx, nd = np.full((D, q + 1), 0.25), np.ones(D), np.zeros(D)
    bat.missing_mstep_stats(np, A, c, sxx, nd, X, ez, sig)
    bat.missing_mstep_stats(np, A, c, sxx, nd, X, ez, sig)  # twice: += semantics
    ref = _mstep_reference(X, ez, sig)
    low = np.tril(np.ones((q + 1, q + 1), bool))
    _close(np.where(low, A, 0), np.where(low, 0.5 + 2 * ref[0], 0))
    _close(c, 0.25 + 2 * ref[1])
    _close(sxx, 1 + 2 * ref[2])
    assert np.array_equal(nd, 2 * (~np.isnan(X)).sum(0))  # the counts are exact


def test_chunking_does_not_change_results(rng, monkeypatch):
    X, mean, W, psi = _problem(rng, 97, 6, 2, np.float64)
    args = (X, mean, W, 1.0 / psi, np.log(psi))
    whole = np.empty(97)
    bat.missing_rows_logpdf(np, whole, *args)
    monkeypatch.setitem(bat._CHUNK_ELEMS, "numpy", 60)  # 10 rows per chunk
    assert len(list(bat._chunks(np, 97, 6))) == 10
    parts = np.empty(97)
    bat.missing_rows_logpdf(np, parts, *args)
    _close(parts, whole, 1e-13)
