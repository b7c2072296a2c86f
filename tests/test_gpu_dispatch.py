"""The cupy code path of the linear-Gaussian models, run on the CPU through a strict fake cupy
(tests/fakecupy.py): every line that a cupy array reaches — validation, the device/host split,
the twins' arguments — is executed under cupy's rules (no implicit conversion, no numpy array
mixed into device operations). Results must equal the numpy path's: the same float64 algebra on
the same data, only summation orders differ (BLAS vs batched solves), hence 1e-9 relative for
float64 and the float32 tolerance of a sum of D terms for float32.

The real GPU runs of the same calls are in tests/test_gpu.py (skipped without a GPU).
"""

import warnings

import numpy as np
import pytest

import lgm

import fakecupy


@pytest.fixture
def cp(monkeypatch):
    return fakecupy.install(monkeypatch)


def _planted(rng, N=600, D=10, q=3, frac=0.0, dtype=np.float64):
    W = rng.standard_normal((D, q)) * 2
    mean = rng.standard_normal(D)
    psi = rng.uniform(0.2, 0.6, D)
    X = rng.standard_normal((N, q)) @ W.T + mean + rng.standard_normal((N, D)) * np.sqrt(psi)
    if frac:
        X[rng.random((N, D)) < frac] = np.nan
    return X.astype(dtype)


def _same(dev, host, tol=1e-9):
    """dev (a device array, or a fitted attribute, which lives on the host) equals host."""
    got = dev.get() if isinstance(dev, fakecupy.ndarray) else np.asarray(dev)
    assert not isinstance(host, fakecupy.ndarray)
    assert got.shape == np.shape(host) and got.dtype == np.asarray(host).dtype
    host = np.asarray(host, np.float64)
    assert np.all(np.abs(got - host) <= tol * (1 + np.abs(host))), np.abs(got - host).max()


def test_the_fake_is_strict(cp):
    a = cp.asarray(np.ones(3))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type"):
        np.outer(np.ones(2), a)
    assert float((a * 2).sum()) == 6.0 and isinstance(a.sum(), fakecupy.ndarray)
    assert lgm._backends.module_name(a) == "cupy"


def test_lowrank_logpdf_on_device_matches_host(cp, dtype, rng):
    X = _planted(rng, N=300, D=9, q=2, frac=0.2, dtype=dtype)
    X[3] = np.nan
    W = rng.standard_normal((9, 2)).astype(dtype)
    mean = rng.standard_normal(9).astype(dtype)
    psi = rng.uniform(0.3, 1.0, 9).astype(dtype)
    want = lgm.lowrank_gaussian_logpdf(X, mean, W, psi)
    got = lgm.lowrank_gaussian_logpdf(*(cp.asarray(a) for a in (X, mean, W, psi)))
    assert isinstance(got, fakecupy.ndarray)
    _same(got, want, 1e-9 if dtype == np.float64 else 1e-5)
    # a scalar psi, one row, and the errors
    _same(lgm.lowrank_gaussian_logpdf(cp.asarray(X[5]), cp.asarray(mean), cp.asarray(W), 0.5),
          lgm.lowrank_gaussian_logpdf(X[5], mean, W, 0.5), 1e-5)
    bad = X.copy()
    bad[7, 2] = np.inf
    with pytest.raises(ValueError, match="without inf"):
        lgm.lowrank_gaussian_logpdf(cp.asarray(bad), cp.asarray(mean), cp.asarray(W), cp.asarray(psi))
    with pytest.raises(TypeError, match="mix of numpy and cupy"):
        lgm.lowrank_gaussian_logpdf(cp.asarray(X), mean, W, psi)


