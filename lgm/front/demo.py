"""`lgm demo`: the main job. Runs the models on the embedded data, compares the E-step strategies
(with lgm.front.study, the code of `lgm estep-bench`, at a smaller budget) and writes a report
folder (report.md + PNG pictures)."""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from ..io import write_atomic
from .progress import progress_bar
from .report import fresh_dir


# --- lgm demo --------------------------------------------------------------------------------------
def demo(out="lgm-report", quick=False, say=print, command=None, created=None):
    from . import report
    from .data import embedded
    from .study import compare_estep
    from ..models.linear import PPCA
    from ..models.vae import mlp_vae, train

    t_start = time.perf_counter()
    out = fresh_dir(out, say, created)
    md = []
    ds = embedded(dtype=np.float32, warn=say)
    # binarised at 0.5, as embedded(binarize=True) would, without reading the data again
    dsb = ds._replace(X_train=(ds.X_train > 0.5).astype(np.float32),
                      X_test=(ds.X_test > 0.5).astype(np.float32))
    shape = ds.image_shape
    say(f"data: {ds.name}: {len(ds.X_train)} train / {len(ds.X_test)} test images {shape[:2]}")
    md += ["# lgm demo report", "",
           f"Command: `{command or 'lgm demo' + (' --quick' if quick else '')}`. Data: {ds.name}, {len(ds.X_train)} "
           f"training and {len(ds.X_test)} test images of {shape[0]}×{shape[1]} pixels. "
           f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
           ""]

    # 1. linear-Gaussian models (exact)
    q = 16
    say("1/4 PPCA (exact log-likelihood)")
    X64, Xt64 = ds.X_train.astype(np.float64), ds.X_test.astype(np.float64)
    t0 = time.perf_counter()
    ppca = PPCA(q).fit(X64)
    t_ppca = time.perf_counter() - t0
    ll_ppca = ppca.score_samples(Xt64).mean()
    pics = [report.image_grid(ppca.W_.T[:16], shape, out / "ppca_components.png",
                              f"PPCA: the first 16 of {q} principal directions (columns of W)",
                              symmetric=True),
            report.image_grid(np.clip(ppca.sample(16, random_state=0), 0, 1), shape,
                              out / "ppca_samples.png", "PPCA: 16 samples x ~ N(mean, W W^T + s² I)")]
    md += ["## 1. Linear-Gaussian models (exact E-step, exact log-likelihood)", "",
           f"Pixels scaled to [0, 1]; q = {q} latent dimensions; a density on [0, 1]^784 that "
           "concentrates near the data, so its log-likelihood is positive.", "",
           "| model | held-out log-lik (nats / image) | fit time (s) |", "|---|---:|---:|",
           f"| PPCA (closed form) | {ll_ppca:.1f} | {t_ppca:.2f} |", "",
           "(Factor analysis is not shown on these pixels: a pixel that is constant in the "
           "training images gets a noise variance of 1e-12, as in scikit-learn, and one test "
           "image that lights it scores about -10^9; `lgm fit --model fa` is there for data "
           "without constant features.)", "",
           f"![PPCA components]({pics[0]}) ![PPCA samples]({pics[1]})", ""]

    # 2. the VAE
    epochs = 5 if quick else 30
    S = 100 if quick else 1000
    say(f"2/4 MLP VAE (Bernoulli decoder, d = 20): {epochs} epochs, then IWAE with S = {S} samples")
    vae = mlp_vae(D=ds.X_train.shape[1], hidden=400 if shape[0] >= 28 else 128, latent_dim=20)
    bar = progress_bar(total=epochs, desc="VAE epochs", unit="epoch")

    t_first = []  # end of the first epoch: it includes the JIT compilation of the kernels

    def cb(epoch, step, n_steps, loss):
        if step == n_steps - 1:
            bar.update(1)
            bar.set_postfix_str(f"loss {float(loss):.1f}")
            if epoch == 0:
                t_first.append(time.perf_counter())

    t_train = time.perf_counter()
    hist = train(vae, dsb.X_train, epochs=epochs, batch_size=128, lr=1e-3, seed=0, callback=cb)
    bar.close()
    t_end = time.perf_counter()
    t_vae = t_end - t_train
    rate = (epochs - 1) * len(dsb.X_train) / (t_end - t_first[0]) if epochs > 1 else float("nan")
    t0 = time.perf_counter()
    ll_vae = float(vae.log_likelihood(dsb.X_test, n_samples=S, seed=1).mean())
    elbo = float(vae.elbo(dsb.X_test, n_samples=10).mean())
    t_eval = time.perf_counter() - t0
    vae.save(out / "vae_mlp.npz")
    recon = vae.reconstruct(dsb.X_test[:16])
    Zm = vae.transform(dsb.X_test)
    Zc = Zm - Zm.mean(0)
    _, _, Vt = np.linalg.svd(Zc, full_matrices=False)
    pics = [report.image_grid(vae.sample(32, seed=0), shape, out / "vae_samples.png",
                              "VAE: means E[x | t] at 32 draws t ~ N(0, I)"),
            report.image_grid(np.concatenate([dsb.X_test[:16], recon]), shape,
                              out / "vae_reconstructions.png",
                              "VAE: 16 test images (top two rows) and their reconstructions E[x | t = mu(x)]"),
            report.latent_map(Zc @ Vt[:2].T, dsb.y_test, out / "vae_latent_map.png",
                              "VAE posterior means of the test images, first two principal axes"),
            report.curves({"training loss (-ELBO)": [(np.arange(1, epochs + 1), hist)]},
                          out / "vae_training.png", "VAE training", "epoch",
                          "nats / image", logx=False)]
    md += ["## 2. Neural decoder: MLP VAE (amortized inference)", "",
           f"784-400-20-400-784 (ReLU), Bernoulli decoder on images binarised at 0.5, Adam 1e-3, "
           f"batch 128, {epochs} epochs: {t_vae:.1f} s, of which the first epoch (with the kernels' "
           f"JIT compilation, or its loading from Numba's disk cache) {t_first[0] - t_train:.1f} s; "
           f"{rate:,.0f} images/s after it.",
           "", "| held-out estimate | nats / image |", "|---|---:|",
           f"| ELBO (10 samples) | {elbo:.2f} |", f"| IWAE, S = {S} samples (log-likelihood) | {ll_vae:.2f} |",
           "", f"Evaluation took {t_eval:.1f} s. Model saved as `vae_mlp.npz` (`lgm score` reads it).",
           "", " ".join(f"![]({p})" for p in pics), ""]

    # 3-4. E-step strategies
    say("3/4 E-step strategies on PPCA data (exact held-out log-likelihood)")
    exp = compare_estep("ppca", budget_s=1.0 if quick else 3.0, n_evals=3 if quick else 5,
                        out_dir=out, say=say)
    md += ["## 3. E-step strategies on data from a PPCA model", "",
           "The same linear decoder trained by each strategy for the same wall time; its exact "
           "held-out log-likelihood, and the gap to the maximum-likelihood (EM) optimum.", "",
           exp.md, ""]
    budget = 3.0 if quick else 15.0
    say(f"4/4 E-step strategies with the conv decoder on {ds.name} ({budget:g} s each)")
    # dynamic binarisation, as the study's default (lgm estep-bench): the grey images go in and
    # are drawn anew as Bernoulli(grey level) at every read
    exp = compare_estep("mnist", budget_s=budget, n_evals=2 if quick else 3, out_dir=out,
                        data=ds, binarize="dynamic", final="iwae",
                        n_samples_final=100 if quick else 1000,
                        n_samples_curve=20 if quick else 50, n_test=50 if quick else 100,
                        eval_steps=30 if quick else 100, say=say)
    md += ["## 4. E-step strategies with a convolutional decoder", "",
           "Each strategy trains the same conv decoder (and, where it has one, an encoder) for the "
           "same wall time; held-out log-likelihood by importance sampling with each strategy's best "
           "proposal: the encoder (amortized, iwae), a per-point Gaussian fitted on the test images "
           f"with the decoder fixed (meanfield, {30 if quick else 100} Adam steps), a Gaussian "
           f"moment-matched to MALA chains run on the test images (mcmc, {30 if quick else 100} "
           "moves). The proposal-free comparison (AIS), with seeds, longer budgets and what "
           "scales with N, is `lgm estep-bench`.", "", exp.md, "",
           "Per-point state: mean-field keeps 6 numbers per latent dimension and data point "
           "(grows with N); MCMC keeps its chains and step sizes; amortized and IWAE keep none "
           "beyond the encoder's weights.", ""]
    total = time.perf_counter() - t_start
    md += [f"Total time: {total:.0f} s."]
    write_atomic(out / "report.md", "\n".join(md) + "\n")
    say(f"report written to {out / 'report.md'} ({total:.0f} s)")
    return out
