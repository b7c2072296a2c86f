"""Why the CPU log-density stops short of the read bandwidth: compute vs memory, per core.

    python bench/profile_logpdf.py

For each dtype, on one thread, it times three loops over the same (R, 784) arrays:
- "in cache": R small enough for L2 — the arithmetic throughput of the fused kernel
  (elements/s), with and without the exp, and of the three-array read (read3);
- "from memory": R = 65536 — what each achieves when the data stream from DRAM.
If the fused kernel's in-cache rate is close to the rate at which memory delivers elements
(read3 from memory), the loop is compute-bound at that bandwidth and cannot reach it: the exp
is the cost (the no-exp variant of the same loop runs at the memory rate).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import lgm  # noqa: E402, F401  (before numba: lgm sets Numba's CPU features at import)
import numba  # noqa: E402
from lgm._backends.cpu import kernels  # noqa: E402
from lgm._backends.cpu.fastmath import fexp_nonan  # noqa: E402

_FM = {"reassoc", "contract"}


@numba.njit(parallel=True, fastmath=_FM, error_model="numpy")
def _no_exp(out, x, mu, lv):
    R, D = x.shape
    F = x.dtype.type
    for r in numba.prange(R):
        acc = F(0)
        for j in range(D):
            d = x[r, j] - mu[r, j]
            acc += d * d * lv[r, j] + lv[r, j]
        out[r] = acc


@numba.njit(parallel=True, fastmath=_FM, error_model="numpy")
def _exp_only(out, lv):
    R, D = lv.shape
    F = lv.dtype.type
    for r in numba.prange(R):
        acc = F(0)
        for j in range(D):
            acc += fexp_nonan(-lv[r, j])
        out[r] = acc


def _rate(fn, n_elem, reps):
    fn()
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return n_elem / best


def main():
    threads = int(os.environ.get("LGM_PROFILE_THREADS", "1"))
    numba.set_num_threads(threads)
    print(f"threads: {threads}; rates in 10^9 elements/s (one element = one x, mu, logvar triple)")
    print("| dtype | where | fused logpdf | same loop without exp | exp alone | read3 |")
    print("|---|---|---|---|---|---|")
    for dt in (np.float32, np.float64):
        for where, R, reps in (("in cache (L2)", 64, 2000), ("from memory", 65536, 3)):
            rng = np.random.default_rng(0)
            x, mu, lv = (rng.standard_normal((R, 784)).astype(dt) for _ in range(3))
            out = np.empty(R, dt)
            lead = np.array([R], np.int64)
            rs = np.ones((3, 1), np.int64)
            n = R * 784
            rates = [
                _rate(lambda: kernels.diag_gaussian_logpdf(out, x, mu, lv, lead, rs), n, reps),
                _rate(lambda: _no_exp(out, x, mu, lv), n, reps),
                _rate(lambda: _exp_only(out, lv), n, reps),
                _rate(lambda: kernels.read3(x, mu, lv, out), n, reps),
            ]
            print(f"| {dt.__name__} | {where} | " + " | ".join(f"{r / 1e9:.2f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
