"""PPCA and FactorAnalysis estimators: oracles are scikit-learn, scipy and the closed form."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.stats as st
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SkFA
from sklearn.utils.estimator_checks import parametrize_with_checks

import lgm


def _planted(rng, N=2000, D=12, q=3, noise=None):
    W = rng.standard_normal((D, q)) * 2
    mean = rng.standard_normal(D)
    psi = np.full(D, 0.3) if noise is None else noise
    X = rng.standard_normal((N, q)) @ W.T + mean + rng.standard_normal((N, D)) * np.sqrt(psi)
    return X, W, mean, psi


@parametrize_with_checks([lgm.PPCA(), lgm.PPCA(method="em", max_iter=200), lgm.FactorAnalysis(max_iter=200)])
def test_sklearn_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lgm.ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("q", [2, 10])
def test_closed_form_is_the_ml_optimum_and_em_reaches_it(q):
    X = load_digits().data
    cf = lgm.PPCA(q).fit(X)
    # sklearn's PCA uses unbiased (n - 1) variances, so its parameters are not the ML ones:
    # the ML solution must score at least as well
    assert cf.score(X) >= PCA(q).fit(X).score(X) - 1e-12
    for acc in (True, False):
        em = lgm.PPCA(q, method="em", tol=1e-10, max_iter=5000, accelerate=acc, random_state=0).fit(X)
        h = np.array(em.loglike_)
        assert np.all(np.diff(h) >= -1e-9), np.diff(h).min()  # monotone at every EM map
        assert abs(em.score(X) - cf.score(X)) < 1e-6
        assert abs(em.noise_variance_ - cf.noise_variance_) < 1e-4 * cf.noise_variance_
    # the recorded history ends at the fitted model's exact log-likelihood
    assert abs(em.loglike_[-1] - em.score(X)) < 1e-9


@pytest.mark.parametrize("q", [2, 10])
def test_factor_analysis_reaches_sklearn(q):
    X = load_digits().data
    fa = lgm.FactorAnalysis(q, tol=1e-8, max_iter=5000, random_state=0).fit(X)
    sk = SkFA(q, tol=1e-8, max_iter=5000).fit(X)
    assert fa.score(X) >= sk.score(X) - 1e-3
    assert np.all(np.diff(fa.loglike_) >= -1e-9)
    # SQUAREM needs fewer EM maps (the default on complete data is the profile likelihood,
    # which ``accelerate`` does not touch: EM is asked for by name here)
    squarem = lgm.FactorAnalysis(q, method="em", tol=1e-8, max_iter=5000, random_state=0).fit(X)
    plain = lgm.FactorAnalysis(q, method="em", tol=1e-8, max_iter=5000, accelerate=False,
                               random_state=0).fit(X)
    assert squarem.score(X) >= sk.score(X) - 1e-3
    assert squarem.n_iter_ < plain.n_iter_


def test_score_samples_match_dense_scipy(dtype, rng):
    X, *_ = _planted(rng, N=300, D=7, q=2)
    X = X.astype(dtype)
    for est in (lgm.PPCA(2, method="em", random_state=0), lgm.FactorAnalysis(2, random_state=0)):
        est.fit(X)
        C = est.W_ @ est.W_.T + np.diag(est._psi())
        want = st.multivariate_normal(est.mean_, C).logpdf(X.astype(np.float64))
        got = est.score_samples(X)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-10)
        # with missing values: the marginal of the observed coordinates
        Xm = X.copy()
        Xm[::3, 1] = np.nan
        o = np.arange(7) != 1
        got_m = est.score_samples(Xm)[::3]
        want_m = st.multivariate_normal(est.mean_[o], C[np.ix_(o, o)]).logpdf(X[::3][:, o].astype(np.float64))
        np.testing.assert_allclose(got_m, want_m, rtol=1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("make", [lambda: lgm.PPCA(3), lambda: lgm.PPCA(3, method="em", random_state=1),
                                  lambda: lgm.FactorAnalysis(3, random_state=1)])
def test_recovers_planted_subspace(make, rng):
    X, W, mean, psi = _planted(rng)
    est = make().fit(X)
    angles = scipy.linalg.subspace_angles(est.W_, W)
    assert np.degrees(angles.max()) < 3
    np.testing.assert_allclose(est.mean_, mean, atol=0.2)


def test_posterior_transform_inverse_and_sample(rng):
    X, *_ = _planted(rng, N=500, D=6, q=2)
    est = lgm.FactorAnalysis(2, random_state=0).fit(X)
    psi = est._psi()
    # dense Gaussian conditioning: E[t | x] = W^T C^-1 (x - mean), Cov = I - W^T C^-1 W
    C = est.W_ @ est.W_.T + np.diag(psi)
    K = np.linalg.solve(C, est.W_)  # D, q
    mean_t, cov_t = est.posterior(X)
    np.testing.assert_allclose(mean_t, (X - est.mean_) @ K, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cov_t, np.eye(2) - est.W_.T @ K, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(est.transform(X), mean_t)
    np.testing.assert_allclose(est.inverse_transform(mean_t), mean_t @ est.W_.T + est.mean_)
    S = est.sample(200_000, random_state=0)
    np.testing.assert_allclose(np.cov(S.T), C, atol=0.05 * np.abs(C).max())
    np.testing.assert_array_equal(S[:5], est.sample(200_000, random_state=0)[:5])


def test_float32_kept(rng):
    X = _planted(rng, N=300, D=6, q=2)[0].astype(np.float32)
    est = lgm.PPCA(2).fit(X)
    assert est.transform(X).dtype == np.float32
    assert est.score_samples(X).dtype == np.float32
    assert est.inverse_transform(est.transform(X)).dtype == np.float32


@pytest.mark.parametrize("Model", [lambda **k: lgm.PPCA(method="em", **k), lgm.FactorAnalysis])
def test_float32_em_reaches_the_float64_optimum(Model):
    """EM on float32 data converges like float64 data. Regression: with float32 products over
    rows, the noise update (a difference of nearly equal sums) was off by ~1e-4 of psi, EM never
    met tol and stopped 0.03 (PPCA) / 0.16 (FA) nats/sample short on this problem."""
    rng = np.random.default_rng(0)
    N, D, q = 4000, 64, 5
    W = rng.standard_normal((D, q)) * 2
    X = (rng.standard_normal((N, q)) @ W.T + rng.standard_normal(D)
         + rng.standard_normal((N, D)) * rng.uniform(0.3, 1.0, D))
    with warnings.catch_warnings():
        warnings.simplefilter("error", lgm.ConvergenceWarning)  # must converge
        m32 = Model(n_components=q, tol=1e-8, random_state=0).fit(X.astype(np.float32))
    m64 = Model(n_components=q, tol=1e-8, random_state=0).fit(X)
    assert abs(m32.score(X) - m64.score(X)) < 1e-6
    assert abs(m32.n_iter_ - m64.n_iter_) <= 3


def test_float32_closed_form_with_a_large_mean():
    """The closed form's covariance comes from centred blocks: uncentred float32 X^T X lost
    0.011 nats/sample to cancellation at a mean of 1000 (regression). Centred float32 products
    summed in float64 over 2048-row blocks give the float64 data's fit within 1e-8."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, 5)) @ rng.standard_normal((5, 64)) * 2 + 1000.0
    X += rng.standard_normal(X.shape) * 0.5
    X32 = X.astype(np.float32)
    a = lgm.PPCA(5).fit(X32).score(X32.astype(np.float64))
    b = lgm.PPCA(5).fit(X32.astype(np.float64)).score(X32.astype(np.float64))
    assert abs(a - b) < 1e-8


