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

Devices: X may be a numpy array, a dask array (chunk by chunk, see sources.DaskData) or a cupy array
(the GPU): the data stay on the device, the products over rows run in cuBLAS and the per-row
kernels in CUDA (the GPU backend), while the parameters and the O(D q) / O(q^2) algebra (factorisations,
SQUAREM) stay on the host as float64 numpy arrays. A model fitted on one device scores data on
either.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from ...lowrank import LOG_2PI, lowrank_gaussian_logpdf, woodbury_blocks, woodbury_factor
from ...ops import backend_of
from .em import ConvergenceWarning, em_step, run_em
from .profile import fit_profile
from .sources import CompleteData, CovarianceData, DaskData, MissingData, centred_gram, is_dask

__all__ = ["PPCA", "FactorAnalysis", "ConvergenceWarning", "ortho_rotation"]


def _em_map(source):
    """The EM map (W, psi, mean) -> (W', psi', mean, loglik of the input) of a complete source
    (CompleteData, DaskData, CovarianceData): its mean is fixed at the sample mean."""
    def step(W, psi, mean):
        W1, psi1, ll = em_step(source, W, psi)
        return W1, psi1, mean, ll

    return step


def ortho_rotation(W, method="varimax", tol=1e-6, max_iter=100):
    """W (D, q) rotated by the orthogonal matrix that maximises the varimax (Kaiser 1958) or
    quartimax criterion of its columns; scikit-learn's ``_ortho_rotation``, the same iteration."""
    nrow, ncol = W.shape
    R = np.eye(ncol)
    var = 0.0
    for _ in range(max_iter):
        Wr = W @ R
        tmp = Wr * ((Wr ** 2).sum(axis=0) / nrow) if method == "varimax" else 0.0
        u, sv, vt = np.linalg.svd(W.T @ (Wr ** 3 - tmp))
        R = u @ vt
        var_new = sv.sum()
        if var != 0 and var_new < var * (1 + tol):
            break
        var = var_new
    return W @ R

