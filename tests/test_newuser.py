"""Issue 13: what a new user trips on. One test per item (the command line through the installed
`lgm` command, as a user runs it: exit code, one line on stderr, no traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lgm


from conftest import one_line_error as _one_line_error  # noqa: E402
from conftest import run_lgm as _lgm  # noqa: E402


def _data(n=200, d=8, q=2, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, q))
    return rng.standard_normal((n, q)) @ W.T + offset + 0.3 * rng.standard_normal((n, d))


# 1 ---------------------------------------------------------------------------------------------
def test_a_ppca_fitted_on_nan_scores_nan(tmp_path):
    X = _data()
    X[np.random.default_rng(1).random(X.shape) < 0.1] = np.nan
    np.savetxt(tmp_path / "d.csv", X, delimiter=",")
    rc, out, err = _lgm("fit", tmp_path / "d.csv", "--components", "2", "--out", tmp_path / "m.npz")
    assert rc == 0, err
    rc, out, err = _lgm("score", tmp_path / "d.csv", "--model-file", tmp_path / "m.npz")
    assert rc == 0 and "Traceback" not in err, err
    ll = float(out.split("mean log-likelihood ")[1].split()[0])
    assert np.isfinite(ll)
    # the estimators too: every fitted PPCA scores rows with NaN, whatever fitted it
    ppca = lgm.PPCA(2).fit(np.nan_to_num(X, nan=0.0))
    assert np.all(np.isfinite(ppca.score_samples(X)))


# 2 ---------------------------------------------------------------------------------------------
def test_csv_header_rule_and_missing_cells(tmp_path):
    from lgm.data import load_array

    p = tmp_path / "a.csv"
    p.write_text("1,,3\n4,5,6\n")  # a first row with an empty cell is data, not a header
    X = load_array(p)
    assert X.shape == (2, 3) and np.isnan(X[0, 1])
    p.write_text("x,y,z\n1,NA,3\nnan,5,6\n")
    X = load_array(p)
    assert X.shape == (2, 3) and np.isnan(X[0, 1]) and np.isnan(X[1, 0])
    p.write_text("1,2,3\n\n4,oops,6\n")
    with pytest.raises(ValueError, match="line 3: non-numeric value 'oops'"):
        load_array(p)
    rng = np.random.default_rng(0)
    X = rng.random((500, 4))
    lines = [",".join("" if (i == 0 and j == 1) else f"{v:.6f}" for j, v in enumerate(r))
             for i, r in enumerate(X)]
    (tmp_path / "b.csv").write_text("\n".join(lines) + "\n")
    assert load_array(tmp_path / "b.csv").shape == (500, 4)  # no row eaten
    # where the model does not take NaN, it says so
    rc, _, err = _lgm("fit", tmp_path / "b.csv", "--model", "vae-mlp", "--steps", "5",
                      "--components", "2", "--out", tmp_path / "v.npz")
    assert "NaN" in _one_line_error(rc, err)


# 3, 4 ------------------------------------------------------------------------------------------
def test_swapped_arguments_and_the_key_flag(tmp_path):
    X = _data()
    np.savetxt(tmp_path / "d.csv", X, delimiter=",")
    assert _lgm("fit", tmp_path / "d.csv", "--components", "2", "--out", tmp_path / "m.npz")[0] == 0
    rc, _, err = _lgm("score", tmp_path / "m.npz", "--model-file", tmp_path / "d.csv")
    line = _one_line_error(rc, err)
    assert "d.csv" in line and "allow_pickle" not in line and "pickle" not in line.split("(")[0]
    np.savez(tmp_path / "two.npz", a=X, b=X)
    rc, _, err = _lgm("fit", tmp_path / "two.npz", "--out", tmp_path / "o.npz")
    assert "--key" in _one_line_error(rc, err)


def test_argparse_errors_are_one_line(tmp_path):
    """What argparse itself refuses (a bad value, a missing command) is one line too, naming the
    option and where the help is, without the usage block."""
    for args, what in ((("fit", "d.csv", "--components", "abc"), "--components: invalid int value: 'abc'"),
                       (("estep-bench", "--experiments", "ppca,foo"), "among ppca, mnist-mlp, scaling, mnist, got foo"),
                       ((), "COMMAND")):
        rc, _, err = _lgm(*args, cwd=tmp_path)
        line = _one_line_error(rc, err)
        assert what in line and "--help" in line and not line.startswith("usage"), line


# 5 ---------------------------------------------------------------------------------------------
def test_score_checks_out_before_the_work(tmp_path):
    X = _data()
    np.save(tmp_path / "d.npy", X)
    assert _lgm("fit", tmp_path / "d.npy", "--components", "2", "--out", tmp_path / "m.npz")[0] == 0
    (tmp_path / "s.csv").write_text("old")
    from lgm.front import fitting

    calls = []
    real = fitting.load
    try:
        fitting.load = lambda *a: calls.append(a) or real(*a)
        with pytest.raises(fitting.UsageError, match="exists"):
            fitting.score(tmp_path / "d.npy", tmp_path / "m.npz", out=tmp_path / "s.csv")
    finally:
        fitting.load = real
    assert calls == []  # refused before the model was even read


# 6 ---------------------------------------------------------------------------------------------
def test_progress_only_for_iterative_work(tmp_path):
    X = _data()
    np.save(tmp_path / "d.npy", X)
    rc, out, err = _lgm("fit", tmp_path / "d.npy", "--components", "2", "--out", tmp_path / "m.npz")
    assert rc == 0 and "step" not in err, err  # closed form: no bar
    rc, _, err = _lgm("fit", tmp_path / "missing.npy", "--out", tmp_path / "m2.npz")
    assert "step" not in err and "no such data file" in _one_line_error(rc, err)


# 7 ---------------------------------------------------------------------------------------------
def test_fit_help_documents_every_option():
    rc, out, _ = _lgm("fit", "--help")
    assert rc == 0
    for flag, default in (("--model", "ppca"), ("--likelihood", "bernoulli"), ("--steps", "5000"),
                          ("--seed", "0"), ("--out", "model.npz"), ("--components", "16")):
        opts = out.split("options:", 1)[1]
        block = opts.split("\n  " + flag, 1)[1].split("\n  -", 1)[0]
        assert f"(default: {default})" in " ".join(block.split()), (flag, block)
    assert "data" in out and "one row per sample" in " ".join(out.split())


# 8 ---------------------------------------------------------------------------------------------
def test_bench_reports_only_believable_fractions():
    from lgm.front.bench import Row, describe, fraction

    r = Row("k", "1x1", "float32", 1, 3e9, 10.0)
    r.times["lgm"] = 0.1  # 30 GB/s against a 10 GB/s probe: served from cache
    assert fraction(r) == "in cache"
    r.times["lgm"] = 0.5  # 6 GB/s: 0.60 of the probe
    assert fraction(r) == "0.60"
    assert "None" not in describe()["blas"]
    rc, out, _ = _lgm("bench", "--help")
    assert "about 3 minutes" in " ".join(out.split())


# 9 ---------------------------------------------------------------------------------------------
def test_estep_bench_records_the_full_command(tmp_path):
    rc, out, err = _lgm("estep-bench", "--experiments", "ppca", "--budget", "0.3", "--seeds", "1",
                        "--out", tmp_path / "eb", timeout=600)
    assert rc == 0, err
    md = (tmp_path / "eb" / "estep.md").read_text()
    assert "--experiments ppca --budget 0.3 --seeds 1" in md


# 10 --------------------------------------------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
def test_ctrl_c_prints_one_line_and_removes_the_empty_folder(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-c",
                          # SIGINT as in a terminal, also where pytest runs in the background
                          # (a shell's background job inherits SIGINT ignored)
                          "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                          "import sys, time, lgm.front.data as d\n"
                          "d.embedded = lambda **kw: time.sleep(60)\n"  # stands in for slow work
                          "from lgm.cli import main\n"
                          "sys.exit(main(['demo', '--out', 'rep']))\n"],
                         cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for _ in range(200):
        if (tmp_path / "rep").exists():
            break
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "removed the empty folder" in lines[0]
    assert not (tmp_path / "rep").exists()


# 11 --------------------------------------------------------------------------------------------
def test_vae_default_budget_is_steps_and_warns_when_still_falling(tmp_path):
    from lgm.front.fitting import still_falling

    assert still_falling(list(np.linspace(30, 10, 1000)))[0]
    flat = list(10 + 0.1 * np.random.default_rng(0).standard_normal(1000))
    assert not still_falling(flat)[0]
    X = _data(n=300, d=10)
    np.savetxt(tmp_path / "d.csv", X, delimiter=",")
    rc, out, err = _lgm("fit", tmp_path / "d.csv", "--model", "vae-mlp", "--likelihood", "gaussian",
                        "--components", "2", "--steps", "60", "--out", tmp_path / "v.npz")
    assert rc == 0, err
    assert "still falling" in out  # 60 steps is not training, and the user is told


# 13 --------------------------------------------------------------------------------------------
def test_demo_reports_throughput_after_warm_up():
    import inspect

    from lgm.front import demo

    src = inspect.getsource(demo.demo)
    assert "after it" in src and "JIT" in src


# 14 --------------------------------------------------------------------------------------------
def test_em_orientation_is_canonical_and_deterministic():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 10))
    closed = lgm.PPCA(3).fit(X)
    outs = []
    for seed in (0, 1, 2):
        em = lgm.PPCA(3, method="em", random_state=seed, tol=1e-13, max_iter=20000).fit(X)
        outs.append(em.transform(X))
        np.testing.assert_allclose(em.W_, closed.W_, atol=1e-5)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-5)
    a = lgm.PPCA(3, method="em", random_state=7).fit(X).W_
    b = lgm.PPCA(3, method="em", random_state=7).fit(X).W_
    np.testing.assert_array_equal(a, b)  # bit for bit
    Y = _data(n=400, d=8, q=3, seed=3)
    fa = lgm.FactorAnalysis(3, random_state=0).fit(Y)
    G = fa.W_.T @ (fa.W_ / fa.noise_variance_[:, None])
    assert np.allclose(G, np.diag(np.diag(G)), atol=1e-8) and np.all(np.diff(np.diag(G)) <= 0)


# 15 --------------------------------------------------------------------------------------------
def test_sklearn_api_covariance_precision_rotation_whiten():
    from sklearn.decomposition import PCA
    from sklearn.decomposition import FactorAnalysis as SkFA

    X = _data(n=400, d=8, q=3, seed=4)
    for est in (lgm.PPCA(3), lgm.FactorAnalysis(3, random_state=0)):
        est.fit(X)
        np.testing.assert_allclose(est.get_precision() @ est.get_covariance(), np.eye(8), atol=1e-10)
        np.testing.assert_array_equal(est.components_, est.W_.T)
    for rot in ("varimax", "quartimax"):
        ours = lgm.FactorAnalysis(3, rotation=rot, random_state=0, tol=1e-10).fit(X)
        theirs = SkFA(3, rotation=rot, tol=1e-10, max_iter=10000).fit(X)
        # the same rotation of (nearly) the same loadings, up to column signs and order
        A, B = np.abs(ours.components_), np.abs(theirs.components_)
        order = [int(np.argmin(np.abs(B - a).sum(1))) for a in A]
        np.testing.assert_allclose(A, B[order], atol=5e-3)
        assert ours.score(X) == pytest.approx(lgm.FactorAnalysis(3, random_state=0, tol=1e-10).fit(X).score(X))
    with pytest.raises(ValueError, match="rotation"):
        lgm.FactorAnalysis(2, rotation="oblimin").fit(X)
    w = lgm.PPCA(3, whiten=True).fit(X).transform(X)
    ref = PCA(3, whiten=True).fit(X).transform(X)
    # scikit-learn's variances divide by N - 1, the maximum-likelihood ones by N
    np.testing.assert_allclose(w, ref * np.sqrt(len(X) / (len(X) - 1)), atol=1e-8)
    np.testing.assert_allclose(w.std(0), 1.0, atol=1e-8)


# 16 --------------------------------------------------------------------------------------------
def test_zero_components_and_q_equal_d():
    X = _data(n=300, d=6)
    p0 = lgm.PPCA(0).fit(X)
    var = X.var(0).mean()
    want = -0.5 * X.shape[1] * (np.log(2 * np.pi * var)) - 0.5 * ((X - X.mean(0)) ** 2).sum(1) / var
    np.testing.assert_allclose(p0.score_samples(X), want, rtol=1e-10)
    f0 = lgm.FactorAnalysis(0).fit(X)
    v = X.var(0)
    want = (-0.5 * np.log(2 * np.pi * v) - 0.5 * (X - X.mean(0)) ** 2 / v).sum(1)
    np.testing.assert_allclose(f0.score_samples(X), want, rtol=1e-8)
    assert p0.transform(X).shape == (300, 0)
    with pytest.raises(ValueError, match="no noise"):
        lgm.PPCA(6).fit(X)