def test_float32_gram_against_float64():
    """centred_gram multiplies a float32 X in float32, 2048 rows at a time, and sums the blocks
    in float64: every entry within 3e-5 of sqrt(S_ii S_jj) of the float64 products, on a row
    count that is not a multiple of the block, with a large mean and columns of very different
    scales, and on 0 or 1 rows. A float32 block sum's typical error is sqrt(2048) x 6e-8 = 3e-6 of sum |r_i r_j|
    (measured 2.8e-6 here), its worst case 2048 x 6e-8 = 1.2e-4; what the fit makes of it is
    checked above (within 1e-8 nats/sample of the float64 fit)."""
    from lgm.models.linear.sources import centred_gram

    rng = np.random.default_rng(3)
    X = (rng.standard_normal((5000, 40)) @ rng.standard_normal((40, 40))
         * np.logspace(-3, 1, 40) + 500.0)
    # columns whose spread (1e-3) is small beside the float32 mean's rounding at 1000 (3e-5):
    # without the N d d^T correction for centring at the rounded mean they are 3.8e-4 off
    tight = 1000.0 + 1e-3 * (rng.standard_normal((5000, 3)) @ rng.standard_normal((3, 3)))
    X = np.hstack([X, tight]).astype(np.float32)
    mean = X.mean(axis=0, dtype=np.float64)
    S32 = centred_gram(X, mean)
    Xc = X.astype(np.float64) - mean
    S64 = Xc.T @ Xc
    assert S32.dtype == np.float64 and np.array_equal(S32, S32.T)
    scale = np.sqrt(np.outer(np.diag(S64), np.diag(S64)))
    err = np.abs(S32 - S64) / scale
    assert err.max() < 3e-5, err.max()
    assert err.max() > 0  # the float32 products ran (float64 ones would agree to 1e-15)
    assert np.array_equal(centred_gram(X[:0], mean), np.zeros((43, 43)))  # no rows
    x1 = X[:1]  # one row: centred at its own mean, exactly 0
    assert np.array_equal(centred_gram(x1, x1.mean(axis=0, dtype=np.float64)), np.zeros((43, 43)))


