"""GPU backend: every kernel against the CPU kernel and the reference. Skips without a GPU.

Tolerances: the CUDA kernels use the device's expf/exp (<= 2 ulp) and a different summation
order (warp tree) than the CPU loop, so results agree to the sum tolerance of conftest.sum_tol.
"""

import numpy as np
import pytest

import lgm
from lgm import reference as ref

cupy = pytest.importorskip("cupy", reason="cupy is not installed: GPU tests skipped")
try:
    _NDEV = cupy.cuda.runtime.getDeviceCount()
except Exception as exc:  # noqa: BLE001 - any CUDA error means: no usable GPU
    _NDEV = 0
    _WHY = str(exc)
if _NDEV == 0:
    pytest.skip("no CUDA GPU visible: GPU tests skipped", allow_module_level=True)

pytestmark = pytest.mark.gpu


def _rtol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-12


def _close(got_gpu, want, dtype, scale=None):
    got = cupy.asnumpy(got_gpu)
    assert got.dtype == dtype
    want = np.asarray(want, np.float64)
    scale = np.abs(want) + 1 if scale is None else scale
    assert np.all(np.abs(got - want) <= _rtol(dtype) * scale), np.abs(got - want).max()


def test_every_kernel_name_compiles_with_nvrtc():
    from lgm._backends.gpu import launchers as _gpu
    from lgm._backends.gpu import sources

    for src, names in sources.kernel_names().items():
        mod = cupy.RawModule(code=sources.text(src), options=("-std=c++17", f"-I{sources.kernel_dir()}"))
        for n in names:
            mod.get_function(n)  # compiles (NVRTC) and loads; raises if the name is missing
    assert "NVRTC" in _gpu.backend_info() or "fatbin" in _gpu.backend_info()


@pytest.mark.parametrize("R,D", [(5, 1), (37, 785), (20001, 784), (3000, 37)])
def test_logpdf_and_grad_vs_cpu(dtype, R, D):
    """20001 rows exceed one grid (132 SMs x 8 blocks x 8 warps) on the lent GPUs; odd D uses
    the scalar path, D = 784 the vector path."""
    rng = np.random.default_rng(R + D)
    x, mu = rng.standard_normal((2, R, D)).astype(dtype)
    lv = rng.uniform(-3, 3, (R, D)).astype(dtype)
    g = [cupy.asarray(a) for a in (x, mu, lv)]
    cpu = lgm.diag_gaussian_logpdf(x, mu, lv)
    want = ref.diag_gaussian_logpdf(*(a.astype(np.float64) for a in (x, mu, lv)))
    scale = (np.abs((x - mu).astype(np.float64) ** 2 * np.exp(-lv.astype(np.float64))) + np.abs(lv) + 2).sum(-1)
    _close(lgm.diag_gaussian_logpdf(*g), want, dtype, scale)
    assert np.all(np.abs(cpu - want) <= _rtol(dtype) * scale)
    w = rng.uniform(0, 1, R).astype(dtype)
    res = lgm.diag_gaussian_logpdf_grad(*g, weights=cupy.asarray(w))
    rc = lgm.diag_gaussian_logpdf_grad(x, mu, lv, weights=w)
    for a, b in zip(res, rc):
        np.testing.assert_allclose(cupy.asnumpy(a), b, rtol=_rtol(dtype) * 10, atol=_rtol(dtype) * np.abs(b).max())


