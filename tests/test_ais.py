"""AIS with HMC transitions and bidirectional Monte Carlo (issue 12, part 2), checked on a linear
decoder, whose log-likelihood is exact (PPCA): AIS converges to it as the temperatures grow, and
BDMC's forward and reverse estimates bracket it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ppca_decoder
from lgm.estep import ais_log_likelihood, bdmc_bounds, sigmoid_schedule


def _simulated(dtype=np.float64, N=40, seed=0):
    m, W, mu, _ = ppca_decoder(10, 2, 0.3)
    if dtype == np.float32:
        from lgm.vae import linear_vae

        m32 = linear_vae(10, 2, isotropic=True, dtype=np.float32)
        for k, v in m.params.views.items():
            m32.params.views[k][...] = v.astype(np.float32)
        m = m32
    rng = np.random.default_rng(seed)
    T = rng.standard_normal((N, 2))
    X = T @ W.T + mu + np.sqrt(0.3) * rng.standard_normal((N, 10))
    return m, X.astype(dtype), T.astype(dtype)


def test_ais_converges_to_the_exact_log_likelihood():
    m, X, _ = _simulated()
    exact = m.exact_log_likelihood(X)
    bias, errs = {}, {}
    for n in (50, 800):
        r = ais_log_likelihood(m, X, n_temps=n, n_chains=32, seed=1)
        assert r.log_px.shape == (40,) and r.log_w.shape == (32, 40)
        assert 0.4 < r.acceptance < 0.9  # the step size adapts towards 0.65
        bias[n] = float(np.mean(r.log_px - exact))  # what a mean held-out score sees
        errs[n] = float(np.mean(np.abs(r.log_px - exact)))  # per point, Monte Carlo noise included
    assert abs(bias[800]) < 0.05 and errs[800] < 0.1, (bias, errs)
    assert errs[800] < errs[50] and abs(bias[800]) < abs(bias[50]), (bias, errs)


def test_bdmc_brackets_the_exact_log_likelihood():
    m, X, T = _simulated(seed=2)
    exact = float(np.mean(m.exact_log_likelihood(X)))
    gaps = {}
    for n in (20, 400):
        lo, up = bdmc_bounds(m, X, T, n_temps=n, n_chains=16, seed=3)
        lo, up = float(np.mean(lo)), float(np.mean(up))
        assert lo <= exact + 0.01 and up >= exact - 0.01, (n, lo, exact, up)
        gaps[n] = up - lo
    assert gaps[400] < gaps[20] and gaps[400] < 0.1, gaps


def test_ais_float32_and_bad_input():
    m, X, _ = _simulated(np.float32)
    r = ais_log_likelihood(m, X[:8], n_temps=100, n_chains=4)
    assert r.log_px.dtype == np.float32 and np.all(np.isfinite(r.log_px))
    with pytest.raises(ValueError, match="n_chains"):
        ais_log_likelihood(m, X, n_chains=0)
    with pytest.raises(ValueError, match="n_temps"):
        ais_log_likelihood(m, X, n_temps=0)
    with pytest.raises(ValueError, match="step_size"):
        ais_log_likelihood(m, X, step_size=-1.0)
    b = sigmoid_schedule(10)
    assert b[0] == 0.0 and b[-1] == 1.0 and np.all(np.diff(b) > 0)


def test_inference_gaps_on_a_linear_decoder():
    """With a PPCA decoder whose posterior is a diagonal Gaussian the approximation gap is 0 (up
    to Monte Carlo noise); an untrained linear encoder leaves a positive amortization gap."""
    from lgm.estep import inference_gaps

    m, X, _ = _simulated(N=30, seed=4)
    g = inference_gaps(m, X, ais_kw=dict(n_temps=800, n_chains=32), q_steps=1500, q_lr=0.02,
                       q_samples=16, elbo_samples=400)
    exact = float(np.mean(m.exact_log_likelihood(X)))
    assert abs(g.log_px - exact) < 0.05
    assert abs(exact - g.elbo_optimal) < 0.05, g  # q* is the posterior itself
    assert abs(g.approximation_gap) < 0.08, g  # both estimates' noise
    assert g.amortization_gap > 1.0, g  # the encoder was never trained
    assert g.elbo_optimal <= exact + 0.02  # an ELBO is a lower bound
