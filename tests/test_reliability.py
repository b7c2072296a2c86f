"""Issue 16: nothing lost, nothing silently wrong. One test per defect found by the reliability
pass (each failed before its fix); kernel accuracy against a long-double / mpmath reference."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lgm
from lgm.io import load_npz, save_npz_atomic, write_atomic

ROOT = Path(__file__).resolve().parent.parent


from conftest import one_line_error as _one_line_error  # noqa: E402
from conftest import run_lgm as _lgm  # noqa: E402


# --- 1. divergent training ---------------------------------------------------------------------
def test_divergent_training_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    from lgm.vae import mlp_vae, train

    X = (np.random.default_rng(0).random((64, 20)) > 0.5).astype(np.float32)
    m = mlp_vae(D=20, hidden=8, latent_dim=2)
    ck = tmp_path / "ck.npz"
    train(m, X, epochs=2, batch_size=32, checkpoint=ck)
    good = load_npz(ck)
    with pytest.raises(FloatingPointError, match=r"train: .*(NaN|inf).*lr") as e:
        train(m, X, epochs=6, batch_size=32, lr=1e6, checkpoint=ck, resume=True)
    assert str(ck) in str(e.value)
    from lgm.io import unpack_json

    after = load_npz(ck)
    meta = unpack_json(after["meta"])
    assert meta["epoch"] >= 2 and len(meta["history"]) == meta["epoch"]
    assert np.all(np.isfinite(meta["history"]))  # the diverged epoch was never written
    for k, v in after.items():
        if k.startswith("param/"):
            assert np.all(np.isfinite(v)), k
            assert v.shape == good[k].shape
    m2 = mlp_vae(D=20, hidden=8, latent_dim=2)
    with pytest.raises(FloatingPointError):
        train(m2, X, epochs=2, batch_size=32, lr=1e6)


# --- 2. concurrent writers ---------------------------------------------------------------------
def test_concurrent_saves_of_one_path_never_tear_and_leave_no_temporaries(tmp_path):
    path = tmp_path / "m.npz"
    errors, reads = [], []
    save_npz_atomic(path, a=np.zeros(1000))

    def writer(v):
        try:
            for _ in range(25):
                save_npz_atomic(path, a=np.full(1000, float(v)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    def reader():
        for _ in range(100):
            try:
                a = load_npz(path)["a"]
                reads.append(bool(np.all(a == a[0])))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(v,)) for v in range(8)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and all(reads)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "m.npz"
    # a writer killed mid-write leaves its temporary, named with its (now dead) process id
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".m.npz.{dead}.abc123.tmp"
    stale.write_bytes(b"PK\x03\x04 torn")
    other = tmp_path / f".other.npz.{dead}.abc123.tmp"
    other.write_bytes(b"not ours")
    save_npz_atomic(path, a=np.ones(3))
    assert not stale.exists() and other.exists()
    np.testing.assert_array_equal(load_npz(path)["a"], np.ones(3))


def test_write_atomic_cleans_up_when_writing_fails(tmp_path):
    def boom(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "x.bin", boom)
    assert list(tmp_path.iterdir()) == []


# --- 3. demo's folder ------------------------------------------------------------------------------
def test_fresh_dir_never_shares_a_folder(tmp_path):
    from lgm.front.demo import fresh_dir

    base = tmp_path / "lgm-report"
    base.mkdir()  # an existing empty folder (another run just made it) is not reused
    got = [fresh_dir(base, say=lambda s: None) for _ in range(3)]
    assert len({str(p) for p in got}) == 3 and base not in got
    results = []
    ts = [threading.Thread(target=lambda: results.append(fresh_dir(tmp_path / "r", say=lambda s: None)))
          for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len({str(p) for p in results}) == 6


# --- 4. writability before the work ----------------------------------------------------------------
def test_unwritable_checkpoint_is_refused_before_training(tmp_path):
    """A checkpoint whose folder cannot be made (a file stands in its way; chmod would not stop
    root, who runs CI) is refused before the first step, not after an epoch."""
    from lgm.vae import mlp_vae, train

    X = (np.random.default_rng(0).random((64, 20)) > 0.5).astype(np.float32)
    (tmp_path / "afile").write_text("")
    calls = []
    with pytest.raises(OSError, match="checkpoint"):
        train(mlp_vae(D=20, hidden=8, latent_dim=2), X, epochs=1,
              checkpoint=tmp_path / "afile" / "ck.npz", callback=lambda *a: calls.append(a))
    assert calls == []
    rc, _, err = _lgm("fit", tmp_path / "d.npy", "--out", tmp_path / "afile" / "m.npz") \
        if np.save(tmp_path / "d.npy", X.astype(np.float64)) is None else (0, "", "")
    assert "--out" in _one_line_error(rc, err)


def test_checkpoint_path_that_is_a_directory_is_refused_before_training(tmp_path):
    from lgm.vae import mlp_vae, train

    X = (np.random.default_rng(0).random((64, 20)) > 0.5).astype(np.float32)
    calls = []
    with pytest.raises((OSError, ValueError), match="checkpoint"):
        train(mlp_vae(D=20, hidden=8, latent_dim=2), X, epochs=1, checkpoint=tmp_path,
              callback=lambda *a: calls.append(a))
    assert calls == []


# --- 5-8. kernels' last ulps -----------------------------------------------------------------------
def test_gaussian_logpdf_with_x_equal_mu_and_a_tiny_variance(dtype):
    lv = -709.5 if dtype == np.float64 else -88.5
    x = np.array([0.5], dtype)
    got = lgm.diag_gaussian_logpdf(x, x, np.array([lv], dtype))
    want = -0.5 * (lv + np.log(2 * np.pi))
    assert np.isfinite(got) and abs(float(got) - want) <= 4 * np.finfo(dtype).eps * abs(want)
    g = lgm.diag_gaussian_logpdf_grad(x, x, np.array([lv], dtype))
    assert np.all(np.isfinite(g.dx)) and np.all(g.dmu == 0) and np.all(g.dlogvar == -0.5)
    # a finite true value that the exp's early overflow used to turn into -inf
    d = np.float64(1e-160) if dtype == np.float64 else np.float32(1e-20)
    lv2 = -709.0 if dtype == np.float64 else -88.0
    xs = np.array([d], dtype)
    got2 = float(lgm.diag_gaussian_logpdf(xs, np.zeros(1, dtype), np.array([lv2], dtype)))
    want2 = -0.5 * (float(d) ** 2 * np.exp(-lv2) + lv2 + np.log(2 * np.pi))
    assert np.isfinite(got2) and abs(got2 - want2) <= 1e-5 * abs(want2)


@pytest.mark.parametrize("a,dtype", [([0.0, -30.0], np.float64), ([0.0, -12.0], np.float32),
                                     ([5.0, -40.0, -41.0], np.float64), ([-3.0, -20.0], np.float32)])
def test_logsumexp_when_the_max_dominates(a, dtype):
    import mpmath

    mpmath.mp.dps = 50
    x = np.array(a, dtype)
    want = float(mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in x)))
    for got in (lgm.logsumexp(x), lgm.logsumexp(x[:, None], axis=0)[0],
                lgm.logsumexp(np.stack([x, x], 1), axis=0)[0]):
        assert abs(float(got) - want) <= 4 * np.finfo(dtype).eps * max(abs(want), 1e-300), (got, want)
    # the fused IWAE reduction: iwae = logsumexp over s - log S
    lw = x[:, None]
    iw = float(lgm.iwae(lw)[0])
    want_iw = want - np.log(len(x))
    assert abs(iw - want_iw) <= 8 * np.finfo(dtype).eps * max(abs(want_iw), np.log(len(x)))


def test_logsumexp_near_zero_result_is_accurate():
    """log(1 + e^-30) = 9.357622968840175e-14: the relative error of the old kernel was 1e-3."""
    got = float(lgm.logsumexp(np.array([0.0, -30.0])))
    assert abs(got - np.log1p(np.exp(-30.0))) <= 4e-16 * abs(got)


def test_importance_weights_with_infinite_log_weights():
    lw = np.array([[np.inf, 0.0, np.inf], [0.0, 0.0, -np.inf]])
    w = lgm.importance_weights(lw)
    np.testing.assert_array_equal(w, [[1.0, 0.5, 1.0], [0.0, 0.5, 0.0]])
    lw3 = np.array([[np.inf, 1.0], [np.inf, 2.0], [0.0, np.nan]])
    w3 = lgm.importance_weights(lw3)
    np.testing.assert_array_equal(w3[:, 0], [0.5, 0.5, 0.0])
    assert np.all(np.isnan(w3[:, 1]))  # a NaN log-weight: that slice's weights are undefined


@pytest.mark.parametrize("lv", [1e-4, -1e-4, 1e-8, 0.3, -0.3, 0.7, 2.0, -5.0])
def test_kl_is_accurate_near_zero(dtype, lv):
    import mpmath

    mpmath.mp.dps = 50
    mu = np.zeros((1, 3), dtype)
    logvar = np.full((1, 3), lv, dtype)
    lvf = mpmath.mpf(float(dtype(lv)))
    want = float(3 * (mpmath.exp(lvf) - 1 - lvf) / 2)
    got = float(lgm.kl_diag_std_normal(mu, logvar)[0])
    assert abs(got - want) <= 8 * np.finfo(dtype).eps * abs(want), (got, want)
    _, _, dlv = lgm.kl_diag_std_normal_grad(mu, logvar)
    want_g = float((mpmath.exp(lvf) - 1) / 2)
    assert np.all(np.abs(dlv - want_g) <= 8 * np.finfo(dtype).eps * abs(want_g))


def test_bernoulli_logpmf_far_in_the_tails(dtype):
    import mpmath

    mpmath.mp.dps = 50
    for x, lg in ((1.0, 40.0), (0.0, -40.0), (1.0, 15.0), (0.0, -15.0), (1.0, -3.0), (0.3, 2.0)):
        got = float(lgm.bernoulli_logpmf(np.array([x], dtype), np.array([lg], dtype)))
        L = mpmath.mpf(float(dtype(lg)))
        X = mpmath.mpf(float(dtype(x)))
        want = float(X * L - mpmath.log1p(mpmath.exp(L)))
        assert abs(got - want) <= 8 * np.finfo(dtype).eps * abs(want), (x, lg, got, want)
    for x, lg in ((1.0, np.inf), (0.0, -np.inf)):
        assert float(lgm.bernoulli_logpmf(np.array([x], dtype), np.array([lg], dtype))) == 0.0
        v, dl = lgm.bernoulli_logpmf_grad(np.array([x], dtype), np.array([lg], dtype))
        assert float(v) == 0.0 and float(dl[0]) == 0.0
    assert float(lgm.bernoulli_logpmf(np.array([0.0], dtype), np.array([np.inf], dtype))) == -np.inf


# --- 9-11. validation at the public entry --------------------------------------------------------
def test_vae_validates_its_inputs():
    from lgm.vae import mlp_vae, train

    m = mlp_vae(D=6, hidden=4, latent_dim=2)
    X = np.random.default_rng(0).random((10, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train(m, X * 3, epochs=1)
    for kw, what in ((dict(batch_size=-1), "batch_size"), (dict(batch_size=0), "batch_size"),
                     (dict(lr=0.0), "lr"), (dict(lr=float("nan")), "lr"), (dict(lr=-1.0), "lr"),
                     (dict(epochs=-1), "epochs"), (dict(n_samples=0), "n_samples")):
        with pytest.raises(ValueError, match=what):
            train(m, X, **{"epochs": 1, **kw})
    for kw, what in ((dict(hidden=0), "hidden"), (dict(D=0), "D"), (dict(latent_dim=0), "latent_dim")):
        with pytest.raises(ValueError, match=what):
            mlp_vae(**{"D": 6, "hidden": 4, "latent_dim": 2, **kw})
    Xn = X.copy()
    Xn[0] = np.nan
    for fn in (m.transform, m.reconstruct, m.elbo):
        with pytest.raises(ValueError, match="NaN"):
            fn(Xn)
    # a user's own loop: an empty minibatch (a slice past the end) or S = 0 was a ZeroDivisionError
    rng = np.random.default_rng(0)
    for x, kw, what in ((X[10:], {}, r"shape \(B >= 1, 6\), got \(0, 6\)"), (X[:, :5], {}, "shape"),
                        (X, dict(n_samples=0), "n_samples"), (X, dict(n_samples=1.5), "n_samples")):
        with pytest.raises(ValueError, match=what):
            m.loss_and_grad(x, rng, **kw)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_masked_big_endian_and_matrix_inputs():
    x = np.ma.masked_array(np.zeros((2, 3)), mask=[[1, 0, 0], [0, 0, 0]])
    with pytest.raises(TypeError, match="masked"):
        lgm.diag_gaussian_logpdf(x, 0.0, 0.0)
    with pytest.raises(TypeError, match="masked"):
        lgm.PPCA(1).fit(np.ma.masked_array(np.random.default_rng(0).random((5, 3))))
    be = np.arange(6, dtype=">f8").reshape(2, 3)
    np.testing.assert_allclose(lgm.diag_gaussian_logpdf(be, 0.0, 0.0),
                               lgm.diag_gaussian_logpdf(be.astype("<f8"), 0.0, 0.0))
    assert lgm.diag_gaussian_logpdf(be, 0.0, 0.0).dtype == np.float64
    mat = np.matrix(np.zeros((2, 3)))
    got = lgm.diag_gaussian_logpdf(mat, 0.0, 0.0)
    assert type(got) is np.ndarray and got.shape == (2,)


# --- 12. float32 scoring ---------------------------------------------------------------------------
def test_float32_scores_stay_close_to_float64_on_offset_data():
    rng = np.random.default_rng(0)
    N, D, q = 2000, 25, 2
    W = rng.standard_normal((D, q))
    X = rng.standard_normal((N, q)) @ W.T + 1000.0 + 0.1 * rng.standard_normal((N, D))
    X32 = X.astype(np.float32)
    X64 = X32.astype(np.float64)
    for est in (lgm.FactorAnalysis(q, random_state=0), lgm.PPCA(q)):
        est.fit(X64)
        diff = np.abs(est.score_samples(X32).astype(np.float64) - est.score_samples(X64))
        assert diff.max() < 1e-2, (type(est).__name__, diff.max())


# --- 13. loader errors -----------------------------------------------------------------------------
def test_broken_model_files_give_one_loader_error(tmp_path):
    from lgm.vae import load_model, mlp_vae

    m = mlp_vae(D=6, hidden=4, latent_dim=2)
    good = tmp_path / "m.npz"
    m.save(good)
    raw = good.read_bytes()
    cases = {"empty.npz": b"", "trunc.npz": raw[: len(raw) // 2],
             "flip.npz": raw[:200] + bytes([raw[200] ^ 0xFF]) + raw[201:]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    save_npz_atomic(tmp_path / "nospec.npz", a=np.zeros(2))
    arrays = dict(np.load(good))
    arrays["spec"] = np.array('{"kind": "mlp"}')
    save_npz_atomic(tmp_path / "badspec.npz", **arrays)
    arrays = dict(np.load(good))
    k = next(k for k in arrays if k.startswith("param/"))
    arrays[k] = np.full_like(arrays[k], np.nan)
    save_npz_atomic(tmp_path / "nan.npz", **arrays)
    for name in (*cases, "nospec.npz", "badspec.npz", "nan.npz"):
        with pytest.raises(ValueError, match=name):
            load_model(tmp_path / name)
        rc, _, err = _lgm("score", good, "--model-file", tmp_path / name)
        line = _one_line_error(rc, err)
        assert name in line


# --- 14. dask ----------------------------------------------------------------------------------------
def test_dask_with_nan_ppca_and_impute():
    da = pytest.importorskip("dask.array")
    X = np.random.default_rng(0).random((200, 6))
    X[3, 2] = np.nan
    dX = da.from_array(X, chunks=(50, 6))
    with pytest.raises(ValueError, match="missing values are supported for numpy and cupy"):
        lgm.PPCA(2).fit(dX)
    with pytest.raises(ValueError, match="missing values are supported for numpy and cupy"):
        lgm.PPCA(2, method="em").fit(dX)
    fa = lgm.FactorAnalysis(2, random_state=0).fit(np.nan_to_num(X, nan=0.5))
    got = fa.impute(dX)
    np.testing.assert_allclose(np.asarray(got), fa.impute(X))


# --- 15. command-line errors -------------------------------------------------------------------------
def test_cli_user_errors_are_one_line(tmp_path):
    X = np.random.default_rng(0).random((40, 6))
    data = tmp_path / "d.npy"
    np.save(data, X)
    np.save(tmp_path / "zero.npy", np.float64(3.0))
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)))
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    model = tmp_path / "m.npz"
    assert _lgm("fit", data, "--components", "2", "--out", model)[0] == 0
    cases = [
        (("fit", tmp_path / "zero.npy", "--out", tmp_path / "o1.npz"), "zero.npy"),
        (("fit", data, "--model", "vae-mlp", "--likelihood", "gaussian", "--epochs", "0",
          "--out", tmp_path / "o2.npz"), "--epochs"),
        (("fit", data, "--model", "vae-mlp", "--epochs", "-1", "--out", tmp_path / "o3.npz"), "--epochs"),
        (("fit", data, "--components", "0", "--out", tmp_path / "o4.npz"), "--components"),
        (("score", data, "--model-file", model, "--samples", "0"), "--samples"),
        (("score", data, "--model-file", model, "--out", tmp_path), "--out"),
        (("fit", data, "--out", tmp_path / "sub"), "--out"),
        (("fit", tmp_path / "bin.csv", "--out", tmp_path / "o5.npz"), "bin.csv"),
        (("fit", fifo, "--out", tmp_path / "o6.npz"), "fifo.csv"),
        (("fit", tmp_path, "--out", tmp_path / "o7.npz"), "directory"),
        (("fit", data, "--scale", "inf", "--out", tmp_path / "o8.npz"), "--scale"),
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x").write_text("")
    for args, what in cases:
        rc, _, err = _lgm(*args)
        line = _one_line_error(rc, err)
        assert what in line, (args, line)


# --- 16. broadcast views ---------------------------------------------------------------------------
def test_broadcast_views_are_not_copied(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.random((64, 784))
    big = np.broadcast_to(rng.random(784), (16, 64, 784))  # a (S, B, D) view of one row
    lv = np.broadcast_to(np.zeros(784), (16, 64, 784))
    seen = []
    real = np.ascontiguousarray

    def spy(a, *args, **kw):
        seen.append(np.shape(a))
        return real(a, *args, **kw)

    from lgm import _validate

    monkeypatch.setattr(_validate.np, "ascontiguousarray", spy)
    got = lgm.diag_gaussian_logpdf(x, big, lv)
    monkeypatch.undo()
    assert all(np.prod(s) < 64 * 784 for s in seen), seen
    np.testing.assert_allclose(got, lgm.diag_gaussian_logpdf(x, real(big), real(lv)), rtol=1e-12)


def test_saved_files_get_the_usual_permissions(tmp_path):
    """mkstemp makes its file 0600; what lgm saves is 0666 & ~umask, like any file a user writes."""
    import os

    from lgm.io import write_atomic

    old = os.umask(0o022)
    try:
        for mask in (0o022, 0o077):
            os.umask(mask)
            p = tmp_path / f"r{mask:o}.md"
            write_atomic(p, "x")
            assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)
    finally:
        os.umask(old)
