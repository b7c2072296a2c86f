"""The E-step study (`lgm estep-bench`; the demo's E-step sections run the same code at a smaller
budget): the strategies of lgm.estep side by side on one shared time grid, several seeds, final
held-out log-likelihoods by AIS (independent of any strategy's proposal), the inference gaps of
the amortized decoders, "what scales" with N on data drawn from a decoder trained on MNIST-5k,
and a written conclusion derived from the numbers.

Experiments:

- ``ppca``: linear decoders on data from a PPCA model (exact held-out log-likelihood).
- ``mnist``: the conv decoder (d = 16) on the embedded MNIST-5k, binarised.
- ``mnist-mlp``: the MLP decoder (784-400-16) on the same images.
- ``scaling``: N from 10^3 to ``max_n`` rows drawn from an MLP decoder trained on MNIST-5k (a
  memory-mapped .npy; the per-point state of mcmc and meanfield is memory-mapped beside it),
  equal wall time per run, held-out AIS against the teacher's own.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import write_atomic
from .bench import cpu_load, cpu_name, cpu_reading
from .progress import progress_bar

EXPERIMENTS = ("ppca", "mnist-mlp", "scaling", "mnist")

# budgets (s of training per strategy and seed) and evaluation grids: full study / --quick
BUDGETS = {"ppca": (5.0, 1.0), "mnist": (960.0, 3.0), "mnist-mlp": (240.0, 3.0), "scaling": (20.0, 2.0)}
N_EVALS = {"ppca": (6, 3), "mnist": (5, 2), "mnist-mlp": (5, 2)}
# lgm.estep.STRATEGIES, named here too so that the command line's help needs no Numba import
# (1.4 s); a test holds the two equal
STRATEGIES = ("exact", "mcmc", "meanfield", "amortized", "iwae")
# each experiment's strategies, in the order they run (exact needs a linear decoder)
_NAMES = {"ppca": STRATEGIES, **dict.fromkeys(("mnist", "mnist-mlp", "scaling"), STRATEGIES[1:])}
BINARIZE = "dynamic"  # the MNIST experiments' training images by default (compare_estep's binarize)


def ppca_data(D=50, q=5, n_train=2000, n_test=1000, noise=0.5, seed=0):
    """Data from a PPCA model (the exact log-likelihood of any linear decoder is known)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((D, q))
    mu = rng.standard_normal(D)
    X = rng.standard_normal((n_train + n_test, q)) @ W.T + mu + noise * rng.standard_normal((n_train + n_test, D))
    return X[:n_train], X[n_train:]


def _or_minus_inf(v):
    """v, or -inf where v is NaN (a sort key that puts NaN last, not anywhere)."""
    return v if v == v else -math.inf


def _fmt(fmt, v):
    """fmt.format(v), but a value that rounds to zero prints as 0, never as -0.00."""
    t = fmt.format(v)
    return fmt.format(0.0) if not t.strip("-0.") else t


def spread(vals, fmt="{:.2f}"):
    """'mean ± sd' over seeds (one value: the value)."""
    vals = [v for v in vals if v == v]
    if not vals:
        return "—"
    if len(vals) == 1:
        return _fmt(fmt, vals[0])
    return f"{_fmt(fmt, statistics.mean(vals))} ± {_fmt(fmt, statistics.stdev(vals))}"


@dataclass
class Experiment:
    """One experiment's results: per strategy, the runs (one per seed; their ``final`` is the
    held-out log-likelihood by ``final_method``); the budget check; the gap tables; the
    Markdown."""

    name: str
    title: str
    budget_s: float
    grid: list
    runs: dict
    final_method: str
    opt_ll: float = None
    gaps: list = field(default_factory=list)  # (strategy, data, InferenceGaps)
    best: str = ""
    gain: float = float("nan")  # the best strategy's gain over the last doubling
    half_finals: list = None  # its final-method scores at half the budget, per seed
    gaps_skipped: str = ""  # why the inference gaps asked for were not measured
    kept: int = 0  # runs kept from an earlier, stopped run of the study (compare_estep's run_dir)
    machines: list = field(default_factory=list)  # the CPUs the runs were made on
    # (strategy, seed, lgm.front.bench.cpu_load of the run or None where not recorded): what else
    # used the machine's CPUs while each run trained and was scored
    loads: list = field(default_factory=list)
    md: str = ""
    picture: str = ""

    @property
    def finals(self):
        """strategy -> the final scores, one per seed."""
        return {n: [r.final for r in rs] for n, rs in self.runs.items()}

    def mean_final(self, name):
        return statistics.mean(self.finals[name])

    @property
    def checked(self):
        """Whether the budget check could be made (a grid of one point, or a NaN score, cannot)."""
        return self.gain == self.gain

    @property
    def flattened(self):
        from ..estep import FLAT_NATS

        return self.checked and self.gain < FLAT_NATS

    @property
    def ranking(self):
        """The strategies, best first, by their mean final score (a strategy with a NaN score,
        a diverged run, last)."""
        return sorted(self.finals, key=lambda n: _or_minus_inf(self.mean_final(n)), reverse=True)

    @property
    def half_ranking(self):
        """The strategies, best first, by their mean final-method score at half the budget;
        None where a run has no such score (an exact or IWAE final, a one-point grid)."""
        half = {n: [r.half_final for r in rs] for n, rs in self.runs.items()}
        if not half or not all(v and np.all(np.isfinite(v)) for v in half.values()):
            return None
        return sorted(half, key=lambda n: statistics.mean(half[n]), reverse=True)

    @property
    def gain_se(self):
        """Standard error of the best strategy's gain over the last doubling: the runs are paired
        by seed (each run's final score minus its own score at half the budget), so this is the
        seeds' sd of those differences over sqrt(seeds); NaN with fewer than two seeds or without
        half-budget scores."""
        d = [r.final - r.half_final for r in self.runs.get(self.best, [])]
        if len(d) < 2 or not np.all(np.isfinite(d)):
            return float("nan")
        return statistics.stdev(d) / math.sqrt(len(d))

    def budget_note(self):
        """What the budget check means for the ranking, from the numbers: '' when flattened or not
        checked; else whether the strategies ranked the same at half the budget."""
        if not self.checked or self.flattened:
            return ""
        half = self.half_ranking
        if len(self.runs) == 1:
            return "the scores are not converged"
        if half is None:
            return "this ranks speed at this budget, not the converged models"
        if half == self.ranking:
            return ("the scores are not converged, but the ranking was the same at half the "
                    "budget (" + " > ".join(half) + ")")
        return ("this ranks speed at this budget, not the converged models: at half the budget "
                "the ranking was " + " > ".join(half))


