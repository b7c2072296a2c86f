"""PPCA and factor analysis on the GPU (cupy arrays) against the same code on the CPU (numpy, all
cores of the GPU machine) and scikit-learn, in one run on one machine.

    python bench/gpu_linear_bench.py [--quick] [--out FILE]

Data: a planted low-rank model, N x 784 float32 (N = 60000, MNIST's size; --quick: 8000), q = 16,
generated on the host with a fixed seed and copied to the GPU once. Times are wall-clock seconds
around complete calls (the host algebra is part of the call), best of 3, with the device
synchronised before the clock stops. Every row also reports how far the GPU result is from the
CPU one (the same algebra; cuBLAS vs OpenBLAS summation order).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import cupy  # noqa: E402
from linear_bench import best as _best  # noqa: E402

import lgm  # noqa: E402


def best(fn, reps=3):
    """Best wall time of fn with the device synchronised before the clock stops."""
    return _best(lambda: (fn(), cupy.cuda.Device().synchronize()), reps=reps)


def planted(N, D, q, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((D, q)) * 2
    X = rng.standard_normal((N, q)) @ W.T + rng.standard_normal(D) * 3
    X += rng.standard_normal((N, D)) * rng.uniform(0.3, 1.0, D)
    return X.astype(np.float32)


def em_per_iteration(make, X, iters):
    """Seconds per EM map (plain EM, fixed number of maps) and the fitted model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lgm.ConvergenceWarning)
        est = make(iters)
        t = best(lambda: est.fit(X), reps=2)
    return t / est.n_iter_, est


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    from sklearn.decomposition import PCA

    N, D, q = (8000 if args.quick else 60000), 784, 16
    X = planted(N, D, q)
    Xg = cupy.asarray(X)
    from lgm._backends.gpu import launchers as _gpu

    device = _gpu.backend_info().split(";")[0]
    rows = []

    def row(what, t_gpu, t_cpu, t_sk, diff):
        sk = f"{t_sk * 1e3:.1f}" if t_sk is not None else "—"
        sk_ratio = f"{t_sk / t_gpu:.1f}×" if t_sk is not None else "—"
        rows.append(f"| {what} | {t_gpu * 1e3:.1f} | {t_cpu * 1e3:.1f} | {sk} | {t_cpu / t_gpu:.1f}× | "
                    f"{sk_ratio} | {diff:.1e} |")
        print(rows[-1], flush=True)

    # closed-form PPCA fit
    t_g = best(lambda: lgm.PPCA(q).fit(Xg))
    t_c = best(lambda: lgm.PPCA(q).fit(X))
    t_s = best(lambda: PCA(q, svd_solver="covariance_eigh").fit(X))
    g, c = lgm.PPCA(q).fit(Xg), lgm.PPCA(q).fit(X)
    row("PPCA closed-form fit", t_g, t_c, t_s, abs(g.loglike_[0] - c.loglike_[0]) / abs(c.loglike_[0]))

    # exact log-likelihood of every row, same parameters
    pca = PCA(q, svd_solver="covariance_eigh").fit(X)
    t_g = best(lambda: c.score_samples(Xg))
    t_c = best(lambda: c.score_samples(X))
    t_s = best(lambda: pca.score_samples(X))
    diff = float(np.max(np.abs(cupy.asnumpy(c.score_samples(Xg)).astype(np.float64) - c.score_samples(X))
                        / np.abs(c.score_samples(X))))
    row("score_samples (N rows)", t_g, t_c, t_s, diff)

    # EM maps, complete data
    for name, make in (("PPCA", lambda it: lgm.PPCA(q, method="em", tol=0, max_iter=it, accelerate=False, random_state=0)),
                       ("FactorAnalysis", lambda it: lgm.FactorAnalysis(q, tol=0, max_iter=it, accelerate=False, random_state=0))):
        t_g, g = em_per_iteration(make, Xg, 10)
        t_c, c = em_per_iteration(make, X, 10)
        row(f"{name} EM, one map", t_g, t_c, None, abs(g.loglike_[-1] - c.loglike_[-1]) / abs(c.loglike_[-1]))

    # EM maps with 30 % of the entries missing at random: every row has its own pattern (the
    # per-row kernels: the batched twins on the GPU, Numba on the CPU)
    Xm = X.copy()
    Xm[np.random.default_rng(1).random(Xm.shape) < 0.3] = np.nan
    Xmg = cupy.asarray(Xm)
    make = lambda it: lgm.FactorAnalysis(q, tol=0, max_iter=it, accelerate=False, random_state=0)  # noqa: E731
    t_g, g = em_per_iteration(make, Xmg, 3)
    t_c, c = em_per_iteration(make, Xm, 3)
    row("FactorAnalysis EM with 30 % missing, one map", t_g, t_c, None,
        abs(g.loglike_[-1] - c.loglike_[-1]) / abs(c.loglike_[-1]))

    head = [f"Linear-Gaussian models on {device}: lgm on cupy vs lgm on numpy (this machine's "
            f"{os.cpu_count()} CPU cores) vs scikit-learn (CPU); {N} x {D} float32, q = {q}; "
            "best of 3, wall-clock ms per call", "",
            "| operation | lgm GPU ms | lgm CPU ms | scikit-learn ms | CPU / GPU | scikit-learn / GPU | rel. diff GPU vs CPU |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    text = "\n".join(head + rows) + "\n"
    print("\n" + text)
    if args.out:
        from lgm.io import write_atomic

        write_atomic(args.out, text)


if __name__ == "__main__":
    main()
