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

from ._validate import array_module, check_floats, to_host

__all__ = ["lowrank_gaussian_logpdf"]

LOG_2PI = math.log(2 * math.pi)


def backend(a):
    """(array module, lowrank kernels) for a's device: numpy -> (numpy, lgm._cpu.lowrank),
    cupy -> (cupy, lgm._gpu), whose twins take the same arguments on device arrays."""
    if array_module(a) == "cupy":
        from .ops import _backend

        return _backend("lgm (cupy arrays)", "cupy")
    from ._cpu import lowrank

    return np, lowrank


def woodbury_factor(W, psi):
    """The q x q pieces of the Woodbury identity and determinant lemma for C = W W^T + diag(psi):
    (Wp = Psi^-1 W (D, q), Linv with L L^T = M = I + W^T Psi^-1 W, log|C| = log|M| + sum log psi),
    all float64. Then C^-1 = Psi^-1 - Wp M^-1 Wp^T and M^-1 = Linv^T Linv."""
    W = np.asarray(W, np.float64)
    psi = np.asarray(psi, np.float64)
    Wp = W / psi[:, None]  # D, q
    L = np.linalg.cholesky(np.eye(W.shape[1]) + W.T @ Wp)  # q, q
    logdet = 2.0 * np.log(np.diag(L)).sum() + np.log(psi).sum()
    return Wp, np.linalg.inv(L), logdet


def _check_params(fname, D, dtype, mean, W, psi):
    if mean.shape != (D,):
        raise ValueError(f"{fname}: expected mean of shape ({D},), got {mean.shape}")
    if W.ndim != 2 or W.shape[0] != D or W.shape[1] < 1:
        raise ValueError(f"{fname}: expected W of shape ({D}, q) with q >= 1, got {W.shape}")
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

    Numerics: the D x q products run in BLAS (cuBLAS for cupy) in x's dtype; the q x q Cholesky
    factor, the log-determinant and the per-row sums are float64 (that is where precision is
    lost, at O(q^2) and O(D) cost per row). A row with every entry missing scores 0. On the GPU
    the parameters (O(D q)) are checked and factorised on the host, the data never leave the
    device.
    """
    fname = "lowrank_gaussian_logpdf"
    if isinstance(psi, numbers.Real) and not isinstance(psi, (bool, np.bool_)) and psi <= 0:
        raise ValueError(f"{fname}: expected psi (noise variances) > 0, got {psi!r}")
    mod, dtype, a = check_floats(fname, x=x, mean=mean, W=W, psi=psi)
    x = a["x"]
    xp, k = backend(x)
    one = x.ndim == 1
    if one:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{fname}: expected x of shape (n_samples, D) or (D,), got {a['x'].shape}")
    N, D = x.shape
    if D == 0:
        raise ValueError(f"{fname}: expected D >= 1 features, got x of shape {x.shape}")
    # the parameters are O(D q): copied to the host once, checked and factorised there
    mean, W, psi = (to_host(a[n]) for n in ("mean", "W", "psi"))
    psi = _check_params(fname, D, dtype, mean, W, psi)

    x = xp.ascontiguousarray(x)
    psi64 = psi.astype(np.float64)
    inv_psi = 1.0 / psi64  # D
    log_psi = np.log(psi64)  # D
    out = xp.empty(N, np.float64)
    quad_all = xp.empty(N, np.float64)  # sum_j r_j^2 / psi_j per row
    flags = xp.zeros(N, np.uint8)
    if N:
        k.row_stats(quad_all, flags, x, xp.asarray(mean), xp.asarray(inv_psi))
    n_inf = int(((flags & 2) > 0).sum())
    if n_inf:
        raise ValueError(f"{fname}: expected x without inf (NaN marks a missing value), "
                         f"got inf in {n_inf} row(s)")
    has_nan = flags > 0
    n_complete = N - int(has_nan.sum())
    if n_complete:
        complete = ~has_nan
        xc = x if n_complete == N else x[complete]
        Wp, Linv, logdet = woodbury_factor(W, psi64)
        # b = W^T Psi^-1 (x - mean) for every row, as one BLAS product without an (N, D) residual
        B = xc @ xp.asarray(Wp, dtype) - xp.asarray(mean.astype(np.float64) @ Wp)  # N, q
        C = B.astype(np.float64, copy=False) @ xp.asarray(Linv.T)  # N, q: rows are L^-1 b
        quad = quad_all if n_complete == N else quad_all[complete]
        quad -= (C * C).sum(axis=1)  # Woodbury: r^T C^-1 r = r^T Psi^-1 r - |L^-1 b|^2
        vals = -0.5 * (D * LOG_2PI + logdet + quad)
        if n_complete == N:
            out = vals
        else:
            out[complete] = vals
    if n_complete < N:
        xm = x[has_nan]
        om = xp.empty(xm.shape[0], np.float64)
        k.missing_rows_logpdf(om, xm, xp.asarray(mean), xp.asarray(W), xp.asarray(inv_psi),
                              xp.asarray(log_psi))
        out[has_nan] = om
    out = out.astype(dtype, copy=False)
    return out[0] if one else out
