"""Data sources for EM on the linear-Gaussian models: what each kind of X contributes to an EM
step, so that the EM driver (``em.py``) and the estimators never ask what X is.

- :class:`CompleteData`: a numpy or cupy array without missing values (the products over rows
  run on X's device, block by block on centred float64 copies; the closed form's covariance,
  :func:`centred_gram`, multiplies a float32 X in float32 blocks summed in float64);
- :class:`CovarianceData`: complete data summarised by its D x D covariance (EM maps in
  O(D^2 q), no pass over the rows: the profile-likelihood fit's warm start);
- :class:`DaskData`: a dask array, chunk by chunk on the active dask scheduler (threads by
  default, a dask.distributed cluster when a Client is active), reduced to (D, q) and (q, q)
  sums; no chunk is held longer than its own task;
- :class:`MissingData`: a numpy or cupy array with NaN = missing, each row conditioned on its
  observed entries (rows sharing a missingness pattern as one group; the others by the
  backend's per-row twins).

Each offers ``N``, ``D``, ``mean`` (host float64), and complete sources ``colsq`` (centred column
sums of squares) and ``partials(fac)`` (the E-step sums over rows for a Woodbury factor).
"""

from __future__ import annotations

import numpy as np

from ...lowrank import (LOG_2PI, block_buffer, centred_blocks, woodbury_blocks, woodbury_factor,
                        woodbury_posterior)
from ...ops import backend_of, is_dask

__all__ = ["CompleteData", "CovarianceData", "DaskData", "MissingData", "is_dask", "complete_partials",
           "centred_gram", "missingness_groups", "GROUP_MIN_ROWS"]


def complete_partials(X, mean, fac, buf=None):
    """E-step sums for complete rows X (numpy or cupy): with B = (X - mean) Psi^-1 W (rows b_n)
    and E[t_n] = M^-1 b_n (:func:`lgm.lowrank.woodbury_posterior`), returns
    (sum_n (x_n - mean) E[t_n]^T (D, q), sum_n E[t_n] E[t_n]^T (q, q), sum_n b_n^T M^-1 b_n) as
    host float64 arrays. The products over rows run on X's device, block by block on centred
    float64 copies written into ``buf`` (from :func:`lgm.lowrank.block_buffer`)."""
    be = backend_of(X)
    xp = be.xp
    D, q = fac.Wp.shape
    Sxz, Szz, cc = xp.zeros((D, q)), xp.zeros((q, q)), xp.zeros(())
    for _, R, E, bMb in woodbury_blocks(X, mean, fac, buf):
        Sxz += R.T @ E
        Szz += E.T @ E
        cc += bMb.sum()
    return be.to_host(Sxz), be.to_host(Szz), float(cc)


# rows per float32 product in centred_gram: each block's sum runs in float32 (worst-case relative
# error about rows x 6e-8, so 1.2e-4 of sum |r_i r_j|; typically sqrt(rows) x 6e-8), the sum over
# blocks in float64
_GRAM32_ROWS = 2048


