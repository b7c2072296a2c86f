"""Held-out log-likelihood that does not depend on any strategy's proposal: annealed importance
sampling (Neal 2001) with HMC transitions, as used for decoder-based models by Wu et al. (2017),
and its reverse, which with an exact posterior sample bounds log p(x) from above (bidirectional
Monte Carlo, Grosse et al. 2015).

The path runs from the prior to the posterior through the geometric bridge
    f_beta(t) = log N(t | 0, I) + beta log p(x | t),   beta from 0 to 1,
on a sigmoid schedule (denser near both ends). Chains are batched: S chains for each of B data
points, one decoder pass (value and gradient in t, the fused kernels through
:meth:`lgm.vae.VAE.decoder_grad`) per leapfrog step. Each point's HMC step size adapts towards an
acceptance rate of 0.65 from the acceptances already seen (so every transition is a valid MCMC
kernel for its temperature). The log-weights accumulate (beta_k - beta_k-1) log p(x | t) along
the chain; log p(x) is estimated by logsumexp over the S chains minus log S — a stochastic lower
bound (in expectation, by Jensen) that converges to log p(x) as the temperatures grow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..models.vae import map_row_blocks
from ..ops import backend_of, is_dask, logsumexp
from .mcmc import hmc_step

__all__ = ["ais_log_likelihood", "bdmc_bounds", "sigmoid_schedule", "AISResult"]

TARGET_ACCEPT = 0.65


def sigmoid_schedule(n_temps, delta=4.0):
    """n_temps + 1 inverse temperatures from 0 to 1 on the sigmoid schedule of Grosse et al.
    (2015): beta_k proportional to sigmoid(delta (2k / n - 1)), rescaled to [0, 1]."""
    if isinstance(n_temps, bool) or int(n_temps) != n_temps or n_temps < 1:
        raise ValueError(f"expected n_temps to be a positive int, got {n_temps!r}")
    s = 1.0 / (1.0 + np.exp(-delta * (2.0 * np.arange(n_temps + 1) / n_temps - 1.0)))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass
class AISResult:
    """log_px: the estimate per data point (B,); log_w: the chains' log-weights (S, B);
    acceptance: the mean HMC acceptance rate."""

    log_px: np.ndarray
    log_w: np.ndarray
    acceptance: float


def _loglik(model, x, t):
    """log p(x | t) (S, B) and its gradient in t (S, B, d): one decoder pass."""
    xp = backend_of(x).xp
    S, B, _ = t.shape
    return model.decoder_grad(x, t, xp.ones((S, B), x.dtype), params=False)


def _anneal(model, x, t, betas, rng, n_leapfrog, step0):
    """Run the chains t (S, B, d) along ``betas`` (the weight of each move of the target is taken
    at the current state, then one HMC transition leaves the new target invariant); returns
    (log-weights (S, B), t, mean acceptance)."""
    xp = backend_of(x).xp
    F = x.dtype.type
    B = t.shape[1]
    log_eps = xp.full(B, math.log(step0), x.dtype)
    log_w = xp.zeros(t.shape[:2], x.dtype)
    acc_tot, n_moves = 0.0, 0
    lp, glp = _loglik(model, x, t)
    for k in range(1, len(betas)):
        b0, b1 = float(betas[k - 1]), float(betas[k])
        log_w += F(b1 - b0) * lp

        def log_f(t, b1=b1):  # f_b1 up to the prior's constant (it cancels), its gradient
            lp, glp = _loglik(model, x, t)
            return F(-0.5) * (t * t).sum(-1) + F(b1) * lp, F(b1) * glp - t, (lp, glp)

        f = F(-0.5) * (t * t).sum(-1) + F(b1) * lp
        eps = xp.exp(log_eps)[None, :, None]  # 1, B, 1
        t, _, _, (lp, glp), accept = hmc_step(rng, log_f, t, f, F(b1) * glp - t, eps, n_leapfrog,
                                              (lp, glp))
        rate = accept.mean(axis=0)
        log_eps = log_eps + F(0.5) * (rate.astype(x.dtype) - F(TARGET_ACCEPT))
        acc_tot += float(rate.mean())
        n_moves += 1
    return log_w, t, acc_tot / max(n_moves, 1)


def _check(model, X, n_chains, n_temps, n_leapfrog, step_size):
    xp = model._check_x(X, "ais_log_likelihood")
    for name, v in (("n_chains", n_chains), ("n_leapfrog", n_leapfrog)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"ais_log_likelihood: expected {name} to be a positive int, got {v!r}")
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"ais_log_likelihood: expected step_size > 0, got {step_size!r}")
    return xp, sigmoid_schedule(n_temps)


def ais_log_likelihood(model, X, *, n_chains=16, n_temps=500, n_leapfrog=5, step_size=0.1,
                       batch_size=256, seed=0, callback=None):
    """log p(x) of each row of X under ``model`` by annealed importance sampling with HMC.

    Parameters
    ----------
    model : lgm.vae.VAE — any decoder (MLP, conv, linear); its encoder is not used.
    X : array (N, D) of the model's dtype, on its device.
    n_chains : int — S, independent chains per data point.
    n_temps : int — intermediate distributions (the estimate tightens as it grows).
    n_leapfrog : int — leapfrog steps per HMC transition; step_size : float — the initial step
        (adapted per data point towards acceptance 0.65).
    batch_size : int — data points per batch; seed : int; callback : (rows done, N), optional.

    Returns
    -------
    AISResult with log_px (N,), log_w (S, N) and the mean acceptance. Cost: n_temps
    (n_leapfrog + 1) decoder passes over S·N rows.

    For a dask array X: log_px is a lazy dask array, one task per row-chunk on the active dask
    scheduler (a dask.distributed cluster when a Client is active), chunk k seeded with
    seed + 7919 k; log_w is None and acceptance NaN (they would need the chunks computed).
    """
    if is_dask(X):
        _check(model, X[:1].compute(), n_chains, n_temps, n_leapfrog, step_size)
        kw = dict(n_chains=n_chains, n_temps=n_temps, n_leapfrog=n_leapfrog, step_size=step_size,
                  batch_size=batch_size)
        return AISResult(map_row_blocks(_ais_px, model, X, seed, "ais_log_likelihood", **kw),
                         None, float("nan"))
    xp, betas = _check(model, X, n_chains, n_temps, n_leapfrog, step_size)
    rng = np.random.default_rng(seed)
    N, d = X.shape[0], model.latent_dim
    log_w = xp.empty((n_chains, N), X.dtype)
    accs = []
    for i in range(0, N, batch_size):
        x = X[i:i + batch_size]
        t = xp.asarray(rng.standard_normal((n_chains, x.shape[0], d)).astype(X.dtype))
        lw, _, acc = _anneal(model, x, t, betas, rng, n_leapfrog, step_size)
        log_w[:, i:i + x.shape[0]] = lw
        accs.append(acc)
        if callback is not None:
            callback(min(i + batch_size, N), N)
    log_px = logsumexp(log_w, axis=0) - X.dtype.type(math.log(n_chains))
    return AISResult(log_px, log_w, float(np.mean(accs)))


def _ais_px(model, X, seed, **kw):
    return ais_log_likelihood(model, X, seed=seed, **kw).log_px


def bdmc_bounds(model, X, T, *, n_chains=16, n_temps=500, n_leapfrog=5, step_size=0.1, seed=0):
    """Bidirectional Monte Carlo (Grosse et al. 2015) on data simulated from the model: T (N, d)
    are the latents the rows of X were drawn from, i.e. exact posterior samples. The forward
    AIS estimate is a stochastic lower bound of log p(x); the reverse chain, annealed from the
    posterior sample back to the prior, gives a stochastic upper bound, -log mean_s w_reverse.
    Returns (lower (N,), upper (N,)): the true log-likelihood lies between them in expectation,
    and the gap closes as n_temps grows."""
    xp, betas = _check(model, X, n_chains, n_temps, n_leapfrog, step_size)
    lower = ais_log_likelihood(model, X, n_chains=n_chains, n_temps=n_temps, n_leapfrog=n_leapfrog,
                               step_size=step_size, seed=seed).log_px
    rng = np.random.default_rng(seed + 1)
    t = xp.broadcast_to(xp.asarray(T, X.dtype), (n_chains,) + tuple(T.shape)).copy()
    lw_rev, _, _ = _anneal(model, X, t, betas[::-1].copy(), rng, n_leapfrog, step_size)
    # the reverse chain's weights estimate 1 / p(x) (E[w_rev] = Z_0 / Z_1), so
    # -log mean_s w_rev is an upper bound of log p(x) in expectation (Jensen)
    upper = -(logsumexp(lw_rev, axis=0) - X.dtype.type(math.log(n_chains)))
    return lower, upper
