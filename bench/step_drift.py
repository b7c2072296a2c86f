"""Does a strategy's training step slow down as training goes on? Per-block step times and
Adam's subnormal moments, for the E-step strategies on the embedded MNIST images.

On an Intel host the MLP VAE's amortized step went from 3.2 to 5.3 ms after 600-900 steps:
subnormal arithmetic (Adam's decaying first moments; the float32 log1p's polynomial), each
operation a microcode assist there. Fixed in 1a7945b; this script is how it was found and is how
to check a host or a change for it (bench/results/estep_long.md, "Found (2026-12-04)").

    python bench/step_drift.py [--model mlp|conv] [--strategies amortized,mcmc] [--blocks 8]
                               [--steps 300] [--harness] [--start RUNS_DIR]

Prints, per strategy, the median ms per iteration in each block of --steps iterations (batch
128; the study's model, and its training images binarised once by its fixed draw), then the number of Adam's first and second moments below
the smallest normal float. --start RUNS_DIR begins from the models a study kept there
(<strategy>-seed0.model.npz, at the end of their budget, with a fresh optimiser): the late
regime at once (their logits reach -200; the study's steps slowed after ~20,000). --harness also
times the same strategy through the study's harness
(``lgm.estep.run_strategy``, 8 s, the study's dynamic binarisation) and prints its median step. Time it only
when nothing else runs. After editing lgm/_backends/cpu/fastmath.py, delete the Numba cache
(lgm/_backends/cpu/__pycache__/*.nbi): it is keyed on each kernel's own file, and the kernels that
inline fastmath's functions would otherwise keep their old machine code.
"""
import argparse
import time

import numpy as np

from lgm.estep.harness import run_strategy
from lgm.estep.strategies import make_strategy
from lgm.front.data import embedded
from lgm.front.study import _setup
from lgm.models.vae import load_model

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--model", choices=("mlp", "conv"), default="mlp")
ap.add_argument("--strategies", default="amortized")
ap.add_argument("--blocks", type=int, default=8)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--harness", action="store_true")
ap.add_argument("--start", help="a study's runs folder (e.g. bench/results/estep-mlp240/runs/mnist-mlp)")
args = ap.parse_args()

# the study's experiment: its model, its fixed and dynamic binarisations, its Adam step size
grey = embedded(binarize=False, dtype=np.float32, warn=lambda *a: None)
cfg = _setup("mnist-mlp" if args.model == "mlp" else "mnist", grey, 200, "dynamic")
X = cfg["Xtr"]
n_b = len(X) // 128


def subnormal(a):
    a = np.asarray(a)
    return int(np.sum((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)))


for name in args.strategies.split(","):
    model = cfg["make"](0) if args.start is None else load_model(f"{args.start}/{name}-seed0.model.npz")
    st = make_strategy(name, lr=cfg["lr"], seed=0)
    st.setup(model, X)
    perm = np.random.default_rng(0).permutation(len(X))
    blocks = []
    for _ in range(args.blocks):
        ts = []
        for k in range(args.steps):
            idx = perm[(k % n_b) * 128:(k % n_b + 1) * 128]
            t0 = time.perf_counter()
            st.iteration(model, X, idx)
            ts.append(time.perf_counter() - t0)
        blocks.append(f"{np.median(ts) * 1e3:.2f}")
    opt = getattr(st, "opt", None)
    moments = (f"; Adam moments subnormal: m {subnormal(opt.m)}, v {subnormal(opt.v)} of {opt.m.size}"
               if opt is not None else "")
    print(f"{args.model} {name}: ms per iteration, blocks of {args.steps}: {' '.join(blocks)}{moments}",
          flush=True)
    if args.harness:
        r = run_strategy(name, cfg["make"](0), cfg["train"](0), cfg["Xte"], grid=[4.0, 8.0],
                         budget_s=8.0, seed=0, lr=cfg["lr"], batch_size=128, n_samples_curve=10,
                         n_samples_final=0)
        print(f"{args.model} {name}: harness (8 s, dynamic binarisation), median "
              f"{np.median(r.step_seconds) * 1e3:.2f} ms per iteration over {len(r.step_seconds)}",
              flush=True)