def centred_gram(X, mean):
    """sum_n (x_n - mean)(x_n - mean)^T in float64 on the host, from centred blocks; ``mean``
    is X's row mean in float64 (what every caller passes: the float32 path below relies on
    sum_n (x_n - mean) = 0). Uncentred float32 X^T X loses the covariance to cancellation once
    the mean is large (a mean of 1000 cost the closed-form PPCA fit 0.011 nats/sample).

    On the CPU a float32 X is centred and multiplied in float32, 2048 rows at a time, and the
    blocks' products are summed in float64: against float64 products this moves the closed-form
    PPCA fit's log-likelihood by under 1e-10 nats/sample (MNIST-5k; a mean of 1000) and the
    profile FactorAnalysis fit's by 5e-8, inside its stopping tolerance, and the fit of
    60000 x 784 takes 321 ms instead of 658 (2 cores, best of 5, one process). Other dtypes,
    and cupy X, are multiplied in float64."""
    be = backend_of(X)
    if be.name == "numpy":
        # scipy's syrk (half a GEMM's work: S is symmetric), so that the product and the
        # eigendecomposition that follows run in one BLAS thread pool: numpy and scipy each ship
        # an OpenBLAS, and scipy's eigh right after numpy's GEMM ran with numpy's workers still
        # spinning: 2 threads, MNIST-5k, 138 ms for the two instead of 84
        from scipy.linalg.blas import dsyrk, ssyrk

        N, D = X.shape
        S = np.zeros((D, D), order="F")
        if X.dtype == np.float32:
            buf = np.empty((max(1, min(N, _GRAM32_ROWS)), D), np.float32)
            # centred in float32 at the float32 mean, not by centred_blocks (whose float64 mean
            # makes numpy subtract in float64: 10 % slower over the whole product at 60000 x 784),
            # and the rounded mean's contribution taken out below
            m32 = np.asarray(mean, np.float32)
            for s in range(0, N, buf.shape[0]):
                blk = X[s:s + buf.shape[0]]
                R = np.subtract(blk, m32, out=buf[:blk.shape[0]])
                # R.T is Fortran-ordered: BLAS reads it in place (R with trans=1 is copied)
                S += ssyrk(1.0, R.T, trans=0, lower=1)
            # the rows were centred at mean + d (the float32 mean's rounding), and
            # sum_n (x_n - mean) = 0, so sum_n R_n R_n^T = the wanted sum + N d d^T
            d = m32 - np.asarray(mean, np.float64)
            S -= N * np.outer(d, d)
        else:
            for R in centred_blocks(X, mean):
                S = dsyrk(1.0, R, beta=1.0, c=S, trans=1, lower=1, overwrite_c=1)
        return np.tril(S) + np.tril(S, -1).T
    S = be.xp.zeros((X.shape[1], X.shape[1]))
    for R in centred_blocks(X, mean):
        S += R.T @ R
    return be.to_host(S)


class CompleteData:
    """A numpy or cupy X without missing values: its mean (one pass) and, with ``stats=True``
    (what EM needs), the centred column sums of squares and the float64 block buffer that
    every iteration's products reuse."""

    def __init__(self, X, stats=True):
        self.X = X
        self.N, self.D = X.shape
        be = backend_of(X)
        self.mean = be.to_host(X.mean(axis=0, dtype=np.float64))  # D
        if stats:
            self._buf = block_buffer(X)
            colsq = be.xp.zeros(self.D)
            for R in centred_blocks(X, self.mean, self._buf):
                colsq += (R * R).sum(axis=0)
            self.colsq = be.to_host(colsq)  # sum_n (x_nd - mean_d)^2

    def partials(self, fac):
        return complete_partials(self.X, self.mean, fac, self._buf)


class CovarianceData:
    """Complete data known through its centred covariance S (D x D, float64, host) and N: the
    E-step sums of :func:`complete_partials` are quadratic in the centred rows, so they follow
    from S alone (with G = N S Psi^-1 W and E = R Psi^-1 W M^-1: sum R^T E = G M^-1,
    sum E^T E = M^-1 H M^-1 and sum b^T M^-1 b = tr(M^-1 H), H = W^T Psi^-1 G), O(D^2 q) per EM
    map instead of O(N D q)."""

    def __init__(self, S, N, mean):
        self.S = np.asarray(S, np.float64)
        self.N, self.D = int(N), self.S.shape[0]
        self.mean = np.asarray(mean, np.float64)
        self.colsq = self.N * np.diag(self.S).copy()

    def partials(self, fac):
        G = self.N * (self.S @ fac.Wp)  # D, q
        H = fac.Wp.T @ G  # q, q
        return G @ fac.Minv, fac.Minv @ H @ fac.Minv, float((fac.Minv * H).sum())


