"""The harness: runs E-step strategies under equal wall-time budgets and scores them on held-out
data (``run_strategy``), on the one minibatch loop of the models layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..models.training import minibatch_loop
from .strategies import make_strategy

__all__ = ["RunResult", "run_strategy", "heldout_loglik", "time_grid", "last_doubling_gain",
           "FLAT_NATS"]

FLAT_NATS = 0.5  # a curve has flattened when it gains less than this over the last doubling


def time_grid(budget_s, n_evals):
    """The evaluation times shared by every strategy of an experiment: ``n_evals`` doublings
    ending at ``budget_s`` (budget/2^(n-1), ..., budget/2, budget)."""
    if not (budget_s > 0) or int(n_evals) != n_evals or n_evals < 1:
        raise ValueError(f"time_grid: expected budget_s > 0 and n_evals >= 1, got {budget_s!r}, "
                         f"{n_evals!r}")
    return [budget_s * 2.0 ** (k - n_evals + 1) for k in range(int(n_evals))]


def last_doubling_gain(grid, values):
    """What a curve gained over the last doubling of its time grid: values at the last grid
    point minus the value at half of it (linear interpolation in log time where half of it is
    not a grid point); NaN when the grid does not reach back that far. The study calls a curve
    flattened when this is below :data:`FLAT_NATS` (a fall counts as flattened: no gain)."""
    g = np.log(np.asarray(grid, float))
    v = np.asarray(values, float)
    if len(g) < 2 or g[0] > g[-1] - np.log(2) + 1e-9:
        return float("nan")
    return float(v[-1] - np.interp(g[-1] - np.log(2), g, v))


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
    grid: list = field(default_factory=list)  # the shared evaluation times (s of training)
    times: list = field(default_factory=list)  # training seconds at each evaluation (>= grid)
    epochs: list = field(default_factory=list)  # passes over the training set at each evaluation
    step_seconds: list = field(default_factory=list)  # wall time of every timed iteration
    heldout: list = field(default_factory=list)  # held-out log-likelihood (S = n_samples_curve)
    final: float = float("nan")  # held-out log-likelihood at the end (S = n_samples_final)
    half_final: float = float("nan")  # the same score at half the budget, where it was made
    iterations: int = 0
    train_seconds: float = 0.0
    state_bytes: int = 0
    stats: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)  # grid index -> a copy of the model there

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


def run_strategy(name, model, X_train, X_test, *, budget_s, n_evals=6, grid=None,
                 n_samples_curve=100, n_samples_final=1000, batch_size=128, lr=1e-3, seed=0,
                 strategy_kw=None, callback=None, snapshot_at=()):
    """Train ``model`` with strategy ``name`` for ``budget_s`` seconds of training time, after a
    warm-up on a throwaway copy (so that JIT compilation is not in the budget).

    Parameters
    ----------
    name : str — one of lgm.estep.STRATEGIES; model : lgm.vae.VAE.
    X_train : array (N, D) — in memory, a memory-mapped .npy (np.memmap; the per-point state of
        mcmc and meanfield is then memory-mapped beside it) or a dask array, read by minibatch.
    X_test : array (N_test, D), in memory.
    budget_s : float — seconds spent in training steps (evaluations are not counted).
    n_evals : int — held-out evaluations on the time grid ``time_grid(budget_s, n_evals)``.
    grid : list of float, optional — the evaluation times instead (the last one is the budget).
    n_samples_final=0 skips the final score (the caller scores the model, e.g. by AIS).
    n_samples_curve, n_samples_final : int — importance samples S for the curve's points and
        for the final score.
    batch_size, lr, seed : minibatch size, Adam step size, seed; strategy_kw : dict — passed to
        the strategy (options it does not take are ignored).
    callback : callable (name, seconds, held-out log-likelihood), optional — at each evaluation.
    snapshot_at : indices into the grid (negative counts from the end) — a copy of the model is
        kept in ``RunResult.snapshots`` at those evaluations (to score them later, e.g. by AIS).

    Returns
    -------
    RunResult.
    """
    _warm_up(name, model, X_train, X_test, batch_size, lr, seed, strategy_kw)
    strat = make_strategy(name, lr=lr, seed=seed, **(strategy_kw or {}))
    strat.setup(model, X_train)
    grid = time_grid(budget_s, n_evals) if grid is None else sorted(float(g) for g in grid)
    res = RunResult(name, seed, grid=grid)
    N = X_train.shape[0]
    steps_per_epoch = 1 if strat.full_batch else -(-N // batch_size)
    keep = {k % len(grid) for k in snapshot_at}
    last = [0.0]

    def on_step(st):
        res.step_seconds.append(st.seconds - last[0])
        last[0] = st.seconds
        while len(res.times) < len(grid) and st.seconds >= grid[len(res.times)]:
            res.times.append(st.seconds)
            res.epochs.append(st.iterations / steps_per_epoch)
            if len(res.times) - 1 in keep:
                res.snapshots[len(res.times) - 1] = model.copy()
            res.heldout.append(heldout_loglik(model, strat, X_test, n_samples=n_samples_curve,
                                              seed=seed))
            if callback is not None:
                callback(name, st.seconds, res.heldout[-1])

    st = minibatch_loop(lambda idx: strat.iteration(model, X_train, idx), X_train.shape[0],
                        rng=np.random.default_rng(seed + 1000),
                        batch_size=None if strat.full_batch else batch_size,
                        on_step=on_step, stop=lambda st: len(res.times) == len(grid))
    res.iterations, res.train_seconds = st.iterations, st.seconds
    if model.spec["kind"] == "linear":
        res.final = res.heldout[-1]
    elif n_samples_final:
        res.final = heldout_loglik(model, strat, X_test, n_samples=n_samples_final, seed=seed)
    res.state_bytes = strat.state_bytes()
    res.stats = strat.stats()
    return res
