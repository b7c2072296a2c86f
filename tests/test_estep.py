"""E-step strategies: each sampler / variational update checked against the exact posterior of a
linear-Gaussian model (where it is known in closed form), and each strategy's EM loop improves
the exact held-out log-likelihood."""

import numpy as np
import pytest

from lgm.estep import MCMC, MeanField, make_strategy, run_strategy
from lgm.linear import PPCA
from lgm.vae import linear_vae, mlp_vae

from conftest import ppca_decoder


def _ppca_model(D=8, q=2, s2=0.2, seed=0):
    """A linear decoder with a diagonal exact posterior N(M^-1 W^T (x - mu), s2 / M)."""
    m, W, mu, M = ppca_decoder(D, q, s2, seed, scales=(2.0, 1.0))
    post = lambda x: ((x - mu) @ W / M, np.broadcast_to(s2 / M, (len(x), q)))  # noqa: E731
    return m, W, mu, s2, post


def test_mala_samples_the_exact_posterior():
    m, W, mu, s2, post = _ppca_model()
    x = np.random.default_rng(1).standard_normal((20, 8)) + mu
    st = MCMC(seed=0, n_chains=50)
    st.rng = np.random.default_rng(0)
    t, le = st._init_state(m, 20)
    t, le, _ = st._mala(m, x, t, le, 300)  # burn-in with adaptation
    samples, rates = [], []
    for _ in range(300):
        t, le, acc = st._mala(m, x, t, le, 1, adapt=False)
        samples.append(t)
        rates.append(acc)
    S = np.concatenate(samples)  # (300 * 50, 20, 2)
    mean, var = post(x)
    # 15000 correlated draws per point: Monte Carlo error of the mean ~ sd * 0.03
    np.testing.assert_allclose(S.mean(0), mean, atol=0.08 * np.sqrt(var.max()))
    np.testing.assert_allclose(S.var(0), var, rtol=0.15)
    assert 0.4 < np.mean(rates) < 0.75  # adapted towards 0.574


def test_meanfield_update_finds_the_exact_posterior():
    m, W, mu, s2, post = _ppca_model()
    x = np.random.default_rng(2).standard_normal((30, 8)) + mu
    st = MeanField(seed=0, n_samples=16, q_lr=0.01, eval_steps=1500)
    m_q, lv_q = st.proposal(m, x)  # q fitted with the decoder fixed
    mean, var = post(x)
    # the optimum of the ELBO over diagonal Gaussians is the posterior itself (diagonal here);
    # the stochastic gradients leave a small jitter
    np.testing.assert_allclose(m_q, mean, atol=0.05)
    np.testing.assert_allclose(np.exp(lv_q), var, rtol=0.2)


@pytest.mark.parametrize("name", ["exact", "mcmc", "meanfield", "amortized", "iwae"])
def test_every_strategy_improves_the_exact_heldout_loglik(name):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((12, 3))
    X = rng.standard_normal((900, 3)) @ W.T + 0.3 * rng.standard_normal((900, 12))
    Xtr, Xte = X[:600], X[600:]
    opt = PPCA(3).fit(Xtr).score_samples(Xte).mean()
    m = linear_vae(12, 3, isotropic=True, seed=1)
    start = m.exact_log_likelihood(Xte).mean()
    r = run_strategy(name, m, Xtr, Xte, budget_s=0.4, n_evals=3, lr=2e-2, seed=0)
    assert r.iterations > 5 and len(r.times) == 3 and r.times == sorted(r.times)
    assert r.final > start + 5, (start, r.final)
    assert r.final <= opt + 0.05  # nothing beats the maximum-likelihood optimum on held-out data
    if name == "exact":
        assert opt - r.final < 1e-3
    if name == "mcmc":
        assert 0.2 < r.stats["acceptance"] < 0.95
        assert r.state_bytes == 2 * 600 * 3 * 8 + 600 * 8
    if name == "meanfield":
        assert r.state_bytes == 6 * 600 * 3 * 8 + 600 * 8  # grows with N
    if name in ("amortized", "iwae", "exact"):
        assert r.state_bytes == 0


def test_neural_strategies_run_and_score_with_their_proposals():
    rng = np.random.default_rng(0)
    X = (rng.random((200, 16)) > 0.5).astype(np.float32)
    for name in ("mcmc", "meanfield", "amortized", "iwae"):
        m = mlp_vae(D=16, hidden=8, latent_dim=2, seed=0)
        r = run_strategy(name, m, X[:150], X[150:], budget_s=0.2, n_evals=2, n_samples_curve=10,
                         n_samples_final=20, batch_size=32, strategy_kw=dict(eval_steps=10, eval_burn=5,
                                                                     eval_collect=5))
        assert np.isfinite(r.final) and r.final < 0 and r.final > -16 * np.log(2) * 3


def test_strategy_errors():
    with pytest.raises(ValueError, match="strategy in"):
        make_strategy("gibbs")
    st = make_strategy("exact")
    with pytest.raises(ValueError, match="only a linear decoder"):
        st.setup(mlp_vae(D=4, hidden=3, latent_dim=2), np.zeros((3, 4), np.float32))