def _binary_once(X, seed):
    """One seeded Bernoulli draw of grey-level images (a fixed binarised set)."""
    from ..models.training import DynamicBinarization

    return DynamicBinarization(X, seed).take(None)


def _setup(experiment, data, n_test, binarize="static"):
    from ..models.vae import conv_vae, linear_vae, mlp_vae

    if experiment == "ppca":
        from ..models.linear import PPCA

        Xtr, Xte = ppca_data()
        D, q = Xtr.shape[1], 5
        opt_ll = float(PPCA(q).fit(Xtr).score_samples(Xte).mean())
        return dict(Xtr=Xtr, Xte=Xte,
                    opt_ll=opt_ll, make=lambda s: linear_vae(D, q, isotropic=True, seed=s), lr=1e-2,
                    title=f"PPCA data (D={D}, q={q}, {len(Xtr)} train / {len(Xte)} test): exact "
                          f"held-out log-likelihood of the linear decoder")
    ds = data
    if experiment == "mnist":
        make = lambda s: conv_vae(ds.image_shape, latent_dim=16, seed=s)  # noqa: E731
        arch = "conv decoder, d=16"
    else:
        make = lambda s: mlp_vae(D=ds.X_train.shape[1], hidden=400, latent_dim=16, seed=s)  # noqa: E731
        arch = "MLP decoder 784-400-16"
    if binarize == "dynamic":
        # grey levels in: training images drawn anew at every read (per run seed), the
        # held-out and gap images binarised once by a fixed draw (Burda et al. 2016)
        from ..models.training import DynamicBinarization

        return dict(Xtr=_binary_once(ds.X_train, 1), Xte=_binary_once(ds.X_test[:n_test], 2),
                    train=lambda s: DynamicBinarization(ds.X_train, seed=10_000 + s),
                    opt_ll=None, make=make, lr=1e-3,
                    title=f"{ds.name} (dynamically binarised), {arch}")
    return dict(Xtr=ds.X_train,
                Xte=ds.X_test[:n_test], opt_ll=None, make=make, lr=1e-3,
                title=f"{ds.name} (binarised), {arch}")


# a finished run of compare_estep, kept on disk so that a study killed or stopped part-way
# resumes where it was (`lgm estep-bench --resume`): <run_dir>/<strategy>-seed<k>.json (the
# RunResult's numbers, its AIS at half the budget for the budget check, the settings that made
# it and the machine it ran on; written last, atomically), and beside it the trained model
# (.npz, no pickle; a few hundred kB). The .json files alone carry a study's numbers: a folder
# of them committed beside the results lets a study longer than one sitting resume elsewhere
# (only the gap model, amortized seed 0, is needed as .npz)
_RUN_FIELDS = ("grid", "times", "epochs", "step_seconds", "heldout", "final", "half_final",
               "iterations", "train_seconds", "state_bytes", "stats")


def _run_paths(run_dir, name, seed):
    stem = Path(run_dir) / f"{name}-seed{seed}"
    return stem.with_suffix(".json"), Path(f"{stem}.model.npz")


def _save_run(run_dir, r, settings, model, machine, load=None):
    js, final_npz = _run_paths(run_dir, r.strategy, r.seed)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    if model is not None:
        model.save(final_npz)
    rec = {"strategy": r.strategy, "seed": r.seed, "settings": settings, "machine": machine,
           "load": load,
           **{k: getattr(r, k) for k in _RUN_FIELDS}}
    rec["step_seconds"] = [round(t, 7) for t in r.step_seconds]  # 0.1 µs: a third of the bytes
    write_atomic(js, json.dumps(rec))


def _load_run(run_dir, name, seed, settings, say):
    """The kept run (RunResult, the final model or None, the machine it ran on, what else used
    that machine while it ran or None where not recorded) if it was made with the same settings,
    else None (it is then run again and replaced)."""
    from ..estep import RunResult
    from ..models.vae import load_model

    js, final_npz = _run_paths(run_dir, name, seed)
    if not js.exists():
        return None
    try:
        rec = json.loads(js.read_text())
    except (OSError, ValueError):
        say(f"{js}: unreadable, running {name} seed {seed} again")
        return None
    if rec.get("settings") != json.loads(json.dumps(settings)):
        say(f"{js}: made with other settings, running {name} seed {seed} again")
        return None
    r = RunResult(name, seed, **{k: rec[k] for k in _RUN_FIELDS if k in rec})
    model = None
    try:
        if final_npz.exists():
            model = load_model(final_npz)
    except ValueError as exc:
        say(f"{exc}; running {name} seed {seed} again")
        return None
    return r, model, rec.get("machine", "not recorded"), rec.get("load")


