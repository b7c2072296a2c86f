"""lgm — latent Gaussian models: fast log-likelihoods, ELBOs and EM without a framework.

The kernels API (numpy in, numpy out; cupy in, cupy out): log-densities with fused gradients, KL,
logsumexp, fused importance log-weights and the ELBO/IWAE reductions, reparameterised sampling,
the exact low-rank Gaussian log-density. The models (``lgm.PPCA``, ``lgm.FactorAnalysis``,
``lgm.nn``, ``lgm.vae``), the E-step strategies (``lgm.estep``) and the command line. See
README.md; the package's layers are ``lgm._backends`` (devices), the kernels API (``lgm.ops``,
``lgm.lowrank``, ``lgm.reference``), ``lgm.models``, ``lgm.estep`` and ``lgm.front``.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from ._config import VECTOR_WIDTH_INFO  # noqa: F401  (must run before numba is imported)
from .lowrank import lowrank_gaussian_logpdf  # noqa: E402
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
    set_thread_policy,
    std_normal_logpdf,
    thread_policy,
)

# (the E-step study keeps each run with the version that made it: a change to what training
# computes or how fast, such as 0.2.0's conv minibatch in two halves, bumps it)
__version__ = "0.2.0"

# Public module names kept where users know them, pointing at where the code lives. An alias is
# the same module object (``lgm.vae is lgm.models.vae``), imported on first use.
_ALIASES = {
    "lgm.nn": "lgm.models.nn",
    "lgm.vae": "lgm.models.vae",
    "lgm.linear": "lgm.models.linear",
    "lgm.data": "lgm.front.data",
    "lgm.cli": "lgm.front.cli",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``import lgm.vae`` (and the other aliases) to the module where the code lives."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _ALIASES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(_ALIASES[spec.name])
        self._spec = module.__spec__  # the import system overwrites it with the alias's
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # already executed under its own name: keep its own spec

    def get_code(self, fullname):
        """For ``python -m lgm.cli``: the code of the module the alias names."""
        return importlib.util.find_spec(_ALIASES[fullname]).loader.get_code(_ALIASES[fullname])

    def is_package(self, fullname):
        return False


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.append(_AliasFinder())


def __getattr__(name):
    # the estimators import scikit-learn: load them on first use only
    if name in ("PPCA", "FactorAnalysis", "ConvergenceWarning"):
        from .models import linear

        return getattr(linear, name)
    if f"lgm.{name}" in _ALIASES:
        return importlib.import_module(f"lgm.{name}")
    raise AttributeError(f"module 'lgm' has no attribute {name!r}")


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
    "set_thread_policy",
    "thread_policy",
    "PPCA",
    "FactorAnalysis",
    "ConvergenceWarning",
]
