import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# JIT compilation makes first calls slow: no deadline. Example counts are kept moderate so that
# the suite stays well under its 10-minute budget on 2 cores; LGM_HYPOTHESIS_PROFILE=thorough
# raises them for a deeper local run.
settings.register_profile("ci", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=1000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("LGM_HYPOTHESIS_PROFILE", "ci"))

DTYPES = [np.float32, np.float64]


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def sum_tol(dtype, n_terms, scale):
    """Tolerance for a sum of ``n_terms`` terms whose absolute values add up to ``scale``.

    Each term carries a few ulp from exp/log (<= 4 ulp, see lgm._backends.cpu.fastmath) and the sum adds
    rounding that grows at most linearly with the number of terms (reassociated, vectorised
    accumulation); the bound is (8 + n_terms) * eps * scale, plus a tiny absolute floor.
    """
    eps = np.finfo(dtype).eps
    return (8 + n_terms) * eps * np.asarray(scale, dtype=np.float64) + 1e-300


def central_diff(f, a, h=1e-6):
    """Central finite differences of the scalar f() with respect to every entry of the float64
    array ``a``, perturbed in place (f must read ``a``)."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        fp = f()
        a[i] = old - h
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def ppca_decoder(D, q, sigma2, seed=0, scales=(2.0, 1.2)):
    """A linear VAE (lgm.vae.linear_vae) whose decoder is a PPCA model with orthogonal columns
    W (so the exact posterior is diagonal). Returns (model, W, mu, (post_mean_fn, post_var))
    with the posterior (Bishop 2006, 12.42): M = W^T W + s2 I, mean M^-1 W^T (x - mu), covariance
    s2 M^-1."""
    from lgm.vae import linear_vae

    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((D, q)))
    W = U * np.array(scales)[:q]
    mu = rng.standard_normal(D)
    m = linear_vae(D, q, isotropic=True)
    v = m.params.views
    v["dec.W"][...] = W.T
    v["dec.b"][...] = mu
    v["dec.logvar"][...] = np.log(sigma2)
    Mdiag = (W * W).sum(0) + sigma2
    return m, W, mu, Mdiag


def run_lgm(*args, cwd=None, timeout=300):
    """The installed command line, as a user runs it: (exit code, stdout, stderr)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "lgm", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, cwd=cwd)
    return r.returncode, r.stdout, r.stderr


def one_line_error(rc, err):
    """A user error on the command line: exit code 2, no traceback, one line (returned)."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]
