"""Pilot for the E-step study's conv experiment with dynamic binarisation (issue 12): one
strategy and seed (default 0), the study's settings (conv decoder d = 16, Adam 1e-3, batch 128, IWAE-100
curve on 100 test images), then AIS (8 chains x 100 temperatures, 5 leapfrog steps) on 50 test
images at half the budget and at the end: does the held-out score still rise, and by how much
over the last doubling?

    python bench/estep_pilot.py [strategy=iwae] [budget_s=480] [seed=0] [model_dir]

With model_dir, the models at half the budget and at the end are saved there as
<strategy>-seed<seed>-<seconds>s.model.npz (for more AIS temperatures later).

Prints the curve as it goes and one JSON line at the end. Time it alone (nothing else running).
"""
import json, sys, time
import numpy as np
from lgm.front.data import embedded
from lgm.front.study import _setup
from lgm.estep import run_strategy, ais_log_likelihood, time_grid

name = sys.argv[1] if len(sys.argv) > 1 else "iwae"
budget = float(sys.argv[2]) if len(sys.argv) > 2 else 480.0
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
grey = embedded(binarize=False, dtype=np.float32)
cfg = _setup("mnist", grey, 100, "dynamic")
model = cfg["make"](seed)
t0 = time.time()
r = run_strategy(name, model, cfg["train"](seed), cfg["Xte"], grid=time_grid(budget, 4), budget_s=budget,
                 seed=seed, lr=1e-3, batch_size=128, n_samples_curve=100, n_samples_final=0,
                 snapshot_at=(-2,), strategy_kw=dict(eval_steps=50, eval_burn=30, eval_collect=20),
                 callback=lambda n, s, ll: print(f"{n} {s:.0f} s: IWAE-100 {ll:.2f}", flush=True))
kw = dict(n_chains=8, n_temps=100, n_leapfrog=5, seed=seed)
half_model = r.snapshots[len(r.grid) - 2]  # the model at half the budget
half = float(np.mean(ais_log_likelihood(half_model, cfg["Xte"][:50], **kw).log_px))
final = float(np.mean(ais_log_likelihood(model, cfg["Xte"][:50], **kw).log_px))
if len(sys.argv) > 4:
    from pathlib import Path
    Path(sys.argv[4]).mkdir(parents=True, exist_ok=True)
    for m, s in ((half_model, r.grid[-2]), (model, r.grid[-1])):
        m.save(Path(sys.argv[4]) / f"{name}-seed{seed}-{s:g}s.model.npz")
out = dict(strategy=name, seed=seed, budget=budget, grid=r.grid, heldout=r.heldout, epochs=r.epochs,
           ais_half=half, ais_final=final, wall=time.time() - t0)
print(json.dumps(out))