# Floor on noise variances (relative to the largest feature variance): a constant feature would
# otherwise drive its variance to 0 and the log-likelihood to +inf.
SMALL = 1e-12
RELATIVE_FLOOR = 1e-6


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
        if isinstance(q, bool) or not isinstance(q, numbers.Integral) or not 0 <= q < D:
            raise ValueError(f"n_components must be an int with 0 <= n_components < n_features "
                             f"= {D}, got {self.n_components!r} (n_components = n_features would "
                             "leave no noise: the maximum-likelihood noise variance is 0 and the "
                             "density degenerate; 0 is an isotropic (PPCA) or diagonal (FA) "
                             "Gaussian)")
        if q >= N:
            raise ValueError(f"n_components = {q} needs more samples than that (n_samples = {N}): "
                             "with n_samples <= q the loadings are not identified")
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if not isinstance(self.tol, numbers.Real) or not self.tol >= 0:
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}")
        return int(q)

    def _validate(self, X, reset):
        # NaN marks a missing value: fitting takes them where the method does (FactorAnalysis,
        # PPCA with method="em"; the closed form is the complete-data fit and refuses them), and
        # every fitted model scores, transforms and imputes rows with NaN, whatever fitted it
        # (the marginal of the observed entries is exact). inf is always an error.
        if isinstance(X, np.ma.MaskedArray):
            raise TypeError(f"{type(self).__name__}: X is a masked array, and lgm does not read "
                            "masks; pass X.filled(np.nan): NaN marks a missing value")
        if is_dask(X):
            return self._validate_dask(X, reset)
        allow_nan = True
        if backend_of(X).name == "cupy":
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
        xp = backend_of(X).xp
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
        """Fit the model by maximum likelihood.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), float32 or float64 — numpy, cupy (the
            data stay on the GPU) or dask (chunk by chunk). NaN entries are missing values for
            EM (FactorAnalysis, PPCA with method="em"); inf is an error.
        y : ignored.

        Returns
        -------
        self
        """
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

    def _fit_em(self, step, W0, psi0, mean0, weights=None, max_iter=None, warn=True):
        """EM from (W0, psi0, mean0) by :func:`lgm.models.linear.em.run_em`, with this model's
        noise constraint (max_iter: self.max_iter unless given); returns (W, psi, mean, n_iter,
        history)."""
        floor = self._floor
        return run_em(step, W0, psi0, mean0, project=lambda psi: self._noise(psi, floor, weights),
                      tol=self.tol, max_iter=self.max_iter if max_iter is None else max_iter,
                      accelerate=self.accelerate, name=type(self).__name__, warn=warn)

    @staticmethod
    def _nan_mask(X):
        """The NaN mask of a numpy or cupy X that has missing values, else None (also for dask,
        whose values are checked chunk by chunk). One pass over X, made once per fit."""
        if is_dask(X):
            return None
        nan = backend_of(X).xp.isnan(X)
        return nan if bool(nan.any()) else None

    def _em(self, X, q, nan):
        """EM on complete data (the fast path: mean fixed at the sample mean, which is its ML
        value) or, when X has NaN (``nan``: its mask from _nan_mask), on the observed entries
        only (mean estimated jointly)."""
        if is_dask(X):
            source = DaskData(X)
        else:
            source = CompleteData(X) if nan is None else MissingData(X, nan)
        if isinstance(source, MissingData):
            W0, psi0 = self._init(source.var, source.D, q)
            self._floor = self._noise_floor(source.var)
            return self._fit_em(source.step, W0, psi0, source.mean, weights=source.counts)
        var = source.colsq / source.N
        W0, psi0 = self._init(var, source.D, q)
        self._floor = self._noise_floor(var)
        return self._fit_em(_em_map(source), W0, psi0, source.mean)

    def _init(self, var, D, q):
        """Random loadings at the data's scale, noise variances at the feature variances."""
        rs = check_random_state(self.random_state)
        scale = math.sqrt(max(var.mean(), SMALL))
        W0 = rs.standard_normal((D, q)) * scale / math.sqrt(q)
        return W0, np.maximum(var, SMALL)

    @classmethod
    def from_params(cls, W, mean, noise_variance, *, n_iter=1, loglike=(), **params):
        """A fitted estimator from its parameters (e.g. read back from a file), without data.

        Parameters
        ----------
        W : array of shape (n_features, n_components) — the loadings.
        mean : array of shape (n_features,).
        noise_variance : float (PPCA: s^2) or array of shape (n_features,) (FactorAnalysis;
            PPCA takes its first entry when all are equal).
        n_iter : int; loglike : sequence of float — the fit's history, if known.
        **params : the estimator's constructor parameters (``n_components`` defaults to q).

        Returns
        -------
        The estimator, ready for ``score_samples``, ``transform``, ``sample``, ...
        """
        W = np.asarray(W, np.float64)
        mean = np.asarray(mean, np.float64)
        if W.ndim != 2 or mean.shape != (W.shape[0],):
            raise ValueError(f"from_params: expected W of shape (D, q) and mean of shape (D,), got "
                             f"{W.shape} and {mean.shape}")
        psi = np.broadcast_to(np.asarray(noise_variance, np.float64), (W.shape[0],)).copy()
        if cls._isotropic and not np.all(psi == psi[0]):
            raise ValueError("from_params: PPCA's noise variance is one number (isotropic), got "
                             "different values per feature")
        if not np.all(np.isfinite(psi)) or not np.all(psi > 0):
            raise ValueError("from_params: expected noise variances > 0 and finite")
        params.setdefault("n_components", W.shape[1])
        est = cls(**params)
        est._set_fitted(mean, W, psi, int(n_iter), list(loglike), W.dtype)
        est.n_features_in_ = W.shape[0]
        return est

    def _orient(self, W, psi):
        """The loadings in their canonical orientation (the likelihood only identifies W up to
        a rotation, which EM's answer inherits from its random start): W R with R orthogonal
        such that W^T Psi^-1 W is diagonal with decreasing entries — the principal axes, for
        PPCA W = U S as in its closed form — and the largest |entry| of each column positive
        (the closed form's sign convention). A fixed seed and the same data give the same W_,
        and EM, SQUAREM and the closed form agree to their tolerance."""
        q = W.shape[1]
        if q == 0:
            return W
        _, _, Vt = np.linalg.svd(W / np.sqrt(psi)[:, None], full_matrices=False)
        W = W @ Vt.T
        signs = np.sign(W[np.abs(W).argmax(0), np.arange(q)])
        signs[signs == 0] = 1
        return W * signs

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
        """Exact log-likelihood of each row under the fitted Gaussian N(mean_, W_ W_^T + Psi).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) — numpy, cupy or dask; NaN entries are
            missing values, marginalised out exactly.

        Returns
        -------
        array of shape (n_samples,) in X's dtype, on X's device (a lazy array for dask):
        O(N D q) by the Woodbury identity (:func:`lgm.lowrank_gaussian_logpdf`).
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        dt = X.dtype
        if is_dask(X):  # lazy: one task per row-chunk
            W, mean, psi = self.W_.astype(dt), self.mean_.astype(dt), self._psi().astype(dt)
            return X.map_blocks(lambda b: lowrank_gaussian_logpdf(b, mean, W, psi), drop_axis=1, dtype=dt)
        xp = backend_of(X).xp
        return lowrank_gaussian_logpdf(X, *(xp.asarray(a, dt) for a in (self.mean_, self.W_, self._psi())))

    def score(self, X, y=None):
        """Mean exact log-likelihood per sample of X (n_samples, n_features), a float."""
        return float(self.score_samples(X).mean())

    def posterior(self, X):
        """Posterior of t given each row of X (n_samples, n_features): (means, covariance).

        Returns (mean of shape (n_samples, q) in X's dtype, covariance of shape (q, q), or
        (n_samples, q, q) when X has NaN), on X's device.

        E[t | x] = M^-1 W^T Psi^-1 (x - mean), Cov[t | x] = M^-1, M = I + W^T Psi^-1 W
        (Tipping & Bishop 1999, eq. 7 in the isotropic case). The covariance is one (q, q)
        matrix shared by all rows when X is complete; with NaN (missing values) each row is
        conditioned on its observed entries and the covariance is (N, q, q)."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        be = backend_of(X)
        xp = be.xp
        psi = self._psi()
        q = self.W_.shape[1]
        nan_rows = xp.isnan(X).any(axis=1)
        fac = woodbury_factor(self.W_, psi)
        Minv = fac.Minv

        def complete_rows(Xo):  # E[t | x] = M^-1 Wp^T (x - mean), on centred float64 blocks
            out = xp.empty((Xo.shape[0], q))
            for s0, _, E, _ in woodbury_blocks(Xo, self.mean_, fac):
                out[s0:s0 + E.shape[0]] = E
            return out

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
        be.lowrank.missing_estep(ez, sig, ll, Xm, *(xp.asarray(v) for v in (self.mean_, self.W_, 1.0 / psi, np.log(psi))))
        mean[nan_rows] = ez
        cov[nan_rows] = sig
        return mean.astype(X.dtype), cov

    def transform(self, X):
        """Posterior means E[t | x].

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features); rows with NaN use their observed
            entries.

        Returns
        -------
        array of shape (n_samples, n_components), X's dtype and device (a lazy dask array, one
        task per row-chunk, for dask input).
        """
        if is_dask(X):
            check_is_fitted(self)
            X = self._validate(X, reset=False)
            q = self.W_.shape[1]
            return X.map_blocks(self.transform, chunks=(X.chunks[0], (q,)), dtype=X.dtype)
        T = self.posterior(X)[0]
        if getattr(self, "whiten", False) and T.shape[1]:
            T = T @ backend_of(T).xp.asarray(self._whitener().astype(T.dtype))
        return T

    def _whitener(self):
        """(I - M^-1)^(-1/2): Cov(E[t | x]) = I - M^-1 under the model (M = I + W^T Psi^-1 W), so
        this maps the posterior means to unit covariance (diagonal in the canonical orientation)."""
        Minv = woodbury_factor(self.W_, self._psi()).Minv
        lam, V = np.linalg.eigh(np.eye(Minv.shape[0]) - Minv)
        return (V / np.sqrt(np.maximum(lam, np.finfo(float).tiny))) @ V.T

    def get_covariance(self):
        """The model covariance W W^T + Psi, shape (n_features, n_features) (float64)."""
        check_is_fitted(self)
        return self.W_ @ self.W_.T + np.diag(self._psi())

    def get_precision(self):
        """The inverse of :meth:`get_covariance`, by the Woodbury identity
        Psi^-1 - Psi^-1 W M^-1 W^T Psi^-1 (no D x D matrix is inverted), shape
        (n_features, n_features) (float64)."""
        check_is_fitted(self)
        psi = self._psi()
        fac = woodbury_factor(self.W_, psi)
        return np.diag(1.0 / psi) - fac.Wp @ fac.Minv @ fac.Wp.T

    def impute(self, X):
        """Fill missing values by their conditional mean under the fitted Gaussian.

        Parameters
        ----------
        X : array of shape (n_samples, n_features) with NaN = missing (numpy or cupy).

        Returns
        -------
        array of X's shape, dtype and device: each NaN replaced by E[x_m | x_o] = mean_m +
        W_m E[t | x_o]; observed entries as they are.
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        if is_dask(X):  # lazy: one task per row-chunk
            return X.map_blocks(self.impute, dtype=X.dtype)
        xp = backend_of(X).xp
        T = self.posterior(X)[0].astype(np.float64)
        filled = T @ xp.asarray(self.W_.T) + xp.asarray(self.mean_)
        out = X.copy()
        nan = xp.isnan(X)
        out[nan] = filled[nan].astype(X.dtype)
        return out

    def inverse_transform(self, T):
        """The mean of p(x | t): x = W t + mean.

        Parameters
        ----------
        T : array of shape (n_samples, n_components) (numpy or cupy).

        Returns
        -------
        array of shape (n_samples, n_features), T's dtype (float64 for integer T) and device.
        """
        check_is_fitted(self)
        xp = backend_of(T).xp
        T = xp.asarray(T)
        if T.ndim != 2 or T.shape[1] != self.W_.shape[1]:
            raise ValueError(f"expected T of shape (n_samples, {self.W_.shape[1]}), got {T.shape}")
        dt = T.dtype if T.dtype in (np.float32, np.float64) else np.float64
        return (T @ xp.asarray(self.W_.T) + xp.asarray(self.mean_)).astype(dt)

    def sample(self, n_samples=1, random_state=None):
        """Draw rows from the fitted model.

        Parameters
        ----------
        n_samples : int >= 1; random_state : int, Generator, RandomState or None.

        Returns
        -------
        array of shape (n_samples, n_features), float64, on the host.
        """
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
    n_components : int, optional — q, with 0 <= q < n_features (default min(N, D) - 1); 0 is the
        isotropic Gaussian N(mean, s^2 I).
    whiten : bool — ``transform`` returns the posterior means scaled to unit variance under the
        model (each component divided by its standard deviation, sqrt(1 - s^2 / lambda_j)):
        then equal to scikit-learn's ``PCA(whiten=True).transform`` for the closed form.
    method : {"closed_form", "em"} — the maximum-likelihood solution from the eigenvalues of the
        sample covariance (its top q eigenpairs, LAPACK syevr; an SVD of the centred data when
        n_features > n_samples), or EM (Tipping & Bishop, App. B), which also takes missing
        values (NaN). The closed form needs complete data: on X with NaN, ``fit`` runs EM on the
        observed entries instead (``n_iter_`` > 1 says so).
    tol : float — EM stops when the mean log-likelihood gains less than tol nats per sample.
    max_iter : int — EM iterations (each SQUAREM cycle counts its three EM maps).
    accelerate : bool — SQUAREM acceleration of EM, monotone by a guard.
    random_state : int, Generator or None — EM initialisation (also the profile likelihood's
        warm start).
    blas_threads : int or None — BLAS threads during fit (threadpoolctl); None leaves them.

    Attributes
    ----------
    W_ : array of shape (n_features, n_components) — loadings.
    mean_ : array of shape (n_features,).
    noise_variance_ : float — s^2.
    n_iter_ : int — EM maps run (closed form: 1).
    loglike_ : list of float — the exact mean log-likelihood per sample after every EM map
        (closed form: one value).
    components_ : array of shape (n_components, n_features) — W_.T (scikit-learn's layout).
    n_features_in_ : int.
    """

    _isotropic = True

    def __init__(self, n_components=None, *, method="closed_form", whiten=False, tol=1e-6,
                 max_iter=1000, accelerate=True, random_state=None, blas_threads=None):
        super().__init__(n_components, tol=tol, max_iter=max_iter, accelerate=accelerate,
                         random_state=random_state, blas_threads=blas_threads)
        self.method = method
        self.whiten = whiten

    def _fit(self, X):
        X = self._validate(X, reset=True)
        N, D = X.shape
        q = self._check_params(N, D)
        if self.method not in ("closed_form", "em"):
            raise ValueError(f"method must be 'closed_form' or 'em', got {self.method!r}")
        nan = self._nan_mask(X)
        if self.method == "closed_form" and nan is None:
            st = DaskData(X) if is_dask(X) else CompleteData(X, stats=False)
            W, s2, loglik = self._closed_form(st, q)
            psi = np.full(D, s2)
            # n_iter_ = 1: one eigendecomposition (scikit-learn expects n_iter_ >= 1)
            self._set_fitted(st.mean, W, psi, 1, [loglik], X.dtype)
            return self
        W, psi, mean, n_iter, hist = self._em(X, q, nan)
        self._set_fitted(mean, self._orient(W, psi), psi, n_iter, hist, X.dtype)
        return self

    @staticmethod
    def _closed_form(st, q):
        """W = U_q (L_q - s^2 I)^(1/2), s^2 = mean of the D - q discarded eigenvalues of the
        sample covariance (Tipping & Bishop 1999, eqs. 7-8; the rotation R = I)."""
        N, D = st.N, st.D
        if is_dask(st.X):
            # the covariance from per-chunk sums (N >> D is the reason to use dask)
            XtX = (st.X.T.astype(np.float64) @ st.X.astype(np.float64)).compute()
            S = XtX / N - np.outer(st.mean, st.mean)
            Xc = None
        elif N >= D:
            # S = sum over centred row blocks of R^T R / N (syrk, float32 blocks for float32 X;
            # cuBLAS on the GPU);
            # then only the top q eigenpairs (LAPACK syevr, on the host: D x D). The discarded
            # eigenvalues enter only through their sum, trace(S) minus the top q.
            import scipy.linalg

            S = centred_gram(st.X, st.mean) / N
            if q == 0:  # the isotropic Gaussian: s^2 is the mean variance
                lam_q, U_q = np.zeros(0), np.zeros((D, 0))
            else:
                lam_q, U_q = scipy.linalg.eigh(S, subset_by_index=[D - q, D - 1], driver="evr")
                lam_q, U_q = np.maximum(lam_q[::-1], 0.0), U_q[:, ::-1]
            top = max(lam_q[0], 1.0) if q else 1.0
            s2 = max((np.trace(S) - lam_q.sum()) / (D - q), SMALL * top)
            return PPCA._finish_closed_form(U_q, lam_q, s2, D, q)
        else:
            be = backend_of(st.X)
            xp = be.xp
            Xc = st.X.astype(np.float64) - xp.asarray(st.mean)
            S = None  # D > N: the SVD of the centred data (on its device)
        if S is not None:
            lam, U = np.linalg.eigh(S)
            lam, U = lam[::-1], U[:, ::-1]
        else:
            _, sv, Vt = (be.to_host(a) for a in xp.linalg.svd(Xc, full_matrices=False))
            lam = np.zeros(D)
            lam[: sv.size] = sv**2 / N
            U = np.zeros((D, D))
            U[:, : sv.size] = Vt.T
        lam = np.maximum(lam, 0.0)
        s2 = max(lam[q:].mean(), SMALL * max(lam[0] if q else 1.0, 1.0))
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
    """Factor analysis: x = W t + mean + eps, eps ~ N(0, diag(psi)), fitted by maximum likelihood:
    the profile likelihood (ECME, Liu & Rubin 1998) on complete data, EM (Rubin & Thayer 1982)
    with missing values or dask input; both SQUAREM-accelerated and monotone.

    Parameters
    ----------
    n_components : int, optional — q, with 0 <= q < n_features (default min(N, D) - 1); 0 is a
        Gaussian with diagonal covariance.
    method : {"auto", "profile", "em"} — "profile": given Psi the loadings are closed form (the
        top eigenvectors of Psi^-1/2 S Psi^-1/2), and the likelihood of Psi alone is maximised by
        L-BFGS-B (tens of iterations where EM needs hundreds to thousands; needs the D x D
        covariance, complete numpy or cupy data), started after PROFILE_WARM_MAPS (10) EM +
        SQUAREM maps from EM's random start, computed from the covariance; "em":
        EM on W and Psi together (takes missing values and dask arrays); "auto": "profile" for
        complete numpy or cupy data with n_features <= 4096, else "em".
    rotation : None, "varimax" or "quartimax" — an orthogonal rotation of the loadings (as
        scikit-learn's; Kaiser 1958 for varimax). None: the canonical orientation, W^T Psi^-1 W
        diagonal and decreasing. The likelihood does not depend on it.
    tol : float — the fit stops when the mean log-likelihood gains less than tol nats per sample
        per EM map (tol / 10 per L-BFGS-B iteration for the profile likelihood: a quasi-Newton
        step gaining just under tol can leave as much again behind).
    max_iter : int — EM maps (each SQUAREM cycle counts its three maps), or L-BFGS-B iterations
        after the warm start.
    accelerate : bool — SQUAREM acceleration of EM, monotone by a guard.
    random_state : int, Generator or None — EM initialisation (also the profile likelihood's
        warm start).
    blas_threads : int or None — BLAS threads during fit (threadpoolctl); None leaves them.

    Attributes
    ----------
    W_ : array of shape (n_features, n_components) — loadings.
    mean_ : array of shape (n_features,).
    noise_variance_ : array of shape (n_features,) — psi.
    n_iter_ : int — EM maps (with the profile likelihood: the warm start's EM maps plus the
        L-BFGS-B iterations).
    loglike_ : list of float — the exact mean log-likelihood per sample after every map or
        accepted iteration (monotone).
    components_ : array of shape (n_components, n_features) — W_.T (scikit-learn's layout).
    n_features_in_ : int.
    """

    # the profile likelihood needs the D x D covariance and a D x D eigendecomposition per map
    PROFILE_MAX_D = 4096
    # EM maps (on the covariance) before the profile iteration; MNIST-5k, q = 16, 10 seeds: the
    # profile iteration then ends at EM's optimum from 10 of 10 random starts (9 of 10 after 5)
    PROFILE_WARM_MAPS = 10

    def __init__(self, n_components=None, *, method="auto", rotation=None, tol=1e-6,
                 max_iter=1000, accelerate=True, random_state=None, blas_threads=None):
        super().__init__(n_components, tol=tol, max_iter=max_iter, accelerate=accelerate,
                         random_state=random_state, blas_threads=blas_threads)
        self.method = method
        self.rotation = rotation

    def _fit(self, X):
        if self.rotation not in (None, "varimax", "quartimax"):
            raise ValueError(f"rotation must be None, 'varimax' or 'quartimax', got {self.rotation!r}")
        if self.method not in ("auto", "profile", "em"):
            raise ValueError(f"method must be 'auto', 'profile' or 'em', got {self.method!r}")
        X = self._validate(X, reset=True)
        N, D = X.shape
        q = self._check_params(N, D)
        nan = self._nan_mask(X)
        complete = nan is None and not is_dask(X)
        if self.method == "profile" and not complete:
            raise ValueError("method='profile' needs complete numpy or cupy data (no NaN, not "
                             "dask): use method='em' or 'auto'")
        if self.method == "profile" or (self.method == "auto" and complete and D <= self.PROFILE_MAX_D):
            mean = CompleteData(X, stats=False).mean
            S = centred_gram(X, mean) / N
            var = np.diag(S).copy()  # the feature variances: no second pass over X
            self._floor = floor = self._noise_floor(var)
            n_warm, hist0, psi0 = 0, [], np.maximum(var, SMALL)
            if q and self.PROFILE_WARM_MAPS:
                # warm start: a few EM + SQUAREM maps from EM's random start, on S (O(D^2 q)
                # each). They pick the basin EM converges to; from psi = diag(S) alone the profile
                # iteration ends at a lower local maximum on MNIST-5k (2137.37 against EM's
                # 2142.66 nats/image: EM's optimum has the pixels that are non-zero in one image
                # only, three in the same image, at the floor). README, "Linear-Gaussian models".
                W0, psi0 = self._init(var, D, q)
                _, psi0, _, n_warm, hist0 = self._fit_em(
                    _em_map(CovarianceData(S, N, mean)), W0, psi0, mean,
                    max_iter=self.PROFILE_WARM_MAPS, warn=False)
            W, psi, n_iter, hist = fit_profile(S, q, psi0, floor=floor, tol=self.tol,
                                               max_iter=self.max_iter, name=type(self).__name__)
            n_iter, hist = n_warm + n_iter, hist0 + hist
        else:
            W, psi, mean, n_iter, hist = self._em(X, q, nan)
        W = self._orient(W, psi)
        if self.rotation is not None and q > 1:
            W = ortho_rotation(W, self.rotation)
        self._set_fitted(mean, W, psi, n_iter, hist, X.dtype)
        return self
