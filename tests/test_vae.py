"""Neural models: whole-objective gradients (FD in float64, torch autograd), the PPCA limit of the
IWAE estimator, reproducible training with exact resume from atomic .npz checkpoints, bounded
memory in evaluation, errors."""

import os
import tracemalloc

import numpy as np
import pytest

from lgm import lowrank_gaussian_logpdf, nn
from lgm.io import load_npz
from lgm.vae import conv_vae, linear_vae, load_model, mlp_vae, train

from conftest import central_diff, ppca_decoder

FD_TOL = 1e-6


def _small(kind, lik, dtype=np.float64, seed=0):
    if kind in ("linear", "fa"):
        return linear_vae(12, 3, dtype=dtype, seed=seed, isotropic=kind == "linear")
    if kind == "mlp":
        return mlp_vae(D=12, hidden=7, latent_dim=3, likelihood=lik, dtype=dtype, seed=seed)
    return conv_vae((8, 8, 1), latent_dim=3, likelihood=lik, dtype=dtype, channels=(3, 4), seed=seed)


def _data(model, n, lik, seed=0, dtype=np.float64):
    x = np.random.default_rng(seed).random((n, model.D))
    return ((x > 0.5) if lik == "bernoulli" else x).astype(dtype)


@pytest.mark.parametrize("kind,lik", [("mlp", "bernoulli"), ("mlp", "gaussian"), ("conv", "bernoulli"),
                                      ("conv", "gaussian"), ("linear", "gaussian"), ("fa", "gaussian")])
@pytest.mark.parametrize("objective,S", [("elbo", 2), ("iwae", 3)])
def test_objective_gradient_matches_finite_differences(kind, lik, objective, S):
    m = _small(kind, lik)
    x = _data(m, 4, lik)
    P = m.params

    def L():
        P.zero_grad()
        return m.loss_and_grad(x, np.random.default_rng(5), objective, S)

    L()
    g = P.grad.copy()
    fd = central_diff(L, P.data, h=1e-5)
    err = np.linalg.norm(g - fd) / np.linalg.norm(fd)
    assert err < FD_TOL, err


def _torch_net(torch, layers, P, x):
    """The same network in torch (NHWC kept by permuting around each convolution)."""
    F = torch.nn.functional
    W = {k: torch.tensor(v, requires_grad=True) for k, v in P.views.items()}
    for L in layers:
        if isinstance(L, nn.Linear):
            x = x @ W[L.name + ".W"] + W[L.name + ".b"]
        elif isinstance(L, nn.Conv2d):
            x = F.conv2d(x.permute(0, 3, 1, 2), W[L.name + ".W"].permute(3, 2, 0, 1),
                         W[L.name + ".b"], stride=L.s, padding=L.p).permute(0, 2, 3, 1)
        elif isinstance(L, nn.ConvTranspose2d):
            x = F.conv_transpose2d(x.permute(0, 3, 1, 2), W[L.name + ".W"].permute(0, 3, 1, 2),
                                   W[L.name + ".b"], stride=L.s, padding=L.p).permute(0, 2, 3, 1)
        elif isinstance(L, nn.Reshape):
            x = x.reshape((x.shape[0],) + L.shape)
        if getattr(L, "relu", False):
            x = torch.relu(x)
    return x, W


@pytest.mark.parametrize("kind,lik,objective", [("mlp", "gaussian", "iwae"), ("conv", "bernoulli", "elbo"),
                                                ("conv", "gaussian", "iwae")])