@pytest.mark.parametrize("make", [
    lambda: lgm.PPCA(3),
    lambda: lgm.PPCA(3, method="em", tol=1e-9, random_state=0),
    lambda: lgm.FactorAnalysis(3, tol=1e-9, random_state=0),
], ids=["ppca-closed", "ppca-em", "fa-em"])
def test_fit_and_score_on_device_match_host(cp, rng, make):
    X = _planted(rng)
    host = make().fit(X)
    dev = make().fit(cp.asarray(X))
    for name in ("W_", "mean_", "noise_variance_"):
        _same(getattr(dev, name), getattr(host, name), 1e-7)  # fitted attributes live on the host
    assert dev.n_iter_ == host.n_iter_
    out = dev.score_samples(cp.asarray(X))
    assert isinstance(out, fakecupy.ndarray) and isinstance(dev.transform(cp.asarray(X)), fakecupy.ndarray)
    _same(out, host.score_samples(X))
    assert abs(dev.score(cp.asarray(X)) - host.score(X)) < 1e-9
    _same(dev.transform(cp.asarray(X)), host.transform(X), 1e-7)
    T = rng.standard_normal((4, 3))
    _same(dev.inverse_transform(cp.asarray(T)), host.inverse_transform(T), 1e-7)
    # a model fitted on the device scores host data and the other way round
    _same(dev.score_samples(X), host.score_samples(X), 1e-7)


def test_closed_form_with_more_features_than_samples_on_device(cp, rng):
    X = _planted(rng, N=8, D=20, q=2)
    _same(lgm.PPCA(2).fit(cp.asarray(X)).W_, lgm.PPCA(2).fit(X).W_, 1e-8)


@pytest.mark.parametrize("Model", [lgm.PPCA, lgm.FactorAnalysis])
def test_missing_value_em_on_device_matches_host(cp, rng, Model, monkeypatch):
    """Block missingness (a shared pattern: the grouped path) plus scattered NaN (the per-row
    twins), float32 data."""
    X = _planted(rng, N=700, D=8, q=2, dtype=np.float32)
    X[:200, :3] = np.nan  # one pattern shared by 200 rows
    X[rng.random(X.shape) < 0.05] = np.nan
    kw = dict(tol=1e-7, max_iter=300, random_state=1)
    if Model is lgm.PPCA:
        kw["method"] = "em"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lgm.ConvergenceWarning)
        host = Model(2, **kw).fit(X)
        dev = Model(2, **kw).fit(cp.asarray(X))
    assert dev.n_iter_ == host.n_iter_
    _same(np.asarray(dev.loglike_), np.asarray(host.loglike_), 1e-8)
    _same(dev.W_, host.W_, 1e-6)
    _same(dev.score_samples(cp.asarray(X)), host.score_samples(X), 1e-5)
    m_dev, c_dev = dev.posterior(cp.asarray(X))
    m_host, c_host = host.posterior(X)
    _same(m_dev, m_host, 1e-5)
    _same(c_dev, c_host, 1e-6)
    imp = dev.impute(cp.asarray(X))
    assert isinstance(imp, fakecupy.ndarray) and isinstance(m_dev, fakecupy.ndarray)
    _same(imp, host.impute(X), 1e-5)


def test_device_input_errors(cp, rng):
    X = _planted(rng, N=50, D=6, q=2)
    with pytest.raises(ValueError, match="2D"):
        lgm.PPCA(2).fit(cp.asarray(X[0]))
    bad = X.copy()
    bad[0, 0] = np.nan  # the closed form needs complete data: with NaN the fit is EM (issue 13)
    assert lgm.PPCA(2, random_state=0).fit(cp.asarray(bad)).n_iter_ > 1
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        lgm.PPCA(2).fit(cp.asarray(bad))
    bad = X.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        lgm.FactorAnalysis(2).fit(cp.asarray(bad))
    m = lgm.PPCA(2).fit(cp.asarray(X))
    with pytest.raises(ValueError, match="5 features, but PPCA is expecting 6"):
        m.score(cp.asarray(X[:, :5]))
    with pytest.raises(ValueError, match="0 sample"):
        m.score(cp.asarray(X[:0]))
    ints = (X * 10).astype(np.int64)
    _same(lgm.PPCA(2).fit(cp.asarray(ints)).W_, lgm.PPCA(2).fit(ints).W_, 1e-8)
