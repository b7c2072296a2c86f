"""Plain-numpy references: the specification each kernel is tested against.

Written for clarity, not speed; they build the (S, B, D) temporaries the kernels avoid. They
compute in the input dtype, like the kernels.
"""

from __future__ import annotations

import numpy as np

LOG_2PI = np.log(2 * np.pi)


def diag_gaussian_logpdf(x, mu, logvar):
    dt = np.result_type(x, mu, logvar)
    D = np.broadcast_shapes(np.shape(x), np.shape(mu), np.shape(logvar))[-1]
    d = x - mu
    with np.errstate(over="ignore", invalid="ignore"):
        # (d e^(-logvar/2))^2, and 0 where x == mu whatever the variance (no 0 * inf)
        q = np.where(d == 0, 0, (d * np.exp(-0.5 * logvar)) ** 2) + logvar
    return (-0.5 * (q.sum(-1) + D * LOG_2PI)).astype(dt)


def diag_gaussian_logpdf_grad(x, mu, logvar, weights=1.0):
    """Full broadcast-shape gradients (dx, dmu, dlogvar) of sum(weights * logpdf)."""
    w = np.asarray(weights)[..., None]
    e = np.exp(-logvar)
    dmu = w * (x - mu) * e
    dlv = w * 0.5 * ((x - mu) ** 2 * e - 1)
    return diag_gaussian_logpdf(x, mu, logvar), -dmu, dmu, dlv


def bernoulli_logpmf(x, logits):
    # log sigmoid(l) = -logaddexp(0, -l), log(1 - sigmoid(l)) = -logaddexp(0, l)
    return (x * logits - np.logaddexp(0, logits)).sum(-1)


def bernoulli_logpmf_grad(x, logits, weights=1.0):
    """(value, d/dlogits of sum(weights * logpmf)) with full broadcast shape."""
    w = np.asarray(weights)[..., None]
    return bernoulli_logpmf(x, logits), w * (x - 1 / (1 + np.exp(-logits)))


def std_normal_logpdf(t):
    return -0.5 * ((t * t).sum(-1) + t.shape[-1] * LOG_2PI)


def kl_diag_std_normal(mu, logvar):
    # Kingma & Welling (2014), Appendix B: -1/2 sum(1 + logvar - mu^2 - e^logvar), written as
    # 1/2 sum(mu^2 + expm1(logvar) - logvar)
    return 0.5 * (mu**2 + np.expm1(logvar) - logvar).sum(-1)


def kl_diag_std_normal_grad(mu, logvar):
    return kl_diag_std_normal(mu, logvar), mu + 0 * logvar, 0.5 * np.expm1(logvar) + 0 * mu


def logsumexp(a, axis=-1):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - m).sum(axis=axis)) + np.squeeze(m, axis=axis)


def importance_log_weights(x, t, mu_t, logvar_t, mu_x=None, logvar_x=None, logits=None):
    if logits is None:
        log_px = diag_gaussian_logpdf(x, mu_x, logvar_x)
    else:
        log_px = bernoulli_logpmf(x, logits)
    return log_px + std_normal_logpdf(t) - diag_gaussian_logpdf(t, mu_t, logvar_t)


def elbo(log_w):
    return log_w.mean(0)


def iwae(log_w):
    return logsumexp(log_w, axis=0) - np.log(log_w.shape[0])


def importance_weights(log_w):
    return np.exp(log_w - logsumexp(log_w, axis=0)[None])


def reparameterize(mu, logvar, eps):
    return mu + np.exp(0.5 * logvar) * eps


def im2col(x, k, s, p, Ho, Wo):
    """Patches (B, Ho, Wo, k, k, C) of NHWC images (B, H, W, C) with zero padding p, by k*k
    strided slice copies. Written for any array module (numpy or cupy), so that the CUDA kernel
    is checked against the same specification as the Numba one."""
    xp = _xp(x)
    B, H, W, C = x.shape
    if p:
        xpad = xp.zeros((B, H + 2 * p, W + 2 * p, C), x.dtype)
        xpad[:, p:p + H, p:p + W] = x
    else:
        xpad = x
    cols = xp.empty((B, Ho, Wo, k, k, C), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j, :] = xpad[:, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s, :]
    return cols


def col2im(cols, H, W, s, p):
    """The adjoint of :func:`im2col`: k*k strided slice adds into a padded buffer, then crop."""
    xp = _xp(cols)
    B, Ho, Wo, k, _, C = cols.shape
    out = xp.zeros((B, H + 2 * p, W + 2 * p, C), cols.dtype)
    for i in range(k):
        for j in range(k):
            out[:, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s, :] += cols[:, :, :, i, j, :]
    return xp.ascontiguousarray(out[:, p:p + H, p:p + W]) if p else out


def _xp(a):
    from ._backends import backend_of

    return backend_of(a).xp