def test_objective_matches_torch_autograd(kind, lik, objective):
    torch = pytest.importorskip("torch")
    m = _small(kind, lik)
    x = _data(m, 5, lik)
    S, B, d = 4, 5, m.latent_dim
    m.params.zero_grad()
    loss = m.loss_and_grad(x, np.random.default_rng(7), objective, S)
    eps = torch.tensor(np.random.default_rng(7).standard_normal((S, B, d)))  # the same draws
    xt = torch.tensor(x)
    h, We = _torch_net(torch, m.encoder.layers, m.params, xt.reshape((B,) + m.enc_in_shape))
    mu, lv = h[:, :d], h[:, d:]
    t = mu + torch.exp(0.5 * lv) * eps
    o, Wd = _torch_net(torch, m.decoder.layers, m.params, t.reshape(S * B, d))
    o = o.reshape(S, B, m.D, m.head.channels)
    if lik == "bernoulli":
        lp = -torch.nn.functional.binary_cross_entropy_with_logits(
            o[..., 0], xt.expand(S, B, m.D), reduction="none").sum(-1)
    else:
        lvx = torch.logaddexp(o[..., 1], torch.tensor(m.log_var_floor, dtype=torch.float64))
        lp = (-0.5 * ((xt - o[..., 0]) ** 2 * torch.exp(-lvx) + lvx + np.log(2 * np.pi))).sum(-1)
    if objective == "elbo":
        kl = -0.5 * (1 + lv - mu ** 2 - lv.exp()).sum(-1)
        tl = kl.mean() - lp.mean()
    else:
        lpt = (-0.5 * (t ** 2 + np.log(2 * np.pi))).sum(-1)
        lq = (-0.5 * (eps ** 2 + lv + np.log(2 * np.pi))).sum(-1)
        tl = -(torch.logsumexp(lp + lpt - lq, 0) - np.log(S)).mean()
    tl.backward()
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
    for k in m.params.views:
        tg = (We[k] if k.startswith("enc") else Wd[k]).grad.numpy()
        np.testing.assert_allclose(m.params.grads[k], tg, rtol=1e-9, atol=1e-12, err_msg=k)


def _ppca_vae(D=6, q=2, sigma2=0.3, seed=0, perturb=0.0):
    """A linear VAE whose decoder is a PPCA model with orthogonal W (so the exact posterior is
    diagonal) and whose encoder returns that posterior (times 1 + perturb)."""
    m, W, mu, Mdiag = ppca_decoder(D, q, sigma2, seed)
    A = (W / Mdiag).T * (1 + perturb)  # (q, D)
    We, be = m.params.views["enc.W"], m.params.views["enc.b"]
    We[:, :q] = A.T
    be[:q] = -A @ mu
    We[:, q:] = 0
    be[q:] = np.log(sigma2 / Mdiag) + perturb
    return m, W, mu, sigma2


def test_iwae_on_ppca_equals_the_exact_log_likelihood():
    m, W, mu, s2 = _ppca_vae()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 2)) @ W.T + mu + np.sqrt(s2) * rng.standard_normal((2000, 6))
    exact = lowrank_gaussian_logpdf(x, mu, W, s2)
    np.testing.assert_allclose(m.exact_log_likelihood(x), exact, rtol=1e-12)
    # with q = the exact posterior every importance weight equals p(x): exact for any K
    np.testing.assert_allclose(m.log_likelihood(x, n_samples=3), exact, rtol=1e-12, atol=1e-10)
    # the ELBO with closed-form KL is exact in expectation only (KL(q || posterior) = 0): its
    # Monte Carlo error must average out over rows (4 standard errors)
    d = m.elbo(x, n_samples=20) - exact
    assert abs(d.mean()) < 4 * d.std() / np.sqrt(len(d)), (d.mean(), d.std())

    # an inexact proposal: IWAE_K increases with K and converges to the exact log-likelihood
    m2, *_ = _ppca_vae(perturb=0.3)
    xs = x[:200]
    gaps = [float((lowrank_gaussian_logpdf(xs, mu, W, s2) - m2.log_likelihood(xs, n_samples=K)).mean())
            for K in (1, 10, 5000)]
    assert gaps[0] > gaps[1] > gaps[2] > -0.01, gaps
    assert gaps[0] > 0.05 and gaps[2] < 0.01, gaps


