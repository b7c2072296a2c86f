"""E-step strategies for the continuous mixture p(x | w) = ∫ p(x | t, w) N(t | 0, I) dt behind one
interface (``strategies``), the harness that runs them side by side (``harness``), and the
proposal-free held-out estimators: AIS and bidirectional Monte Carlo (``ais``)."""

from .ais import AISResult, ais_log_likelihood, bdmc_bounds, sigmoid_schedule
from .gaps import InferenceGaps, inference_gaps
from .harness import (FLAT_NATS, RunResult, heldout_loglik, last_doubling_gain, run_strategy,
                      time_grid)
from .strategies import (IWAE, MCMC, STRATEGIES, Amortized, Exact, MeanField, Strategy,
                         make_strategy, per_point_array)

__all__ = ["STRATEGIES", "Strategy", "make_strategy", "Exact", "MCMC", "MeanField", "Amortized",
           "IWAE", "per_point_array", "RunResult", "run_strategy", "time_grid",
           "last_doubling_gain", "FLAT_NATS", "heldout_loglik", "ais_log_likelihood",
           "bdmc_bounds", "AISResult", "sigmoid_schedule", "inference_gaps", "InferenceGaps"]
