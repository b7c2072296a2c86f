"""E-step strategies for the continuous mixture p(x | w) = ∫ p(x | t, w) N(t | 0, I) dt behind one
interface (``strategies``), and the harness that runs them side by side (``harness``)."""

from .harness import RunResult, heldout_loglik, run_strategy
from .strategies import (IWAE, MCMC, STRATEGIES, Amortized, Exact, MeanField, Strategy,
                         make_strategy)

__all__ = ["STRATEGIES", "Strategy", "make_strategy", "Exact", "MCMC", "MeanField", "Amortized",
           "IWAE", "RunResult", "run_strategy", "heldout_loglik"]
