"""The batched (matrix-product) formulation of the missing-value kernels, which the GPU backend
runs on cupy, checked here on numpy against the Numba kernels and a dense scipy oracle.

Tolerances: both compute in float64 from the same inputs; they differ in summation order (BLAS
blocks vs a sequential loop) and in the q x q solve (LU / inverse vs Cholesky), so values agree
to ~1e-12 relative; 1e-9 leaves room for conditioning (M = I + W^T Psi^-1 W, cond <= ~1e3 here).
"""

import numpy as np
import pytest
import scipy.stats as st

from lgm import _lowrank_batched as bat
from lgm._cpu import lowrank as k


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


def test_missing_mstep_stats_match_numba(dtype, rng):
    N, D, q = 200, 9, 3
    X, mean, W, psi = _problem(rng, N, D, q, dtype)
    ez, sig, ll = np.empty((N, q)), np.empty((N, q, q)), np.empty(N)
    k.missing_estep(ez, sig, ll, X, mean, W, 1.0 / psi, np.log(psi))
    outs = []
    for f in (lambda *a: bat.missing_mstep_stats(np, *a), k.missing_mstep_stats):
        A = np.full((D, q + 1, q + 1), 0.5)  # accumulates onto what is there
        c, sxx, nd = np.full((D, q + 1), 0.25), np.ones(D), np.zeros(D)
        f(A, c, sxx, nd, X, ez, sig)
        f(A, c, sxx, nd, X, ez, sig)  # twice: += semantics
        outs.append((A, c, sxx, nd))
    for a, b in zip(*outs):
        _close(a, b)
    # the counts are exact
    assert np.array_equal(outs[0][3], 2 * (~np.isnan(X)).sum(0))


def test_chunking_does_not_change_results(rng, monkeypatch):
    X, mean, W, psi = _problem(rng, 97, 6, 2, np.float64)
    args = (X, mean, W, 1.0 / psi, np.log(psi))
    whole = np.empty(97)
    bat.missing_rows_logpdf(np, whole, *args)
    monkeypatch.setattr(bat, "_CHUNK_ELEMS", 60)  # 10 rows per chunk
    assert len(list(bat._chunks(97, 6))) == 10
    parts = np.empty(97)
    bat.missing_rows_logpdf(np, parts, *args)
    _close(parts, whole, 1e-13)
