"""Where a conv VAE training step spends its time: each layer's forward and backward, Adam, and
the rest (loss, sampling, glue), then the GEMMs of the two big layers alone at their shapes.

    python bench/conv_profile.py                 # this checkout
    LGM_ROOT=/path/to/other/checkout python bench/conv_profile.py   # another one (an A/B)

The conv VAE of bench/vae_bench.py (Bernoulli, MNIST-5k, batch 128, float32, Adam 1e-3), under
the model's threading policy, 2 threads, 10 warm-up steps then --steps timed ones. lgm's GEMMs
run on numpy's OpenBLAS: the first line says which kernels it loaded (see bench/vae_bench.py on
OPENBLAS_CORETYPE). Timings are wall time per step: run it on an otherwise quiet machine.

Since lgm 0.2.0 the minibatch is cut in two halves that run side by side (README, "threading
policy"): the layer rows time the caller's half (64 images) while the other half runs on the
model's twin on the other core, and "the rest" includes waiting for that half.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("LGM_ROOT") or os.path.dirname(HERE)
sys.path.insert(0, ROOT)
import lgm  # noqa: E402  (from ROOT, before vae_bench puts this checkout on the path)

sys.path.insert(1, HERE)
from vae_bench import lgm_step  # noqa: E402


def blas_line():
    from lgm.front.bench import openblas_kernels

    where = os.path.dirname(os.path.dirname(os.path.abspath(lgm.__file__)))
    return f"lgm from {where}; {openblas_kernels()}"


def step_profile(steps):
    m, opt, step = lgm_step("conv", "bernoulli")
    T = collections.defaultdict(float)

    def wrap(layer, label):
        f, b = layer.forward, layer.backward

        def fw(x):
            t = time.perf_counter()
            r = f(x)
            T[label + " forward"] += time.perf_counter() - t
            return r

        def bw(dy, cache, need_dx=True):
            t = time.perf_counter()
            r = b(dy, cache, need_dx)
            T[label + " backward"] += time.perf_counter() - t
            return r

        layer.forward, layer.backward = fw, bw

    for seq in (m.encoder, m.decoder):
        for layer in seq.layers:
            if hasattr(layer, "name"):
                wrap(layer, f"{layer.name} ({type(layer).__name__})")
    adam = opt.step

    def timed_adam():
        t = time.perf_counter()
        adam()
        T["Adam"] += time.perf_counter() - t

    opt.step = timed_adam

    with m.params.backend.threads():
        for i in range(10):
            step(i)
        T.clear()
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        total = time.perf_counter() - t0
    return total / steps, {k: v / steps for k, v in T.items()}


def gemm_times(reps=50):
    """The six products of the two big layers (Conv2d 32->64 and ConvTranspose2d 64->32 on 14x14
    / 7x7, batch 128), timed alone at their shapes and transposes."""
    rng = np.random.default_rng(0)
    M, K, N = 6272, 512, 64
    A = rng.standard_normal((M, K), dtype=np.float32)     # cols (B*Ho*Wo, k*k*C)
    B_ = rng.standard_normal((K, N), dtype=np.float32)    # W
    G = rng.standard_normal((M, N), dtype=np.float32)     # dy2 / the ConvT input
    cases = {"cols @ W (Conv2d forward)": (A, B_), "cols.T @ dy (Conv2d dW)": (A.T, G),
             "dy @ W.T (Conv2d dx)": (G, B_.T), "x @ W (ConvT forward)": (G, B_.T.copy()),
             "x.T @ dcols (ConvT dW)": (G.T, A), "dcols @ W.T (ConvT dx)": (A, B_)}
    out = {}
    for name, (a, b) in cases.items():
        a @ b
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        out[name] = (time.perf_counter() - t0) / reps
    return out, 2 * M * K * N


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    print(blas_line())
    per_step, parts = step_profile(args.steps)
    print(f"\nconv VAE step: {per_step * 1e3:.2f} ms ({128 / per_step:,.0f} img/s), "
          f"{args.steps} steps\n\n| part (the caller's half of the minibatch) | ms / step |\n|---|---:|")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v * 1e3:.2f} |")
    print(f"| the rest (loss, sampling, glue, waiting for the other half) | "
          f"{(per_step - sum(parts.values())) * 1e3:.2f} |")
    g, flop = gemm_times()
    print("\n| big-layer GEMM, alone | ms | GFLOP/s |\n|---|---:|---:|")
    for k, t in g.items():
        print(f"| {k} | {t * 1e3:.2f} | {flop / t / 1e9:.0f} |")


if __name__ == "__main__":
    main()
