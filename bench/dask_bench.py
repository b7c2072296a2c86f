"""Data larger than memory: FactorAnalysis on a dask array generated chunk by chunk.

    python bench/dask_bench.py [--rows 10000000] [--cols 100] [--chunk 250000] [--iters 8]

The data (N x D float64, 8 GB at N = 10^7, D = 100) are never materialised: each chunk is drawn
from a planted factor model when a task needs it (a seeded generator per chunk, so every EM pass
sees the same data) and dropped after. Peak resident memory is read from the OS
(ru_maxrss) and printed beside the time, for two N, to show that memory does not grow with N.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dask  # noqa: E402
import dask.array as da  # noqa: E402

import lgm  # noqa: E402


def planted(N, D, q, chunk, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((D, q))
    mean = rng.standard_normal(D)
    psi = rng.uniform(0.2, 1.0, D)

    def block(block_id=None):
        i = block_id[0]
        n = min(chunk, N - i * chunk)
        g = np.random.default_rng([seed, i])
        return g.standard_normal((n, q)) @ W.T + mean + g.standard_normal((n, D)) * np.sqrt(psi)

    chunks = ((chunk,) * (N // chunk) + ((N % chunk,) if N % chunk else ()), (D,))
    return da.map_blocks(block, chunks=chunks, dtype=np.float64), W, psi


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--cols", type=int, default=100)
    p.add_argument("--chunk", type=int, default=250_000)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--q", type=int, default=5)
    args = p.parse_args(argv)
    dask.config.set(scheduler="threads")
    print("| N | D | chunk | EM maps | seconds | s / EM map | peak RSS (MB) | max principal angle (deg) |")
    print("|---|---|---|---|---|---|---|---|")
    import scipy.linalg

    for N in (args.rows // 10, args.rows):
        X, W, psi = planted(N, args.cols, args.q, args.chunk)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lgm.ConvergenceWarning)
            fa = lgm.FactorAnalysis(args.q, max_iter=args.iters, random_state=0).fit(X)
        el = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB (Linux)
        ang = np.degrees(scipy.linalg.subspace_angles(fa.W_, W).max())
        print(f"| {N:,} | {args.cols} | {args.chunk:,} | {fa.n_iter_} | {el:.1f} | "
              f"{el / (fa.n_iter_ + 1):.2f} | {rss:.0f} | {ang:.2f} |", flush=True)
    print(f"\n{N * args.cols * 8 / 1e9:.1f} GB of float64 data at the largest N; "
          "peak RSS is the whole process, cumulative (the smaller N runs first).")


if __name__ == "__main__":
    main()