class DaskData:
    """The dask twin of :class:`CompleteData`: the same sums, per row-chunk."""

    def __init__(self, X):
        import dask.array as da

        if len(X.chunks[1]) != 1:
            X = X.rechunk({1: -1})  # chunk by rows only
        self.X = X
        self.N, self.D = (int(n) for n in X.shape)
        s, sq = da.compute(X.sum(axis=0, dtype=np.float64),
                           (X.astype(np.float64) ** 2).sum(axis=0))
        self.mean = s / self.N
        self.colsq = np.maximum(sq - self.N * self.mean**2, 0.0)
        if not (np.all(np.isfinite(self.colsq)) and np.all(np.isfinite(self.mean))):
            raise ValueError("dask input: NaN or inf found; missing values are supported for "
                             "numpy and cupy input, not dask (so far)")

    def partials(self, fac):
        import dask

        parts = [dask.delayed(complete_partials)(blk, self.mean, fac)
                 for blk in self.X.to_delayed().ravel()]
        return dask.delayed(_sum_partials)(parts).compute()


def _sum_partials(parts):
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


# A missingness pattern shared by at least this many rows is handled as a group (one q x q
# factorisation, BLAS products); rarer patterns go row by row through the backend's twins.
GROUP_MIN_ROWS = 32


def missingness_groups(missing):
    """(groups, rest): groups is a list of (row indices, observed-column mask) for patterns
    shared by >= GROUP_MIN_ROWS rows; rest holds the indices of all other rows."""
    packed = np.packbits(missing, axis=1)
    _, inverse, counts = np.unique(packed, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    groups = []
    big = np.flatnonzero(counts >= GROUP_MIN_ROWS)
    for g in big:
        rows = np.flatnonzero(inverse == g)
        groups.append((rows, ~missing[rows[0]]))
    in_group = np.isin(inverse, big)
    return groups, np.flatnonzero(~in_group)


def _group_estep(Xo, obs, mean, W, psi):
    """E-step for rows that all observe exactly the columns ``obs`` (Xo: their observed block,
    numpy or cupy; the rest host arrays): the complete-data Woodbury E-step on that block.
    Returns (E[t] per row on Xo's device, the shared posterior covariance, the sum of the rows'
    log-likelihoods)."""
    xp = backend_of(Xo).xp
    q = W.shape[1]
    n_obs = int(obs.sum())
    if n_obs == 0:  # nothing observed: posterior = prior, log-likelihood 0
        return xp.zeros((Xo.shape[0], q)), np.eye(q), 0.0
    fac = woodbury_factor(W[obs], psi[obs])
    R = Xo.astype(np.float64, copy=False) - xp.asarray(mean[obs])  # n_g, |o|
    E, bMb = woodbury_posterior(R @ xp.asarray(fac.Wp), fac)
    quad = float(xp.einsum("nd,nd,d->", R, R, xp.asarray(1.0 / psi[obs]))) - float(bMb.sum())
    n_g = Xo.shape[0]
    return E, fac.Minv, -0.5 * (n_g * (n_obs * LOG_2PI + fac.logdet) + quad)


class MissingData:
    """A numpy or cupy X with NaN = missing value. EM on the observed entries (Tipping & Bishop
    1999; Ilin & Raiko 2010): each row conditioned on what it observes, each feature's loading
    and mean updated from the rows that observe it (a (q+1) x (q+1) system per feature)."""

    def __init__(self, X, nan):
        be = self.backend = backend_of(X)
        xp = be.xp
        missing = be.to_host(nan)  # N x D booleans: the grouping is host work, done once
        self.counts = counts = (~missing).sum(0)
        if (counts == 0).any():
            raise ValueError(f"feature(s) {np.flatnonzero(counts == 0).tolist()} have no observed "
                             "value (all NaN): drop them")
        self.N, self.D = X.shape
        # starting point: the observed entries' means and variances per feature (two passes)
        X0 = xp.where(nan, 0.0, X.astype(np.float64))
        self.mean = be.to_host(X0.sum(axis=0)) / counts
        R0 = xp.where(nan, 0.0, X0 - xp.asarray(self.mean))
        self.var = be.to_host((R0 * R0).sum(axis=0)) / counts
        del X0, R0
        Xc = xp.ascontiguousarray(X)
        self.groups, self.rest = missingness_groups(missing)
        # each group's observed block, gathered once (its rows' data, in X's dtype, on X's device)
        self.blocks = [Xc[xp.asarray(rows)[:, None], xp.asarray(np.flatnonzero(obs))[None, :]]
                       for rows, obs in self.groups]
        self.X_rest = xp.ascontiguousarray(Xc[xp.asarray(self.rest)])

    def step(self, W, psi, mean):
        """One EM map from (W, psi, mean): returns (W', psi', mean', mean log-likelihood of the
        input parameters per row)."""
        be, xp = self.backend, self.backend.xp
        D, q = W.shape
        inv_psi, log_psi = 1.0 / psi, np.log(psi)
        A = np.zeros((D, q + 1, q + 1))  # per feature: sum E[[t;1][t;1]^T] (lower triangle)
        c = np.zeros((D, q + 1))  # per feature: sum x [E t; 1]
        sxx = np.zeros(D)
        nd = np.zeros(D)
        ll_sum = 0.0
        # rows sharing a missingness pattern share M_o: one q x q factorisation, BLAS
        for (rows, obs), Xo in zip(self.groups, self.blocks):
            E, Sig, ll_g = _group_estep(Xo, obs, mean, W, psi)
            ll_sum += ll_g
            n_g = rows.size
            Ag = np.empty((q + 1, q + 1))
            Ag[:q, :q] = n_g * Sig + be.to_host(E.T @ E)
            Ag[q, :q] = Ag[:q, q] = be.to_host(E.sum(axis=0))
            Ag[q, q] = n_g
            A[obs] += Ag
            Xo64 = Xo.astype(np.float64, copy=False)
            c[obs, :q] += be.to_host(Xo64.T @ E)
            c[obs, q] += be.to_host(Xo64.sum(axis=0))
            sxx[obs] += be.to_host((Xo64 * Xo64).sum(axis=0))
            nd[obs] += n_g
        m = self.rest.size
        if m:  # the other rows, each with its own q x q system (the backend's per-row twins)
            if getattr(self, "_rest_bufs", (None,))[0] is None or self._rest_bufs[0].shape[1] != q:
                self._rest_bufs = (xp.empty((m, q)), xp.empty((m, q, q)), xp.empty(m))
            ez, sig, ll = self._rest_bufs
            # parallel on purpose: per-row q x q factorisations are compute-bound (serial was
            # 25 % slower per iteration, 30 % missing at random on MNIST-5k)
            be.lowrank.missing_estep(ez, sig, ll, self.X_rest,
                                     *(xp.asarray(v) for v in (mean, W, inv_psi, log_psi)))
            ll_sum += float(ll.sum())
            sums = tuple(xp.zeros(v.shape) for v in (A, c, sxx, nd))  # on X's device
            be.lowrank.missing_mstep_stats(*sums, self.X_rest, ez, sig)
            for host, dev in zip((A, c, sxx, nd), sums):
                host += be.to_host(dev)
        # theta_d = [W_d, mean_d] solves theta_d A_d = c_d; psi_d = (sxx_d - theta_d . c_d) / n_d
        il = np.tril_indices(q + 1, -1)
        A[:, il[1], il[0]] = A[:, il[0], il[1]]  # symmetrise (the sums fill the lower part)
        theta = np.linalg.solve(A, c[..., None])[..., 0]  # D, q+1
        W1, mean1 = theta[:, :q], theta[:, q]
        psi1 = (sxx - np.einsum("dk,dk->d", theta, c)) / nd
        return W1, psi1, mean1, float(ll_sum / self.N)
