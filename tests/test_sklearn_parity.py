"""Parity with scikit-learn's decomposition tests (issue 13, item 15). Each test below restates,
in lgm's terms and with lgm's own code, the claim of a scikit-learn test (named in its docstring,
from sklearn/decomposition/tests/); what had to change is said there too. scikit-learn is also
the oracle where both compute the same quantity."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SkFA

import lgm


def _fa_data(seed=0, n=20, d=5, q=3):
    rng = np.random.RandomState(seed)
    W = rng.randn(q, d)
    h = rng.randn(n, q)
    noise = rng.gamma(1, size=d) * rng.randn(n, d)  # a different noise variance per feature
    return h @ W + noise, W


def test_factor_analysis_recovers_the_covariance():
    """test_factor_analysis.py::test_factor_analysis. Changed: lgm has no svd_method (its M-step
    is EM, not an SVD), so the lapack/randomized comparison is replaced by EM from two random
    starts; loglike_ is the mean (not the sum) log-likelihood per sample."""
    X, W = _fa_data()
    fits = []
    for seed in (0, 1):
        fa = lgm.FactorAnalysis(3, random_state=seed, tol=1e-12, max_iter=100000).fit(X)
        assert fa.transform(X).shape == (20, 3)
        assert fa.loglike_[-1] == pytest.approx(fa.score_samples(X).mean(), abs=1e-9)
        assert fa.score_samples(X).mean() == pytest.approx(fa.score(X))
        assert np.all(np.diff(fa.loglike_) >= -1e-12)  # monotone
        scov = np.cov(X, rowvar=False, bias=True)
        assert np.abs(scov - fa.get_covariance()).sum() / W.size < 0.1
        fits.append(fa)
    a, b = fits
    assert a.loglike_[-1] == pytest.approx(b.loglike_[-1], abs=1e-9)
    # q = 3 factors for 5 features has more parameters (17) than the covariance (15), and 20
    # samples leave the likelihood flat: two starts end at different points of the same
    # optimum. On a well-posed problem two starts give the same parameters (in the canonical
    # orientation):
    Y, _ = _fa_data(seed=2, n=2000, d=8, q=2)
    a, b = (lgm.FactorAnalysis(2, random_state=s, tol=1e-13, max_iter=100000).fit(Y) for s in (0, 1))
    np.testing.assert_allclose(a.components_, b.components_, atol=1e-5)
    np.testing.assert_allclose(a.noise_variance_, b.noise_variance_, atol=1e-5)
    with pytest.warns(lgm.ConvergenceWarning):
        lgm.FactorAnalysis(3, max_iter=1, random_state=0).fit(X)
    for q in (0, 2):  # get_covariance . get_precision = I (q = n_features is refused, see README)
        fa = lgm.FactorAnalysis(q, random_state=0).fit(X)
        C, P = fa.get_covariance(), fa.get_precision()
        # to rounding: the Woodbury precision Psi^-1 - Psi^-1 W M^-1 W^T Psi^-1 cancels terms of
        # size 1 / min psi, so C P = I to about D eps |C| / min psi (at q = 2 the fit is a
        # Heywood solution, a noise variance at the floor 5e-6: C P is exact to 4e-10 there)
        tol = 10 * 5 * np.finfo(float).eps * np.abs(C).max() / fa.noise_variance_.min()
        np.testing.assert_allclose(C @ P, np.eye(5), atol=max(tol, 1e-12))


def test_convergence_warning_is_scikit_learns():
    """A filter for scikit-learn's ConvergenceWarning catches lgm's (issue 11)."""
    from sklearn.exceptions import ConvergenceWarning

    assert issubclass(lgm.ConvergenceWarning, ConvergenceWarning)


def test_factor_analysis_matches_scikit_learn():
    """Same data, both fitted to convergence: the same log-likelihood and covariance (lgm ends at
    least as high)."""
    X, _ = _fa_data(n=500, d=8, q=3, seed=1)
    ours = lgm.FactorAnalysis(3, random_state=0, tol=1e-10, max_iter=100000).fit(X)
    theirs = SkFA(3, tol=1e-10, max_iter=100000).fit(X)
    assert ours.score(X) >= theirs.score(X) - 1e-6
    np.testing.assert_allclose(ours.get_covariance(), theirs.get_covariance(), atol=2e-3)


@pytest.mark.parametrize("q", [1, 2, 4])
def test_pca_score(q):
    """test_pca.py::test_pca_score. Changed: scikit-learn's PCA divides the variances by N - 1,
    the maximum-likelihood PPCA by N, so the scores differ by that convention only; scoring the
    model with scikit-learn's parameters gives scikit-learn's score to rounding."""
    rng = np.random.RandomState(0)
    X = rng.randn(200, 6) * np.array([3, 2, 1, 0.5, 0.4, 0.3]) + np.array([3, 4, 5, 0, 0, 0])
    sk = PCA(q).fit(X)
    W = sk.components_.T * np.sqrt(sk.explained_variance_ - sk.noise_variance_)
    ll = lgm.lowrank_gaussian_logpdf(X, sk.mean_, W, sk.noise_variance_)
    np.testing.assert_allclose(ll, sk.score_samples(X), rtol=1e-10)
    ours = lgm.PPCA(q).fit(X)
    assert ours.score(X) >= sk.score(X) - 1e-9  # the ML fit is at least as likely on its data
    assert abs(ours.score(X) - sk.score(X)) < 0.05


def test_pca_deterministic_output():
    """test_pca.py::test_pca_deterministic_output: the same data give the same transform, here
    for EM from different starts too (issue 13: EM's W is put in its canonical orientation)."""
    rng = np.random.RandomState(0)
    X = rng.rand(10, 10)
    outs = [lgm.PPCA(3, method="em", random_state=s, tol=1e-13, max_iter=20000).fit(X).transform(X)
            for s in range(3)] + [lgm.PPCA(3).fit(X).transform(X)]
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=1e-5)


def test_pca_whitening():
    """test_pca.py::test_whitening: whitened outputs have unit variance; unwhitened ones do not."""
    rng = np.random.RandomState(0)
    X = rng.randn(300, 8) @ rng.randn(8, 8)
    w = lgm.PPCA(4, whiten=True).fit(X).transform(X)
    np.testing.assert_allclose(w.std(axis=0), 1.0, atol=1e-8)
    assert not np.allclose(lgm.PPCA(4).fit(X).transform(X).std(axis=0), 1.0, atol=1e-2)