def compare_estep(experiment, *, budget_s, seeds=(0,), n_evals=5, out_dir, data=None,
                  final="ais", n_final=200, ais_kw=None, n_samples_final=1000,
                  n_samples_curve=100, n_test=200, eval_steps=100, gaps=0, gaps_ais_kw=None,
                  run_dir=None, binarize="static", strategies=None, say=print):
    """Run every applicable strategy of ``experiment`` ("ppca", "mnist", "mnist-mlp") for
    ``budget_s`` seconds of training per seed, evaluated on one time grid shared by all;
    score the final models (exact for ppca; else AIS on the first ``n_final`` test images, or
    IWAE with each strategy's proposal when ``final="iwae"``); with ``gaps`` > 0, the inference
    gaps of the amortized decoder (seed 0) on that many training and test images (AIS with
    ``gaps_ais_kw``, default ``ais_kw``); write the
    picture and return an :class:`Experiment` (its ``md`` is the section's Markdown).

    ``run_dir``: a folder where every finished (strategy, seed) run is kept (its numbers, its
    final model and its half-budget copy); a run found there, made with the same settings, is
    not run again, so a study stopped part-way resumes (the kept runs' timings are from the
    session that made them).

    ``binarize`` (the MNIST experiments): "static", ``data`` is already binary (binarised once);
    "dynamic", ``data`` holds grey levels in [0, 1] and every run reads its training images as
    fresh Bernoulli draws (:class:`lgm.models.training.DynamicBinarization`), the test images
    binarised once by a fixed draw.

    ``strategies``: run only those of the experiment's strategies named here (None: all); the
    inference gaps need "amortized" among them and are otherwise not measured (the table says
    so). ValueError, as :func:`given_strategies`, for a name that is not a strategy or when none
    of them applies to ``experiment``."""
    from . import report
    from ..estep import ais_log_likelihood, inference_gaps, last_doubling_gain, run_strategy, time_grid

    if binarize not in ("static", "dynamic"):
        raise ValueError(f"binarize must be 'static' or 'dynamic', got {binarize!r}")
    given_strategies(strategies, [experiment])
    names = _applicable(experiment, strategies)
    cfg = _setup(experiment, data, n_test, binarize)
    Xtr, Xte, opt_ll = cfg["Xtr"], cfg["Xte"], cfg["opt_ll"]
    grid = time_grid(budget_s, n_evals)
    ais_kw = {"n_chains": 8, "n_temps": 100, "n_leapfrog": 5, **(ais_kw or {})}
    linear = experiment == "ppca"
    method = "exact" if linear else ("AIS" if final == "ais" else "IWAE")
    runs, gap_model, n_kept, machines, loads = {n: [] for n in names}, None, 0, [], []
    here = cpu_name()  # the CPU this call's runs are made on (kept runs carry their own)
    bar = progress_bar(total=len(names) * len(seeds), desc=f"E-step strategies ({experiment})", unit="run")
    skw = dict(eval_steps=eval_steps, eval_burn=(6 * eval_steps) // 10, eval_collect=(4 * eval_steps) // 10)
    from .. import __version__

    settings = {"experiment": experiment, "title": cfg["title"], "data": [list(Xtr.shape), list(Xte.shape)],
                "budget_s": budget_s, "grid": grid, "strategy_kw": skw, "lr": cfg["lr"],
                "batch_size": 128, "n_samples_curve": n_samples_curve, "final": method,
                "n_final": n_final, "ais_kw": ais_kw, "n_samples_final": n_samples_final,
                "lgm": __version__,
                # (named only when dynamic: runs kept before the option existed stay valid)
                **({"binarize": binarize} if binarize != "static" else {})}
    for seed in seeds:
        for n in names:
            bar.set_postfix_str(f"{n}, seed {seed}")
            kept = _load_run(run_dir, n, seed, settings, say) if run_dir is not None else None
            if kept is not None:
                r, model, machine, load = kept
                n_kept += 1
            else:
                before = cpu_reading()
                model = cfg["make"](seed)
                r = run_strategy(n, model, cfg["train"](seed) if "train" in cfg else Xtr, Xte,
                                 grid=grid, budget_s=budget_s, seed=seed,
                                 strategy_kw=skw, lr=cfg["lr"], batch_size=128,
                                 n_samples_curve=n_samples_curve,
                                 n_samples_final=0 if final == "ais" else n_samples_final,
                                 snapshot_at=(-2,) if method == "AIS" and len(grid) > 1 else ())
                if method == "AIS":
                    r.final = float(np.mean(ais_log_likelihood(model, Xte[:n_final], seed=seed, **ais_kw).log_px))
                    # the budget check's score, made now so that a kept run needs no model copy
                    for half in r.snapshots.values():
                        r.half_final = float(np.mean(ais_log_likelihood(
                            half, Xte[:n_final], seed=seed, **ais_kw).log_px))
                    r.snapshots.clear()
                machine, load = here, cpu_load(before, cpu_reading())
                if run_dir is not None:
                    _save_run(run_dir, r, settings, None if linear else model, machine, load)
            runs[n].append(r)
            loads.append((n, seed, load))
            if machine not in machines:
                machines.append(machine)
            if seed == seeds[0] and n == "amortized":
                gap_model = model  # its inference gaps, below
            bar.update(1)
    bar.close()
    if n_kept:
        say(f"{n_kept} of {len(names) * len(seeds)} runs kept from {run_dir} (not run again)")
    exp = Experiment(experiment, cfg["title"], budget_s, grid, runs, method, opt_ll, kept=n_kept,
                     machines=machines, loads=loads)
    exp.best = exp.ranking[0]
    if method == "AIS" and len(grid) > 1:
        # the budget check by the proposal-free score: AIS of the best strategy's models at
        # half the budget (same images, same seeds) against the final AIS (NaN, "not checked",
        # where a kept run has none)
        exp.half_finals = [r.half_final for r in runs[exp.best]]
        exp.gain = last_doubling_gain(grid[-2:], [statistics.mean(exp.half_finals),
                                                  exp.mean_final(exp.best)])
    else:
        exp.gain = last_doubling_gain(grid, np.mean([r.heldout for r in runs[exp.best]], axis=0))
    gaps_ais_kw = {**ais_kw, **(gaps_ais_kw or {})}
    if gaps and not linear and "amortized" not in names:
        exp.gaps_skipped = "the amortized strategy was not among those run"
        gaps = 0
    if gaps and not linear and gap_model is None:
        raise FileNotFoundError(f"the inference gaps need the amortized seed-{seeds[0]} model; the kept "
                                f"run in {run_dir} has no {_run_paths(run_dir, 'amortized', seeds[0])[1].name}")
    if gaps and not linear:
        for part, X in (("train", Xtr[:gaps]), ("test", Xte[:gaps])):
            say(f"inference gaps: amortized decoder, {len(X)} {part} images")
            exp.gaps.append(("amortized", f"{part}, {len(X)} images",
                             inference_gaps(gap_model, X, seed=0, ais_kw=gaps_ais_kw)))
    n_scored = len(Xte[:n_final]) if method == "AIS" else len(Xte)  # the images the final scores saw
    exp.picture = report.bands(
        {n: [(r.grid, r.epochs, r.heldout) for r in rs] for n, rs in runs.items()},
        Path(out_dir) / f"estep_{experiment}.png",
        f"{cfg['title']}: held-out log-likelihood during training ("
        + (f"mean ± sd over {len(seeds)} seeds" if len(seeds) > 1 else f"seed {seeds[0]}")
        + ("" if linear else f"; IWAE with S={n_samples_curve} from each strategy's proposal, "
                             f"{len(Xte)} test images") + ")",
        "held-out log-likelihood (nats / point)",
        hline=(opt_ll, "EM optimum") if opt_ll is not None else None,
        finals=None if linear else (exp.finals, f"final {method} ({n_scored} test images)"))
    write_atomic(Path(out_dir) / f"estep_{experiment}.json", json.dumps(_raw(exp), indent=1))
    exp.md = _table(exp, seeds, n_final=n_scored, ais_kw=ais_kw,
                    gaps_ais_kw=gaps_ais_kw,
                    n_samples_curve=n_samples_curve, n_samples_final=n_samples_final)
    return exp


BUSY = 0.05  # a run during which other processes used more of the machine's CPUs is named


def load_note(loads):
    """' ' + a sentence on what else used the machine while the runs trained and were scored
    (from each run's recorded lgm.front.bench.cpu_load), naming every run above BUSY; '' when
    no run has a record."""
    rec = [(n, k, ld) for n, k, ld in loads if ld and ld.get("others") is not None]
    if not rec:
        return ""
    others = [ld["others"] for _, _, ld in rec]
    steal = max(ld["steal"] for _, _, ld in rec)
    s = (f" Other processes used at most {100 * max(others):.1f} % of the machine's CPUs during a "
         f"run (mean {100 * statistics.mean(others):.1f} %; the hypervisor took at most "
         f"{100 * steal:.1f} %)")
    busy = [f"{n} seed {k}: {100 * ld['others']:.0f} %" for n, k, ld in rec if ld["others"] > BUSY]
    if busy:
        s += "; runs that shared the machine: " + ", ".join(busy)
    missing = len(loads) - len(rec)
    if missing:
        s += f"; {missing} of {len(loads)} runs have no record (made before lgm recorded it)"
    return s + "."


def _raw(exp):
    """The experiment's numbers (what its table and picture are made of), as JSON-able data."""
    return {"experiment": exp.name, "title": exp.title, "budget_s": exp.budget_s, "grid": exp.grid,
            "final_method": exp.final_method, "opt_ll": exp.opt_ll, "best": exp.best,
            "gain": exp.gain, "half_finals": exp.half_finals, "machines": exp.machines,
            "loads": [{"strategy": n, "seed": k, **(load or {})} for n, k, load in exp.loads],
            "runs": {n: [{"seed": r.seed, "times": r.times, "epochs": r.epochs, "heldout": r.heldout,
                          "final": r.final, "iterations": r.iterations,
                          "train_seconds": r.train_seconds, "state_bytes": r.state_bytes,
                          "stats": r.stats}
                         for r in rs] for n, rs in exp.runs.items()},
            "gaps": [{"strategy": n, "images": part, "log_px": g.log_px, "elbo_optimal": g.elbo_optimal,
                      "elbo_amortized": g.elbo_amortized} for n, part, g in exp.gaps]}


def _table(exp, seeds, *, n_final, ais_kw, gaps_ais_kw, n_samples_curve, n_samples_final):
    from ..estep import FLAT_NATS

    est = {"exact": "exact log-likelihood",
           "AIS": f"AIS ({ais_kw['n_chains']} chains × {ais_kw['n_temps']} temperatures, HMC with "
                  f"{ais_kw['n_leapfrog']} leapfrog steps) on {n_final} test images",
           "IWAE": f"IWAE with S={n_samples_final} from each strategy's proposal on {n_final} test images"}
    head = ["strategy", f"held-out log-lik ({exp.final_method})"]
    if exp.opt_ll is not None:
        head.append("gap to EM optimum")
    if exp.final_method != "exact":
        head.append(f"on the curve (IWAE S={n_samples_curve})")
    head += ["epochs", "iterations", "ms / iteration", "per-point state", "notes"]
    lines = [f"### {exp.title}", "",
             f"{exp.budget_s:g} s of training per strategy and seed; held-out scores at the shared "
             f"times {', '.join(f'{g:g}' for g in exp.grid)} s; "
             + (f"seeds {list(seeds)} (mean ± sd over seeds)" if len(seeds) > 1 else f"seed {seeds[0]}")
             + f"; final score: {est[exp.final_method]}."
             + (f" {exp.kept} of {sum(map(len, exp.runs.values()))} runs were kept from an earlier, "
                "stopped run of the study (`--resume`; each run's timing is from the session that "
                "made it)." if exp.kept else "")
             + (f" The runs were made on {len(exp.machines)} machines: {'; '.join(exp.machines)}."
                if len(exp.machines) > 1 else "")
             + load_note(exp.loads), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, rs in exp.runs.items():
        row = [n, spread(exp.finals[n])]
        if exp.opt_ll is not None:
            row.append(spread([exp.opt_ll - f for f in exp.finals[n]], "{:.3f}"))
        if exp.final_method != "exact":
            row.append(spread([r.heldout[-1] for r in rs]))
        row += [spread([r.epochs[-1] for r in rs], "{:.1f}"), spread([r.iterations for r in rs], "{:.0f}"),
                spread([r.ms_per_iteration for r in rs], "{:.1f}"),
                f"{rs[0].state_bytes / 1e6:.2f} MB" if rs[0].state_bytes else "none"]
        notes = []
        if "acceptance" in rs[0].stats:
            notes.append("MALA acceptance " + spread([r.stats["acceptance"] for r in rs]))
        row.append("; ".join(notes))
        lines.append("| " + " | ".join(row) + " |")
    if exp.opt_ll is not None:
        lines += ["", f"EM optimum (PPCA closed form on the training set): held-out log-likelihood "
                      f"{exp.opt_ll:.3f} per point."]
    verdict = ("flattened" if exp.flattened else
               f"**not flattened**: {exp.budget_note()}" if exp.checked else
               "not checked (it needs a score at half the budget)")
    by = (f"by {exp.final_method}: {spread(exp.half_finals)} at {exp.grid[-2]:g} s, "
          f"{spread(exp.finals[exp.best])} at {exp.grid[-1]:g} s" if exp.half_finals else
          "on its held-out curve")
    lines += ["", f"Budget check: the best strategy ({exp.best}) gained {spread([exp.gain])}"
                  + (f" ± {exp.gain_se:.2f} (standard error over seeds)" if exp.gain_se == exp.gain_se else "")
                  + " nats over the "
                  f"last doubling of the budget ({by}; criterion: < {FLAT_NATS} nats, a fall "
                  f"counts): {verdict}.", "", f"![]({exp.picture})", ""]
    if exp.gaps_skipped:
        lines += [f"Inference gaps: not measured ({exp.gaps_skipped}).", ""]
    if exp.gaps:
        lines += [f"Inference gaps of the {exp.gaps[0][0]} decoder (seed {seeds[0]}; Cremer et al. "
                  f"2018): log p(x) by AIS ({gaps_ais_kw['n_chains']} "
                  f"chains × {gaps_ais_kw['n_temps']} temperatures), L[q*] the ELBO of the best diagonal Gaussian per point "
                  "(500 Adam steps per point, decoder fixed), L[q] the encoder's ELBO (100 samples).",
                  "", "| images | log p(x) (AIS) | L[q*] | L[q] | approximation gap | amortization gap |",
                  "|---|---|---|---|---|---|"]
        for n, part, g in exp.gaps:
            lines.append(f"| {part} | {g.log_px:.2f} | {g.elbo_optimal:.2f} | {g.elbo_amortized:.2f} | "
                         f"{g.approximation_gap:.2f} | {g.amortization_gap:.2f} |")
        if any(g.approximation_gap < 0 for _, _, g in exp.gaps):
            lines += ["", "A negative approximation gap means AIS fell below L[q*]: its estimate is "
                          "a lower bound, too loose at these temperatures; the gaps are then not "
                          "separated (run with more temperatures)."]
        lines.append("")
    return "\n".join(lines)


# --- what scales --------------------------------------------------------------------------------
@dataclass
class ScalingRow:
    strategy: str
    N: int
    ms_per_iteration: float
    seconds_per_epoch: float  # ms/iteration x steps per epoch (extrapolated if no epoch ended)
    epochs: float  # passes over the N rows within the budget
    state_bytes_per_point: float
    heldout: float  # AIS on the held-out rows


def _draw(model, n, seed, out=None, chunk=8192):
    """n rows x ~ p(x | t) with t ~ N(0, I) from a Bernoulli decoder, into ``out`` (or a new
    array), chunk by chunk."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, model.D), model.dtype) if out is None else out
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        t = rng.standard_normal((m, model.latent_dim)).astype(model.dtype)
        out[i:i + m] = (rng.random((m, model.D), dtype=np.float32) < model.mean(t)).astype(model.dtype)
    return out


def scaling_study(out_dir, data, *, Ns, budget_s, n_heldout=100, teacher_epochs=20, ais_kw=None,
                  eval_steps=50, names=_NAMES["scaling"], say=print):
    """What scales with N: a teacher (MLP VAE, 784-400-16) trained on MNIST-5k draws max(Ns)
    rows into a memory-mapped .npy in a temporary folder inside ``out_dir`` (removed at the
    end); for each N (the first N rows) and strategy, a fresh student is trained for
    ``budget_s`` seconds and scored by AIS on ``n_heldout`` fresh rows. Returns (rows, the
    teacher's AIS log-likelihood on those rows, the picture's name)."""
    from . import report
    from ..estep import ais_log_likelihood, run_strategy
    from ..models.vae import mlp_vae, train

    ais_kw = {"n_chains": 8, "n_temps": 100, "n_leapfrog": 5, **(ais_kw or {})}
    say(f"scaling: teacher (MLP VAE 784-400-16) on {data.name}, {teacher_epochs} epochs")
    teacher = mlp_vae(D=data.X_train.shape[1], hidden=400, latent_dim=16, seed=0)
    train(teacher, data.X_train, epochs=teacher_epochs, batch_size=128, lr=1e-3, seed=0)
    X_held = _draw(teacher, n_heldout, seed=12345)
    truth = float(np.mean(ais_log_likelihood(teacher, X_held, seed=0, **ais_kw).log_px))
    tmp = tempfile.mkdtemp(prefix="scaling-data-", dir=out_dir)
    rows = []
    try:
        path = os.path.join(tmp, "X.npy")
        n_max = max(Ns)
        say(f"scaling: drawing {n_max:,} rows from the teacher into {path} "
            f"({n_max * teacher.D * 4 / 1e9:.2f} GB, memory-mapped)")
        Xm = np.lib.format.open_memmap(path, "w+", teacher.dtype, (n_max, teacher.D))
        _draw(teacher, n_max, seed=1, out=Xm)
        Xm.flush()
        del Xm
        X_all = np.load(path, mmap_mode="r")
        skw = dict(eval_steps=eval_steps, eval_burn=(6 * eval_steps) // 10, eval_collect=(4 * eval_steps) // 10)
        bar = progress_bar(total=len(Ns) * len(names), desc="scaling", unit="run")
        for N in Ns:
            X = X_all[:N]
            for n in names:
                bar.set_postfix_str(f"{n}, N={N:,}")
                student = mlp_vae(D=teacher.D, hidden=400, latent_dim=16, seed=1)
                r = run_strategy(n, student, X, X_held, budget_s=budget_s, n_evals=1, seed=0,
                                 strategy_kw=skw, n_samples_curve=10, n_samples_final=0)
                ll = float(np.mean(ais_log_likelihood(student, X_held, seed=0, **ais_kw).log_px))
                steps = math.ceil(N / 128)
                rows.append(ScalingRow(n, N, r.ms_per_iteration, r.ms_per_iteration * steps / 1e3,
                                       r.epochs[-1], r.state_bytes / N, ll))
                bar.update(1)
        bar.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_atomic(Path(out_dir) / "estep_scaling.json",
                 json.dumps({"budget_s": budget_s, "teacher_ais": truth, "n_heldout": n_heldout,
                             "rows": [r.__dict__ for r in rows]}, indent=1))
    pic = report.scaling(rows, truth, Path(out_dir) / "estep_scaling.png",
                         f"Equal wall time ({budget_s:g} s of training per run), data drawn from an "
                         f"MLP decoder trained on {data.name}")
    return rows, truth, pic


def scaling_table(rows, truth, budget_s, n_heldout, ais_kw):
    Ns = sorted({r.N for r in rows})
    names = list(dict.fromkeys(r.strategy for r in rows))
    at = {(r.strategy, r.N): r for r in rows}
    lines = [f"### What scales: N from {Ns[0]:,} to {Ns[-1]:,} rows", "",
             f"Rows drawn from an MLP decoder (784-400-16, Bernoulli) trained on MNIST-5k, stored as "
             f"a memory-mapped float32 .npy and read by minibatch; the per-point state of mcmc and "
             f"meanfield is memory-mapped beside it. Each strategy trains a fresh decoder of the "
             f"teacher's architecture for {budget_s:g} s (one seed); held-out: AIS "
             f"({ais_kw['n_chains']} chains × {ais_kw['n_temps']} temperatures) on {n_heldout} fresh "
             f"rows, where the teacher itself scores {truth:.2f}. Seconds per epoch = ms per "
             f"iteration × steps per epoch (extrapolated where the budget ended before an epoch did).",
             "", "| strategy | " + " | ".join(f"N = {N:,}" for N in Ns) + " |",
             "|---|" + "---|" * len(Ns)]
    for n in names:
        cells = []
        for N in Ns:
            r = at.get((n, N))
            cells.append("—" if r is None else f"{r.heldout:.1f} nats; {r.seconds_per_epoch:.3g} s/epoch; "
                         f"{r.epochs:.3g} epochs; {r.state_bytes_per_point:.0f} B/point")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the conclusion, from the numbers ------------------------------------------------------------
def _welch_t(a, b):
    """Welch's t of mean(a) - mean(b) over seeds; NaN with fewer than two seeds or no spread."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return (statistics.mean(a) - statistics.mean(b)) / se if se > 0 else float("nan")


def conclusion(exps, scaling=None, quick=False):
    """A few sentences derived from the results (nothing here is written by hand)."""
    from ..estep import FLAT_NATS

    out = []
    if quick:
        out.append("This was a **quick** run (short budgets, few seeds): it checks that the study "
                   "runs; its numbers are not a comparison.")
    for e in exps:
        order = e.ranking
        best, second = order[0], order[1] if len(order) > 1 else None
        s = (f"**{e.title}** ({e.budget_s:g} s per strategy): {best} "
             + ("is best" if second is not None else "alone (no other strategy was run)")
             + f" ({spread(e.finals[best])}, {e.final_method})")
        if second is not None:
            diff = e.mean_final(best) - e.mean_final(second)
            sd = max(statistics.stdev(e.finals[best]) if len(e.finals[best]) > 1 else 0.0,
                     statistics.stdev(e.finals[second]) if len(e.finals[second]) > 1 else 0.0)
            one = len(e.finals[best]) == 1
            sep = ("one seed" if one else f"{diff / sd:.1f} seed sd" if sd > 0 else "no spread over seeds")
            s += f", ahead of {second} by {diff:.2f} nats ({sep})"
        s += ("; ranking: " + " > ".join(order) if second is not None else "") + "."
        if e.opt_ll is not None:
            s += f" Gap of the best to the EM optimum: {e.opt_ll - e.mean_final(best):.3f} nats."
        if e.checked and not e.flattened:
            se = f" ± {e.gain_se:.2f}" if e.gain_se == e.gain_se else ""
            s += (f" The best curve was still rising ({e.gain:.2f}{se} nats over the last doubling; "
                  f"criterion < {FLAT_NATS}): {e.budget_note()}.")
        if "iwae" in e.finals and "amortized" in e.finals and e.final_method != "exact":
            d = e.mean_final("iwae") - e.mean_final("amortized")
            ep = {n: statistics.mean(r.epochs[-1] for r in e.runs[n]) for n in ("iwae", "amortized")}
            t = _welch_t(e.finals["iwae"], e.finals["amortized"])
            if t == t and abs(t) < 2:  # a difference inside the seed noise orders nothing
                verdict = f"within the seed spread (Welch's t = {t:.1f}): neither ordering is shown"
            else:
                one = min(len(e.finals["iwae"]), len(e.finals["amortized"])) < 2
                why = "one seed" if one else f"Welch's t = {t:.1f}" if t == t else "t undefined"
                verdict = f"{'the same ordering as' if d > 0 else 'not the ordering of'} Burda et al. ({why})"
            s += (f" At equal wall time IWAE (S = 5 in training, {ep['iwae']:.0f} epochs) vs the VAE "
                  f"({ep['amortized']:.0f} epochs): {d:+.2f} nats, {verdict}; Burda et al. report "
                  f"IWAE k = 50 ahead by 1.98 nats on full MNIST at equal epochs.")
        for n, part, g in e.gaps:
            if g.approximation_gap < 0:
                s += (f" Gaps ({part}): AIS fell below L[q*] by {-g.approximation_gap:.2f} nats "
                      f"(too few temperatures): not separated.")
                continue
            big = "amortization" if g.amortization_gap > g.approximation_gap else "approximation"
            s += (f" Gaps ({part}): approximation {g.approximation_gap:.2f}, amortization "
                  f"{g.amortization_gap:.2f} nats, so the {big} gap dominates"
                  f"{' (as Cremer et al. find)' if big == 'amortization' else ' (Cremer et al. find amortization dominating more often)'}.")
        out.append(s)
    if scaling:
        rows, truth = scaling
        Ns = sorted({r.N for r in rows})
        winners = []
        for N in Ns:
            rs = [r for r in rows if r.N == N]
            w = max(rs, key=lambda r: r.heldout)
            winners.append(f"N = {N:,}: {w.strategy} ({w.heldout:.1f})")
        s = "**What scales** (equal wall time, teacher at " + f"{truth:.2f}): best held-out by N: " + "; ".join(winners) + "."
        for n in dict.fromkeys(r.strategy for r in rows):
            rs = sorted((r for r in rows if r.strategy == n), key=lambda r: r.N)
            if len(rs) > 1:
                slope = np.polyfit(np.log([r.N for r in rs]), np.log([r.seconds_per_epoch for r in rs]), 1)[0]
                s += (f" {n}: seconds per epoch grow as N^{slope:.2f}, held-out {rs[0].heldout:.1f} → "
                      f"{rs[-1].heldout:.1f} from N = {rs[0].N:,} to {rs[-1].N:,}"
                      + (f", {rs[-1].state_bytes_per_point:.0f} bytes of state per point." if rs[-1].state_bytes_per_point else
                         ", no per-point state."))
        out.append(s)
    return "\n\n".join(out)


def given_budgets(budget, experiments):
    """{experiment: seconds} for the experiments ``budget`` sets (see :func:`estep_bench`);
    ValueError, naming what is wrong, for an experiment not run or a budget that is not a
    positive number."""
    budgets = (dict(budget) if isinstance(budget, Mapping) else {} if budget is None
               else dict.fromkeys(experiments, budget))
    for e, b in budgets.items():
        if e not in experiments:
            raise ValueError(f"names {e!r}, which is not among the experiments run ({', '.join(experiments)})")
        if isinstance(b, bool) or not (isinstance(b, numbers.Real) and 0 < b < math.inf):
            raise ValueError(f"expected a positive number of seconds for {e}, got {b!r}")
    return budgets


def _applicable(experiment, strategies):
    return tuple(n for n in _NAMES[experiment] if strategies is None or n in strategies)


def given_strategies(strategies, experiments):
    """Check ``strategies`` (None, or names among STRATEGIES) against the experiments to be run:
    ValueError naming what is wrong, for an unknown name or an experiment none of them applies to."""
    if strategies is None:
        return
    bad = [n for n in strategies if n not in STRATEGIES]
    if bad or not strategies:
        raise ValueError(f"expected strategies among {', '.join(STRATEGIES)}, got {', '.join(bad) or 'none'}")
    for e in experiments:
        if not _applicable(e, strategies):
            raise ValueError(f"none of {', '.join(strategies)} applies to the experiment {e} "
                             f"(its strategies: {', '.join(_NAMES[e])})")


def estep_bench(out="lgm-estep-bench", experiments=EXPERIMENTS,
                budget=None, seeds=(0, 1, 2, 3, 4), quick=False, max_n=None, say=print,
                command=None, created=None, resume=False, binarize=BINARIZE, strategies=None):
    """The study: each experiment, its tables and pictures, and the conclusion, in one folder
    (estep.md). ``budget``: seconds of training per strategy and seed, one number for every
    experiment or a mapping {experiment: seconds} for those it names (the others take
    ``BUDGETS``; a study whose experiments were run at different budgets writes its report
    from the kept runs this way). ``quick``: short budgets and small evaluations, labelled as such. Every
    finished run of the strategy comparisons is kept under ``out/runs/<experiment>/``;
    ``resume``: write into the existing folder ``out`` and run only what is not kept there
    with the same settings (the scaling experiment runs again). ``binarize``: the MNIST
    experiments' training images binarised once ("static") or drawn anew at every read
    ("dynamic"; see :func:`compare_estep`). ``strategies``: run only these (None: all that apply
    to each experiment); ValueError, before anything runs, for a name that is not a strategy or
    an experiment to which none of them applies. A subset run into a study's folder keeps its
    runs for a later ``resume`` with every strategy (the strategies are not among a run's
    settings)."""
    from .bench import openblas_kernels
    from .data import embedded
    from .report import fresh_dir

    t0 = time.perf_counter()
    budgets = given_budgets(budget, experiments)
    given_strategies(strategies, experiments)
    if resume:
        out = Path(out)
        if not (out / "runs").is_dir():
            # (the command line prints this as its one-line error: one check for both)
            raise FileNotFoundError(f"resume: {out} is not the folder of a study (no runs/ in it); "
                                    "give that folder (lgm estep-bench --resume --out FOLDER)")
        say(f"resuming the study in {out}")
    else:
        out = fresh_dir(out, say, created)
        (out / "runs").mkdir()  # the kept runs: `--resume` recognises a study's folder by it
    q = 1 if quick else 0
    cmd = command or ("lgm estep-bench" + (" --quick" if quick else ""))
    md = ["# E-step strategies: the study", "",
          *(["**QUICK RUN** — short budgets and small evaluations; for checking, not for "
             "conclusions.", ""] if quick else []),
          f"Command: `{cmd}`; machine: {os.cpu_count()} CPUs; {openblas_kernels()}.", ""]
    data = embedded(binarize=True, dtype=np.float32, warn=say) if set(experiments) - {"ppca"} else None
    grey = (embedded(binarize=False, dtype=np.float32, warn=lambda *a: None)
            if binarize == "dynamic" and set(experiments) & {"mnist", "mnist-mlp"} else None)
    ais_kw = dict(n_chains=4, n_temps=30) if quick else dict(n_chains=8, n_temps=100)
    exps, scaling = [], None
    for e in experiments:
        b = budgets.get(e, BUDGETS[e][q])
        if e == "scaling":
            top = max_n or (10_000 if quick else 1_000_000)
            Ns = [10 ** k for k in range(3, int(math.floor(math.log10(top) + 1e-9)) + 1)]
            Ns += [top] if top != Ns[-1] else []  # never beyond --max-n
            rows, truth, pic = scaling_study(out, data, Ns=Ns, budget_s=b, ais_kw=ais_kw,
                                             names=_applicable("scaling", strategies),
                                             n_heldout=50 if quick else 100,
                                             teacher_epochs=2 if quick else 20,
                                             eval_steps=10 if quick else 50, say=say)
            scaling = (rows, truth)
            md += [scaling_table(rows, truth, b, 50 if quick else 100, dict(ais_kw, n_leapfrog=5)), "",
                   f"![]({pic})", ""]
            write_atomic(out / "estep.md", "\n".join(md) + "\n(the study is still running)\n")
            continue
        conv = e == "mnist"  # the conv decoder costs ~15x the MLP per image: smaller evaluations
        exp = compare_estep(e, budget_s=b, seeds=seeds, n_evals=N_EVALS[e][q], out_dir=out,
                            data=grey if grey is not None else data, binarize=binarize,
                            final="ais", ais_kw=ais_kw,
                            n_final=(20 if quick else (50 if conv else 200)),
                            n_samples_curve=20 if quick else 100,
                            n_test=50 if quick else (100 if conv else 200),
                            eval_steps=20 if quick else (50 if conv else 100),
                            gaps=(10 if quick else (50 if conv else 100)),
                            gaps_ais_kw=None if quick else {"n_temps": 200 if conv else 500},
                            run_dir=out / "runs" / e, strategies=strategies, say=say)
        exps.append(exp)
        md += [exp.md, ""]
        say(exp.md)
        write_atomic(out / "estep.md", "\n".join(md) + "\n(the study is still running)\n")
    md[len(md):] = ["## Conclusion", "", conclusion(exps, scaling, quick), "",
                    f"Total time: {time.perf_counter() - t0:.0f} s."]
    write_atomic(out / "estep.md", "\n".join(md) + "\n")
    say(f"wrote {out / 'estep.md'}")
    return out
