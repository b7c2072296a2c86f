"""The harness: runs E-step strategies under equal wall-time budgets and scores them on held-out
data (``run_strategy``), on the one minibatch loop of the models layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..models.training import minibatch_loop
from .strategies import make_strategy

__all__ = ["RunResult", "run_strategy", "heldout_loglik"]


def heldout_loglik(model, strategy, X_test, n_samples=1000, seed=0):
    """Mean held-out log-likelihood per point: exact for linear decoders, else importance
    sampling with ``n_samples`` draws from the strategy's best proposal.

    Parameters
    ----------
    model : lgm.vae.VAE; strategy : a setup Strategy; X_test : array (N, D).
    n_samples : int — S, importance samples per point; seed : int.
    """
    if model.spec["kind"] == "linear":
        return float(np.mean(model.exact_log_likelihood(X_test)))
    prop = strategy.proposal(model, X_test)
    ll = model.log_likelihood(X_test, n_samples=n_samples, seed=seed, proposal=prop)
    return float(ll.mean())


@dataclass
class RunResult:
    """One strategy's run: the held-out curve on a time grid, the final score, the cost."""

    strategy: str
    seed: int
    times: list = field(default_factory=list)  # training seconds at each evaluation
    step_seconds: list = field(default_factory=list)  # wall time of every timed iteration
    heldout: list = field(default_factory=list)  # held-out log-likelihood (S = n_samples_curve)
    final: float = float("nan")  # held-out log-likelihood at the end (S = n_samples_final)
    iterations: int = 0
    train_seconds: float = 0.0
    state_bytes: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def ms_per_iteration(self):
        return 1e3 * self.train_seconds / max(self.iterations, 1)


def _warm_up(name, model, X_train, X_test, batch_size, lr, seed, strategy_kw):
    """One iteration and one small held-out evaluation of the strategy on a throwaway copy of the
    model, before any clock starts: the kernels it uses are compiled (or loaded from Numba's
    cache) here, not inside the budget (a seed's first evaluation used to land at 2.5-3.8 s of
    a 5 s budget)."""
    twin = model.copy()
    n = min(X_train.shape[0], max(batch_size, 2))
    strat = make_strategy(name, lr=lr, seed=seed, **(strategy_kw or {}))
    strat.setup(twin, X_train[:n])
    strat.iteration(twin, X_train[:n], None if strat.full_batch else np.arange(min(batch_size, n)))
    heldout_loglik(twin, strat, X_test[:2], n_samples=2, seed=seed)


def run_strategy(name, model, X_train, X_test, *, budget_s, n_evals=6, n_samples_curve=100,
                 n_samples_final=1000, batch_size=128, lr=1e-3, seed=0, strategy_kw=None,
                 callback=None):
    """Train ``model`` with strategy ``name`` for ``budget_s`` seconds of training time, after a
    warm-up on a throwaway copy (so that JIT compilation is not in the budget).

    Parameters
    ----------
    name : str — one of lgm.estep.STRATEGIES; model : lgm.vae.VAE.
    X_train : array (N, D); X_test : array (N_test, D).
    budget_s : float — seconds spent in training steps (evaluations are not counted).
    n_evals : int — held-out evaluations on a geometric time grid ending at ``budget_s``.
    n_samples_curve, n_samples_final : int — importance samples S for the curve's points and
        for the final score.
    batch_size, lr, seed : minibatch size, Adam step size, seed; strategy_kw : dict — passed to
        the strategy (options it does not take are ignored).
    callback : callable (name, seconds, held-out log-likelihood), optional — at each evaluation.

    Returns
    -------
    RunResult.
    """
    _warm_up(name, model, X_train, X_test, batch_size, lr, seed, strategy_kw)
    strat = make_strategy(name, lr=lr, seed=seed, **(strategy_kw or {}))
    strat.setup(model, X_train)
    res = RunResult(name, seed)
    grid = [budget_s * 2.0 ** (k - n_evals + 1) for k in range(n_evals)]
    last = [0.0]

    def on_step(st):
        res.step_seconds.append(st.seconds - last[0])
        last[0] = st.seconds
        while len(res.times) < len(grid) and st.seconds >= grid[len(res.times)]:
            res.times.append(st.seconds)
            res.heldout.append(heldout_loglik(model, strat, X_test, n_samples=n_samples_curve,
                                              seed=seed))
            if callback is not None:
                callback(name, st.seconds, res.heldout[-1])

    st = minibatch_loop(lambda idx: strat.iteration(model, X_train, idx), X_train.shape[0],
                        rng=np.random.default_rng(seed + 1000),
                        batch_size=None if strat.full_batch else batch_size,
                        on_step=on_step, stop=lambda st: len(res.times) == len(grid))
    res.iterations, res.train_seconds = st.iterations, st.seconds
    res.final = (res.heldout[-1] if model.spec["kind"] == "linear"
                 else heldout_loglik(model, strat, X_test, n_samples=n_samples_final, seed=seed))
    res.state_bytes = strat.state_bytes()
    res.stats = strat.stats()
    return res
