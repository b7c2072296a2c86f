"""lgm — latent Gaussian models: fast log-likelihoods, ELBOs and EM without a framework.

The kernels API (numpy in, numpy out; cupy in, cupy out once the GPU backend exists):
log-densities with fused gradients, KL, logsumexp, fused importance log-weights and the
ELBO/IWAE reductions, reparameterised sampling. See README.md.
"""

from ._config import VECTOR_WIDTH_INFO  # noqa: F401  (must run before numba is imported)
from .ops import (  # noqa: E402
    LogpdfGrad,
    LogpmfGrad,
    bernoulli_logpmf,
    bernoulli_logpmf_grad,
    diag_gaussian_logpdf,
    diag_gaussian_logpdf_grad,
    elbo,
    importance_bounds,
    importance_log_weights,
    importance_weights,
    iwae,
    kl_diag_std_normal,
    kl_diag_std_normal_grad,
    logsumexp,
    reparameterize,
    std_normal_logpdf,
)
from .lowrank import lowrank_gaussian_logpdf  # noqa: E402


def __getattr__(name):
    # the estimators import scikit-learn: load them on first use only
    if name in ("PPCA", "FactorAnalysis", "ConvergenceWarning"):
        from . import linear

        return getattr(linear, name)
    raise AttributeError(f"module 'lgm' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "LogpdfGrad",
    "LogpmfGrad",
    "bernoulli_logpmf",
    "bernoulli_logpmf_grad",
    "diag_gaussian_logpdf",
    "diag_gaussian_logpdf_grad",
    "elbo",
    "importance_bounds",
    "importance_log_weights",
    "importance_weights",
    "iwae",
    "kl_diag_std_normal",
    "kl_diag_std_normal_grad",
    "logsumexp",
    "lowrank_gaussian_logpdf",
    "reparameterize",
    "std_normal_logpdf",
]
