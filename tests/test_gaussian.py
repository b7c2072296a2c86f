"""diag_gaussian_logpdf and its fused gradient: kernel vs reference vs scipy, FD in float64."""

import numpy as np
import pytest
import scipy.stats as st
from hypothesis import given
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

import lgm
from lgm import reference as ref

from conftest import sum_tol, central_diff


def _scale(x, mu, lv):
    x, mu, lv = (np.asarray(a, np.float64) for a in (x, mu, lv))
    return (np.abs((x - mu) ** 2 * np.exp(-lv)) + np.abs(lv) + np.log(2 * np.pi)).sum(-1)


def test_matches_reference_and_scipy(dtype, rng):
    x, mu = rng.standard_normal((2, 64, 17)).astype(dtype)
    lv = rng.uniform(-3, 3, (64, 17)).astype(dtype)
    got = lgm.diag_gaussian_logpdf(x, mu, lv)
    assert got.dtype == dtype and got.shape == (64,)
    x64, mu64, lv64 = (a.astype(np.float64) for a in (x, mu, lv))
    oracle = st.norm.logpdf(x64, mu64, np.exp(0.5 * lv64)).sum(-1)
    tol = sum_tol(dtype, 17, _scale(x, mu, lv))
    assert np.all(np.abs(got - oracle) <= tol)
    assert np.all(np.abs(got - ref.diag_gaussian_logpdf(x64, mu64, lv64)) <= tol)
    mvn = st.multivariate_normal(mu64[0], np.diag(np.exp(lv64[0]))).logpdf(x64[0])
    assert abs(got[0] - mvn) <= tol[0]


def test_float32_within_tolerance_of_float64(rng):
    x, mu = rng.standard_normal((2, 1000, 784))
    lv = rng.uniform(-5, 5, (1000, 784))
    g64 = lgm.diag_gaussian_logpdf(x, mu, lv)
    g32 = lgm.diag_gaussian_logpdf(*(a.astype(np.float32) for a in (x, mu, lv)))
    # float32 inputs are rounded (relative 2^-24 each), so the float32 result may differ from the
    # float64 one by a few eps of float32 times the sum of absolute terms
    assert np.all(np.abs(g32 - g64) <= sum_tol(np.float32, 784, _scale(x, mu, lv)))


@given(
    data=hs.data(),
    lead=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4),
    D=hs.integers(1, 40),
    dt=hs.sampled_from([np.float32, np.float64]),
)
def test_hypothesis_extreme_logvar_and_broadcasting(data, lead, D, dt):
    big = 30.0 if dt == np.float32 else 300.0
    xs = 1e3 if dt == np.float32 else 1e20
    x = data.draw(hnp.arrays(dt, lead + (D,), elements=hs.floats(-xs, xs, width=np.finfo(dt).bits)))
    # mu broadcasts from a suffix of the leading shape, logvar may have a size-1 last axis
    k = data.draw(hs.integers(0, len(lead)))
    mu = data.draw(hnp.arrays(dt, lead[k:] + (D,), elements=hs.floats(-xs, xs, width=np.finfo(dt).bits)))
    lv_last = data.draw(hs.sampled_from([1, D]))
    lv = data.draw(hnp.arrays(dt, (lv_last,), elements=hs.floats(-big, big, width=np.finfo(dt).bits)))
    got = lgm.diag_gaussian_logpdf(x, mu, lv)
    assert got.dtype == dt and got.shape == lead
    x64, mu64, lv64 = np.broadcast_arrays(*(a.astype(np.float64) for a in (x, mu, lv)))
    want = ref.diag_gaussian_logpdf(x64, mu64, lv64)
    finite = np.isfinite(want) & (np.abs(want) < np.finfo(dt).max / 2)
    tol = sum_tol(dt, D, _scale(x64, mu64, lv64))
    assert np.all(np.abs(got[finite] - want[finite]) <= tol[finite])


def test_non_contiguous_and_broadcast_inputs(dtype, rng):
    base = rng.standard_normal((30, 40)).astype(dtype)
    x = base[::3, ::2]  # non-contiguous (10, 20)
    mu = np.asfortranarray(rng.standard_normal((10, 20)).astype(dtype))
    lv = np.broadcast_to(rng.standard_normal(20).astype(dtype), (10, 20))  # zero strides
    got = lgm.diag_gaussian_logpdf(x, mu, lv)
    want = ref.diag_gaussian_logpdf(*(np.asarray(a, np.float64) for a in (x, mu, lv)))
    assert np.all(np.abs(got - want) <= sum_tol(dtype, 20, _scale(x, mu, lv)))


