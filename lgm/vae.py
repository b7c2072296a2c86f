"""Neural continuous mixtures p(x) = ∫ p(x | t, w) N(t | 0, I) dt with a decoder network, trained by
amortized variational inference (VAE, Kingma & Welling 2014) or the importance-weighted bound
(IWAE, Burda et al. 2016), every gradient written by hand on top of the fused kernels.

Gradients of the objectives (t = mu_t + e^{logvar_t/2} eps, eps ~ N(0, I) held fixed):

* ELBO = mean_s log p(x | t_s) - KL(q || N(0, I)), KL in closed form (Kingma & Welling 2014,
  App. B). The decoder gets d log p / d(mu_x, logvar_x | logits) from the fused log-density
  gradient kernel (per-row weight -1/(S B), so the gradient is that of the minibatch loss).
* IWAE_K = logsumexp_s log w_s - log K, log w = log p(x|t) + log p(t) - log q(t|x) (the fused
  ``importance_log_weights`` kernel). d IWAE = sum_s w~_s d log w_s with w~ = softmax(log w):
  the same gradient kernel with per-row weights w~; d log p(t)/dt = -t; and, through the
  reparameterisation, log q = const - 1/2 sum logvar_t, so d(-log q)/d logvar_t = +1/2.

Decoder variance guard (Gaussian): logvar_x = logaddexp(h, log var_floor), i.e.
sigma² = var_floor + e^h. On pixel data many pixels are exactly 0 in every image; without a floor
their variance goes to 0 and the log-density to +inf (the Gaussian likelihood is unbounded). A
smooth floor keeps the gradient non-zero everywhere (a hard clip would kill it); the default
var_floor = 1e-3 (sigma >= 0.032, about 8 grey levels of 255) bounds each pixel's log-density by
-1/2 log(2 pi 1e-3) = 2.53 nats.
"""

from __future__ import annotations

import math
import time

import numpy as np

from . import ops
from .io import load_npz, pack_json, save_npz_atomic, unpack_json
from .nn import (Adam, ConstantLogvar, Conv2d, ConvTranspose2d, Linear, Params, Reshape, Sequential,
                 array_module, serial_kernels)

__all__ = ["VAE", "mlp_vae", "conv_vae", "linear_vae", "train", "load_model"]

LIKELIHOODS = ("bernoulli", "gaussian")


