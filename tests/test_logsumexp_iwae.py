"""logsumexp (the -inf/+inf/NaN rules) and the fused importance weights with ELBO/IWAE."""

import warnings

import numpy as np
import pytest
import scipy.special as sp
import scipy.stats as st
from hypothesis import given
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

import lgm
from lgm import reference as ref


def _oracle_lse(a, axis):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sp.logsumexp(a.astype(np.float64), axis=axis)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, None, (0, 2), (1, 2)])
def test_matches_scipy_all_axes(dtype, rng, axis):
    a = (rng.standard_normal((5, 33, 7)) * 10).astype(dtype)
    got = lgm.logsumexp(a, axis=axis)
    assert got.dtype == dtype
    # absolute error of a logsumexp is a few eps of the largest |a| (the max is subtracted/added)
    atol = 16 * np.finfo(dtype).eps * np.abs(a).max()
    np.testing.assert_allclose(got, _oracle_lse(a, axis), rtol=1e-6 if dtype == np.float32 else 1e-14, atol=atol)
    kd = lgm.logsumexp(a, axis=axis, keepdims=True)
    assert kd.shape == np.asarray(sp.logsumexp(a, axis=axis, keepdims=True)).shape


@pytest.mark.parametrize("axis", [0, -1])
def test_inf_nan_rules_without_warnings(dtype, axis):
    a = np.zeros((4, 4), dtype)
    a[:, 0] = -np.inf  # column 0 all -inf (axis 0)
    a[0, :] = -np.inf  # row 0 all -inf (axis -1)
    a[2, 2] = np.inf
    a[3, 3] = np.nan
    if axis == 0:
        a = a.T.copy().T  # same layout, the reduction runs down columns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            got = lgm.logsumexp(a, axis=axis)
    # slice 0 is all -inf in both orientations; slice 2 has +inf; slice 3 has NaN
    assert got[0] == -np.inf
    assert got[2] == np.inf
    assert np.isnan(got[3])
    np.testing.assert_allclose(got[1], np.log(3), rtol=1e-6)


@given(
    a=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                 elements=hs.one_of(hs.floats(-1e3, 1e3), hs.just(-np.inf), hs.just(np.inf),
                                    hs.just(np.nan))),
    dt=hs.sampled_from([np.float32, np.float64]),
    data=hs.data(),
)
def test_hypothesis_against_scipy(a, dt, data):
    a = a.astype(dt)
    axis = data.draw(hs.integers(-a.ndim, a.ndim - 1))
    got = lgm.logsumexp(a, axis=axis)
    want = _oracle_lse(a, axis)
    # scipy: NaN if any NaN, +inf if any +inf (and no NaN), -inf if all -inf
    np.testing.assert_allclose(got, want, rtol=1e-5 if dt == np.float32 else 1e-12, atol=1e-5)


def test_all_neg_inf_row_large():
    a = np.full((3, 1000), -np.inf, np.float32)
    a[1, 5] = 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = lgm.logsumexp(a)
    np.testing.assert_array_equal(got, np.array([-np.inf, 2.0, -np.inf], np.float32))


# ----------------------------------------------------------------------------- importance weights
def _problem(rng, dtype, S=6, B=5, D=11, d=3):
    x = rng.random((B, D)).astype(dtype)
    mux = rng.standard_normal((S, B, D)).astype(dtype)
    lvx = rng.uniform(-1, 1, (S, B, D)).astype(dtype)
    t = rng.standard_normal((S, B, d)).astype(dtype)
    mt = rng.standard_normal((B, d)).astype(dtype)
    lt = rng.uniform(-1, 1, (B, d)).astype(dtype)
    return x, mux, lvx, t, mt, lt


def test_log_weights_gaussian_match_scipy(dtype, rng):
    x, mux, lvx, t, mt, lt = _problem(rng, dtype)
    lw = lgm.importance_log_weights(x, t, mt, lt, mu_x=mux, logvar_x=lvx)
    assert lw.shape == (6, 5) and lw.dtype == dtype
    f = lambda a: a.astype(np.float64)  # noqa: E731
    oracle = (st.norm.logpdf(f(x), f(mux), np.exp(0.5 * f(lvx))).sum(-1)
              + st.norm.logpdf(f(t)).sum(-1)
              - st.norm.logpdf(f(t), f(mt), np.exp(0.5 * f(lt))).sum(-1))
    np.testing.assert_allclose(lw, oracle, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4 if dtype == np.float32 else 1e-11)


