"""Why im2col + GEMM: the conv VAE's heaviest layer (Conv2d 32 -> 64, k 4, stride 2, pad 1 on
14x14 NHWC, batch 128, float32) computed three ways, forward only, 2 threads:

    python bench/conv_choice.py

1. im2col (Numba) + one GEMM (numpy/OpenBLAS) — what lgm.nn.Conv2d does;
2. a direct Numba loop nest (parallel over the batch; the k*k*C_in reduction vectorised over
   C_out), the textbook alternative without the cols buffer;
3. torch.nn.functional.conv2d (oneDNN) when torch is installed, as a yardstick.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lgm import nn  # noqa: E402


@njit(parallel=True, fastmath=True, cache=True)
def direct_conv(y, x, W, b, s, p):
    """y (B, Ho, Wo, Co) = conv(x (B, H, Wd, C), W (k, k, C, Co)) + b, NHWC."""
    B, Ho, Wo, Co = y.shape
    H, Wd, C = x.shape[1], x.shape[2], x.shape[3]
    k = W.shape[0]
    for n in prange(B):
        for i in range(Ho):
            for j in range(Wo):
                acc = b.copy()
                for u in range(k):
                    r = i * s + u - p
                    if r < 0 or r >= H:
                        continue
                    for v in range(k):
                        q = j * s + v - p
                        if q < 0 or q >= Wd:
                            continue
                        for c in range(C):
                            xv = x[n, r, q, c]
                            for o in range(Co):
                                acc[o] += xv * W[u, v, c, o]
                y[n, i, j, :] = acc


def best(fn, n=20):
    fn()
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def main():
    rng = np.random.default_rng(0)
    P = nn.Params(np.float32)
    conv = nn.Conv2d(P, "c", 32, 64, 4, 2, 1)
    P.build()
    x = rng.standard_normal((128, 14, 14, 32)).astype(np.float32)
    W, b = P.views["c.W"], P.views["c.b"]
    y = np.empty((128, 7, 7, 64), np.float32)
    direct_conv(y, x, W, b, 2, 1)
    np.testing.assert_allclose(y, conv(x), rtol=1e-4, atol=1e-4)
    flop = 2 * 128 * 7 * 7 * 64 * 4 * 4 * 32
    rows = [("im2col + GEMM (lgm.nn.Conv2d)", best(lambda: conv(x))),
            ("direct Numba loops", best(lambda: direct_conv(y, x, W, b, 2, 1)))]
    try:
        import torch

        torch.set_num_threads(2)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        wt = torch.from_numpy(W.transpose(3, 2, 0, 1).copy())
        bt = torch.from_numpy(b.copy())
        rows.append(("torch conv2d (oneDNN)", best(lambda: torch.nn.functional.conv2d(xt, wt, bt, 2, 1))))
    except ImportError:
        pass
    print("| implementation | ms | GFLOP/s |\n|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:.2f} | {flop / t / 1e9:.0f} |")


if __name__ == "__main__":
    main()