def test_python_scalars_are_weak(rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    got = lgm.diag_gaussian_logpdf(x, 0.0, 0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, st.norm.logpdf(x.astype(np.float64)).sum(-1), rtol=1e-5)


def test_nan_propagates_and_infinite_variance():
    x = np.zeros((3, 4))
    lv = np.zeros((3, 4))
    lv[0, 1] = np.nan
    x[1, 2] = np.nan
    lv[2, 0] = np.inf
    out = lgm.diag_gaussian_logpdf(x, 0.0, lv)
    assert np.isnan(out[0]) and np.isnan(out[1]) and out[2] == -np.inf


def test_empty_batch_gives_empty_result(dtype):
    out = lgm.diag_gaussian_logpdf(np.zeros((0, 5), dtype), np.zeros(5, dtype), np.zeros(5, dtype))
    assert out.shape == (0,) and out.dtype == dtype


def test_larger_than_one_chunk(rng):
    """Many rows (more than threads * chunk) and an odd D, against the reference."""
    x, mu, lv = rng.standard_normal((3, 20001, 37))
    got = lgm.diag_gaussian_logpdf(x, mu, lv)
    np.testing.assert_allclose(got, ref.diag_gaussian_logpdf(x, mu, lv), rtol=1e-12, atol=1e-10)


# ------------------------------------------------------------------------------------- gradient
def test_gradient_matches_finite_differences_float64(rng):
    x = rng.standard_normal((3, 4, 5))
    mu = rng.standard_normal((4, 5))  # broadcast over the first axis: its gradient is summed
    lv = rng.uniform(-1, 1, (3, 4, 5))
    w = rng.uniform(0.1, 2.0, (3, 4))
    res = lgm.diag_gaussian_logpdf_grad(x, mu, lv, weights=w)
    f = lambda: float((w * lgm.diag_gaussian_logpdf(x, mu, lv)).sum())  # noqa: E731
    for name, arr, g in (("x", x, res.dx), ("mu", mu, res.dmu), ("logvar", lv, res.dlogvar)):
        assert g.shape == arr.shape, name
        fd = central_diff(f, arr)
        rel = np.abs(g - fd).max() / np.abs(fd).max()
        assert rel < 1e-6, (name, rel)
    np.testing.assert_allclose(res.value, lgm.diag_gaussian_logpdf(x, mu, lv), rtol=1e-13)


def test_gradient_matches_reference(dtype, rng):
    x, mu = rng.standard_normal((2, 50, 33)).astype(dtype)
    lv = rng.uniform(-2, 2, (50, 33)).astype(dtype)
    w = rng.uniform(0, 1, 50).astype(dtype)
    res = lgm.diag_gaussian_logpdf_grad(x, mu, lv, weights=w)
    want = ref.diag_gaussian_logpdf_grad(*(a.astype(np.float64) for a in (x, mu, lv, w)))
    rtol = 1e-5 if dtype == np.float32 else 1e-13
    for got, exp in zip(res, want):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, exp, rtol=rtol, atol=rtol * np.abs(exp).max())


def test_gradient_subset_and_unweighted(rng):
    x, mu, lv = rng.standard_normal((3, 6, 7))
    res = lgm.diag_gaussian_logpdf_grad(x, mu, lv, wrt=("logvar",))
    assert res.dx is None and res.dmu is None
    np.testing.assert_allclose(res.dlogvar, 0.5 * ((x - mu) ** 2 * np.exp(-lv) - 1), rtol=1e-13)


def test_gradient_against_torch_autograd_when_available(rng):
    torch = pytest.importorskip("torch")
    x, mu, lv = rng.standard_normal((3, 8, 9))
    tx, tmu, tlv = (torch.tensor(a, requires_grad=True) for a in (x, mu, lv))
    val = torch.distributions.Normal(tmu, torch.exp(0.5 * tlv)).log_prob(tx).sum(-1)
    val.sum().backward()
    res = lgm.diag_gaussian_logpdf_grad(x, mu, lv)
    np.testing.assert_allclose(res.value, val.detach().numpy(), rtol=1e-12)
    for got, t in ((res.dx, tx), (res.dmu, tmu), (res.dlogvar, tlv)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-12)
