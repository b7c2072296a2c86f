"""EM for the linear-Gaussian models: one EM map on complete data (:func:`em_step`) and the
driver that iterates any EM map with SQUAREM acceleration (:func:`run_em`).

References: Tipping & Bishop (1999), Probabilistic principal component analysis, JRSS B 61(3),
Appendix B; Rubin & Thayer (1982) for the FA updates; Varadhan & Roland (2008), Simple and
globally convergent methods for accelerating the convergence of any EM algorithm (SQUAREM),
Scand. J. Stat. 35(2).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning as _SklearnConvergenceWarning

from ...lowrank import gaussian_loglik, woodbury_factor

__all__ = ["ConvergenceWarning", "em_step", "run_em"]


class ConvergenceWarning(_SklearnConvergenceWarning):
    """EM stopped at max_iter before the log-likelihood gain fell below tol. A subclass of
    scikit-learn's ConvergenceWarning, so a filter set for scikit-learn's catches lgm's too."""


def em_step(source, W, psi):
    """One EM update on complete data (Tipping & Bishop 1999, App. B; Rubin & Thayer 1982).

    Parameters
    ----------
    source : CompleteData or DaskData (lgm.models.linear.sources) — the data enter only through
        ``source.partials`` (sums over rows), so the same step runs on a numpy or cupy array or
        chunk by chunk on a dask array.
    W : array of shape (D, q), float64 — loadings.
    psi : array of shape (D,), float64 — noise variances.

    Returns
    -------
    W_new : (D, q), psi_new : (D,) — the updated parameters (psi before any floor);
    loglik : float — the exact mean log-likelihood per row of the *input* parameters, which
        falls out of the E-step's products (Woodbury, as lgm.lowrank_gaussian_logpdf).
    """
    N, D = source.N, source.D
    fac = woodbury_factor(W, psi)
    Sxz, Szz_data, cc = source.partials(fac)  # sum (x - mean) E[t]^T, sum E[t] E[t]^T, sum b^T M^-1 b
    loglik = gaussian_loglik(D, fac.logdet, ((source.colsq / psi).sum() - cc) / N)
    Szz = N * fac.Minv + Szz_data  # q, q: sum_n E[t_n t_n^T]
    W_new = np.linalg.solve(Szz, Sxz.T).T  # D, q
    # diag of sum_n (x_n - mean)(x_n - mean)^T - W_new Sxz^T, per feature
    psi_new = (source.colsq - np.einsum("dq,dq->d", W_new, Sxz)) / N
    return W_new, psi_new, loglik


def run_em(step, W0, psi0, mean0, *, project, tol, max_iter, accelerate, name="EM", stacklevel=6,
           warn=True):
    """Iterate the EM map ``step`` from (W0, psi0, mean0), SQUAREM-accelerated.

    Parameters
    ----------
    step : callable (W, psi, mean) -> (W', psi', mean', loglik of the input)
    W0 : (D, q); psi0 : (D,); mean0 : (D,) — the starting point (host float64).
    project : callable psi -> psi — the noise constraint applied after every map (floors; PPCA's
        isotropic average).
    tol : float — stop when a map gains less than tol nats per row; max_iter : int — maps in
        all (each SQUAREM cycle counts its three maps); accelerate : bool — SQUAREM on/off.
    name : str — for the ConvergenceWarning; stacklevel : int — its frame (the user's call);
    warn : bool — False: no warning at max_iter (a deliberate fixed number of maps).

    Returns
    -------
    (W, psi, mean, n_iter, history): history holds the exact mean log-likelihood of every
    iterate, in order (monotone: an extrapolation is kept only if it does not lower it).
    """
    def F(th):
        W1, psi1, mean1, ll = step(*th)
        return (W1, project(psi1), mean1), ll

    th = (W0, project(psi0), mean0)
    history = []
    converged = False
    it = 0
    gain = np.inf
    while it < max_iter:
        th1, ll0 = F(th)
        it += 1
        if history:
            gain = ll0 - history[-1]
        history.append(ll0)
        if gain < tol:
            converged = True
            break
        if not accelerate or it + 2 > max_iter:
            th = th1
            continue
        # SQUAREM (Varadhan & Roland 2008, scheme S3) on (W, log psi, mean): two EM maps, an
        # extrapolation along them, and a stabilising EM map from the extrapolated point.
        # Monotone guard: the jump is kept only if its likelihood is at least that of the
        # second map's input; otherwise the plain double EM step is taken.
        th2, ll1 = F(th1)
        it += 1
        history.append(ll1)
        z0, z1, z2 = (np.concatenate([t[0].ravel(), np.log(t[1]), t[2]]) for t in (th, th1, th2))
        r, v = z1 - z0, z2 - 2 * z1 + z0
        nv = np.linalg.norm(v)
        th_next = th2
        if nv > 0:
            alpha = min(-1.0, -np.linalg.norm(r) / nv)
            za = z0 - 2 * alpha * r + alpha**2 * v
            if np.all(np.isfinite(za)):
                D, q = th[0].shape
                tha = (za[: D * q].reshape(D, q), project(np.exp(za[D * q: D * q + D])), za[D * q + D:])
                thb, lla = F(tha)
                it += 1
                if lla >= ll1:
                    history.append(lla)
                    th_next = thb
        th = th_next
    if converged:
        th = th1  # the last EM map's output: at least as likely as its input
    final = step(*th)[3]
    if final >= history[-1]:
        history.append(final)
    if not converged and warn:
        warnings.warn(f"{name}: EM did not converge in max_iter={max_iter} iterations (last gain "
                      f"{gain:.3g} nats/sample > tol={tol}); raise max_iter or tol",
                      ConvergenceWarning, stacklevel=stacklevel)
    return th[0], th[1], th[2], it, history
