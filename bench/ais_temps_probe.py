"""How loose is the E-step study's AIS at its 100 temperatures, and is the looseness the same for
every strategy's decoder? (issue 12). For each saved conv model (a study run's
``runs/mnist/<strategy>-seed<k>.model.npz``, or one saved by ``bench/estep_pilot.py``), AIS
(8 chains, 5 leapfrog steps, the study's seed) on the study's 50 test images at each number of
temperatures; AIS is a stochastic lower bound that tightens as the temperatures grow, so a
ranking by AIS at 100 temperatures holds only if the decoders' bounds tighten by about the
same amount.

    python bench/ais_temps_probe.py [--temps 100,500] MODEL.npz[:seed] ...

Prints one row per model and one JSON line at the end. Time it alone (nothing else running).
"""
import argparse, json, time
import numpy as np
from lgm.front.data import embedded
from lgm.front.study import _setup
from lgm.estep import ais_log_likelihood
from lgm.models.vae import load_model

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("models", nargs="+", help="MODEL.npz[:seed] (seed of the AIS chains; default 0)")
p.add_argument("--temps", default="100,500", help="comma-separated numbers of temperatures")
a = p.parse_args()
temps = [int(t) for t in a.temps.split(",")]
Xte = _setup("mnist", embedded(binarize=False, dtype=np.float32), 100, "dynamic")["Xte"][:50]
rows = []
print("| model | " + " | ".join(f"AIS, {t} temperatures" for t in temps) + " | seconds |")
print("|---|" + "---:|" * (len(temps) + 1))
for spec in a.models:
    path, _, seed = spec.partition(":")
    model, t0, ll = load_model(path), time.time(), []
    for t in temps:
        ll.append(float(np.mean(ais_log_likelihood(model, Xte, n_chains=8, n_temps=t, n_leapfrog=5,
                                                   seed=int(seed or 0)).log_px)))
    rows.append(dict(model=path, seed=int(seed or 0), temps=temps, ais=ll, seconds=time.time() - t0))
    print(f"| {path} | " + " | ".join(f"{v:.2f}" for v in ll) + f" | {time.time() - t0:.0f} |", flush=True)
print(json.dumps(rows))