def test_training_is_reproducible_and_resumes_exactly(tmp_path):
    X = _data(_small("mlp", "bernoulli", np.float32), 300, "bernoulli", dtype=np.float32)
    full = _small("mlp", "bernoulli", np.float32)
    h_full = train(full, X, epochs=4, batch_size=64, seed=3)
    again = _small("mlp", "bernoulli", np.float32)
    assert train(again, X, epochs=4, batch_size=64, seed=3) == h_full
    ck = tmp_path / "ck.npz"
    part = _small("mlp", "bernoulli", np.float32)
    h_part = train(part, X, epochs=2, batch_size=64, seed=3, checkpoint=ck)
    assert h_part == h_full[:2]
    resumed = _small("mlp", "bernoulli", np.float32, seed=99)  # other init: the checkpoint decides
    h_res = train(resumed, X, epochs=4, batch_size=64, seed=3, checkpoint=ck, resume=True)
    assert h_res == h_full
    np.testing.assert_array_equal(resumed.params.data, full.params.data)
    assert load_npz(ck)["adam/t"] == 4 * 5


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    X = _data(_small("mlp", "gaussian"), 50, "gaussian")
    m = _small("mlp", "gaussian")
    ck = tmp_path / "ck.npz"
    train(m, X, epochs=1, checkpoint=ck)
    before = ck.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        train(m, X, epochs=2, checkpoint=ck, resume=True)
    assert ck.read_bytes() == before  # the earlier checkpoint is intact
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temporary left behind


def test_model_file_round_trip(tmp_path):
    m = _small("conv", "gaussian", np.float32)
    X = _data(m, 20, "gaussian", dtype=np.float32)
    train(m, X, epochs=1, batch_size=10)
    path = m.save(tmp_path / "model.npz")
    m2 = load_model(path)
    assert m2.spec == m.spec and m2.dtype == np.float32
    np.testing.assert_array_equal(m2.params.data, m.params.data)
    np.testing.assert_array_equal(m2.log_likelihood(X, 20), m.log_likelihood(X, 20))
    with np.load(path, allow_pickle=False) as z:  # readable without pickle
        assert "spec" in z.files


def test_log_likelihood_chunks_do_not_change_the_estimate(dtype):
    m = _small("mlp", "bernoulli", dtype)
    x = _data(m, 30, "bernoulli", dtype=dtype)
    a = m.log_likelihood(x, n_samples=200, batch_size=7, max_rows=50)
    b = m.log_likelihood(x, n_samples=200, batch_size=7, max_rows=10 ** 6)
    assert a.dtype == dtype and a.shape == (30,)
    np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == np.float32 else 1e-12)
    # IWAE_K >= ELBO on average, and the estimate grows with K
    assert m.log_likelihood(x, 200).mean() > m.elbo(x, n_samples=200).mean()


def test_log_likelihood_memory_is_bounded():
    m = mlp_vae(D=100, hidden=32, latent_dim=4, dtype=np.float64)
    x = _data(m, 50, "bernoulli")

    def peak(K):
        tracemalloc.start()
        m.log_likelihood(x, n_samples=K, batch_size=50, max_rows=500)
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p

    p1, p2 = peak(100), peak(2000)
    # 20x the samples: the peak stays within the same chunk budget (a full (K, B, D) would be 80 MB)
    assert p2 < 1.5 * p1 + 2 ** 20, (p1, p2)
    assert p2 < 8 * 2 ** 20


def test_samples_and_reconstructions():
    m = _small("conv", "bernoulli")
    s = m.sample(5, seed=0)
    assert s.shape == (5, 64) and (s >= 0).all() and (s <= 1).all()
    x = _data(m, 3, "bernoulli")
    assert m.reconstruct(x).shape == (3, 64)
    assert m.transform(x).shape == (3, 3)


