"""Data larger than memory: the estimators on dask arrays (threaded scheduler and a
dask.distributed LocalCluster started here) give the numpy results."""

import numpy as np
import pytest

import lgm

da = pytest.importorskip("dask.array", reason="dask is not installed")


def _data(seed=0, N=3000, D=12, q=3):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((D, q))
    return rng.standard_normal((N, q)) @ W.T + rng.standard_normal(D) + 0.5 * rng.standard_normal((N, D))


@pytest.mark.parametrize("make", [lambda: lgm.PPCA(3), lambda: lgm.PPCA(3, method="em", random_state=0),
                                  # EM by name: on numpy the default is the profile likelihood,
                                  # on dask EM (the same algorithm is compared on both)
                                  lambda: lgm.FactorAnalysis(3, method="em", random_state=0)])
def test_dask_threaded_matches_numpy(make):
    X = _data()
    Xd = da.from_array(X, chunks=(700, 6))  # uneven row chunks, split columns (rechunked inside)
    a, b = make().fit(X), make().fit(Xd)
    np.testing.assert_allclose(b.loglike_[-1], a.loglike_[-1], rtol=1e-10)
    np.testing.assert_allclose(b.noise_variance_, a.noise_variance_, rtol=1e-6)
    np.testing.assert_allclose(b.W_ @ b.W_.T, a.W_ @ a.W_.T, rtol=1e-5, atol=1e-8)
    s = b.score_samples(Xd)
    assert isinstance(s, da.Array)
    np.testing.assert_allclose(s.compute(), a.score_samples(X), rtol=1e-9)
    t = b.transform(Xd)
    assert isinstance(t, da.Array) and t.shape == (3000, 3)
    np.testing.assert_allclose(t.compute(), b.transform(X), rtol=1e-9, atol=1e-12)


def test_dask_distributed_local_cluster():
    distributed = pytest.importorskip("distributed")
    X = _data(seed=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        Xd = da.from_array(X, chunks=(500, 12))
        fa = lgm.FactorAnalysis(3, random_state=0).fit(Xd)  # auto: EM on dask
        ref = lgm.FactorAnalysis(3, method="em", random_state=0).fit(X)
        np.testing.assert_allclose(fa.loglike_[-1], ref.loglike_[-1], rtol=1e-10)
        np.testing.assert_allclose(fa.score_samples(Xd).compute(), ref.score_samples(X), rtol=1e-8)


def test_dask_bad_input():
    with pytest.raises(ValueError, match="2D"):
        lgm.PPCA(2).fit(da.zeros((10,), chunks=5))
    X = _data(N=100)
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        lgm.FactorAnalysis(2).fit(da.from_array(X, chunks=(50, 12)))
