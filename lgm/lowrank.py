"""Exact log-density of the low-rank-plus-diagonal Gaussian, the marginal of the linear-Gaussian
latent model (probabilistic PCA, factor analysis):

    p(x) = ∫ N(x | W t + mean, diag(psi)) N(t | 0, I) dt = N(x | mean, W W^T + diag(psi)).

Computed through the Woodbury identity and the matrix determinant lemma (Tipping & Bishop 1999,
Appendix A; Bishop 2006, section 12.2.1) in O(N D q) time and O(D q) extra memory: never a D x D
matrix. NaN entries of x are missing values and are marginalised out exactly (each row is
scored on its observed coordinates).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from typing import NamedTuple

from ._backends import backend_of
from ._validate import check_floats

__all__ = ["lowrank_gaussian_logpdf", "WoodburyFactor", "woodbury_factor", "woodbury_posterior",
           "woodbury_blocks", "centred_blocks", "block_buffer", "gaussian_loglik"]

LOG_2PI = math.log(2 * math.pi)


class WoodburyFactor(NamedTuple):
    """The q x q pieces of the Woodbury identity and the determinant lemma for
    C = W W^T + diag(psi), float64 host arrays (Tipping & Bishop 1999, Appendix A):
    ``Wp`` = Psi^-1 W (D, q), ``Linv`` with L L^T = M = I + W^T Psi^-1 W (q, q), ``Minv`` = M^-1
    (q, q), ``logdet`` = log|C| = log|M| + sum log psi. Then C^-1 = Psi^-1 - Wp M^-1 Wp^T."""

    Wp: np.ndarray
    Linv: np.ndarray
    Minv: np.ndarray
    logdet: float


def woodbury_factor(W, psi):
    """:class:`WoodburyFactor` of C = W W^T + diag(psi).

    Parameters
    ----------
    W : array of shape (D, q) — loadings (host).
    psi : array of shape (D,) — noise variances, > 0 (host).
    """
    W = np.asarray(W, np.float64)
    psi = np.asarray(psi, np.float64)
    Wp = W / psi[:, None]  # D, q
    L = np.linalg.cholesky(np.eye(W.shape[1]) + W.T @ Wp)  # q, q
    logdet = 2.0 * np.log(np.diag(L)).sum() + np.log(psi).sum()
    Linv = np.linalg.inv(L)
    return WoodburyFactor(Wp, Linv, Linv.T @ Linv, float(logdet))


def woodbury_posterior(B, fac):
    """The Woodbury E-step, written once for every caller (the log-density, EM's sums, the
    missing-value groups, the posterior):

    Parameters
    ----------
    B : array of shape (n, q), float64, numpy or cupy — rows b_n = W^T Psi^-1 (x_n - mean).
    fac : :class:`WoodburyFactor`.

    Returns
    -------
    E : array (n, q) on B's device — the posterior means E[t_n | x_n] = M^-1 b_n
        (Tipping & Bishop 1999, eq. 7 in the isotropic case);
    bMb : array (n,) — b_n^T M^-1 b_n, so that the Mahalanobis term of the log-density is
        r^T C^-1 r = r^T Psi^-1 r - b^T M^-1 b.
    """
    E = B @ backend_of(B).xp.asarray(fac.Minv)
    return E, (B * E).sum(axis=1)


def gaussian_loglik(n_dims, logdet, quad):
    """log N = -1/2 (n log 2 pi + log|C| + r^T C^-1 r), for scalars or arrays of rows."""
    return -0.5 * (n_dims * LOG_2PI + logdet + quad)


# Rows per float64 block in the sums over rows: ~2 MB on the CPU (cache-sized), ~128 MB on the GPU
# (fewer, larger cuBLAS calls).
_BLOCK_ELEMS = {"numpy": 1 << 18, "cupy": 1 << 24}


def block_buffer(X):
    """The float64 block (on X's device) that :func:`centred_blocks` writes rows into; keep it
    across calls (a fresh multi-MB numpy array costs its page faults on every call)."""
    be = backend_of(X)
    N, D = X.shape
    rows = max(1, min(N, _BLOCK_ELEMS[be.name] // max(D, 1)))
    return be.xp.empty((rows, D), np.float64)


def centred_blocks(X, mean, buf=None):
    """The rows of X - mean in float64, block by block, each written into ``buf`` (a generator;
    buf's row count is the block size). Sums over rows of centred float64 blocks keep what
    float32 products on uncentred data lose to cancellation."""
    xp = backend_of(X).xp
    buf = block_buffer(X) if buf is None else buf
    mean_d = xp.asarray(mean, np.float64)
    for s in range(0, X.shape[0], buf.shape[0]):
        blk = X[s:s + buf.shape[0]]
        yield xp.subtract(blk, mean_d, out=buf[:blk.shape[0]])


def _check_params(fname, D, dtype, mean, W, psi):
    if mean.shape != (D,):
        raise ValueError(f"{fname}: expected mean of shape ({D},), got {mean.shape}")
    if W.ndim != 2 or W.shape[0] != D:
        raise ValueError(f"{fname}: expected W of shape ({D}, q) with q >= 0, got {W.shape}")
    if psi.ndim == 0:
        psi = np.full(D, psi, dtype=dtype)
    if psi.shape != (D,):
        raise ValueError(f"{fname}: expected psi to be a scalar or of shape ({D},), got {psi.shape}")
    for name, a in (("mean", mean), ("W", W), ("psi", psi)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{fname}: expected {name} to be finite, got NaN or inf")
    if not np.all(psi > 0):
        raise ValueError(f"{fname}: expected psi (noise variances) > 0, got min {psi.min()!r}")
    return psi


def lowrank_gaussian_logpdf(x, mean, W, psi):
    """log N(x | mean, W W^T + diag(psi)) for each row of x; NaN entries are missing.

    Parameters
    ----------
    x : array of shape (n_samples, D) or (D,), float32 or float64, numpy or cupy. NaN marks a
        missing entry (marginalised out: the row is scored on its observed coordinates); inf is
        an error.
    mean : array of shape (D,)
    W : array of shape (D, q) — the loading matrix
    psi : scalar or array of shape (D,) — noise variances, > 0 (PPCA: a scalar s^2)

    Returns
    -------
    array of shape (n_samples,) (or a scalar array for one row), in x's dtype, on x's device.

    Numerics: the rows are centred into float64 blocks (a few MB, reused) before their D x q
    product in BLAS (cuBLAS for cupy); the q x q Cholesky factor, the log-determinant and the
    per-row sums are float64 too. float32 data are therefore scored as precisely as the same
    values in float64 (to ~1e-6 nats per row, not 0.78 nats on data with an offset of 1000). A row with every entry missing scores 0. On the GPU
    the parameters (O(D q)) are checked and factorised on the host, the data never leave the
    device.
    """
    fname = "lowrank_gaussian_logpdf"
    if isinstance(psi, numbers.Real) and not isinstance(psi, (bool, np.bool_)) and psi <= 0:
        raise ValueError(f"{fname}: expected psi (noise variances) > 0, got {psi!r}")
    be, dtype, a = check_floats(fname, x=x, mean=mean, W=W, psi=psi)
    x = a["x"]
    xp, low = be.xp, be.lowrank
    one = x.ndim == 1
    if one:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{fname}: expected x of shape (n_samples, D) or (D,), got {a['x'].shape}")
    N, D = x.shape
    if D == 0:
        raise ValueError(f"{fname}: expected D >= 1 features, got x of shape {x.shape}")
    # the parameters are O(D q): copied to the host once, checked and factorised there
    mean, W, psi = (be.to_host(a[n]) for n in ("mean", "W", "psi"))
    psi = _check_params(fname, D, dtype, mean, W, psi)

    x = xp.ascontiguousarray(x)
    psi64 = psi.astype(np.float64)
    inv_psi = 1.0 / psi64  # D
    log_psi = np.log(psi64)  # D
    out = xp.empty(N, np.float64)
    quad_all = xp.empty(N, np.float64)  # sum_j r_j^2 / psi_j per row
    flags = xp.zeros(N, np.uint8)
    if N:
        # the BLAS products dominate here: lgm's Numba kernels run inside the backend's threading
        # policy (serial on the CPU), or their spinning OpenMP workers slow the BLAS that follows
        # (MNIST-5k, 2 cores: 12.3 ms per score_samples with a parallel row pass, 9.4 serial)
        with be.threads():
            low.row_stats(quad_all, flags, x, xp.asarray(mean), xp.asarray(inv_psi))
    n_inf = int(((flags & 2) > 0).sum())
    if n_inf:
        raise ValueError(f"{fname}: expected x without inf (NaN marks a missing value), "
                         f"got inf in {n_inf} row(s)")
    has_nan = flags > 0
    n_complete = N - int(has_nan.sum())
    if n_complete:
        complete = ~has_nan
        xc = x if n_complete == N else x[complete]
        fac = woodbury_factor(W, psi64)
        quad = quad_all if n_complete == N else quad_all[complete]
        for s0, _, _, bMb in woodbury_blocks(xc, mean, fac):
            quad[s0:s0 + bMb.shape[0]] -= bMb  # r^T C^-1 r = r^T Psi^-1 r - b^T M^-1 b
        vals = gaussian_loglik(D, fac.logdet, quad)
        if n_complete == N:
            out = vals
        else:
            out[complete] = vals
    if n_complete < N:
        xm = x[has_nan]
        om = xp.empty(xm.shape[0], np.float64)
        with be.threads():
            low.missing_rows_logpdf(om, xm, xp.asarray(mean), xp.asarray(W), xp.asarray(inv_psi),
                                  xp.asarray(log_psi))
        out[has_nan] = om
    out = out.astype(dtype, copy=False)
    return out[0] if one else out


def woodbury_blocks(X, mean, fac, buf=None):
    """The Woodbury E-step over the rows of X (numpy or cupy, any float dtype), block by block on
    centred float64 copies: yields (first row, R = X - mean (n, D), E[t | x] (n, q), b^T M^-1 b
    (n,)) per block. Centring in float64 first keeps what float32 products of uncentred rows
    lose: on data with an offset of 1000 they cost float32 scores up to 0.78 nats per row."""
    Wp = backend_of(X).xp.asarray(fac.Wp, np.float64)
    s = 0
    for R in centred_blocks(X, mean, buf):
        E, bMb = woodbury_posterior(R @ Wp, fac)
        yield s, R, E, bMb
        s += R.shape[0]