def test_bad_input():
    m = _small("mlp", "gaussian", np.float32)
    good = _data(m, 4, "gaussian", dtype=np.float32)
    with pytest.raises(TypeError, match="dtype float32"):
        m.log_likelihood(good.astype(np.float64))
    with pytest.raises(ValueError, match=r"shape \(N >= 1, 12\)"):
        m.log_likelihood(good[:, :5])
    with pytest.raises(ValueError, match=r"shape \(N >= 1, 12\)"):
        m.log_likelihood(good[:0])
    bad = good.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train(m, bad, epochs=1)
    with pytest.raises(ValueError, match="n_samples"):
        m.log_likelihood(good, n_samples=0)
    with pytest.raises(ValueError, match="objective"):
        train(m, good, objective="foo")
    with pytest.raises(ValueError, match="likelihood"):
        mlp_vae(likelihood="poisson")
    with pytest.raises(ValueError, match="var_floor"):
        mlp_vae(likelihood="gaussian", var_floor=0.0)
    with pytest.raises(ValueError, match="divisible by 4"):
        conv_vae((10, 10, 1))
    with pytest.raises(ValueError, match="resume"):
        train(m, good, resume=True)


def test_gaussian_variance_floor_bounds_the_density():
    """Pixels that are 0 in every image: the floor keeps each pixel's log-density finite."""
    m = _small("mlp", "gaussian", np.float32)
    X = np.zeros((64, 12), np.float32)
    X[:, :3] = np.random.default_rng(0).random((64, 3))
    train(m, X, epochs=60, batch_size=64, lr=1e-2)
    out, _ = m.decode(m.transform(X))
    assert np.all(out["logvar"] >= np.log(1e-3) - 1e-5)
    assert np.all(np.isfinite(m.elbo(X)))
    assert m.elbo(X).mean() <= 12 * -0.5 * np.log(2 * np.pi * 1e-3) + 1e-3


# --- a conv minibatch as two halves (VAE._by_rows, Backend.pair) ---------------------------------
def _halves_case(dtype, B=40):
    m = _small("conv", "bernoulli", dtype=dtype)
    return m, _data(m, B, "bernoulli", dtype=dtype)


def _loss_grad(m, x, objective, S):
    m.params.zero_grad()
    loss = m.loss_and_grad(x, np.random.default_rng(5), objective, S)
    return loss, m.params.grad.copy()


@pytest.mark.parametrize("objective,S", [("elbo", 2), ("iwae", 3)])
def test_conv_minibatch_in_halves_matches_finite_differences(objective, S, monkeypatch):
    import lgm.models.vae as vae_module

    # few rows (with 40, central differences cross ReLU kinks: 4e-4 with or without halves)
    monkeypatch.setattr(vae_module, "_HALF_MIN_ROWS", 2)
    m, x = _halves_case(np.float64, B=5)
    assert m._cut(len(x)) == 2  # the case is cut (2 + 3 rows)
    _, g = _loss_grad(m, x, objective, S)
    fd = central_diff(lambda: _loss_grad(m, x, objective, S)[0], m.params.data, h=1e-5)
    assert np.linalg.norm(g - fd) / np.linalg.norm(fd) < FD_TOL


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_conv_minibatch_in_halves_equals_the_whole_minibatch(dtype, rtol):
    """The halves change only the order of the sums over rows (same noise, same rows): loss,
    gradients, decoder log-densities and latent gradients agree to rounding (float32: a few
    ulps of the largest sums)."""
    m, x = _halves_case(dtype)
    t = np.random.default_rng(1).standard_normal((2, len(x), m.latent_dim)).astype(dtype)
    a = np.full((2, len(x)), dtype(-0.5), dtype)
    cut = [_loss_grad(m, x, o, S) for o, S in (("elbo", 1), ("iwae", 3))]
    m.params.zero_grad()
    dec = m.decoder_grad(x, t, a)
    m.params.finish_grad()
    dec_g = m.params.grad.copy()
    m._cut = lambda B: None  # the whole minibatch at once
    whole = [_loss_grad(m, x, o, S) for o, S in (("elbo", 1), ("iwae", 3))]
    for (l1, g1), (l2, g2) in zip(cut, whole):
        assert l1 == pytest.approx(l2, rel=rtol)
        np.testing.assert_allclose(g1, g2, rtol=rtol, atol=rtol * np.abs(g2).max())
    m.params.zero_grad()
    lp, dt = m.decoder_grad(x, t, a)
    m.params.finish_grad()
    np.testing.assert_allclose(dec[0], lp, rtol=rtol)
    np.testing.assert_allclose(dec[1], dt, rtol=rtol, atol=rtol * np.abs(dt).max())
    np.testing.assert_allclose(dec_g, m.params.grad, rtol=rtol, atol=rtol * np.abs(dec_g).max())


