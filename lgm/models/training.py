"""The one minibatch loop: every trainer of lgm runs it (``lgm.vae.train``, ``lgm fit`` for the
E-step strategies, and ``lgm.estep.run_strategy`` with its time budget).

It lives in the models layer, not in ``lgm.estep``, because ``lgm.vae.train`` (models) uses it
and imports run only from the upper layers to the lower ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..ops import backend_of, is_dask

__all__ = ["LoopState", "minibatch_loop", "as_index", "take_rows", "DynamicBinarization"]


@dataclass
class LoopState:
    """Where the loop is, passed to the callbacks."""

    epoch: int = 0  # the current epoch (0-based)
    step: int = 0  # the step within the epoch (0-based)
    n_steps: int = 0  # steps per epoch
    loss: float = float("nan")  # the last step's loss
    seconds: float = 0.0  # wall time spent in steps so far (callbacks and evaluations excluded)
    iterations: int = 0  # steps so far, over all epochs


def minibatch_loop(step, N, *, rng, batch_size=128, epochs=None, epoch0=0, on_step=None,
                   on_epoch=None, stop=None):
    """Run ``step(idx)`` over shuffled minibatches of ``N`` data points.

    Parameters
    ----------
    step : callable (idx) -> loss
        One optimisation step on the rows ``idx`` (a host int array, or None for the full
        batch); returns the minibatch loss (a float or a 0-d device array, which the loop
        accumulates without synchronising).
    N : int — the number of data points.
    rng : numpy.random.Generator — draws each epoch's permutation (the caller may use the same
        generator inside ``step``: a seeded run is reproducible and resumable).
    batch_size : int or None — rows per step (the last step of an epoch takes the remainder);
        None: full batch, one step per epoch.
    epochs : int or None — stop after this many epochs (counting from 0, starting at
        ``epoch0``); None: until ``stop`` says so.
    on_step : callable (LoopState), optional — after every step (progress bars, evaluations:
        the time it takes is not counted in ``LoopState.seconds``).
    on_epoch : callable (LoopState, mean_loss), optional — after every epoch, with the epoch's
        mean loss per data point (checkpoints).
    stop : callable (LoopState) -> bool, optional — checked after every step.

    Returns
    -------
    LoopState at the end.
    """
    if epochs is None and stop is None:
        raise ValueError("minibatch_loop: give epochs or stop (or both)")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size
                                   or batch_size < 1):
        raise ValueError(f"minibatch_loop: expected batch_size to be a positive int or None, got "
                         f"{batch_size!r}")
    st = LoopState(epoch=epoch0)
    st.n_steps = 1 if batch_size is None else -(-N // batch_size)
    while epochs is None or st.epoch < epochs:
        perm = None if batch_size is None else rng.permutation(N)
        total = 0.0
        for s in range(st.n_steps):
            idx = None if perm is None else perm[s * batch_size:(s + 1) * batch_size]
            t0 = time.perf_counter()
            loss = step(idx)
            st.seconds += time.perf_counter() - t0
            st.step, st.loss = s, loss
            st.iterations += 1
            total = total + loss * (N if idx is None else len(idx))
            if on_step is not None:
                on_step(st)
            if stop is not None and stop(st):
                return st
        if on_epoch is not None:
            on_epoch(st, float(total) / N)
        st.epoch += 1
    return st


def as_index(X, idx):
    """``idx`` (host ints, or None for all rows) in the form that indexes X's rows on X's device."""
    return None if idx is None else backend_of(X).xp.asarray(idx)


class DynamicBinarization:
    """Grey levels P in [0, 1] (N, D) read as fresh binary images every time rows are taken:
    x ~ Bernoulli(P), a new draw per read (dynamic binarisation, Burda et al. 2016; it keeps a
    Bernoulli decoder from memorising one binarisation of a small training set). The E-step
    strategies (``lgm.estep.run_strategy``) take it as their X_train: they read rows through
    ``take_rows`` (indexing rows also draws), so every epoch sees new images. Draws come from
    its own generator seeded by ``seed``: a fixed seed gives the same images in the same order
    twice.

    Parameters
    ----------
    P : numpy array (N, D) of float32 or float64, values in [0, 1] — the probabilities (the
        images scaled to [0, 1]); its dtype is the images'.
    seed : int.
    """

    def __init__(self, P, seed=0):
        if not isinstance(P, np.ndarray) or P.ndim != 2 or P.dtype not in (np.float32, np.float64):
            raise TypeError("DynamicBinarization: expected P as a 2-D float32 or float64 numpy "
                            f"array, got {type(P).__name__}"
                            + (f" of shape {P.shape} and dtype {P.dtype}" if hasattr(P, "dtype") else ""))
        if not bool(np.all((P >= 0) & (P <= 1))):
            raise ValueError("DynamicBinarization: expected P in [0, 1] (images scaled to [0, 1]); "
                             "found values outside, or NaN")
        self.P = P
        self.shape, self.dtype, self.ndim = P.shape, P.dtype, 2
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        p = self.P[rows]
        return (self.rng.random(p.shape, dtype=p.dtype) < p).astype(p.dtype)

    def take(self, idx):
        """Fresh binary draws of the rows ``idx`` (host ints, or None for all)."""
        return self[slice(None) if idx is None else np.asarray(idx)]


def take_rows(X, idx):
    """The rows ``idx`` (host ints, or None for all) of X as an in-memory array on X's device:
    a numpy or cupy array is indexed, a memory-mapped .npy (np.memmap) is read (only those
    rows), a dask array is computed (only the chunks holding those rows), a
    :class:`DynamicBinarization` draws new binary rows. This is how the trainers read X by
    minibatch, so that X may be larger than memory."""
    if isinstance(X, DynamicBinarization):
        return X.take(idx)
    if is_dask(X):
        return np.asarray((X if idx is None else X[np.asarray(idx)]).compute())
    if isinstance(X, np.memmap):
        return np.array(X) if idx is None else X[np.asarray(idx)].view(np.ndarray)
    return X if idx is None else X[as_index(X, idx)]