def test_unaligned_and_broadcast_operands(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((65, 784)).astype(dtype)
    mu = rng.standard_normal(784).astype(dtype)
    lv = rng.standard_normal((1, 784)).astype(dtype)
    gx = cupy.asarray(x)[1:]  # base pointer offset by one row: still aligned for D = 784 * 4 B
    gx_odd = cupy.asarray(np.concatenate([x.ravel(), [0]]).astype(dtype))[1:].reshape(65, 784)  # misaligned
    want = ref.diag_gaussian_logpdf(x[1:].astype(np.float64), mu.astype(np.float64), lv.astype(np.float64))
    _close(lgm.diag_gaussian_logpdf(gx, cupy.asarray(mu), cupy.asarray(lv)), want, dtype, np.abs(want) * 10)
    want2 = ref.diag_gaussian_logpdf(np.concatenate([x.ravel(), [0]])[1:].reshape(65, 784).astype(np.float64),
                                     mu.astype(np.float64), lv.astype(np.float64))
    _close(lgm.diag_gaussian_logpdf(gx_odd, cupy.asarray(mu), cupy.asarray(lv)), want2, dtype, np.abs(want2) * 10)


def test_bernoulli_kl_stdnormal_reparam(dtype):
    rng = np.random.default_rng(2)
    x = (rng.random((300, 784)) < 0.5).astype(dtype)
    lg = rng.normal(0, 30, (300, 784)).astype(dtype)
    want = ref.bernoulli_logpmf(x.astype(np.float64), lg.astype(np.float64))
    _close(lgm.bernoulli_logpmf(cupy.asarray(x), cupy.asarray(lg)), want, dtype, np.abs(lg).sum(-1) + 1)
    mu = rng.standard_normal((300, 16)).astype(dtype)
    lv = rng.uniform(-3, 3, (300, 16)).astype(dtype)
    _close(lgm.kl_diag_std_normal(cupy.asarray(mu), cupy.asarray(lv)),
           ref.kl_diag_std_normal(mu.astype(np.float64), lv.astype(np.float64)), dtype, 100)
    kl, dmu, dlv = lgm.kl_diag_std_normal_grad(cupy.asarray(mu), cupy.asarray(lv))
    # (e^lv - 1)/2 cancels near lv = 0: absolute tolerance of a few eps of e^lv
    np.testing.assert_allclose(cupy.asnumpy(dlv), 0.5 * (np.exp(lv.astype(np.float64)) - 1), rtol=_rtol(dtype) * 10,
                               atol=4 * np.finfo(dtype).eps * np.exp(np.abs(lv.astype(np.float64))).max())
    _close(lgm.std_normal_logpdf(cupy.asarray(mu)), ref.std_normal_logpdf(mu.astype(np.float64)), dtype, 100)
    t, eps = lgm.reparameterize(cupy.asarray(mu), cupy.asarray(lv), np.random.default_rng(3), n_samples=4)
    tc, epsc = lgm.reparameterize(mu, lv, np.random.default_rng(3), n_samples=4)
    np.testing.assert_array_equal(cupy.asnumpy(eps), epsc)  # same host draws: same samples
    np.testing.assert_allclose(cupy.asnumpy(t), tc, rtol=_rtol(dtype), atol=_rtol(dtype))
    tg, _ = lgm.reparameterize(cupy.asarray(mu), cupy.asarray(lv), 5)  # cupy's own generator
    assert isinstance(tg, cupy.ndarray) and tg.dtype == dtype


@pytest.mark.parametrize("axis", [0, 1, -1, None, (0, 1)])
@pytest.mark.parametrize("ncols", [300, 301, 5])
def test_logsumexp_rules(dtype, axis, ncols):
    rng = np.random.default_rng(4)
    a = (rng.standard_normal((70, ncols)) * 10).astype(dtype)  # 300: vector path on rows, 301: scalar
    a[3, :] = -np.inf
    a[:, min(5, ncols - 1)] = -np.inf
    a[10, min(7, ncols - 1)] = np.inf
    a[20, min(9, ncols - 1)] = np.nan
    got = cupy.asnumpy(lgm.logsumexp(cupy.asarray(a), axis=axis))
    cpu = lgm.logsumexp(a, axis=axis)
    np.testing.assert_allclose(got, cpu, rtol=_rtol(dtype) * 10, atol=1e-4 if dtype == np.float32 else 1e-10)
    assert np.array_equal(np.isnan(got), np.isnan(cpu)) and np.array_equal(np.isinf(got), np.isinf(cpu))


def _importance_problem(rng, S, B, D, d, dtype):
    """x, mu_x, logvar_x, t, mu_t, logvar_t of the benchmark's kind (host arrays)."""
    x = rng.random((B, D)).astype(dtype)
    mux = rng.random((S, B, D)).astype(dtype)
    lvx = rng.uniform(-3, 0, (S, B, D)).astype(dtype)
    t = rng.standard_normal((S, B, d)).astype(dtype)
    mt = rng.standard_normal((B, d)).astype(dtype)
    lt = rng.uniform(-1, 1, (B, d)).astype(dtype)
    return x, mux, lvx, t, mt, lt


def test_importance_weights_and_iwae(dtype):
    S, B, D, d = 64, 300, 784, 16
    x, mux, lvx, t, mt, lt = _importance_problem(np.random.default_rng(5), S, B, D, d, dtype)
    g = [cupy.asarray(v) for v in (x, t, mt, lt, mux, lvx)]
    lw = lgm.importance_log_weights(g[0], g[1], g[2], g[3], mu_x=g[4], logvar_x=g[5])
    cpu = lgm.importance_log_weights(x, t, mt, lt, mu_x=mux, logvar_x=lvx)
    np.testing.assert_allclose(cupy.asnumpy(lw), cpu, rtol=_rtol(dtype) * 10, atol=1e-2 if dtype == np.float32 else 1e-8)
    np.testing.assert_allclose(cupy.asnumpy(lgm.iwae(lw)), lgm.iwae(cpu), rtol=_rtol(dtype) * 10)
    lb = lgm.importance_log_weights(g[0], g[1], g[2], g[3], logits=g[4])
    np.testing.assert_allclose(cupy.asnumpy(lb), lgm.importance_log_weights(x, t, mt, lt, logits=mux),
                               rtol=_rtol(dtype) * 10, atol=1e-2 if dtype == np.float32 else 1e-8)
    w = lgm.importance_weights(lw)
    np.testing.assert_allclose(cupy.asnumpy(w).sum(0), 1, rtol=1e-4)


def test_mixed_numpy_cupy_refused():
    with pytest.raises(TypeError, match="mix of numpy and cupy"):
        lgm.diag_gaussian_logpdf(np.zeros((2, 3)), cupy.zeros((2, 3)), np.zeros((2, 3)))


def test_logsumexp_columns_beyond_one_grid(dtype):
    """(S, B) with many columns: more 32-column tiles than one grid holds (grid-stride loop)."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((64, 70001)).astype(dtype) * 3
    got = cupy.asnumpy(lgm.logsumexp(cupy.asarray(a), axis=0))
    np.testing.assert_allclose(got, lgm.logsumexp(a, axis=0), rtol=_rtol(dtype) * 10)


def test_bernoulli_grad_vs_cpu(dtype):
    rng = np.random.default_rng(3)
    x = (rng.random((2, 300, 785)) < 0.5).astype(dtype)
    lg = rng.normal(0, 5, (300, 785)).astype(dtype)
    w = rng.random((2, 300)).astype(dtype)
    v, dl = lgm.bernoulli_logpmf_grad(x, lg, w)
    gv, gdl = lgm.bernoulli_logpmf_grad(cupy.asarray(x), cupy.asarray(lg), cupy.asarray(w))
    _close(gv, v, dtype, np.abs(lg).sum(-1) + 1)
    _close(gdl, dl, dtype, 4)


def test_layers_and_vae_on_cupy_match_numpy():
    """The same layer code on cupy arrays (cuBLAS GEMMs, slice-based im2col, array-module Adam)
    gives the numpy results; float64 so that the comparison is tight."""
    from lgm.vae import conv_vae, mlp_vae, train

    rng = np.random.default_rng(0)
    for make in (lambda: mlp_vae(D=64, hidden=32, latent_dim=4, likelihood="gaussian", dtype=np.float64),
                 lambda: conv_vae((8, 8, 1), latent_dim=3, dtype=np.float64, channels=(4, 8))):
        cpu, gpu = make(), make().to("gpu")
        x = (rng.random((16, cpu.D)) > 0.5).astype(np.float64)
        xg = cupy.asarray(x)
        for m, xx in ((cpu, x), (gpu, xg)):
            m.params.zero_grad()
        lc = cpu.loss_and_grad(x, np.random.default_rng(1), "iwae", 3)
        lgp = gpu.loss_and_grad(xg, np.random.default_rng(1), "iwae", 3)
        np.testing.assert_allclose(float(lgp), lc, rtol=1e-10)
        np.testing.assert_allclose(cupy.asnumpy(gpu.params.grad), cpu.params.grad, rtol=1e-8, atol=1e-11)
        hc = train(cpu, x, epochs=2, batch_size=8, seed=2)
        hg = train(gpu, xg, epochs=2, batch_size=8, seed=2)
        np.testing.assert_allclose(hg, hc, rtol=1e-9)
        np.testing.assert_allclose(cupy.asnumpy(gpu.log_likelihood(xg, 50)), cpu.log_likelihood(x, 50),
                                   rtol=1e-9)


def test_vae_float32_trains_on_gpu():
    from lgm.vae import mlp_vae, train

    x = cupy.asarray((np.random.default_rng(0).random((256, 784)) > 0.7).astype(np.float32))
    m = mlp_vae().to("gpu")
    hist = train(m, x, epochs=3, batch_size=128)
    assert hist[-1] < hist[0] and np.isfinite(hist).all()
    ll = m.log_likelihood(x[:10], n_samples=100)
    assert ll.dtype == np.float32 and bool(cupy.isfinite(ll).all())
    with pytest.raises(TypeError, match="numpy array but the model"):
        m.log_likelihood(cupy.asnumpy(x[:10]))


@pytest.mark.parametrize("k,s,p,H,C", [(4, 2, 1, 28, 1), (4, 2, 1, 14, 32), (3, 1, 1, 9, 5), (3, 2, 0, 7, 3)])
def test_im2col_col2im_vs_cpu(dtype, k, s, p, H, C):
    from lgm import nn, ops

    rng = np.random.default_rng(k + s + H)
    x = rng.standard_normal((3, H, H + 1, C)).astype(dtype)
    cols = ops.im2col(x, k, s, p)
    g = ops.im2col(cupy.asarray(x), k, s, p)
    np.testing.assert_array_equal(cupy.asnumpy(g), cols)
    np.testing.assert_array_equal(cupy.asnumpy(ref.im2col(cupy.asarray(x), k, s, p, *cols.shape[1:3])), cols)
    back = ops.col2im(cols, H, H + 1, s, p)
    gb = ops.col2im(g, H, H + 1, s, p)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(cupy.asnumpy(gb), back, rtol=tol, atol=tol)


# --- linear-Gaussian models on cupy (PPCA, factor analysis) --------------------------------------
@pytest.mark.parametrize("N,D", [(20001, 784), (300, 37), (5, 1)])
def test_lowrank_row_stats_kernel_vs_cpu(dtype, N, D):
    """The CUDA row pass: float64 sums of (x - mean)^2 / psi and the NaN / inf flags per row;
    20001 rows exceed one grid."""
    from lgm._backends.gpu import launchers as _gpu
    from lgm._backends.cpu import lowrank as k

    rng = np.random.default_rng(N)
    x = rng.standard_normal((N, D)).astype(dtype)
    x[1, 0] = np.nan
    x[2, -1] = np.inf
    x[min(3, N - 1), 0] = -np.inf
    x[4 % N, D // 2] = np.nan
    mean = rng.standard_normal(D).astype(dtype)
    inv_psi = rng.uniform(0.5, 2.0, D)
    q_cpu, f_cpu = np.empty(N), np.zeros(N, np.uint8)
    k.row_stats(q_cpu, f_cpu, x, mean, inv_psi)
    q_gpu, f_gpu = cupy.empty(N), cupy.zeros(N, np.uint8)
    _gpu.row_stats(q_gpu, f_gpu, cupy.asarray(x), cupy.asarray(mean), cupy.asarray(inv_psi))
    np.testing.assert_array_equal(cupy.asnumpy(f_gpu), f_cpu)
    ok = f_cpu == 0
    np.testing.assert_allclose(cupy.asnumpy(q_gpu)[ok], q_cpu[ok], rtol=1e-12)
    assert np.isnan(cupy.asnumpy(q_gpu)[f_cpu == 1]).all()


def test_lowrank_batched_twins_on_cupy_vs_numba():
    from lgm._backends.cpu import lowrank as k

    rng = np.random.default_rng(5)
    N, D, q = 3000, 50, 6
    X = rng.standard_normal((N, D))
    X[rng.random((N, D)) < 0.3] = np.nan
    X[0] = np.nan
    W, mean = rng.standard_normal((D, q)), rng.standard_normal(D)
    psi = rng.uniform(0.2, 2, D)
    args = (X, mean, W, 1 / psi, np.log(psi))
    gargs = tuple(cupy.asarray(a) for a in args)
    ez, sig, ll = np.empty((N, q)), np.empty((N, q, q)), np.empty(N)
    k.missing_estep(ez, sig, ll, *args)
    low = lgm.ops.backend_of(gargs[0]).lowrank
    gez, gsig, gll = cupy.empty((N, q)), cupy.empty((N, q, q)), cupy.empty(N)
    low.missing_estep(gez, gsig, gll, *gargs)
    for g, c in ((gez, ez), (gsig, sig), (gll, ll)):
        np.testing.assert_allclose(cupy.asnumpy(g), c, rtol=1e-9, atol=1e-12)
    out = cupy.empty(N)
    low.missing_rows_logpdf(out, *gargs)
    np.testing.assert_allclose(cupy.asnumpy(out), ll, rtol=1e-9)
    from lgm._backends import batched as bat

    sums = [np.zeros((D, q + 1, q + 1)), np.zeros((D, q + 1)), np.zeros(D), np.zeros(D)]
    bat.missing_mstep_stats(np, *sums, X, ez, sig)
    gsums = [cupy.zeros(s.shape) for s in sums]
    bat.missing_mstep_stats(cupy, *gsums, gargs[0], gez, gsig)
    for g, c in zip(gsums, sums):
        np.testing.assert_allclose(cupy.asnumpy(g), c, rtol=1e-9, atol=1e-9)


def test_lowrank_logpdf_on_cupy(dtype):
    rng = np.random.default_rng(6)
    N, D, q = 20001, 101, 5
    X = rng.standard_normal((N, D)).astype(dtype)
    X[rng.random(N) < 0.1, 3] = np.nan
    W = rng.standard_normal((D, q)).astype(dtype)
    mean = rng.standard_normal(D).astype(dtype)
    psi = rng.uniform(0.5, 1.5, D).astype(dtype)
    want = lgm.lowrank_gaussian_logpdf(X, mean, W, psi)
    got = lgm.lowrank_gaussian_logpdf(*(cupy.asarray(a) for a in (X, mean, W, psi)))
    assert isinstance(got, cupy.ndarray) and got.dtype == dtype
    np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=2e-5 if dtype == np.float32 else 1e-10)
    bad = cupy.asarray(X)
    bad[9, 9] = np.inf
    with pytest.raises(ValueError, match="without inf"):
        lgm.lowrank_gaussian_logpdf(bad, *(cupy.asarray(a) for a in (mean, W, psi)))


def test_ppca_and_fa_fit_and_score_on_cupy(dtype):
    """Closed form, EM, and missing-value EM on cupy arrays give the numpy results (the same
    float64 algebra on the host; the products over rows in cuBLAS / the CUDA row pass). cuBLAS
    and OpenBLAS round differently, so EM runs are compared where their paths cannot branch
    apart: after convergence (scores), or without SQUAREM's accept/reject step (histories)."""
    import warnings

    rng = np.random.default_rng(0)
    N, D, q = 4000, 64, 5
    W = rng.standard_normal((D, q)) * 2
    X = (rng.standard_normal((N, q)) @ W.T + rng.standard_normal(D)
         + rng.standard_normal((N, D)) * rng.uniform(0.3, 1.0, D)).astype(dtype)
    Xg = cupy.asarray(X)
    tol = 1e-4 if dtype == np.float32 else 1e-8
    cf, cf_dev = lgm.PPCA(q).fit(X), lgm.PPCA(q).fit(Xg)
    np.testing.assert_allclose(cf_dev.W_, cf.W_, rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(cupy.asnumpy(cf_dev.transform(Xg)), cf.transform(X), rtol=tol * 100, atol=tol * 100)
    for make in (lambda: lgm.PPCA(q, method="em", tol=1e-8, random_state=0),
                 lambda: lgm.FactorAnalysis(q, tol=1e-8, random_state=0)):
        host, dev = make().fit(X), make().fit(Xg)
        assert abs(dev.score(Xg) - host.score(X)) <= 1e-5 * abs(host.score(X))
        s = dev.score_samples(Xg)
        assert isinstance(s, cupy.ndarray) and s.dtype == dtype
    Xm = X.copy()
    Xm[:600, :10] = np.nan  # a shared pattern (the grouped path) ...
    Xm[rng.random(Xm.shape) < 0.05] = np.nan  # ... and scattered NaN (the per-row twins)
    for Model, kw in ((lgm.PPCA, {"method": "em"}), (lgm.FactorAnalysis, {})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lgm.ConvergenceWarning)
            host = Model(q, max_iter=30, tol=0, accelerate=False, random_state=0, **kw).fit(Xm)
            dev = Model(q, max_iter=30, tol=0, accelerate=False, random_state=0, **kw).fit(cupy.asarray(Xm))
        np.testing.assert_allclose(dev.loglike_, host.loglike_, rtol=tol)
        np.testing.assert_allclose(cupy.asnumpy(dev.score_samples(cupy.asarray(Xm))),
                                   host.score_samples(Xm), rtol=tol * 10)
        np.testing.assert_allclose(cupy.asnumpy(dev.impute(cupy.asarray(Xm))), host.impute(Xm),
                                   rtol=tol * 100, atol=tol * 100)


# --- the fused importance-bound kernel (x-stationary, online logsumexp over s) -------------------
@pytest.mark.parametrize("gaussian", [True, False], ids=["gaussian", "bernoulli"])
@pytest.mark.parametrize("S,B,D,K", [(64, 1024, 784, 16), (3, 2000, 784, 5), (13, 37, 251, 3), (9, 5, 500, 2)])
def test_fused_importance_bounds_vs_composition(dtype, gaussian, S, B, D, K):
    """Sizes: S = 64 (the benchmark's), S < IW_WARPS (idle warps), S not a multiple of it;
    B = 2000 beyond one grid of blocks; D = 784 with float4 loads (float64: too long for the
    registers -> the composition), odd D = 251 scalar loads, D = 500 double2. Plus a NaN sample and
    a column whose every sample has log w = -inf (IWAE -inf, no NaN)."""
    from lgm._backends.gpu import launch as _launch, launchers as _gpu

    x, mux, lvx, t, mt, lt = _importance_problem(np.random.default_rng(S * B + D), S, B, D, K, dtype)
    if gaussian:
        mux[S - 1, B // 2, 0] = np.nan
        mux[:, B - 1, 1] = np.inf  # every sample of the last column: log w = -inf
        kw = dict(mu_x=mux, logvar_x=lvx)
    else:
        kw = dict(logits=(mux * 8 - 4).astype(dtype))
        kw["logits"][S - 1, B // 2, 0] = np.nan
    g = {n: cupy.asarray(v) for n, v in kw.items()}
    xg, tg, mtg, ltg = (cupy.asarray(a) for a in (x, t, mt, lt))
    vw = _launch.vector_width(np.dtype(dtype).itemsize, D, [0])
    assert bool(_gpu.importance_bounds_fits(D, dtype, (xg, *g.values()))) == _launch.bounds_fits(D, vw)
    lw, el, iw = lgm.importance_bounds(xg, tg, mtg, ltg, **g)
    assert lw.shape == (S, B) and el.shape == iw.shape == (B,) and lw.dtype == dtype
    cpu = lgm.importance_bounds(x, t, mt, lt, **kw)
    comp_lw = lgm.importance_log_weights(xg, tg, mtg, ltg, **g)
    rtol, atol = (2e-5, 1e-3) if dtype == np.float32 else (1e-12, 1e-9)
    for got, want in zip((lw, el, iw), cpu):
        np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=rtol, atol=atol)
    np.testing.assert_allclose(cupy.asnumpy(lw), cupy.asnumpy(comp_lw), rtol=rtol, atol=atol)
    assert np.isnan(cupy.asnumpy(iw)[B // 2]) and np.isnan(cupy.asnumpy(el)[B // 2])
    if gaussian:
        assert cupy.asnumpy(iw)[B - 1] == -np.inf and cupy.asnumpy(el)[B - 1] == -np.inf
