"""`lgm fit` / `lgm score`: fit a model to a user's data file, save it (atomic .npz, no pickle),
load it back and score new data. Front layer: it reads files, prints, shows progress."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .data import load_array
from ..io import load_npz, pack_json, save_npz_atomic, unpack_json

MODELS = ("ppca", "fa", "vae-mlp", "vae-conv")
VAE_STRATEGIES = ("amortized", "iwae", "mcmc", "meanfield")


class UsageError(ValueError):
    """A problem with the user's files or options (the CLI prints it and exits with 2)."""


def _load_data(path, key, scale, what):
    try:
        X = load_array(path, key=key)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"{what}: {exc}") from None
    if scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise UsageError(f"--scale: expected a finite number > 0, got {scale}")
        X = X / scale
    if np.isinf(X).any():
        raise UsageError(f"{what} {str(path)!r}: contains inf")
    return X


def _writable(out):
    """--out must be writable: checked before the work, not after it."""
    from ..io import check_writable

    try:
        check_writable(out, "--out")
    except OSError as exc:
        raise UsageError(str(exc)) from None


def fit(data, *, model="ppca", out="model.npz", components=16, strategy=None, likelihood="bernoulli",
        epochs=None, steps=5000, batch_size=128, lr=1e-3, image_shape=None, scale=None,
        binarize=False, key=None, seed=0, force=False, progress=None, say=print):
    """Fit ``model`` to the rows of the data file and save it to ``out``; returns the path.

    A VAE trains for ``steps`` optimisation steps (rounded up to whole epochs; 30 epochs of a
    500-row file were 120 steps, far from trained), or ``epochs`` when given; a warning says so
    when the training loss is still falling fast at the end."""
    if model not in MODELS:
        raise UsageError(f"--model: expected one of {MODELS}, got {model!r}")
    out = Path(out)
    if out.suffix != ".npz":
        raise UsageError(f"--out: expected a file name ending in .npz, got {str(out)!r}")
    if out.exists() and not force:
        raise UsageError(f"{str(out)!r} exists; choose another --out or pass --force to replace it")
    _writable(out)
    if isinstance(components, bool) or int(components) != components or components < 1:
        raise UsageError(f"--components: expected a positive number of latent dimensions, got {components}")
    if model not in ("ppca", "fa") and epochs is not None and epochs < 1:
        raise UsageError(f"--epochs: expected a positive number of epochs, got {epochs}")
    if model not in ("ppca", "fa") and epochs is None and (steps is None or steps < 1):
        raise UsageError(f"--steps: expected a positive number of optimisation steps, got {steps}")
    X = _load_data(data, key, scale, "data file")
    N, D = X.shape
    if model in ("ppca", "fa"):
        from ..models.linear import PPCA, FactorAnalysis

        if strategy not in (None, "exact"):
            raise UsageError(f"--strategy: linear models use the exact E-step, got {strategy!r}")
        q = int(components)
        if not 1 <= q < D:
            raise UsageError(f"--components: expected 1 <= q < {D} (the number of features), got {q}")
        missing = np.isnan(X).any()
        if model == "ppca":
            est = PPCA(q, method="em" if missing else "closed_form", random_state=seed)
            if missing:
                say("the data have missing values (NaN): PPCA by EM on the observed entries")
        else:
            est = FactorAnalysis(q, random_state=seed)
        try:
            est.fit(X)
        except ValueError as exc:
            raise UsageError(f"fit: {exc}") from None
        psi = np.broadcast_to(np.asarray(est.noise_variance_, np.float64), (D,))
        spec = {"kind": model, "n_components": q, "D": D,
                "method": getattr(est, "method", "em"), "n_iter": int(est.n_iter_)}
        save_npz_atomic(out, spec=pack_json(spec), W=est.W_, mean=est.mean_, psi=psi)
        ll = float(est.score_samples(X).mean()) if not missing else float(est.loglike_[-1])
        say(f"{model}: q = {q}, training log-likelihood {ll:.3f} per row; saved {out}")
        return out
    # neural models
    strategy = strategy or "amortized"
    if strategy not in VAE_STRATEGIES:
        raise UsageError(f"--strategy: expected one of {VAE_STRATEGIES} for a VAE, got {strategy!r}")
    if np.isnan(X).any():
        raise UsageError("data file: contains NaN; the neural models need complete data "
                         "(the linear models, --model ppca or fa, handle missing values)")
    if binarize:
        X = (X > 0.5).astype(np.float64)
    if likelihood == "bernoulli" and (X.min() < 0 or X.max() > 1):
        raise UsageError(f"a Bernoulli decoder needs data in [0, 1], got [{X.min():g}, {X.max():g}]; "
                         "rescale with --scale (e.g. 255 for 8-bit images) or use --likelihood gaussian")
    X = X.astype(np.float32)
    from ..models.vae import conv_vae, mlp_vae

    if model == "vae-conv":
        if image_shape is None:
            side = int(round(np.sqrt(D)))
            if side * side != D:
                raise UsageError(f"--image-shape is needed: {D} features are not a square image")
            image_shape = (side, side, 1)
        if int(np.prod(image_shape)) != D:
            raise UsageError(f"--image-shape {image_shape} has {int(np.prod(image_shape))} pixels, "
                             f"the data have {D} features")
        try:
            m = conv_vae(image_shape, latent_dim=components, likelihood=likelihood, seed=seed)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        m = mlp_vae(D=D, hidden=400, latent_dim=components, likelihood=likelihood, seed=seed)
    if epochs is None:
        epochs = -(-int(steps) // -(-N // batch_size))
    losses = []  # every step's training loss, to tell whether it has levelled off

    def on_loss(loss):
        losses.append(float(loss))
        if progress:
            progress(1, float(loss))

    if strategy in ("amortized", "iwae"):
        from ..models.vae import train

        hist = train(m, X, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                     objective="elbo" if strategy == "amortized" else "iwae",
                     n_samples=1 if strategy == "amortized" else 5,
                     callback=lambda e, s, n, loss: on_loss(loss))
        final = hist[-1]
    else:
        from ..estep import make_strategy
        from ..models.training import minibatch_loop

        st = make_strategy(strategy, lr=lr, seed=seed)
        st.setup(m, X)
        epoch_means = []
        minibatch_loop(lambda idx: st.iteration(m, X, idx), N, rng=np.random.default_rng(seed),
                       batch_size=batch_size, epochs=epochs,
                       on_step=lambda s: on_loss(s.loss),
                       on_epoch=lambda s, mean_loss: epoch_means.append(mean_loss))
        final = epoch_means[-1] if epoch_means else float("nan")
    _warn_if_still_falling(losses, say)
    m.save(out, extra={"fit": pack_json({"strategy": strategy, "epochs": epochs,
                                          "binarize": bool(binarize), "scale": scale})})
    say(f"{model} ({likelihood}, d = {components}, {strategy}): final training loss {final:.3f} "
        f"nats per row; saved {out}")
    return out


def still_falling(losses, window=0.2, threshold=0.01):
    """(True, drop) when the mean loss of the last ``window`` of the steps is lower than that of
    the window before by more than ``threshold`` of its magnitude (and 0.05 nats): training has
    not levelled off. Minibatch noise is averaged out by the windows."""
    n = max(1, int(len(losses) * window))
    if len(losses) < 4 * n or len(losses) < 20:
        return False, 0.0
    last, before = float(np.mean(losses[-n:])), float(np.mean(losses[-2 * n:-n]))
    drop = before - last
    return drop > max(threshold * abs(last), 0.05), drop


def _warn_if_still_falling(losses, say):
    falling, drop = still_falling(losses)
    if falling:
        say(f"warning: the training loss was still falling fast at the end ({drop:.2f} nats per "
            f"row over the last 20 % of {len(losses)} steps): pass more --steps (or --epochs)")


def load(path):
    """A model file written by :func:`fit`: ('linear', estimator, spec) or ('vae', model, info).
    Every problem with the file is one UsageError naming it."""
    try:
        arrays = load_npz(path)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"model file: {exc}") from None
    if "spec" not in arrays:
        raise UsageError(f"{str(path)!r} is not an lgm model file (no 'spec'); expected a file "
                         "written by `lgm fit`")
    try:
        spec = unpack_json(arrays["spec"])
        if spec.get("kind") in ("ppca", "fa"):
            from ..models.linear import PPCA, FactorAnalysis

            cls = PPCA if spec["kind"] == "ppca" else FactorAnalysis
            psi = arrays["psi"]
            est = cls.from_params(arrays["W"], arrays["mean"],
                                  psi[0] if spec["kind"] == "ppca" else psi, n_iter=spec["n_iter"])
            for name in ("W_", "mean_"):
                if not np.all(np.isfinite(getattr(est, name))):
                    raise ValueError(f"{name[:-1]} is not finite (NaN or inf)")
            return "linear", est, spec
        from ..models.vae import load_model

        info = unpack_json(arrays["fit"]) if "fit" in arrays else {"strategy": "amortized"}
        return "vae", load_model(path), info
    except (KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{str(path)!r}: not a usable lgm model file (missing or malformed "
                         f"entry {exc})") from None
    except ValueError as exc:
        msg = str(exc)
        raise UsageError(msg if str(path) in msg else f"{str(path)!r}: not a usable lgm model file "
                         f"({msg})") from None


def score(data, model_file, *, n_samples=1000, key=None, out=None, seed=0, force=False, say=print):
    """Per-row log-likelihood of the data under a saved model; returns the array."""
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
        raise UsageError(f"--samples: expected a positive number of importance samples, got {n_samples}")
    if out is not None:
        out = Path(out)
        if out.is_dir():
            raise UsageError(f"--out: {str(out)!r} is a directory; expected a file name")
        if out.exists() and not force:
            raise UsageError(f"{str(out)!r} exists; choose another --out or pass --force")
        _writable(out)
    kind, model, info = load(model_file)
    scale = None if kind == "linear" else info.get("scale")
    X = _load_data(data, key, scale, "data file")
    D = model.n_features_in_ if kind == "linear" else model.D
    if X.shape[1] != D:
        raise UsageError(f"the model expects rows of {D} features; {str(data)!r} has {X.shape[1]}")
    if kind == "linear":
        ll = model.score_samples(X)  # NaN entries are marginalised out exactly
        how = "exact"
    else:
        if np.isnan(X).any():
            raise UsageError("data file: contains NaN; a VAE cannot score incomplete rows")
        if info.get("binarize"):
            X = (X > 0.5).astype(np.float64)
        if model.likelihood == "bernoulli" and (X.min() < 0 or X.max() > 1):
            raise UsageError(f"the model's Bernoulli decoder needs data in [0, 1], got "
                             f"[{X.min():g}, {X.max():g}]")
        X = X.astype(model.dtype)
        prop = None
        if info["strategy"] in ("mcmc", "meanfield"):
            from ..estep import make_strategy

            st = make_strategy(info["strategy"], seed=seed)
            st.rng = np.random.default_rng(seed)
            prop = st.proposal(model, X)
        ll = model.log_likelihood(X, n_samples=n_samples, seed=seed, proposal=prop)
        how = f"importance sampling, S = {n_samples} samples, proposal: " + (
            "encoder" if prop is None else f"{info['strategy']} fit on these rows")
    say(f"mean log-likelihood {float(np.mean(ll)):.4f} nats per row over {len(ll)} rows ({how})")
    if out is not None:
        from ..io import write_atomic

        write_atomic(out, "log_likelihood\n" + "\n".join(f"{v:.10g}" for v in np.asarray(ll)) + "\n")
        say(f"wrote {out}")
    return np.asarray(ll)