def test_bad_input_and_documented_behaviour(rng):
    X = rng.standard_normal((20, 5))
    for q in (-1, 5, 7, 2.5, True):  # 0 <= q < D (issue 13: q = 0 is the isotropic Gaussian)
        with pytest.raises(ValueError, match="n_components"):
            lgm.PPCA(q).fit(X)
    with pytest.raises(ValueError, match="n_samples"):
        lgm.PPCA(4).fit(X[:3])  # N < q
    with pytest.raises(ValueError, match="method"):
        lgm.PPCA(2, method="svd").fit(X)
    Xi = X.copy()
    Xi[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity|inf"):
        lgm.FactorAnalysis(2).fit(Xi)
    Xn = X.copy()
    Xn[:, 1] = np.nan  # an all-NaN column: nothing to learn its parameters from
    with pytest.raises(ValueError, match="no observed value"):
        lgm.PPCA(2, method="em").fit(Xn)
    with pytest.raises(ValueError, match="no observed value"):
        lgm.PPCA(2).fit(Xn)  # the closed form is for complete data: with NaN it runs EM
    Xr = X.copy()
    Xr[3] = np.nan  # an all-NaN row: contributes nothing, the fit goes on
    assert np.isfinite(lgm.FactorAnalysis(2, random_state=0).fit(Xr).score(X))
    # a constant column: its noise variance floors at 1e-12 (as scikit-learn), scores stay finite
    Xc = X.copy()
    Xc[:, 2] = 3.0
    fa = lgm.FactorAnalysis(2, random_state=0).fit(Xc)
    assert fa.noise_variance_[2] == pytest.approx(1e-12) and np.isfinite(fa.score(Xc))
    with pytest.warns(lgm.ConvergenceWarning, match="did not converge"):
        lgm.FactorAnalysis(2, max_iter=2, tol=0, random_state=0).fit(X)
    with pytest.raises(ValueError, match="n_samples must be a positive int"):
        lgm.PPCA(2).fit(X).sample(0)
    with pytest.raises(ValueError, match="blas_threads"):
        lgm.PPCA(2, blas_threads=0).fit(X)
    a = lgm.PPCA(2, blas_threads=1).fit(X)
    np.testing.assert_allclose(a.W_ @ a.W_.T, (b := lgm.PPCA(2).fit(X)).W_ @ b.W_.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [lambda: lgm.PPCA(3, method="em", random_state=0, tol=1e-9),
                                  lambda: lgm.FactorAnalysis(3, random_state=0, tol=1e-9)])
def test_em_with_30_percent_missing(make, rng):
    X, W, mean, psi = _planted(rng, N=1500, D=10, q=3)
    Xm = X.copy()
    Xm[rng.random(X.shape) < 0.3] = np.nan
    est = make().fit(Xm)
    h = np.array(est.loglike_)
    assert np.all(np.diff(h) >= -1e-9), np.diff(h).min()  # monotone at every EM map
    assert abs(h[-1] - est.score(Xm)) < 1e-9  # the history is the exact observed-data likelihood
    assert np.degrees(scipy.linalg.subspace_angles(est.W_, W).max()) < 5
    np.testing.assert_allclose(est.mean_, mean, atol=0.25)
    # the fit is a maximum: small perturbations of the parameters do not score higher
    score = est.score(Xm)
    for eps in (1e-3, -1e-3):
        W2 = est.W_ * (1 + eps)
        ll2 = lgm.lowrank_gaussian_logpdf(Xm, est.mean_, W2, est._psi()).mean()
        assert ll2 <= score + 1e-9


def test_transform_and_impute_with_missing_values(rng):
    X, *_ = _planted(rng, N=400, D=6, q=2)
    est = lgm.FactorAnalysis(2, random_state=0).fit(X)
    Xm = X.copy()
    Xm[0, [1, 4]] = np.nan
    Xm[5, 0] = np.nan
    C = est.W_ @ est.W_.T + np.diag(est._psi())
    mean_t, cov_t = est.posterior(Xm)
    assert cov_t.shape == (400, 2, 2)
    imp = est.impute(Xm)
    for i in (0, 5):
        o = ~np.isnan(Xm[i])
        m = ~o
        Co = C[np.ix_(o, o)]
        # dense Gaussian conditioning, on the observed entries only
        K = np.linalg.solve(Co, est.W_[o])  # |o|, q
        np.testing.assert_allclose(mean_t[i], (Xm[i, o] - est.mean_[o]) @ K, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(cov_t[i], np.eye(2) - est.W_[o].T @ K, rtol=1e-8, atol=1e-12)
        want = est.mean_[m] + C[np.ix_(m, o)] @ np.linalg.solve(Co, Xm[i, o] - est.mean_[o])
        np.testing.assert_allclose(imp[i, m], want, rtol=1e-8)
    np.testing.assert_array_equal(imp[~np.isnan(Xm)], Xm[~np.isnan(Xm)])
    complete = est.posterior(X)
    np.testing.assert_allclose(mean_t[1:5], complete[0][1:5])


def test_missingness_pattern_groups_match_row_by_row(rng, monkeypatch):
    """Rows sharing a missingness pattern go through one factorisation and BLAS; the result must
    be the same as row by row through the Numba kernel."""
    from lgm.models.linear import sources

    X, *_ = _planted(rng, N=600, D=10, q=3)
    Xm = X.copy()
    Xm[:200, 7:] = np.nan  # a block pattern shared by 200 rows
    Xm[200:300, :2] = np.nan  # another one, 100 rows
    Xm[300:, :][rng.random((300, 10)) < 0.2] = np.nan  # scattered: mostly unique patterns
    Xm[550:] = X[550:]  # 50 complete rows
    groups, rest = sources.missingness_groups(np.isnan(Xm))
    assert len(groups) >= 3 and rest.size > 0
    fast = lgm.FactorAnalysis(3, random_state=0, max_iter=30, tol=0)
    with pytest.warns(lgm.ConvergenceWarning):
        fast.fit(Xm)
    monkeypatch.setattr(sources, "GROUP_MIN_ROWS", 10**9)  # every row through the kernel
    slow = lgm.FactorAnalysis(3, random_state=0, max_iter=30, tol=0)
    with pytest.warns(lgm.ConvergenceWarning):
        slow.fit(Xm)
    np.testing.assert_allclose(fast.loglike_, slow.loglike_, rtol=1e-12)
    np.testing.assert_allclose(fast.W_, slow.W_, rtol=1e-8, atol=1e-10)
