"""The inference gaps of a trained decoder (Cremer, Li & Duvenaud 2018, "Inference suboptimality
in variational autoencoders"): with log p(x) from AIS (independent of any proposal), L[q*] the
ELBO of the best diagonal Gaussian for each point (optimised per point with the decoder fixed)
and L[q] the ELBO of the encoder's q(t | x),

    approximation gap = log p(x) - L[q*]   (the family's limit: diagonal Gaussians)
    amortization gap  = L[q*] - L[q]       (the encoder's limit: one network for all points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ais import ais_log_likelihood
from .strategies import MeanField

__all__ = ["InferenceGaps", "inference_gaps"]


@dataclass
class InferenceGaps:
    """Means over the rows, nats per data point."""

    log_px: float  # AIS
    elbo_optimal: float  # L[q*], the best per-point diagonal Gaussian
    elbo_amortized: float  # L[q], the encoder

    @property
    def approximation_gap(self):
        return self.log_px - self.elbo_optimal

    @property
    def amortization_gap(self):
        return self.elbo_optimal - self.elbo_amortized


def inference_gaps(model, X, *, ais_kw=None, q_steps=500, q_lr=0.05, q_samples=8,
                   elbo_samples=100, seed=0):
    """The gaps of ``model`` on the rows X (N, D).

    Parameters
    ----------
    model : lgm.vae.VAE with an encoder; X : array (N, D).
    ais_kw : dict — arguments of :func:`ais_log_likelihood` (n_chains, n_temps, n_leapfrog).
    q_steps, q_lr, q_samples : the per-point optimisation of q* (Adam steps on each point's
        ELBO with ``q_samples`` reparameterised draws per step, started at 0).
    elbo_samples : int — draws for the two ELBO estimates (the same for both).

    Returns
    -------
    InferenceGaps (log_px, elbo_optimal, elbo_amortized and the two gaps).
    """
    log_px = ais_log_likelihood(model, X, seed=seed, **(ais_kw or {})).log_px
    q = MeanField(seed=seed, n_samples=q_samples, q_lr=q_lr, eval_steps=q_steps)
    q.rng = np.random.default_rng(seed)
    best = q.proposal(model, X)
    l_opt = model.elbo(X, n_samples=elbo_samples, seed=seed + 1, proposal=best)
    l_amo = model.elbo(X, n_samples=elbo_samples, seed=seed + 1)
    return InferenceGaps(float(np.mean(log_px)), float(np.mean(l_opt)), float(np.mean(l_amo)))