def test_log_weights_bernoulli_and_broadcast_variance(dtype, rng):
    x, mux, lvx, t, mt, lt = _problem(rng, dtype)
    xb = (x > 0.5).astype(dtype)
    lw = lgm.importance_log_weights(xb, t, mt, lt, logits=mux * 5)
    want = ref.importance_log_weights(*(a.astype(np.float64) for a in (xb, t, mt, lt)), logits=(mux * 5).astype(np.float64))
    np.testing.assert_allclose(lw, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4 if dtype == np.float32 else 1e-11)
    shared = lvx[0, 0]  # one (D,) log-variance for every sample and row
    lw2 = lgm.importance_log_weights(x, t, mt, lt, mu_x=mux, logvar_x=shared)
    want2 = ref.importance_log_weights(*(a.astype(np.float64) for a in (x, t, mt, lt)),
                                       mu_x=mux.astype(np.float64), logvar_x=shared.astype(np.float64))
    np.testing.assert_allclose(lw2, want2, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4 if dtype == np.float32 else 1e-11)


def test_elbo_iwae_weights(dtype, rng):
    x, mux, lvx, t, mt, lt = _problem(rng, dtype, S=50)
    lw = lgm.importance_log_weights(x, t, mt, lt, mu_x=mux, logvar_x=lvx)
    e, i, w = lgm.elbo(lw), lgm.iwae(lw), lgm.importance_weights(lw)
    lw64 = lw.astype(np.float64)
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(e, lw64.mean(0), rtol=rtol)
    np.testing.assert_allclose(i, sp.logsumexp(lw64, axis=0) - np.log(50), rtol=rtol)
    np.testing.assert_allclose(w, sp.softmax(lw64, axis=0), rtol=rtol * 10, atol=1e-7)
    assert i.dtype == e.dtype == w.dtype == dtype
    assert np.all(i >= e - 1e-4)  # Jensen: IWAE >= ELBO for the same samples


def test_importance_bounds_is_the_composition(dtype, rng):
    """importance_bounds = (importance_log_weights, elbo, iwae) on the CPU (the GPU's fused
    kernel is checked against the same composition in tests/test_gpu.py)."""
    x, mux, lvx, t, mt, lt = _problem(rng, dtype, S=7)
    for kw in (dict(mu_x=mux, logvar_x=lvx), dict(logits=mux * 3), dict(mu_x=mux, logvar_x=lvx[0, 0])):
        lw, e, i = lgm.importance_bounds(x, t, mt, lt, **kw)
        lw2 = lgm.importance_log_weights(x, t, mt, lt, **kw)
        np.testing.assert_array_equal(lw, lw2)
        np.testing.assert_array_equal(e, lgm.elbo(lw2))
        np.testing.assert_array_equal(i, lgm.iwae(lw2))
        assert lw.dtype == e.dtype == i.dtype == dtype
    with pytest.raises(ValueError, match="either mu_x and logvar_x or logits"):
        lgm.importance_bounds(x, t, mt, lt, mu_x=mux, logvar_x=lvx, logits=mux)


def test_importance_weights_all_neg_inf_column():
    lw = np.array([[-np.inf, 0.0], [-np.inf, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = lgm.importance_weights(lw)
    np.testing.assert_array_equal(w, [[0, 0.5], [0, 0.5]])
    assert lgm.iwae(lw)[0] == -np.inf


def test_iwae_converges_to_exact_marginal_on_linear_gaussian(rng):
    """On a linear-Gaussian model the marginal is known: IWAE with many samples from the prior
    (a poor but valid proposal) must approach log N(x | b, W W^T + s^2 I)."""
    D, d, S = 4, 2, 200_000
    W = rng.standard_normal((D, d))
    b = rng.standard_normal(D)
    s2 = 0.5
    x = rng.standard_normal((1, D)) * 2
    mt, lt = np.zeros((1, d)), np.zeros((1, d))
    t, _ = lgm.reparameterize(mt, lt, rng, n_samples=S)  # (S, 1, d)
    mux = t @ W.T + b
    lw = lgm.importance_log_weights(x, t, mt, lt, mu_x=mux, logvar_x=np.full(D, np.log(s2)))
    exact = st.multivariate_normal(b, W @ W.T + s2 * np.eye(D)).logpdf(x[0])
    assert abs(lgm.iwae(lw)[0] - exact) < 0.02
    assert lgm.elbo(lw)[0] < exact
