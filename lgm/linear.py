"""Linear-Gaussian latent models: probabilistic PCA and factor analysis.

    t ~ N(0, I_q),   x | t ~ N(W t + mean, Psi),   Psi = s^2 I (PPCA) or diag(psi) (FA),
    so  x ~ N(mean, W W^T + Psi).

Estimators in scikit-learn's conventions (``fit`` returns self, learned attributes end in ``_``,
``get_params``/``set_params``). The log-likelihood is exact and O(N D q) through the Woodbury
identity (:func:`lgm.lowrank_gaussian_logpdf`, which also marginalises NaN entries). EM never
forms a D x D matrix: the E-step needs X Psi^-1 W (N x q) and the M-step X^T E[t] (D x q), two
BLAS products per iteration, taken over blocks of rows (see Precision).

References: Tipping & Bishop (1999), Probabilistic principal component analysis, JRSS B 61(3)
(closed form: section 3.2; EM: Appendix B); Rubin & Thayer (1982) for the FA EM updates;
Varadhan & Roland (2008), Simple and globally convergent methods for accelerating the
convergence of any EM algorithm (SQUAREM), Scand. J. Stat. 35(2).

Precision: parameters and sufficient statistics are float64 whatever X's dtype (they are
O(D q) and accumulate N terms). EM's products over rows are float64 too: each block of rows is
centred in a float64 copy (a few MB on the CPU, so it stays in cache; larger on the GPU) before
its two products. In float32 the M-step's X^T E[t] loses enough that the noise update
psi = (colsq - W . Sxz) / N, a difference of nearly equal terms, has an error of ~1e-4 of
psi: float32 EM then never met tol and stopped 0.03 (PPCA) to 0.16 (FA) nats/sample short of
the float64 optimum on a 4000 x 64 test problem (tests/test_linear.py). Outputs of ``transform``,
``score_samples``, ``sample`` and ``inverse_transform`` take X's dtype (float64 for ``sample``).

Devices: X may be a numpy array, a dask array (chunk by chunk, see _DaskStats) or a cupy array
(the GPU): the data stay on the device, the products over rows run in cuBLAS and the per-row
kernels in CUDA (lgm._gpu), while the parameters and the O(D q) / O(q^2) algebra (factorisations,
SQUAREM) stay on the host as float64 numpy arrays. A model fitted on one device scores data on
either.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from . import _lowrank_batched
from ._validate import array_module, to_host
from .lowrank import backend, lowrank_gaussian_logpdf, woodbury_factor

__all__ = ["PPCA", "FactorAnalysis", "ConvergenceWarning"]

LOG_2PI = math.log(2 * math.pi)
# Floor on noise variances (relative to the largest feature variance): a constant feature would
# otherwise drive its variance to 0 and the log-likelihood to +inf.
SMALL = 1e-12
RELATIVE_FLOOR = 1e-6


class ConvergenceWarning(UserWarning):
    """EM stopped at max_iter before the log-likelihood gain fell below tol."""


class _MeanOnly:
    """What the closed form needs from a numpy or cupy X: the data and their mean (one pass)."""

    def __init__(self, X):
        self.X = X
        self.N, self.D = X.shape
        self.mean = to_host(X.mean(axis=0, dtype=np.float64))


class _Stats:
    """What EM needs from X, computed once: the mean, the centred column sums of squares, X
    itself (for the two products per iteration) and the float64 block buffer they reuse."""

    def __init__(self, X):
        self.X = X
        self.N, self.D = X.shape
        self.mean = to_host(X.mean(axis=0, dtype=np.float64))  # D
        self._buf = _block_buffer(X)
        xp = backend(X)[0]
        colsq = xp.zeros(self.D)
        for R in _centred_blocks(X, self.mean, self._buf):
            colsq += (R * R).sum(axis=0)
        self.colsq = to_host(colsq)  # sum_n (x_nd - mean_d)^2

    def partials(self, Wp, Minv):
        return _chunk_partials(self.X, self.mean, Wp, Minv, self._buf)


def _em_step(st, W, psi):
    """One EM update (Tipping & Bishop 1999, App. B; Rubin & Thayer 1982) from (W, psi) — psi of
    shape (D,) — and the exact mean log-likelihood of the *input* parameters, which falls out of
    the E-step's products (Woodbury, as in lowrank_gaussian_logpdf). The data enter only through
    ``st.partials`` (sums over rows), so the same step runs on a numpy array or chunk by chunk
    on a dask array."""
    N, D = st.N, st.D
    Wp, Linv, logdet = woodbury_factor(W, psi)  # Psi^-1 W, M = I + W^T Psi^-1 W, log|C|
    Minv = Linv.T @ Linv
    Sxz, Szz_data, cc = st.partials(Wp, Minv)  # sum_n (x_n - mean) E[t_n]^T, sum E[t] E[t]^T, sum b^T M^-1 b
    quad = (st.colsq / psi).sum() - cc
    loglik = -0.5 * (D * LOG_2PI + logdet + quad / N)
    Szz = N * Minv + Szz_data  # q, q: sum_n E[t_n t_n^T]
    W_new = np.linalg.solve(Szz, Sxz.T).T  # D, q
    # diag of sum_n (x_n - mean)(x_n - mean)^T - W_new Sxz^T, per feature
    psi_new = (st.colsq - np.einsum("dq,dq->d", W_new, Sxz)) / N
    return W_new, psi_new, loglik


# Rows per float64 block in the E-step sums: ~2 MB on the CPU (cache-sized), ~128 MB on the GPU
# (fewer, larger cuBLAS calls).
_BLOCK_ELEMS = {"numpy": 1 << 18, "cupy": 1 << 24}


def _block_buffer(X):
    """The float64 block that _chunk_partials centres rows into, on X's device."""
    N, D = X.shape
    rows = max(1, min(N, _BLOCK_ELEMS[array_module(X)] // max(D, 1)))
    return backend(X)[0].empty((rows, D), np.float64)


def _centred_blocks(X, mean, buf):
    """The rows of X - mean in float64, block by block, each written into buf (a generator;
    buf's row count is the block size)."""
    xp = backend(X)[0]
    mean_d = xp.asarray(mean, np.float64)
    for s in range(0, X.shape[0], buf.shape[0]):
        blk = X[s:s + buf.shape[0]]
        yield xp.subtract(blk, mean_d, out=buf[:blk.shape[0]])


def _centred_gram(X, mean):
    """sum_n (x_n - mean)(x_n - mean)^T in float64 on the host, from centred float64 blocks.
    Uncentred float32 X^T X loses the covariance to cancellation once the mean is large
    (a mean of 1000 cost the closed-form PPCA fit 0.011 nats/sample)."""
    xp = backend(X)[0]
    S = xp.zeros((X.shape[1], X.shape[1]))
    for R in _centred_blocks(X, mean, _block_buffer(X)):
        S += R.T @ R
    return to_host(S)


def _chunk_partials(X, mean, Wp, Minv, buf=None):
    """E-step sums for complete data: with B = (X - mean) Psi^-1 W (rows b_n) and E[t_n] =
    M^-1 b_n, returns (sum_n (x_n - mean) E[t_n]^T, sum_n E[t_n] E[t_n]^T, sum_n b_n^T M^-1 b_n)
    as host float64 arrays. X is numpy or cupy; the products over rows run on its device, block
    by block on centred float64 copies (see the module's Precision note) written into ``buf``
    (from _block_buffer; kept by the caller across iterations: a fresh multi-MB numpy array
    costs its page faults on every call). mean, Wp, Minv are host arrays."""
    xp = backend(X)[0]
    D, q = Wp.shape
    Wp_d, Minv_d = (xp.asarray(a, np.float64) for a in (Wp, Minv))
    Sxz, Szz, cc = xp.zeros((D, q)), xp.zeros((q, q)), xp.zeros(())
    for R in _centred_blocks(X, mean, _block_buffer(X) if buf is None else buf):
        B = R @ Wp_d
        Ez = B @ Minv_d
        Sxz += R.T @ Ez
        Szz += Ez.T @ Ez
        cc += (B * Ez).sum()
    return to_host(Sxz), to_host(Szz), float(cc)


class _DaskStats:
    """The dask twin of _Stats: the same sums, computed per row-chunk by dask (threads by
    default, a dask.distributed cluster when a Client is active) and reduced to (D, q) and
    (q, q) arrays; no chunk is held longer than its own task."""

    def __init__(self, X):
        import dask.array as da

        if len(X.chunks[1]) != 1:
            X = X.rechunk({1: -1})  # chunk by rows only
        self.X = X
        self.N, self.D = (int(n) for n in X.shape)
        s, sq = da.compute(X.sum(axis=0, dtype=np.float64),
                           (X.astype(np.float64) ** 2).sum(axis=0))
        self.mean = s / self.N
        self.colsq = np.maximum(sq - self.N * self.mean**2, 0.0)

    def partials(self, Wp, Minv):
        import dask

        parts = [dask.delayed(_chunk_partials)(blk, self.mean, Wp, Minv)
                 for blk in self.X.to_delayed().ravel()]
        total = dask.delayed(_sum_partials)(parts)
        return total.compute()


def _sum_partials(parts):
    Sxz = sum(p[0] for p in parts)
    Szz = sum(p[1] for p in parts)
    cc = sum(p[2] for p in parts)
    return Sxz, Szz, cc


# A missingness pattern shared by at least this many rows is handled as a group (one q x q
# factorisation, BLAS products); rarer patterns go row by row through the Numba kernel.
GROUP_MIN_ROWS = 32


def _missingness_groups(missing):
    """(groups, rest): groups is a list of (row indices, observed-column mask) for patterns
    shared by >= GROUP_MIN_ROWS rows; rest holds the indices of all other rows."""
    packed = np.packbits(missing, axis=1)
    _, inverse, counts = np.unique(packed, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    groups = []
    big = np.flatnonzero(counts >= GROUP_MIN_ROWS)
    for g in big:
        rows = np.flatnonzero(inverse == g)
        groups.append((rows, ~missing[rows[0]]))
    in_group = np.isin(inverse, big)
    return groups, np.flatnonzero(~in_group)


def _group_estep(Xo, obs, mean, W, psi):
    """E-step for rows that all observe exactly the columns ``obs`` (Xo: their observed block,
    numpy or cupy; the rest host arrays): the complete-data formulas on that block (Woodbury, as
    _em_step). Returns (E[t] per row on Xo's device, the shared posterior covariance, the sum of
    the rows' log-likelihoods)."""
    xp = backend(Xo)[0]
    q = W.shape[1]
    n_obs = int(obs.sum())
    if n_obs == 0:  # nothing observed: posterior = prior, log-likelihood 0
        return xp.zeros((Xo.shape[0], q)), np.eye(q), 0.0
    Wp, Linv, logdet = woodbury_factor(W[obs], psi[obs])
    Minv = Linv.T @ Linv
    R = Xo.astype(np.float64, copy=False) - xp.asarray(mean[obs])  # n_g, |o|
    B = R @ xp.asarray(Wp)  # n_g, q
    E = B @ xp.asarray(Minv)
    quad = float(xp.einsum("nd,nd,d->", R, R, xp.asarray(1.0 / psi[obs]))) - float(xp.einsum("nq,nq->", B, E))
    return E, Minv, -0.5 * (Xo.shape[0] * (n_obs * LOG_2PI + logdet) + quad)


def _is_dask(X):
    return type(X).__module__.split(".", 1)[0] == "dask"


class _LinearGaussian(TransformerMixin, BaseEstimator):
    _isotropic = False

    def __init__(self, n_components=None, *, tol=1e-6, max_iter=1000, accelerate=True,
                 random_state=None, blas_threads=None):
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.accelerate = accelerate
        self.random_state = random_state
        self.blas_threads = blas_threads

    def _blas(self):
        """BLAS thread limit for fit (threadpoolctl): numpy's and scipy's OpenBLAS pools and
        Numba's OpenMP threads otherwise compete on few cores. None leaves the pools as they are."""
        from threadpoolctl import threadpool_limits

        if self.blas_threads is None:
            return threadpool_limits(limits=None)
        if isinstance(self.blas_threads, bool) or not isinstance(self.blas_threads, numbers.Integral) \
                or self.blas_threads < 1:
            raise ValueError(f"blas_threads must be None or a positive int, got {self.blas_threads!r}")
        return threadpool_limits(limits=int(self.blas_threads), user_api="blas")

    # ----------------------------------------------------------------------------- validation
    def _check_params(self, N, D):
        if D < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 features (n_features = {D}): "
                             "q latent dimensions must be fewer than the features")
        if N < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples (n_samples = {N})")
        q = self.n_components
        if q is None:
            q = min(N, D) - 1
        if isinstance(q, bool) or not isinstance(q, numbers.Integral) or not 1 <= q < D:
            raise ValueError(f"n_components must be an int with 1 <= n_components < n_features "
                             f"= {D}, got {self.n_components!r}")
        if q >= N:
            raise ValueError(f"n_components = {q} needs more samples than that (n_samples = {N}): "
                             "with n_samples <= q the loadings are not identified")
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if not isinstance(self.tol, numbers.Real) or not self.tol >= 0:
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}")
        return int(q)

    def _validate(self, X, reset):
        # NaN marks a missing value where the estimator takes them (FactorAnalysis, PPCA with
        # method="em": fit, scoring, transform, impute); inf is always an error. PPCA with the
        # closed form is the complete-data estimator and refuses NaN throughout.
        if _is_dask(X):
            return self._validate_dask(X, reset)
        allow_nan = self.__sklearn_tags__().input_tags.allow_nan
        if array_module(X) == "cupy":
            return self._validate_cupy(X, reset, allow_nan)
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32],
                             ensure_min_samples=1,
                             ensure_all_finite="allow-nan" if allow_nan else True)

    def _validate_array(self, X, reset, kind):
        """The checks of scikit-learn's validate_data that need no values, for a dask or cupy
        array (``kind``): 2-D, numeric (integers become float64, as scikit-learn does), the
        feature count against n_features_in_."""
        if X.ndim != 2:
            raise ValueError(f"Expected 2D array, got {X.ndim}D array instead (a {kind} array of "
                             f"shape {X.shape}); reshape it to (n_samples, n_features)")
        if X.dtype not in (np.float32, np.float64):
            if X.dtype.kind not in "iub":
                raise ValueError(f"expected a numeric {kind} array, got dtype {X.dtype}")
            X = X.astype(np.float64)
        D = int(X.shape[1])
        if reset:
            self.n_features_in_ = D
        elif D != self.n_features_in_:
            raise ValueError(f"X has {D} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input")
        return X

    def _validate_dask(self, X, reset):
        """A dask array stays lazy: shape and dtype are checked here, values chunk by chunk."""
        X = self._validate_array(X, reset, "dask")
        if len(X.chunks[1]) != 1:
            X = X.rechunk({1: -1})  # chunk by rows only
        return X

    def _validate_cupy(self, X, reset, allow_nan):
        """A cupy array stays on the GPU: scikit-learn's checks done with cupy, in its words."""
        xp = backend(X)[0]
        X = self._validate_array(X, reset, "cupy")
        for n, what in zip(X.shape, ("sample", "feature")):
            if n < 1:
                raise ValueError(f"Found array with 0 {what}(s) (shape={X.shape}) while a minimum "
                                 "of 1 is required.")
        if allow_nan:
            if bool(xp.isinf(X).any()):
                raise ValueError("Input X contains infinity (NaN marks a missing value; inf is not allowed).")
        elif not bool(xp.isfinite(X).all()):
            raise ValueError(f"Input X contains NaN or infinity; {type(self).__name__} with these "
                             "settings needs complete, finite data")
        return xp.ascontiguousarray(X)

    # ------------------------------------------------------------------------------------ fit
    def fit(self, X, y=None):
        """Fit to X of shape (n_samples, n_features) (numpy, cupy or dask). NaN entries are missing
        values for EM (FactorAnalysis, PPCA with method="em"). Returns self."""
        with self._blas():
            return self._fit(X)

    def _noise(self, psi, floor, weights=None):
        psi = np.maximum(psi, floor)
        if self._isotropic:
            # PPCA's s^2: the average of the per-feature updates, weighted by how many values
            # each feature has (all equal without missing values)
            return np.full_like(psi, np.average(psi, weights=weights))
        return psi

    @staticmethod
    def _noise_floor(var):
        """Per-feature floor on the noise variances. A constant feature gets SMALL (absolute, as
        scikit-learn: its loading is exactly 0 and it adds nothing else to the likelihood).
        Every other feature gets RELATIVE_FLOOR x the mean feature variance: in a Heywood case
        (psi_d -> 0 while W_d explains the feature) the Woodbury terms r^2/psi and b^T M^-1 b
        grow like 1/psi and cancel, and at psi ~ 1e-12 the log-likelihood loses whole nats
        (seen on MNIST's near-constant border pixels: EM then stops being monotone)."""
        scale = max(float(np.mean(var)), SMALL)
        return np.where(var > 0, np.maximum(RELATIVE_FLOOR * scale, SMALL), SMALL)

    def _fit_em(self, step, W0, psi0, mean0, weights=None):
        """EM from (W0, psi0, mean0); ``step(W, psi, mean)`` is one EM map returning
        (W', psi', mean', loglik of the input). Returns (W, psi, mean, n_iter, history);
        history holds the exact mean log-likelihood of every iterate, in order (monotone)."""
        floor = self._floor

        def F(th):
            W1, psi1, mean1, ll = step(*th)
            return (W1, self._noise(psi1, floor, weights), mean1), ll

        th = (W0, self._noise(psi0, floor, weights), mean0)
        history = []
        converged = False
        it = 0
        gain = np.inf
        while it < self.max_iter:
            th1, ll0 = F(th)
            it += 1
            if history:
                gain = ll0 - history[-1]
            history.append(ll0)
            if gain < self.tol:
                converged = True
                break
            if not self.accelerate or it + 2 > self.max_iter:
                th = th1
                continue
            # SQUAREM (Varadhan & Roland 2008, scheme S3) on (W, log psi, mean): two EM maps, an
            # extrapolation along them, and a stabilising EM map from the extrapolated point.
            # Monotone guard: the jump is kept only if its likelihood is at least that of the
            # second map's input; otherwise the plain double EM step is taken.
            th2, ll1 = F(th1)
            it += 1
            history.append(ll1)
            z0, z1, z2 = (np.concatenate([t[0].ravel(), np.log(t[1]), t[2]]) for t in (th, th1, th2))
            r, v = z1 - z0, z2 - 2 * z1 + z0
            nv = np.linalg.norm(v)
            th_next = th2
            if nv > 0:
                alpha = min(-1.0, -np.linalg.norm(r) / nv)
                za = z0 - 2 * alpha * r + alpha**2 * v
                if np.all(np.isfinite(za)):
                    D, q = th[0].shape
                    tha = (za[: D * q].reshape(D, q), self._noise(np.exp(za[D * q: D * q + D]), floor, weights),
                           za[D * q + D:])
                    thb, lla = F(tha)
                    it += 1
                    if lla >= ll1:
                        history.append(lla)
                        th_next = thb
            th = th_next
        if converged:
            th = th1  # the last EM map's output: at least as likely as its input
        final = step(*th)[3]
        if final >= history[-1]:
            history.append(final)
        if not converged:
            warnings.warn(f"{type(self).__name__}: EM did not converge in max_iter={self.max_iter} "
                          f"iterations (last gain {gain:.3g} nats/sample > tol={self.tol}); raise "
                          "max_iter or tol", ConvergenceWarning, stacklevel=5)
        return th[0], th[1], th[2], it, history

    def _em(self, X, q):
        """EM on complete data (the fast path: mean fixed at the sample mean, which is its ML
        value) or, when X has NaN, on the observed entries only (mean estimated jointly)."""
        if _is_dask(X):
            st = _DaskStats(X)
            if not (np.all(np.isfinite(st.colsq)) and np.all(np.isfinite(st.mean))):
                raise ValueError("dask input: NaN or inf found; missing values are supported for "
                                 "numpy and cupy input, not dask (so far)")
            W0, psi0 = self._init(st.colsq / st.N, st.D, q)
            self._floor = self._noise_floor(st.colsq / st.N)
            return self._fit_em(self._complete_step(st), W0, psi0, st.mean)
        xp, k = backend(X)
        nan = xp.isnan(X)
        if not bool(nan.any()):
            st = _Stats(X)
            W0, psi0 = self._init(st.colsq / st.N, st.D, q)
            self._floor = self._noise_floor(st.colsq / st.N)
            W, psi, mean, n_iter, hist = self._fit_em(self._complete_step(st), W0, psi0, st.mean)
            return W, psi, mean, n_iter, hist
        missing = to_host(nan)  # N x D booleans: the grouping is host work, done once
        counts = (~missing).sum(0)
        if (counts == 0).any():
            raise ValueError(f"{type(self).__name__}: feature(s) {np.flatnonzero(counts == 0).tolist()} "
                             "have no observed value (all NaN): drop them")
        # starting point: the observed entries' means and variances per feature (two passes)
        X0 = xp.where(nan, 0.0, X.astype(np.float64))
        mean0 = to_host(X0.sum(axis=0)) / counts
        R0 = xp.where(nan, 0.0, X0 - xp.asarray(mean0))
        var0 = to_host((R0 * R0).sum(axis=0)) / counts
        del X0, R0, nan
        W0, psi0 = self._init(var0, X.shape[1], q)
        self._floor = self._noise_floor(var0)
        N = X.shape[0]
        Xc = xp.ascontiguousarray(X)
        groups, rest = _missingness_groups(missing)
        # each group's observed block, gathered once (its rows' data, in X's dtype, on X's device)
        blocks = [Xc[xp.asarray(rows)[:, None], xp.asarray(np.flatnonzero(obs))[None, :]]
                  for rows, obs in groups]
        X_rest = xp.ascontiguousarray(Xc[xp.asarray(rest)])
        D = X.shape[1]
        ez_r, sig_r, ll_r = xp.empty((rest.size, q)), xp.empty((rest.size, q, q)), xp.empty(rest.size)

        def step(W, psi, mean):
            inv_psi, log_psi = 1.0 / psi, np.log(psi)
            A = np.zeros((D, q + 1, q + 1))  # per feature: sum E[[t;1][t;1]^T] (lower triangle)
            c = np.zeros((D, q + 1))  # per feature: sum x [E t; 1]
            sxx = np.zeros(D)
            nd = np.zeros(D)
            ll_sum = 0.0
            # rows sharing a missingness pattern share M_o: one q x q factorisation, BLAS
            for (rows, obs), Xo in zip(groups, blocks):
                E, Sig, ll_g = _group_estep(Xo, obs, mean, W, psi)
                ll_sum += ll_g
                n_g = rows.size
                Ag = np.empty((q + 1, q + 1))
                Ag[:q, :q] = n_g * Sig + to_host(E.T @ E)
                Ag[q, :q] = Ag[:q, q] = to_host(E.sum(axis=0))
                Ag[q, q] = n_g
                A[obs] += Ag
                Xo64 = Xo.astype(np.float64, copy=False)
                c[obs, :q] += to_host(Xo64.T @ E)
                c[obs, q] += to_host(Xo64.sum(axis=0))
                sxx[obs] += to_host((Xo64 * Xo64).sum(axis=0))
                nd[obs] += n_g
            if rest.size:  # the other rows, each with its own q x q system (per-row kernels)
                k.missing_estep(ez_r, sig_r, ll_r, X_rest, *(xp.asarray(v) for v in (mean, W, inv_psi, log_psi)))
                ll_sum += float(ll_r.sum())
                sums = tuple(xp.zeros(v.shape) for v in (A, c, sxx, nd))  # on X's device
                _lowrank_batched.missing_mstep_stats(xp, *sums, X_rest, ez_r, sig_r)
                for host, dev in zip((A, c, sxx, nd), sums):
                    host += to_host(dev)
            # theta_d = [W_d, mean_d] solves theta_d A_d = c_d; psi_d = (sxx_d - theta_d . c_d) / n_d
            il = np.tril_indices(q + 1, -1)
            A[:, il[1], il[0]] = A[:, il[0], il[1]]  # symmetrise (the kernel fills the lower part)
            theta = np.linalg.solve(A, c[..., None])[..., 0]  # D, q+1
            W1, mean1 = theta[:, :q], theta[:, q]
            psi1 = (sxx - np.einsum("dk,dk->d", theta, c)) / nd
            return W1, psi1, mean1, float(ll_sum / N)

        return self._fit_em(step, W0, psi0, mean0, weights=counts)

    @staticmethod
    def _complete_step(st):
        def step(W, psi, mean):
            W1, psi1, ll = _em_step(st, W, psi)
            return W1, psi1, mean, ll
        return step

    def _init(self, var, D, q):
        """Random loadings at the data's scale, noise variances at the feature variances."""
        rs = check_random_state(self.random_state)
        scale = math.sqrt(max(var.mean(), SMALL))
        W0 = rs.standard_normal((D, q)) * scale / math.sqrt(q)
        return W0, np.maximum(var, SMALL)

    def _set_fitted(self, mean, W, psi, n_iter, history, dtype):
        self.mean_ = mean
        self.W_ = W
        self.noise_variance_ = float(psi[0]) if self._isotropic else psi
        self.n_iter_ = n_iter
        self.loglike_ = list(history)
        self.components_ = W.T  # (q, D), scikit-learn's name
        self.n_components_ = W.shape[1]
        self._dtype = dtype

    # ------------------------------------------------------------------------------- inference
    def _psi(self):
        nv = self.noise_variance_
        return np.full(self.W_.shape[0], nv) if np.ndim(nv) == 0 else np.asarray(nv)

    def score_samples(self, X):
        """Exact log p(x) of each row (NaN entries are marginalised out exactly)."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        dt = X.dtype
        if _is_dask(X):  # lazy: one task per row-chunk
            W, mean, psi = self.W_.astype(dt), self.mean_.astype(dt), self._psi().astype(dt)
            return X.map_blocks(lambda b: lowrank_gaussian_logpdf(b, mean, W, psi), drop_axis=1, dtype=dt)
        xp = backend(X)[0]
        return lowrank_gaussian_logpdf(X, *(xp.asarray(a, dt) for a in (self.mean_, self.W_, self._psi())))

    def score(self, X, y=None):
        """Mean exact log-likelihood per sample."""
        return float(self.score_samples(X).mean())

    def posterior(self, X):
        """Posterior of t given each row: (means (N, q), covariance).

        E[t | x] = M^-1 W^T Psi^-1 (x - mean), Cov[t | x] = M^-1, M = I + W^T Psi^-1 W
        (Tipping & Bishop 1999, eq. 7 in the isotropic case). The covariance is one (q, q)
        matrix shared by all rows when X is complete; with NaN (missing values) each row is
        conditioned on its observed entries and the covariance is (N, q, q)."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        xp, k = backend(X)
        psi = self._psi()
        q = self.W_.shape[1]
        nan_rows = xp.isnan(X).any(axis=1)
        Wp, Linv, _ = woodbury_factor(self.W_, psi)
        Minv = Linv.T @ Linv

        def complete_rows(Xo):  # E[t | x] = M^-1 Wp^T (x - mean), X's products on its device
            B = (Xo @ xp.asarray(Wp, X.dtype)).astype(np.float64, copy=False) - xp.asarray(self.mean_ @ Wp)
            return B @ xp.asarray(Minv)

        if not bool(nan_rows.any()):
            return complete_rows(X).astype(X.dtype), xp.asarray(Minv)
        N = X.shape[0]
        mean = xp.empty((N, q))
        cov = xp.broadcast_to(xp.asarray(Minv), (N, q, q)).copy()
        ok = ~nan_rows
        if bool(ok.any()):
            mean[ok] = complete_rows(X[ok])
        Xm = xp.ascontiguousarray(X[nan_rows])
        ez = xp.empty((Xm.shape[0], q))
        sig = xp.empty((Xm.shape[0], q, q))
        ll = xp.empty(Xm.shape[0])
        k.missing_estep(ez, sig, ll, Xm, *(xp.asarray(v) for v in (self.mean_, self.W_, 1.0 / psi, np.log(psi))))
        mean[nan_rows] = ez
        cov[nan_rows] = sig
        return mean.astype(X.dtype), cov

    def transform(self, X):
        """Posterior mean E[t | x], shape (N, q); rows with NaN use their observed entries.
        A dask array gives a lazy dask array (one task per row-chunk)."""
        if _is_dask(X):
            check_is_fitted(self)
            X = self._validate(X, reset=False)
            q = self.W_.shape[1]
            return X.map_blocks(lambda b: self.posterior(b)[0], chunks=(X.chunks[0], (q,)), dtype=X.dtype)
        return self.posterior(X)[0]

    def impute(self, X):
        """X with each NaN replaced by its posterior mean E[x_m | x_o] = mean_m + W_m E[t | x_o]
        (the conditional mean of the fitted Gaussian); observed entries are returned as they are."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        xp = backend(X)[0]
        T = self.posterior(X)[0].astype(np.float64)
        filled = T @ xp.asarray(self.W_.T) + xp.asarray(self.mean_)
        out = X.copy()
        nan = xp.isnan(X)
        out[nan] = filled[nan].astype(X.dtype)
        return out

    def inverse_transform(self, T):
        """x = W t + mean (the mean of p(x | t)), shape (N, D)."""
        check_is_fitted(self)
        xp = backend(T)[0]
        T = xp.asarray(T)
        if T.ndim != 2 or T.shape[1] != self.W_.shape[1]:
            raise ValueError(f"expected T of shape (n_samples, {self.W_.shape[1]}), got {T.shape}")
        dt = T.dtype if T.dtype in (np.float32, np.float64) else np.float64
        return (T @ xp.asarray(self.W_.T) + xp.asarray(self.mean_)).astype(dt)

    def sample(self, n_samples=1, random_state=None):
        """Draw n_samples rows from the fitted model (float64)."""
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        rs = check_random_state(random_state)
        t = rs.standard_normal((n_samples, self.W_.shape[1]))
        eps = rs.standard_normal((n_samples, self.W_.shape[0]))
        return t @ self.W_.T + self.mean_ + eps * np.sqrt(self._psi())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN = missing value (EM, scoring, transform)
        return tags


class PPCA(_LinearGaussian):
    """Probabilistic PCA (Tipping & Bishop 1999): x = W t + mean + s * eps.

    Parameters
    ----------
    n_components : int, optional — q, with 1 <= q < n_features (default min(N, D) - 1).
    method : {"closed_form", "em"} — the maximum-likelihood solution from the eigenvalues of the
        sample covariance (its top q eigenpairs, LAPACK syevr; an SVD of the centred data when
        n_features > n_samples), or EM (Tipping & Bishop, App. B), which also
        takes missing values (NaN).
    tol : float — EM stops when the mean log-likelihood gains less than tol nats per sample.
    max_iter : int — EM iterations (each SQUAREM cycle counts its three EM maps).
    accelerate : bool — SQUAREM acceleration of EM, monotone by a guard.
    random_state : int, Generator or None — EM initialisation.
    blas_threads : int or None — BLAS threads during fit (threadpoolctl); None leaves them.

    Attributes
    ----------
    W_ : (D, q), mean_ : (D,), noise_variance_ : float, n_iter_ : int, loglike_ : list of the
    mean log-likelihood per sample at every EM map (closed form: one value; n_iter_ = 1),
    components_ : (q, D).
    """

    _isotropic = True

    def __init__(self, n_components=None, *, method="closed_form", tol=1e-6, max_iter=1000,
                 accelerate=True, random_state=None, blas_threads=None):
        super().__init__(n_components, tol=tol, max_iter=max_iter, accelerate=accelerate,
                         random_state=random_state, blas_threads=blas_threads)
        self.method = method

    def _fit(self, X):
        X = self._validate(X, reset=True)
        N, D = X.shape
        q = self._check_params(N, D)
        if self.method not in ("closed_form", "em"):
            raise ValueError(f"method must be 'closed_form' or 'em', got {self.method!r}")
        if self.method == "closed_form":
            st = _DaskStats(X) if _is_dask(X) else _MeanOnly(X)
            W, s2, loglik = self._closed_form(st, q)
            psi = np.full(D, s2)
            # n_iter_ = 1: one eigendecomposition (scikit-learn expects n_iter_ >= 1)
            self._set_fitted(st.mean, W, psi, 1, [loglik], X.dtype)
            return self
        W, psi, mean, n_iter, hist = self._em(X, q)
        self._set_fitted(mean, W, psi, n_iter, hist, X.dtype)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.method == "em"  # the closed form needs complete data
        return tags

    @staticmethod
    def _closed_form(st, q):
        """W = U_q (L_q - s^2 I)^(1/2), s^2 = mean of the D - q discarded eigenvalues of the
        sample covariance (Tipping & Bishop 1999, eqs. 7-8; the rotation R = I)."""
        N, D = st.N, st.D
        if _is_dask(st.X):
            # the covariance from per-chunk sums (N >> D is the reason to use dask)
            XtX = (st.X.T.astype(np.float64) @ st.X.astype(np.float64)).compute()
            S = XtX / N - np.outer(st.mean, st.mean)
            Xc = None
        elif N >= D:
            # S = sum over centred float64 row blocks of R^T R / N (syrk; cuBLAS on the GPU);
            # then only the top q eigenpairs (LAPACK syevr, on the host: D x D). The discarded
            # eigenvalues enter only through their sum, trace(S) minus the top q.
            import scipy.linalg

            S = _centred_gram(st.X, st.mean) / N
            lam_q, U_q = scipy.linalg.eigh(S, subset_by_index=[D - q, D - 1], driver="evr")
            lam_q, U_q = np.maximum(lam_q[::-1], 0.0), U_q[:, ::-1]
            s2 = max((np.trace(S) - lam_q.sum()) / (D - q), SMALL * max(lam_q[0], 1.0))
            return PPCA._finish_closed_form(U_q, lam_q, s2, D, q)
        else:
            xp = backend(st.X)[0]
            Xc = st.X.astype(np.float64) - xp.asarray(st.mean)
            S = None  # D > N: the SVD of the centred data (on its device)
        if S is not None:
            lam, U = np.linalg.eigh(S)
            lam, U = lam[::-1], U[:, ::-1]
        else:
            _, sv, Vt = (to_host(a) for a in xp.linalg.svd(Xc, full_matrices=False))
            lam = np.zeros(D)
            lam[: sv.size] = sv**2 / N
            U = np.zeros((D, D))
            U[:, : sv.size] = Vt.T
        lam = np.maximum(lam, 0.0)
        s2 = max(lam[q:].mean(), SMALL * max(lam[0], 1.0))
        return PPCA._finish_closed_form(U[:, :q], lam[:q], s2, D, q)

    @staticmethod
    def _finish_closed_form(U_q, lam_q, s2, D, q):
        """W = U_q (L_q - s^2 I)^(1/2) with a sign convention (largest |entry| of each column
        positive), and the maximised mean log-likelihood, from the spectrum alone (Tipping &
        Bishop 1999, eq. 4 at the ML point, where tr(C^-1 S) = D):
        -1/2 [D log 2 pi + sum_{j<=q} log lambda_j + (D - q) log s^2 + D]."""
        W = U_q * np.sqrt(np.maximum(lam_q - s2, 0.0))
        signs = np.sign(W[np.abs(W).argmax(0), np.arange(q)])
        signs[signs == 0] = 1
        logdet = np.log(np.maximum(lam_q, s2)).sum() + (D - q) * np.log(s2)
        return W * signs, s2, -0.5 * (D * LOG_2PI + logdet + D)


class FactorAnalysis(_LinearGaussian):
    """Factor analysis: x = W t + mean + eps, eps ~ N(0, diag(psi)), fitted by EM
    (Rubin & Thayer 1982), SQUAREM-accelerated. Parameters and attributes as :class:`PPCA`,
    with ``noise_variance_`` of shape (D,)."""

    def _fit(self, X):
        X = self._validate(X, reset=True)
        N, D = X.shape
        q = self._check_params(N, D)
        W, psi, mean, n_iter, hist = self._em(X, q)
        self._set_fitted(mean, W, psi, n_iter, hist, X.dtype)
        return self