class VAE:
    """Encoder q(t | x) = N(mu_t, diag e^logvar_t) and decoder p(x | t) (Bernoulli logits, or
    Gaussian mu and floored logvar), parameters in one :class:`lgm.nn.Params`.

    Build with :func:`mlp_vae` or :func:`conv_vae`; data are rows x of shape (N, D) in [0, 1].
    """

    def __init__(self, spec, encoder, decoder, params, enc_in_shape, dec_out_shape, D, C):
        self.spec, self.encoder, self.decoder, self.params = spec, encoder, decoder, params
        self.enc_in_shape, self.dec_out_shape, self.D, self.C = enc_in_shape, dec_out_shape, D, C
        self.latent_dim = int(spec["latent_dim"])
        self.likelihood = spec["likelihood"]
        self.log_var_floor = math.log(spec["var_floor"]) if self.likelihood == "gaussian" else None

    @property
    def dtype(self):
        return self.params.dtype

    def to(self, device):
        """Move the parameters to "cpu" (numpy) or "gpu" (cupy); returns self. Data passed to
        the model must then live on the same device."""
        if device not in ("cpu", "gpu"):
            raise ValueError(f"VAE.to: expected device 'cpu' or 'gpu', got {device!r}")
        if device == "gpu":
            import cupy

            self.params.to(cupy)
        else:
            self.params.to(np)
        return self

    # --- validation ---------------------------------------------------------------------------
    def _check_x(self, x, fname):
        xp = array_module(x)
        if not hasattr(x, "dtype") or x.dtype != self.dtype:
            raise TypeError(f"{fname}: expected x of dtype {self.dtype} (the model's), got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 2 or x.shape[1] != self.D or x.shape[0] == 0:
            raise ValueError(f"{fname}: expected x of shape (N >= 1, {self.D}), got {x.shape}")
        if xp is not array_module(self.params.data):
            raise TypeError(f"{fname}: x is a {xp.__name__} array but the model's parameters are "
                            f"{array_module(self.params.data).__name__} arrays")
        if not bool(xp.isfinite(x).all()):
            raise ValueError(f"{fname}: x contains NaN or inf")
        return xp

    # --- networks -----------------------------------------------------------------------------
    def encode(self, x):
        """(mu_t, logvar_t, cache), each (N, d)."""
        h, cache = self.encoder.forward(x.reshape((x.shape[0],) + self.enc_in_shape))
        d = self.latent_dim
        return h[:, :d], h[:, d:], cache

    def _encode_backward(self, dmu, dlv, cache):
        xp = array_module(dmu)
        self.encoder.backward(xp.concatenate([dmu, dlv], axis=1), cache, need_dx=False)

    def decode(self, t):
        """Decoder outputs for latents t (N, d): {'logits'} or {'mu', 'logvar'}, each (N, D)."""
        y, cache = self.decoder.forward(t)
        N = t.shape[0]
        y = y.reshape(N, self.D, self.C)  # channels last: (N, D, C)
        xp = array_module(y)
        if self.likelihood == "bernoulli":
            return {"logits": y.reshape(N, self.D)}, (cache, None)
        h = xp.ascontiguousarray(y[..., 1])
        F = y.dtype.type
        lv = xp.logaddexp(h, F(self.log_var_floor))
        return {"mu": xp.ascontiguousarray(y[..., 0]), "logvar": lv}, (cache, h)

    def _decode_backward(self, grads, cache):
        net_cache, h = cache
        if self.likelihood == "bernoulli":
            dy = grads["logits"]
        else:
            xp = array_module(h)
            F = h.dtype.type
            dy = xp.empty(grads["mu"].shape + (2,), h.dtype)
            dy[..., 0] = grads["mu"]
            # d logaddexp(h, c) / dh = sigmoid(h - c)
            dy[..., 1] = grads["logvar"] / (F(1) + xp.exp(F(self.log_var_floor) - h))
        return self.decoder.backward(dy.reshape((dy.shape[0],) + self.dec_out_shape), net_cache)

    def _loglik_grad(self, x, out, weights):
        """log p(x | t) of shape weights.shape and the weighted gradients wrt the decoder outputs."""
        S, B = weights.shape
        if self.likelihood == "bernoulli":
            v, dl = ops.bernoulli_logpmf_grad(x, out["logits"].reshape(S, B, self.D), weights)
            return v, {"logits": dl.reshape(S * B, self.D)}
        g = ops.diag_gaussian_logpdf_grad(x, out["mu"].reshape(S, B, self.D),
                                          out["logvar"].reshape(S, B, self.D), weights,
                                          wrt=("mu", "logvar"))
        return g.value, {"mu": g.dmu.reshape(S * B, self.D),
                         "logvar": g.dlogvar.reshape(S * B, self.D)}

    def _dec_kwargs(self, out, S, B):
        return {k: v.reshape(S, B, self.D) for k, v in
                (("logits", out.get("logits")), ("mu_x", out.get("mu")),
                 ("logvar_x", out.get("logvar"))) if v is not None}

    # --- objectives ---------------------------------------------------------------------------
    def loss_and_grad(self, x, rng, objective="elbo", n_samples=1):
        """Minibatch loss (the negative bound, averaged over the rows of x) and its gradient,
        accumulated into ``self.params.grad`` (call ``params.zero_grad()`` first).

        Returns a float for numpy data, a 0-d cupy array for cupy data (so that a GPU training
        loop does not wait for the device after every step)."""
        if objective not in ("elbo", "iwae"):
            raise ValueError(f"loss_and_grad: expected objective 'elbo' or 'iwae', got {objective!r}")
        with serial_kernels():
            return self._loss_and_grad(x, rng, objective, n_samples)

    def _loss_and_grad(self, x, rng, objective, n_samples):
        xp = array_module(x)
        S, B, d = int(n_samples), x.shape[0], self.latent_dim
        F = x.dtype.type
        mu_t, lv_t, ecache = self.encode(x)
        mu_t, lv_t = xp.ascontiguousarray(mu_t), xp.ascontiguousarray(lv_t)
        t, eps = ops.reparameterize(mu_t, lv_t, rng, n_samples=S)  # (S, B, d)
        out, dcache = self.decode(t.reshape(S * B, d))
        if objective == "elbo":
            a = xp.full((S, B), F(-1.0 / (S * B)), x.dtype)  # d loss / d log p(x | t_sb)
            lp, g = self._loglik_grad(x, out, a)
            kl, dkl_mu, dkl_lv = ops.kl_diag_std_normal_grad(mu_t, lv_t)
            loss = kl.mean() - lp.mean()
        else:
            log_w = ops.importance_log_weights(x, t, mu_t, lv_t, **self._dec_kwargs(out, S, B))
            loss = -ops.iwae(log_w).mean()
            a = ops.importance_weights(log_w) * F(-1.0 / B)  # (S, B)
            _, g = self._loglik_grad(x, out, a)
        dt = self._decode_backward(g, dcache).reshape(S, B, d)
        if objective == "iwae":
            dt -= a[..., None] * t  # log p(t) = -|t|²/2 + const
        dmu = dt.sum(axis=0)
        dlv = (dt * eps).sum(axis=0) * (F(0.5) * xp.exp(F(0.5) * lv_t))
        if objective == "elbo":
            dmu += dkl_mu * F(1.0 / B)
            dlv += dkl_lv * F(1.0 / B)
        else:
            dlv += F(0.5) * a.sum(axis=0)[:, None]  # -log q = 1/2 sum logvar_t + const
        self._encode_backward(dmu, dlv, ecache)
        self.params.finish_grad()
        # a float on the CPU; a 0-d device array on the GPU (no synchronisation per step)
        return float(loss) if xp is np else loss

    def decoder_grad(self, x, t, a, params=True):
        """log p(x_b | t_sb) of shape (S, B) and the gradient of sum_sb a_sb log p(x_b | t_sb)
        with respect to t, shape (S, B, d); the gradient with respect to the decoder's
        parameters is accumulated too unless ``params=False``. The building block of the
        E-step strategies (Langevin moves, per-point variational updates, M-steps)."""
        S, B, d = t.shape
        out, dc = self.decode(t.reshape(S * B, d))
        lp, g = self._loglik_grad(x, out, a)
        with serial_kernels(), self.params.frozen(not params):
            dt = self._decode_backward(g, dc)
        return lp, dt.reshape(S, B, d)

    def exact_log_likelihood(self, x):
        """log p(x) in closed form for a linear decoder (``linear_vae``): N(b, W^T W + diag psi)."""
        if self.spec["kind"] != "linear":
            raise ValueError("exact_log_likelihood: only a linear decoder has a closed form")
        from .lowrank import lowrank_gaussian_logpdf

        W, b, psi = self.linear_decoder()
        return lowrank_gaussian_logpdf(x, b, W, psi)

    def linear_decoder(self):
        """(W (D, d), mean (D,), psi (D,)) of a linear decoder, as host arrays."""
        from ._validate import to_host

        v = self.params.views
        W = to_host(v["dec.W"]).T.copy()
        b = to_host(v["dec.b"]).copy()
        c = to_host(v["dec.logvar"]).astype(np.float64)
        psi = np.exp(np.logaddexp(c, self.log_var_floor)) * np.ones(self.D)
        return W, b, psi.astype(self.dtype)

    def log_likelihood(self, x, n_samples=1000, batch_size=100, max_rows=2048, seed=0,
                       callback=None, proposal=None):
        """Importance-sampling estimate of log p(x) per row, with q(t | x) from the encoder as the
        proposal: logsumexp over K = ``n_samples`` draws of log w, minus log K (IWAE_K, a lower
        bound in expectation that tightens as K grows).

        Memory stays bounded: rows are taken ``batch_size`` at a time and samples in chunks of
        ``max_rows // batch_size`` (so at most ``max_rows`` decoder rows live at once: for the conv
        decoder on 28x28 images its largest temporary is ~100 kB per row, 200 MB at the default);
        the chunks are merged by an online logsumexp. Returns an array (N,) in the data's dtype.

        ``proposal=(mu_t, logvar_t)``, arrays (N, d), replaces the encoder (e.g. a per-point
        Gaussian fitted by mean-field VI or moment-matched to MCMC samples).
        """
        fname = "log_likelihood"
        xp = self._check_x(x, fname)
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"{fname}: expected n_samples to be a positive int, got {n_samples!r}")
        if proposal is not None:
            mu_p, lv_p = proposal
            for n, a in (("proposal mean", mu_p), ("proposal logvar", lv_p)):
                if getattr(a, "shape", None) != (x.shape[0], self.latent_dim) or a.dtype != x.dtype:
                    raise ValueError(f"{fname}: expected {n} of shape {(x.shape[0], self.latent_dim)} "
                                     f"and dtype {x.dtype}, got {getattr(a, 'shape', None)} "
                                     f"{getattr(a, 'dtype', None)}")
        with serial_kernels():
            return self._log_likelihood(x, xp, n_samples, batch_size, max_rows, seed, callback,
                                        proposal)

    def _log_likelihood(self, x, xp, n_samples, batch_size, max_rows, seed, callback, proposal):
        rng = np.random.default_rng(seed)
        N, d = x.shape[0], self.latent_dim
        out = xp.empty(N, x.dtype)
        batch_size = max(1, min(batch_size, max_rows))
        for i in range(0, N, batch_size):
            xb = x[i:i + batch_size]
            B = xb.shape[0]
            chunk = max(1, max_rows // B)
            if proposal is None:
                mu_t, lv_t, _ = self.encode(xb)
            else:
                mu_t, lv_t = proposal[0][i:i + B], proposal[1][i:i + B]
            mu_t, lv_t = xp.ascontiguousarray(mu_t), xp.ascontiguousarray(lv_t)
            lse = xp.full(B, -np.inf, x.dtype)
            for k0 in range(0, n_samples, chunk):
                k = min(chunk, n_samples - k0)
                t, _ = ops.reparameterize(mu_t, lv_t, rng, n_samples=k)
                dec, _ = self.decode(t.reshape(k * B, d))
                lw = ops.importance_log_weights(xb, t, mu_t, lv_t, **self._dec_kwargs(dec, k, B))
                lse = ops.logsumexp(xp.stack([lse, ops.logsumexp(lw, axis=0)]), axis=0)
            out[i:i + B] = lse - x.dtype.type(math.log(n_samples))
            if callback is not None:
                callback(i + B, N)
        return out

    def elbo(self, x, n_samples=1, seed=0):
        """Monte Carlo ELBO per row (closed-form KL)."""
        xp = self._check_x(x, "elbo")
        rng = np.random.default_rng(seed)
        mu_t, lv_t, _ = self.encode(x)
        mu_t, lv_t = xp.ascontiguousarray(mu_t), xp.ascontiguousarray(lv_t)
        t, _ = ops.reparameterize(mu_t, lv_t, rng, n_samples=n_samples)
        dec, _ = self.decode(t.reshape(-1, self.latent_dim))
        S, B = n_samples, x.shape[0]
        if self.likelihood == "bernoulli":
            lp = ops.bernoulli_logpmf(x, dec["logits"].reshape(S, B, self.D))
        else:
            lp = ops.diag_gaussian_logpdf(x, dec["mu"].reshape(S, B, self.D),
                                          dec["logvar"].reshape(S, B, self.D))
        return lp.mean(axis=0) - ops.kl_diag_std_normal(mu_t, lv_t)

    def mean(self, t):
        """E[x | t]: sigmoid(logits) or mu, shape (N, D)."""
        out, _ = self.decode(t)
        if self.likelihood == "bernoulli":
            xp = array_module(t)
            return 1 / (1 + xp.exp(-out["logits"]))
        return out["mu"]

    def sample(self, n, seed=0):
        """Means E[x | t] at n draws t ~ N(0, I)."""
        t = np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype(self.dtype)
        return self.mean(array_module(self.params.data).asarray(t))

    def reconstruct(self, x):
        """E[x | t = mu_t(x)]."""
        mu_t, _, _ = self.encode(x)
        return self.mean(array_module(x).ascontiguousarray(mu_t))

    def transform(self, x):
        """Posterior means mu_t(x), shape (N, d)."""
        return self.encode(x)[0]

    # --- files --------------------------------------------------------------------------------
    def save(self, path, extra=None):
        """Write the model (architecture and parameters, plus ``extra`` arrays) to an .npz file,
        atomically, no pickle. Training checkpoints are such files with the optimiser's state
        and a ``meta`` document added."""
        arrays = {"param/" + k: v for k, v in self.params.state().items()}
        return save_npz_atomic(path, spec=pack_json(self.spec), **arrays, **(extra or {}))

    def _load_params(self, arrays):
        """Parameters from the arrays of a file written by :meth:`save`."""
        self.params.load_state({k[6:]: v for k, v in arrays.items() if k.startswith("param/")})


def _spec(kind, likelihood, latent_dim, dtype, var_floor, seed, **kw):
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"expected likelihood in {LIKELIHOODS}, got {likelihood!r}")
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, (int, np.integer)) or latent_dim < 1:
        raise ValueError(f"expected latent_dim to be a positive int, got {latent_dim!r}")
    if not (isinstance(var_floor, (int, float)) and var_floor > 0):
        raise ValueError(f"expected var_floor > 0, got {var_floor!r}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"expected dtype float32 or float64, got {dtype}")
    return dict(kind=kind, likelihood=likelihood, latent_dim=int(latent_dim), dtype=dtype.name,
                var_floor=float(var_floor), seed=int(seed), **kw)


def mlp_vae(D=784, hidden=400, latent_dim=20, likelihood="bernoulli", dtype=np.float32,
            var_floor=1e-3, seed=0):
    """MLP VAE: encoder D-hidden-2d (ReLU), decoder d-hidden-(D or 2D) (ReLU)."""
    spec = _spec("mlp", likelihood, latent_dim, dtype, var_floor, seed, D=int(D), hidden=int(hidden))
    return _build(spec)


def linear_vae(D, latent_dim, dtype=np.float64, var_floor=1e-300, seed=0, isotropic=False):
    """Linear Gaussian decoder p(x | t) = N(W^T t + b, diag e^c), c constant in t (one value
    with ``isotropic=True``: PPCA; one per feature: factor analysis), with a linear encoder.
    Decoder parameters: ``dec.W`` (d, D), ``dec.b`` (D,), ``dec.logvar`` (1,) or (D,) (before
    the variance floor). Its exact log-likelihood is :meth:`VAE.exact_log_likelihood`."""
    spec = _spec("linear", "gaussian", latent_dim, dtype, var_floor, seed, D=int(D),
                 isotropic=bool(isotropic))
    return _build(spec)


def conv_vae(image_shape=(28, 28, 1), latent_dim=20, likelihood="bernoulli", dtype=np.float32,
             var_floor=1e-3, seed=0, channels=(32, 64)):
    """Conv VAE for (H, W, C) images, H and W divisible by 4 (NHWC).

    Encoder: Conv C→c1 (4, stride 2, pad 1), ReLU, Conv c1→c2 (4, 2, 1), ReLU, Linear → 2d.
    Decoder: Linear d → c2·(H/4)·(W/4), ReLU, ConvTranspose c2→c1 (4, 2, 1), ReLU,
    ConvTranspose c1→C·k (4, 2, 1) with k = 1 (Bernoulli logits) or 2 (Gaussian mu, logvar).
    """
    H, W, C = (int(s) for s in image_shape)
    if H % 4 or W % 4:
        raise ValueError(f"conv_vae: expected image height and width divisible by 4, got {(H, W)}")
    spec = _spec("conv", likelihood, latent_dim, dtype, var_floor, seed,
                 image_shape=[H, W, C], channels=[int(c) for c in channels])
    return _build(spec)


def _build(spec):
    P = Params(spec["dtype"])
    d, lik = spec["latent_dim"], spec["likelihood"]
    k = 1 if lik == "bernoulli" else 2
    if spec["kind"] == "mlp":
        D, h = spec["D"], spec["hidden"]
        enc = Sequential(Linear(P, "enc.fc1", D, h, relu=True), Linear(P, "enc.fc2", h, 2 * d))
        dec = Sequential(Linear(P, "dec.fc1", d, h, relu=True), Linear(P, "dec.fc2", h, k * D))
        enc_in, C, dec_out = (D,), k, (k * D,)
    elif spec["kind"] == "linear":
        D = spec["D"]
        enc = Sequential(Linear(P, "enc", D, 2 * d))
        dec = Sequential(Linear(P, "dec", d, D),
                         ConstantLogvar(P, "dec.logvar", D, shared=spec.get("isotropic", False)))
        enc_in, C, dec_out = (D,), 2, (2 * D,)
    elif spec["kind"] == "conv":
        H, W, Ci = spec["image_shape"]
        c1, c2 = spec["channels"]
        h4, w4 = H // 4, W // 4
        D = H * W * Ci
        # ReLU fused into the preceding layer (relu=True): one pass for bias + activation
        enc = Sequential(Conv2d(P, "enc.conv1", Ci, c1, 4, 2, 1, relu=True),
                         Conv2d(P, "enc.conv2", c1, c2, 4, 2, 1, relu=True),
                         Reshape((h4 * w4 * c2,)), Linear(P, "enc.fc", h4 * w4 * c2, 2 * d))
        dec = Sequential(Linear(P, "dec.fc", d, h4 * w4 * c2, relu=True), Reshape((h4, w4, c2)),
                         ConvTranspose2d(P, "dec.deconv1", c2, c1, 4, 2, 1, relu=True),
                         ConvTranspose2d(P, "dec.deconv2", c1, Ci * k, 4, 2, 1))
        # the channels-last output (N, H, W, Ci·k) is read as (N, D, k): the k outputs of one
        # pixel-channel are adjacent
        enc_in, C, dec_out = (H, W, Ci), k, (H, W, Ci * k)
    else:
        raise ValueError(f"unknown model kind {spec['kind']!r}")
    P.build(seed=spec["seed"])
    return VAE(spec, enc, dec, P, enc_in, dec_out, D, C)


def load_model(path):
    """A VAE saved by :meth:`VAE.save` (or a training checkpoint)."""
    arrays = load_npz(path)
    if "spec" not in arrays:
        raise ValueError(f"load_model: {str(path)!r} is not an lgm model file (no 'spec')")
    model = _build(unpack_json(arrays["spec"]))
    model._load_params(arrays)
    return model


# --- training -----------------------------------------------------------------------------------
def train(model, X, *, epochs=10, batch_size=128, lr=1e-3, objective="elbo", n_samples=1,
          seed=0, checkpoint=None, resume=False, callback=None):
    """Minibatch training with Adam, seeded and reproducible.

    Each epoch shuffles X with a generator seeded by ``seed``; the same generator draws the
    reparameterisation noise. With ``checkpoint`` (an .npz path) the complete state — parameters,
    Adam moments and step, generator state, epoch and loss history — is written atomically after
    every epoch; ``resume=True`` continues from it, giving the same losses as an uninterrupted run.
    ``callback(epoch, step, n_steps, loss)`` is called after every step (progress bars live in
    the caller). Returns the list of mean training losses per epoch (negative bound, nats).
    """
    xp = model._check_x(X, "train")
    if objective not in ("elbo", "iwae"):
        raise ValueError(f"train: expected objective 'elbo' or 'iwae', got {objective!r}")
    rng = np.random.default_rng(seed)
    opt = Adam(model.params, lr=lr)
    history, epoch0 = [], 0
    if resume:
        if checkpoint is None:
            raise ValueError("train: resume=True needs a checkpoint path")
        from pathlib import Path

        if Path(checkpoint).exists():
            st = load_npz(checkpoint)
            meta = unpack_json(st["meta"])
            if meta["spec"] != _json_spec(model.spec):
                raise ValueError(f"train: checkpoint {str(checkpoint)!r} is for another model")
            model._load_params(st)
            opt.load_state({"m": st["adam/m"], "v": st["adam/v"], "t": st["adam/t"]})
            rng.bit_generator.state = meta["rng"]
            history, epoch0 = list(meta["history"]), int(meta["epoch"])
    with serial_kernels():
        return _train_loop(model, X, xp, rng, opt, history, epoch0, epochs, batch_size, objective,
                           n_samples, checkpoint, callback)


def _train_loop(model, X, xp, rng, opt, history, epoch0, epochs, batch_size, objective, n_samples,
                checkpoint, callback):
    N = X.shape[0]
    n_steps = -(-N // batch_size)
    for epoch in range(epoch0, epochs):
        perm = rng.permutation(N)
        total = 0.0
        for s in range(n_steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            xb = X[xp.asarray(idx)] if xp is not np else X[idx]
            model.params.zero_grad()
            loss = model.loss_and_grad(xb, rng, objective, n_samples)
            opt.step()
            total += loss * len(idx)
            if callback is not None:
                callback(epoch, s, n_steps, loss)
        history.append(float(total) / N)
        if checkpoint is not None:
            meta = dict(spec=_json_spec(model.spec), rng=rng.bit_generator.state,
                        history=history, epoch=epoch + 1, time=time.time())
            ad = opt.state()
            model.save(checkpoint, extra={"meta": pack_json(meta), "adam/m": ad["m"],
                                          "adam/v": ad["v"], "adam/t": ad["t"]})
    return history


def _json_spec(spec):
    """The architecture part of a spec, as JSON reads it back (the init seed is not part of it:
    a checkpoint's parameters replace the initial ones)."""
    import json

    return json.loads(json.dumps({k: v for k, v in spec.items() if k != "seed"}))
