"""Train against held-out AIS of the conv study's kept models: does a strategy's decoder overfit?

For every <strategy>-seed<k>.model.npz kept in a study's runs/mnist/ folder (the model at the end
of its budget), AIS log p(x) (8 chains x 100 temperatures, the study's final score) on the first
50 training images, binarised once by the study's fixed draw (the runs trained on fresh draws
of the same grey images, so this is one more draw of images they fitted), and on the study's 50 held-out
images. A decoder that fits its training images better than unseen ones shows a positive gap.
The held-out score is the run's own final score, made again (same images, same seed): the
column "run's final" is the .json's, a check that the model file is the one scored.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/overfit_probe.py [RUNS_DIR]

RUNS_DIR defaults to bench/results/estep-dyn1920/study/runs/mnist. Run it when nothing else runs
(it is not timed, but it costs about 20 s per model on two cores).
"""
import json
import sys
from pathlib import Path

import numpy as np

from lgm.estep import ais_log_likelihood
from lgm.front.data import embedded
from lgm.front.study import _binary_once
from lgm.models.vae import load_model

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/estep-dyn1920/study/runs/mnist")
grey = embedded(binarize=False, dtype=np.float32, warn=lambda *a: None)
n = 50  # the study's n_final for the conv experiment
Xtr = _binary_once(grey.X_train, 1)[:n]  # the study's fixed draws (lgm.front.study._setup)
Xte = _binary_once(grey.X_test[:100], 2)[:n]
kw = dict(n_chains=8, n_temps=100, n_leapfrog=5)
print("| model | AIS train (50) | AIS held-out (50) | run's final | train − held-out |")
print("|---|---:|---:|---:|---:|")
for f in sorted(runs.glob("*.model.npz")):
    seed = int(f.name.split("-seed")[1].split(".")[0])
    m = load_model(f)
    tr = float(np.mean(ais_log_likelihood(m, Xtr, seed=seed, **kw).log_px))
    te = float(np.mean(ais_log_likelihood(m, Xte, seed=seed, **kw).log_px))
    stem = f.name.removesuffix(".model.npz")
    final = json.loads((runs / f"{stem}.json").read_text())["final"]
    print(f"| {stem} | {tr:.2f} | {te:.2f} | {final:.2f} | {tr - te:+.2f} |", flush=True)
