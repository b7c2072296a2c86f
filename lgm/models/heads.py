"""Likelihood heads: what turns the decoder network's output into p(x | t), as forward/backward
layers. The VAE holds one head and never asks which likelihood it has.

Each head has the interface

- ``channels``: decoder outputs per data coordinate (1 for Bernoulli, 2 for Gaussian);
- ``forward(y)`` with y (N, D, channels) -> (outputs, cache); outputs is a dict of (N, D) arrays;
- ``backward(grads, cache)`` -> d loss / dy (N, D, channels) from the gradients wrt the outputs;
- ``loglik(x, out, S, B)`` -> log p(x_b | t_sb) of shape (S, B);
- ``loglik_grad(x, out, weights)`` -> (log p (S, B), gradients wrt the outputs, each (S·B, D)) of
  sum_sb weights_sb log p(x_b | t_sb), by the fused value-and-gradient kernels;
- ``bound_kwargs(out, S, B)``: the decoder arguments of :func:`lgm.importance_log_weights`;
- ``mean(out)``: E[x | t], (N, D).
"""

from __future__ import annotations

import math

from .. import ops
from ..ops import backend_of

__all__ = ["BernoulliHead", "GaussianHead", "make_head", "LIKELIHOODS"]

LIKELIHOODS = ("bernoulli", "gaussian")


class BernoulliHead:
    """p(x | t) = prod_j Bernoulli(x_j | sigmoid(l_j)), the decoder's output being the logits l."""

    name = "bernoulli"
    channels = 1

    def forward(self, y):  # y: (N, D, 1)
        return {"logits": y.reshape(y.shape[0], y.shape[1])}, None

    def backward(self, grads, cache):
        return grads["logits"]

    def loglik(self, x, out, S, B):
        return ops.bernoulli_logpmf(x, out["logits"].reshape(S, B, -1))

    def loglik_grad(self, x, out, weights):
        S, B = weights.shape
        v, dl = ops.bernoulli_logpmf_grad(x, out["logits"].reshape(S, B, -1), weights)
        return v, {"logits": dl.reshape(S * B, -1)}

    def bound_kwargs(self, out, S, B):
        return {"logits": out["logits"].reshape(S, B, -1)}

    def mean(self, out):
        return 1 / (1 + backend_of(out["logits"]).xp.exp(-out["logits"]))


class GaussianHead:
    """p(x | t) = N(x | mu, diag sigma²) with a smooth floor on the variance:
    logvar = logaddexp(h, log var_floor), i.e. sigma² = var_floor + e^h (see lgm.models.vae)."""

    name = "gaussian"
    channels = 2

    def __init__(self, var_floor):
        self.log_var_floor = math.log(var_floor)

    def forward(self, y):  # y: (N, D, 2): [mu, h] per coordinate
        xp = backend_of(y).xp
        h = xp.ascontiguousarray(y[..., 1])
        lv = xp.logaddexp(h, y.dtype.type(self.log_var_floor))
        return {"mu": xp.ascontiguousarray(y[..., 0]), "logvar": lv}, h

    def backward(self, grads, h):
        xp = backend_of(h).xp
        F = h.dtype.type
        dy = xp.empty(grads["mu"].shape + (2,), h.dtype)
        dy[..., 0] = grads["mu"]
        # d logaddexp(h, c) / dh = sigmoid(h - c)
        dy[..., 1] = grads["logvar"] / (F(1) + xp.exp(F(self.log_var_floor) - h))
        return dy

    def loglik(self, x, out, S, B):
        return ops.diag_gaussian_logpdf(x, out["mu"].reshape(S, B, -1), out["logvar"].reshape(S, B, -1))

    def loglik_grad(self, x, out, weights):
        S, B = weights.shape
        g = ops.diag_gaussian_logpdf_grad(x, out["mu"].reshape(S, B, -1),
                                          out["logvar"].reshape(S, B, -1), weights,
                                          wrt=("mu", "logvar"))
        return g.value, {"mu": g.dmu.reshape(S * B, -1), "logvar": g.dlogvar.reshape(S * B, -1)}

    def bound_kwargs(self, out, S, B):
        return {"mu_x": out["mu"].reshape(S, B, -1), "logvar_x": out["logvar"].reshape(S, B, -1)}

    def mean(self, out):
        return out["mu"]


def make_head(likelihood, var_floor):
    """The head for a likelihood name (``"bernoulli"`` or ``"gaussian"``)."""
    if likelihood == "bernoulli":
        return BernoulliHead()
    if likelihood == "gaussian":
        return GaussianHead(var_floor)
    raise ValueError(f"expected likelihood in {LIKELIHOODS}, got {likelihood!r}")
