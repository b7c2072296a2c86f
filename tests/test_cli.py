"""The `lgm` command: argument errors are clear, `info` runs, `bench` writes its tables."""

import subprocess
import sys

import numpy as np
import pytest

from lgm import cli


def test_bad_arguments_exit_with_a_message(capsys):
    for argv in (["bench", "--threads", "x"], ["bench", "--threads", "0"], ["bench", "--dtypes", "float16"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        assert "expected" in capsys.readouterr().err


def test_info_runs(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "numba" in out and "CPU vectors" in out and "GPU" in out


def test_bench_table_written_atomically(tmp_path, monkeypatch):
    """A minimal benchmark run (one small case) through the real code path."""
    from lgm.front import bench

    monkeypatch.setenv("LGM_BENCH_NO_TORCH", "1")
    monkeypatch.setattr(bench, "cases", lambda quick=False: [("diag_gaussian_logpdf", (64, 32))])
    out = tmp_path / "t.md"
    assert cli.main(["bench", "--quick", "--threads", "1", "--dtypes", "float64", "--out", str(out)]) == 0
    text = out.read_text()
    assert "#### diag_gaussian_logpdf" in text and "| 64x32 | float64 | 1 |" in text
    assert not list(tmp_path.glob(".tmp-*"))  # no temporary file left behind


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "lgm.cli", "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "CPU vectors" in r.stdout


def test_demo_quick_writes_a_report_and_never_overwrites(tmp_path, monkeypatch):
    """The README's first command, in its quick form: report.md and the pictures, then a second
    run that goes to a new folder (saying so) instead of over the first."""
    monkeypatch.chdir(tmp_path)
    r = subprocess.run([sys.executable, "-m", "lgm.cli", "demo", "--quick"], capture_output=True,
                       text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = tmp_path / "lgm-report"
    md = (rep / "report.md").read_text()
    for pic in ("ppca_components.png", "ppca_samples.png", "vae_samples.png", "vae_reconstructions.png",
                "vae_latent_map.png", "estep_ppca.png", "estep_mnist.png"):
        assert (rep / pic).stat().st_size > 5000 and f"({pic})" in md
    for name in ("exact", "mcmc", "meanfield", "amortized", "iwae", "gap to EM optimum", "IWAE, S = 100 samples"):
        assert name in md
    assert "report written to lgm-report/report.md" in r.stdout
    assert "VAE epochs" in r.stderr  # progress bars
    before = (rep / "report.md").read_bytes()
    from lgm.front import demo

    said = []
    out = demo.fresh_dir("lgm-report", say=said.append)
    assert said and "keeping it" in said[0]
    assert out.name == "lgm-report-2" and (rep / "report.md").read_bytes() == before


def _mnist_like(tmp_path):
    rng = np.random.default_rng(0)
    X = (rng.random((300, 64)) * (rng.random((300, 64)) > 0.6) * 255).astype(np.uint8)
    np.save(tmp_path / "train.npy", X[:250])
    np.savetxt(tmp_path / "test.csv", X[250:], delimiter=",", fmt="%d")
    return X


@pytest.mark.parametrize("model,extra", [("ppca", []), ("fa", []),
                                         ("vae-mlp", ["--scale", "255", "--epochs", "2"]),
                                         ("vae-conv", ["--scale", "255", "--epochs", "1",
                                                       "--strategy", "meanfield"])])
def test_fit_then_score(tmp_path, capsys, model, extra):
    _mnist_like(tmp_path)
    mf = tmp_path / "m.npz"
    argv = ["fit", str(tmp_path / "train.npy"), "--model", model, "--components", "4", "--out", str(mf)]
    assert cli.main(argv + extra) == 0
    assert "saved" in capsys.readouterr().out
    sc = tmp_path / "scores.csv"
    assert cli.main(["score", str(tmp_path / "test.csv"), "--model-file", str(mf), "--samples", "50",
                     "--out", str(sc)]) == 0
    out = capsys.readouterr().out
    assert "mean log-likelihood" in out
    vals = np.loadtxt(sc, skiprows=1)
    assert vals.shape == (50,) and np.isfinite(vals).all()
    if model in ("ppca", "fa"):  # the saved model scores exactly as the fitted one
        from lgm import FactorAnalysis, PPCA

        X = np.load(tmp_path / "train.npy").astype(np.float64)
        T = np.loadtxt(tmp_path / "test.csv", delimiter=",")
        est = (PPCA if model == "ppca" else FactorAnalysis)(4, random_state=0).fit(X)
        np.testing.assert_allclose(vals, est.score_samples(T), rtol=1e-8)
    # nothing saved is overwritten without --force
    assert cli.main(argv + extra) == 2
    assert "exists" in capsys.readouterr().err


def test_fit_and_score_errors(tmp_path, capsys):
    X = _mnist_like(tmp_path)

    def err(argv):
        assert cli.main(argv) == 2
        return capsys.readouterr().err

    assert "no such data file" in err(["fit", str(tmp_path / "nope.npy")])
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    assert "non-numeric value 'x'" in err(["fit", str(tmp_path / "bad.csv")])
    assert "needs data in [0, 1]" in err(["fit", str(tmp_path / "train.npy"), "--model", "vae-mlp",
                                          "--out", str(tmp_path / "v.npz")])
    Xn = X[:50].astype(np.float64)
    Xn[3, 3] = np.nan
    np.save(tmp_path / "nan.npy", Xn)
    assert "contains NaN" in err(["fit", str(tmp_path / "nan.npy"), "--model", "vae-mlp", "--scale", "255",
                                  "--out", str(tmp_path / "v.npz")])
    # PPCA takes missing values (EM on the observed entries)
    assert cli.main(["fit", str(tmp_path / "nan.npy"), "--components", "2", "--out", str(tmp_path / "p.npz")]) == 0
    assert "missing values" in capsys.readouterr().out
    np.save(tmp_path / "wide.npy", np.zeros((5, 10)))
    assert "expects rows of 64 features" in err(["score", str(tmp_path / "wide.npy"), "--model-file",
                                                 str(tmp_path / "p.npz")])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "model file" in err(["score", str(tmp_path / "train.npy"), "--model-file", str(tmp_path / "junk.npz")])
    assert "--components" in err(["fit", str(tmp_path / "train.npy"), "--components", "64",
                                  "--out", str(tmp_path / "q.npz")])
    assert "exact E-step" in err(["fit", str(tmp_path / "train.npy"), "--strategy", "mcmc",
                                  "--out", str(tmp_path / "q.npz")])
