"""Train against held-out AIS of the conv study's kept models: does a strategy's decoder overfit?

For every <strategy>-seed<k>.model.npz kept in a study's runs/mnist/ folder (the model at the end
of its budget), AIS log p(x) with the settings of the run's final score, read from its .json (in
the 1920 s study: 8 chains x 100 temperatures on 50 images), on the first training images,
binarised once by the study's fixed draw (the runs trained on fresh draws of the same grey
images, so this is one more draw of images they fitted), and on the study's held-out images.
A decoder that fits its training images better than unseen ones shows a positive gap. The
held-out score is the run's own final score, made again (same images, same seed): the column
"run's final" is the .json's, a check that the model file is the one scored.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/overfit_probe.py [RUNS_DIR]

RUNS_DIR defaults to bench/results/estep-dyn1920/study/runs/mnist. Run it when nothing else runs
(it is not timed, but it costs about 30 s per model on two cores: 5 models in 3 min on 2026-12-04).
"""
import json
import sys
from pathlib import Path

import numpy as np

from lgm.estep import ais_log_likelihood
from lgm.front.data import embedded
from lgm.front.study import _setup
from lgm.models.vae import load_model

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/estep-dyn1920/study/runs/mnist")
grey = embedded(binarize=False, dtype=np.float32, warn=lambda *a: None)
data = {}  # the study's fixed draws (lgm.front.study._setup), by its number of test images
print("| model | AIS train | AIS held-out | run's final | train − held-out |")
print("|---|---:|---:|---:|---:|")
for f in sorted(runs.glob("*.model.npz")):
    stem = f.name.removesuffix(".model.npz")
    rec = json.loads((runs / f"{stem}.json").read_text())
    st = rec["settings"]  # the images and AIS settings the run's final score used
    n_test, n = st["data"][1][0], st["n_final"]
    if n_test not in data:
        cfg = _setup(st["experiment"], grey, n_test, st.get("binarize", "static"))
        data[n_test] = cfg["Xtr"], cfg["Xte"]
    Xtr, Xte = data[n_test]
    m = load_model(f)
    tr = float(np.mean(ais_log_likelihood(m, Xtr[:n], seed=rec["seed"], **st["ais_kw"]).log_px))
    te = float(np.mean(ais_log_likelihood(m, Xte[:n], seed=rec["seed"], **st["ais_kw"]).log_px))
    print(f"| {stem} | {tr:.2f} | {te:.2f} | {rec['final']:.2f} | {tr - te:+.2f} |", flush=True)
