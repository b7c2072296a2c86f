"""MCMC transitions shared by the E-step strategies (MCMC-EM) and the AIS estimator: the
Metropolis-Hastings accept step and one HMC transition, for chains batched as (S, B, d) arrays
(S chains for each of B data points) with per-point step sizes."""

from __future__ import annotations

import numpy as np

from ..ops import backend_of

__all__ = ["mh_accept", "hmc_step"]


def mh_accept(rng, log_alpha, current, proposed):
    """Accept each (s, b) proposal with probability min(1, e^log_alpha); NaN proposals are
    rejected. ``current`` and ``proposed`` are tuples of arrays shaped (S, B) or (S, B, ...).
    Returns (the new states, as a tuple, and the acceptance mask (S, B))."""
    xp = backend_of(log_alpha).xp
    u = xp.asarray(rng.random(log_alpha.shape).astype(log_alpha.dtype))
    with np.errstate(invalid="ignore"):
        accept = xp.log(u) < log_alpha
    new = tuple(xp.where(accept.reshape(accept.shape + (1,) * (c.ndim - accept.ndim)), p, c)
                for c, p in zip(current, proposed))
    return new, accept


def hmc_step(rng, log_f, t, f, g, eps, n_leapfrog, extra=()):
    """One HMC transition (Neal 2011) leaving exp(f) invariant: a fresh Gaussian momentum,
    ``n_leapfrog`` leapfrog steps of size ``eps`` (broadcast against t: per point), then the
    Metropolis-Hastings test on the Hamiltonian.

    Parameters
    ----------
    rng : numpy Generator; log_f : callable t -> (f (S, B), grad (S, B, d), extra tuple);
    t (S, B, d), f, g, extra — the current state and what log_f returned for it.

    Returns
    -------
    (t, f, g, extra, accept) after the transition; accept (S, B) booleans.
    """
    xp = backend_of(t).xp
    F = t.dtype.type
    p = xp.asarray(rng.standard_normal(t.shape).astype(t.dtype))
    p1 = p + F(0.5) * eps * g
    t1, f1, g1, extra1 = t, f, g, extra
    for step in range(n_leapfrog):
        t1 = t1 + eps * p1
        f1, g1, extra1 = log_f(t1)
        p1 = p1 + (eps if step < n_leapfrog - 1 else F(0.5) * eps) * g1
    log_alpha = (f1 - F(0.5) * (p1 * p1).sum(-1)) - (f - F(0.5) * (p * p).sum(-1))
    (t, f, g, *extra), accept = mh_accept(rng, log_alpha, (t, f, g, *extra), (t1, f1, g1, *extra1))
    return t, f, g, tuple(extra), accept