def test_conv_halves_side_by_side_or_in_turn_give_the_same_bits(monkeypatch):
    """Run on two cores or one after the other (one free core), a seed gives the same numbers;
    a decoder gradient without parameters leaves the gradient buffer alone; the twin follows
    the parameters when their buffer is replaced."""
    import numba

    from lgm import logsumexp
    from lgm._backends.cpu import policy

    logsumexp(np.zeros((4, 3)), axis=1)  # a parallel kernel has run: Numba's layer is chosen
    if numba.threading_layer() == "workqueue":  # pair never runs side by side there
        pytest.skip("Numba's workqueue layer aborts on two concurrent callers")
    m, x = _halves_case(np.float32, B=64)
    t = np.random.default_rng(1).standard_normal((3, len(x), m.latent_dim)).astype(np.float32)
    a = np.ones((3, len(x)), np.float32)
    runs = []
    for concurrent in (True, False):
        monkeypatch.setattr(policy, "pair_concurrent", lambda: concurrent)
        loss, g = _loss_grad(m, x, "iwae", 2)
        m.params.grad[...] = 7.0
        m.params.zero_grad()
        lp, dt = m.decoder_grad(x, t, a, params=False)
        assert m.params.touched() == [] and (m.params.grad == 7.0).all()
        runs.append((loss, g, lp, dt))
    for u, v in zip(*runs):
        np.testing.assert_array_equal(u, v)
    m.params.zero_grad()
    assert not m.params.is_frozen
    with m.params.frozen():  # frozen by the caller: neither half touches a gradient
        with m.params.frozen(False):  # nested, it never unfreezes
            assert m.params.is_frozen
        m.decoder_grad(x, t, a, params=True)
    assert not m.params.is_frozen
    assert m.params.touched() == [] and m._twin().params.touched() == []
    twin = m._twin()
    m.params.data = m.params.data.copy()  # a new buffer (as after a GPU round trip): the
    m.params._make_views()  # twin follows it
    assert m._twin() is not twin and m._twin().params.data is m.params.data
    loss, g = _loss_grad(m, x, "iwae", 2)
    assert loss == runs[0][0] and np.array_equal(g, runs[0][1])
    with pytest.raises(ValueError, match="share_data"):
        m._twin().params.share_data(np.zeros(3, np.float32))


def test_reparameterize_takes_given_noise():
    from lgm import ops

    rng = np.random.default_rng(0)
    mu, lv = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    t, eps = ops.reparameterize(mu, lv, np.random.default_rng(2), n_samples=4)
    t2, eps2 = ops.reparameterize(mu[1:3], lv[1:3], None, n_samples=4, eps=eps[:, 1:3])
    np.testing.assert_array_equal(t2, t[:, 1:3])
    assert eps2.flags.c_contiguous
    with pytest.raises(ValueError, match="eps of shape"):
        ops.reparameterize(mu, lv, None, n_samples=4, eps=eps[:, :2])
    with pytest.raises(ValueError, match="eps of shape"):
        ops.reparameterize(mu, lv, None, n_samples=4, eps=eps.astype(np.float32))
