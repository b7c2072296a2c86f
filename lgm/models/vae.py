"""Neural continuous mixtures p(x) = ∫ p(x | t, w) N(t | 0, I) dt with a decoder network, trained by
amortized variational inference (VAE, Kingma & Welling 2014) or the importance-weighted bound
(IWAE, Burda et al. 2016), every gradient written by hand on top of the fused kernels.

Gradients of the objectives (t = mu_t + e^{logvar_t/2} eps, eps ~ N(0, I) held fixed):

* ELBO = mean_s log p(x | t_s) - KL(q || N(0, I)), KL in closed form (Kingma & Welling 2014,
  App. B). The decoder gets d log p / d(mu_x, logvar_x | logits) from the fused log-density
  gradient kernel (per-row weight -1/(S B), so the gradient is that of the minibatch loss).
* IWAE_S = logsumexp_s log w_s - log S, log w = log p(x|t) + log p(t) - log q(t|x) (the fused
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

import functools
import math
import time

import numpy as np

from .. import ops
from ..io import check_writable, load_npz, pack_json, save_npz_atomic, unpack_json
from ..lowrank import lowrank_gaussian_logpdf
from ..ops import backend_for, backend_of, is_dask
from .heads import LIKELIHOODS, make_head
from .nn import Adam, ConstantLogvar, Conv2d, ConvTranspose2d, Linear, Params, Reshape, Sequential
from .training import minibatch_loop, take_rows

__all__ = ["VAE", "mlp_vae", "conv_vae", "linear_vae", "train", "load_model", "map_row_blocks"]


_HALF_MIN_ROWS = 16  # a conv model's minibatch is cut in two halves from 2 x 16 rows (VAE._cut)


def _model_work(method):
    """Run a public method of the model inside its device's threading policy (one thread for
    lgm's Numba kernels between BLAS calls on the CPU; see lgm.ops.Backend.threads)."""
    @functools.wraps(method)
    def wrapped(self, *args, **kw):
        with self.params.backend.threads():
            return method(self, *args, **kw)
    return wrapped


class VAE:
    """Encoder q(t | x) = N(mu_t, diag e^logvar_t) and decoder p(x | t) (a likelihood head:
    Bernoulli logits, or Gaussian mu and floored logvar), parameters in one
    :class:`lgm.nn.Params`.

    Build with :func:`mlp_vae`, :func:`conv_vae` or :func:`linear_vae`; data are rows x of shape
    (N, D) (in [0, 1] for a Bernoulli decoder), of the model's dtype, on the parameters' device.

    Attributes
    ----------
    spec : dict — the architecture (what :func:`load_model` rebuilds from).
    params : lgm.nn.Params — every parameter and its gradient, one flat buffer.
    head : BernoulliHead or GaussianHead (lgm.models.heads).
    D : int — the data dimension; latent_dim : int — d; likelihood : str.
    """

    def __init__(self, spec, encoder, decoder, params, enc_in_shape, dec_out_shape, D):
        self.spec, self.encoder, self.decoder, self.params = spec, encoder, decoder, params
        self.enc_in_shape, self.dec_out_shape, self.D = enc_in_shape, dec_out_shape, D
        self.latent_dim = int(spec["latent_dim"])
        self.likelihood = spec["likelihood"]
        self.head = make_head(self.likelihood, spec["var_floor"])

    @property
    def dtype(self):
        return self.params.dtype

    @property
    def log_var_floor(self):
        """log of the Gaussian decoder's variance floor (None for a Bernoulli decoder)."""
        return getattr(self.head, "log_var_floor", None)

    def copy(self):
        """An independent model with the same architecture and parameters (same device)."""
        twin = _build(self.spec)
        twin.params.to(self.params.backend.xp)
        twin.params.data[...] = self.params.data
        return twin

    def to(self, device):
        """Move the parameters to "cpu" (numpy) or "gpu" (cupy); returns self. Data passed to
        the model must then live on the same device."""
        if device not in ("cpu", "gpu"):
            raise ValueError(f"VAE.to: expected device 'cpu' or 'gpu', got {device!r}")
        self.params.to(backend_for(device).xp)
        return self

    # --- validation ---------------------------------------------------------------------------
    def _check_x(self, x, fname):
        if not hasattr(x, "dtype") or x.dtype != self.dtype:
            raise TypeError(f"{fname}: expected x of dtype {self.dtype} (the model's), got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 2 or x.shape[1] != self.D or x.shape[0] == 0:
            raise ValueError(f"{fname}: expected x of shape (N >= 1, {self.D}), got {x.shape}")
        be, mine = backend_of(x), self.params.backend
        if be is not mine:
            raise TypeError(f"{fname}: x is a {be.name} array but the model's parameters are "
                            f"{mine.name} arrays")
        if not bool(be.xp.isfinite(x).all()):
            raise ValueError(f"{fname}: x contains NaN or inf")
        if self.head.name == "bernoulli" and (bool((x < 0).any()) or bool((x > 1).any())):
            raise ValueError(f"{fname}: a Bernoulli decoder needs x in [0, 1], got values in "
                             f"[{float(x.min()):g}, {float(x.max()):g}]")
        return be.xp

    def _check_proposal(self, x, proposal, fname):
        """A proposal (mu_t, logvar_t) for the rows x: each (N, d) of x's dtype, returned
        C-contiguous (None passes through: the encoder)."""
        if proposal is None:
            return None
        xp = backend_of(x).xp
        out = []
        for n, a in zip(("proposal mean", "proposal logvar"), proposal):
            if getattr(a, "shape", None) != (x.shape[0], self.latent_dim) or a.dtype != x.dtype:
                raise ValueError(f"{fname}: expected {n} of shape {(x.shape[0], self.latent_dim)} "
                                 f"and dtype {x.dtype}, got {getattr(a, 'shape', None)} "
                                 f"{getattr(a, 'dtype', None)}")
            out.append(xp.ascontiguousarray(a))
        return tuple(out)

    # --- networks -----------------------------------------------------------------------------
    def encode(self, x):
        """q(t | x) for rows x (N, D): (mu_t, logvar_t, cache), each (N, d) contiguous."""
        h, cache = self.encoder.forward(x.reshape((x.shape[0],) + self.enc_in_shape))
        d = self.latent_dim
        xp = backend_of(h).xp
        return xp.ascontiguousarray(h[:, :d]), xp.ascontiguousarray(h[:, d:]), cache

    def _encode_backward(self, dmu, dlv, cache):
        xp = backend_of(dmu).xp
        self.encoder.backward(xp.concatenate([dmu, dlv], axis=1), cache, need_dx=False)

    def decode(self, t):
        """Decoder outputs for latents t (N, d): the head's dict ({'logits'} or {'mu', 'logvar'},
        each (N, D)) and the cache for the backward pass."""
        y, net_cache = self.decoder.forward(t)
        out, head_cache = self.head.forward(y.reshape(t.shape[0], self.D, self.head.channels))
        return out, (net_cache, head_cache)

    def _decode_backward(self, grads, cache):
        net_cache, head_cache = cache
        dy = self.head.backward(grads, head_cache)
        return self.decoder.backward(dy.reshape((dy.shape[0],) + self.dec_out_shape), net_cache)

    def _sample(self, x, rng, S, proposal=None, eps=None):
        """encode (or take ``proposal`` = (mu_t, logvar_t)) -> reparameterise S draws (drawn
        from ``rng``, or ``eps`` (S, B, d) given) -> decode: the one path from data to decoder
        outputs. Returns (mu_t, lv_t (B, d), eps, t (S, B, d), decoder outputs, encoder cache
        (None with a proposal), decoder cache)."""
        if proposal is None:
            mu_t, lv_t, ecache = self.encode(x)
        else:
            (mu_t, lv_t), ecache = proposal, None
        t, eps = ops.reparameterize(mu_t, lv_t, rng, n_samples=S, eps=eps)  # (S, B, d)
        out, dcache = self.decode(t.reshape(S * x.shape[0], self.latent_dim))
        return mu_t, lv_t, eps, t, out, ecache, dcache

    # --- a minibatch as two halves, side by side on two cores (CPU) ---------------------------
    # A conv model's step is GEMMs with serial data movement between them (README, "VAE
    # training"); cut in two halves of rows, each half runs through the whole network on its own
    # core (Backend.pair: BLAS on one thread each), the second on a twin that views the same
    # parameters and has its own gradient and scratch buffers, and the gradients are summed.
    # Conv models on the CPU are always cut the same way, also where the halves run one after
    # the other (one free core), so a seed gives the same numbers on any CPU machine. (Not on
    # the GPU: there a half-size launch costs as much as a whole one.)
    def _cut(self, B):
        """Where a minibatch of B rows is cut in two (None: not cut)."""
        if self.spec["kind"] != "conv" or B < 2 * _HALF_MIN_ROWS or self.params.backend.name != "numpy":
            return None
        return B // 2

    def _twin(self):
        """A model of the same architecture viewing this one's parameters (own gradient)."""
        tw = self.__dict__.get("_half_twin")
        if tw is None or tw.params.data is not self.params.data:
            tw = _build(self.spec)
            tw.params.share_data(self.params.data)
            self._half_twin = tw
        return tw

    def _by_rows(self, B, fn):
        """fn(model, rows) over a minibatch of B rows: ``(fn(self, slice(None)),)`` uncut, or,
        cut in two halves by Backend.pair, ``(fn(self, first half), fn(twin, second half))``,
        the twin's gradients then added to this model's (those it received; nothing inside
        ``params.frozen``)."""
        cut = self._cut(B)
        if cut is None:
            return (fn(self, slice(None)),)
        twin = self._twin()

        def on_twin():
            twin.params.zero_grad()
            with twin.params.frozen(self.params.is_frozen):  # frozen as this model is
                return fn(twin, slice(cut, None)), twin.params.touched()

        a, (b, touched) = self.params.backend.pair(lambda: fn(self, slice(None, cut)), on_twin)
        for n in touched:
            self.params.accumulate(n, twin.params.grads[n])
        return a, b

    # --- objectives ---------------------------------------------------------------------------
    @_model_work
    def loss_and_grad(self, x, rng, objective="elbo", n_samples=1):
        """Minibatch loss and its gradient, accumulated into ``self.params.grad`` (call
        ``params.zero_grad()`` first).

        Parameters
        ----------
        x : array (B, D) — the minibatch, on the parameters' device.
        rng : numpy.random.Generator — draws the reparameterisation noise.
        objective : {"elbo", "iwae"} — the negative bound that is the loss.
        n_samples : int — S, draws of t per row.

        Returns
        -------
        The loss (nats per row, averaged over the rows of x): a float for numpy data, a 0-d
        cupy array for cupy data (so that a GPU training loop does not wait for the device
        after every step).
        """
        if objective not in ("elbo", "iwae"):
            raise ValueError(f"loss_and_grad: expected objective 'elbo' or 'iwae', got {objective!r}")
        # the shape only: this runs every step (the trainers check the values of X once, up front)
        if getattr(x, "ndim", None) != 2 or x.shape[0] == 0 or x.shape[1] != self.D:
            raise ValueError(f"loss_and_grad: expected x of shape (B >= 1, {self.D}), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"loss_and_grad: expected n_samples to be a positive int, got {n_samples!r}")
        S, B = int(n_samples), x.shape[0]
        xp = backend_of(x).xp
        # the noise of all rows, drawn once (as reparameterize draws it): each half takes its rows'
        eps = ops.standard_normal(rng, (S, B, self.latent_dim), self.dtype, xp, "loss_and_grad")
        loss = sum(self._by_rows(B, lambda m, r: m._rows_loss(x[r], eps[:, r], objective, B)))
        self.params.finish_grad()
        # a float on the CPU; a 0-d device array on the GPU (no synchronisation per step)
        return float(loss) if self.params.backend.name == "numpy" else loss

    def _rows_loss(self, x, eps, objective, n_rows):
        """The share of rows x in the minibatch loss (their terms / ``n_rows``, the minibatch's
        rows), its gradient accumulated; eps (S, B, d): their noise."""
        S = eps.shape[0]
        mu_t, lv_t, eps, t, out, ecache, dcache = self._sample(x, None, S, eps=eps)
        grad = self._elbo_grad if objective == "elbo" else self._iwae_grad
        loss, dt, dmu, dlv = grad(x, mu_t, lv_t, t, out, dcache, n_rows)
        F = x.dtype.type
        dmu += dt.sum(axis=0)
        dlv += (dt * eps).sum(axis=0) * (F(0.5) * backend_of(x).xp.exp(F(0.5) * lv_t))
        self._encode_backward(dmu, dlv, ecache)
        return loss

    def _elbo_grad(self, x, mu_t, lv_t, t, out, dcache, n_rows):
        """ELBO = mean_s log p(x | t_s) - KL(q || N(0, I)) (closed-form KL, Kingma & Welling
        2014, App. B), summed over the rows / n_rows. Returns (loss, d loss/dt (S, B, d), and
        the KL's d/dmu_t, d/dlv_t)."""
        S, B = t.shape[:2]
        F = x.dtype.type
        a = backend_of(x).xp.full((S, B), F(-1.0 / (S * n_rows)), x.dtype)  # d loss / d log p(x | t_sb)
        lp, g = self.head.loglik_grad(x, out, a)
        kl, dkl_mu, dkl_lv = ops.kl_diag_std_normal_grad(mu_t, lv_t)
        dt = self._decode_backward(g, dcache).reshape(S, B, -1)
        # (sum / n: numpy's mean when the rows are the whole minibatch)
        return kl.sum() / n_rows - lp.sum() / (S * n_rows), dt, dkl_mu * F(1.0 / n_rows), dkl_lv * F(1.0 / n_rows)

    def _iwae_grad(self, x, mu_t, lv_t, t, out, dcache, n_rows):
        """IWAE_S = logsumexp_s log w_s - log S (Burda et al. 2016), summed over the rows /
        n_rows; d IWAE = sum_s w~_s d log w_s with w~ = softmax(log w). Returns (loss, d loss/dt,
        d/dmu_t, d/dlv_t of the terms not through t)."""
        S, B = t.shape[:2]
        F = x.dtype.type
        log_w = ops.importance_log_weights(x, t, mu_t, lv_t, **self.head.bound_kwargs(out, S, B))
        a = ops.importance_weights(log_w) * F(-1.0 / n_rows)  # (S, B)
        _, g = self.head.loglik_grad(x, out, a)
        dt = self._decode_backward(g, dcache).reshape(S, B, -1)
        dt -= a[..., None] * t  # log p(t) = -|t|²/2 + const
        xp = backend_of(x).xp
        # -log q = 1/2 sum logvar_t + const (through the reparameterisation)
        dlv = xp.broadcast_to(F(0.5) * a.sum(axis=0)[:, None], lv_t.shape).copy()
        return -ops.iwae(log_w).sum() / n_rows, dt, xp.zeros_like(mu_t), dlv

    @_model_work
    def decoder_grad(self, x, t, a, params=True):
        """log p(x_b | t_sb) and the gradient of sum_sb a_sb log p(x_b | t_sb): the building
        block of the E-step strategies (Langevin moves, per-point variational updates, M-steps).

        Parameters
        ----------
        x : array (B, D); t : array (S, B, d); a : array (S, B) — per-draw weights.
        params : bool — also accumulate the gradient wrt the decoder's parameters (not inside
            ``params.frozen()``).

        Returns
        -------
        (log p of shape (S, B), the gradient wrt t of shape (S, B, d)).
        """
        parts = self._by_rows(t.shape[1], lambda m, r: m._rows_decoder_grad(x[r], t[:, r], a[:, r], params))
        if len(parts) == 1:
            return parts[0]
        xp = backend_of(x).xp
        return tuple(xp.concatenate(halves, axis=1) for halves in zip(*parts))

    def _rows_decoder_grad(self, x, t, a, params):
        S, B, d = t.shape
        out, dc = self.decode(t.reshape(S * B, d))
        lp, g = self.head.loglik_grad(x, out, a)
        with self.params.frozen(not params):
            dt = self._decode_backward(g, dc)
        return lp, dt.reshape(S, B, d)

    def exact_log_likelihood(self, x):
        """log p(x) per row in closed form for a linear decoder (``linear_vae``):
        N(x | b, W W^T + diag psi), shape (N,)."""
        if self.spec["kind"] != "linear":
            raise ValueError("exact_log_likelihood: only a linear decoder has a closed form")
        W, b, psi = self.linear_decoder()
        return lowrank_gaussian_logpdf(x, b, W, psi)

    def linear_decoder(self):
        """(W (D, d), mean (D,), psi (D,)) of a linear decoder, as host arrays."""
        v = self.params.views
        to_host = self.params.backend.to_host
        W = to_host(v["dec.W"]).T.copy()
        b = to_host(v["dec.b"]).copy()
        c = to_host(v["dec.logvar"]).astype(np.float64)
        psi = np.exp(np.logaddexp(c, self.log_var_floor)) * np.ones(self.D)
        return W, b, psi.astype(self.dtype)

    def set_linear_decoder(self, W, mean, psi):
        """Set a linear decoder's parameters from (W (D, d), mean (D,), psi (D,)) host arrays
        (the inverse of :meth:`linear_decoder`; an isotropic decoder takes psi's first entry)."""
        if self.spec["kind"] != "linear":
            raise ValueError("set_linear_decoder: only for a linear decoder")
        v = self.params.views
        xp = self.params.backend.xp
        v["dec.W"][...] = xp.asarray(np.asarray(W).T.astype(self.dtype))
        v["dec.b"][...] = xp.asarray(np.asarray(mean).astype(self.dtype))
        psi = np.asarray(psi, np.float64)
        if v["dec.logvar"].size == 1:
            psi = psi[:1]
        # invert the variance floor: logvar = log(psi - floor) (the floor is negligible here)
        c = np.log(np.maximum(psi - math.exp(self.log_var_floor), 1e-300))
        v["dec.logvar"][...] = xp.asarray(c.astype(self.dtype))

    @_model_work
    def log_likelihood(self, x, n_samples=1000, batch_size=100, max_rows=2048, seed=0,
                       callback=None, proposal=None):
        """Importance-sampling estimate of log p(x) per row: logsumexp over S = ``n_samples``
        draws of log w, minus log S (IWAE_S, a lower bound in expectation that tightens as S
        grows), with q(t | x) from the encoder as the proposal.

        Parameters
        ----------
        x : array (N, D).
        n_samples : int — S.
        batch_size : int — rows per batch; max_rows : int — decoder rows alive at once (samples
            go in chunks of max_rows // batch_size; for the conv decoder on 28x28 images its
            largest temporary is ~100 kB per row, 200 MB at the default), merged by an online
            logsumexp.
        seed : int; callback : callable (rows done, N), optional.
        proposal : (mu_t, logvar_t), arrays (N, d), optional — replaces the encoder (e.g. a
            per-point Gaussian fitted by mean-field VI or moment-matched to MCMC samples).

        Returns
        -------
        array (N,) in the data's dtype, on the data's device. For a dask array x, a lazy dask
        array: one task per row-chunk on the active dask scheduler (threads, or a
        dask.distributed cluster when a Client is active), chunk k seeded with seed + 7919 k
        (see :func:`map_row_blocks`).
        """
        fname = "log_likelihood"
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"{fname}: expected n_samples to be a positive int, got {n_samples!r}")
        if is_dask(x):
            if proposal is not None:
                raise TypeError(f"{fname}: a proposal cannot be given with dask input")
            return map_row_blocks(VAE.log_likelihood, self, x, seed, fname, n_samples=n_samples,
                                  batch_size=batch_size, max_rows=max_rows)
        xp = self._check_x(x, fname)
        proposal = self._check_proposal(x, proposal, fname)
        rng = np.random.default_rng(seed)
        N = x.shape[0]
        out = xp.empty(N, x.dtype)
        batch_size = max(1, min(batch_size, max_rows))
        for i in range(0, N, batch_size):
            xb = x[i:i + batch_size]
            B = xb.shape[0]
            chunk = max(1, max_rows // B)
            if proposal is None:
                prop = self.encode(xb)[:2]
            else:
                prop = (proposal[0][i:i + B], proposal[1][i:i + B])  # row slices: contiguous
            lse = xp.full(B, -np.inf, x.dtype)
            for s0 in range(0, n_samples, chunk):
                S = min(chunk, n_samples - s0)
                mu_t, lv_t, _, t, dec, _, _ = self._sample(xb, rng, S, prop)
                lw = ops.importance_log_weights(xb, t, mu_t, lv_t, **self.head.bound_kwargs(dec, S, B))
                lse = ops.logsumexp(xp.stack([lse, ops.logsumexp(lw, axis=0)]), axis=0)
            out[i:i + B] = lse - x.dtype.type(math.log(n_samples))
            if callback is not None:
                callback(i + B, N)
        return out

    @_model_work
    def elbo(self, x, n_samples=1, seed=0, proposal=None):
        """Monte Carlo ELBO per row (closed-form KL), shape (N,), of the encoder's q(t | x) or of
        ``proposal`` = (mu_t, logvar_t), arrays (N, d) (e.g. a per-point Gaussian)."""
        self._check_x(x, "elbo")
        proposal = self._check_proposal(x, proposal, "elbo")
        rng = np.random.default_rng(seed)
        mu_t, lv_t, _, _, dec, _, _ = self._sample(x, rng, n_samples, proposal)
        lp = self.head.loglik(x, dec, n_samples, x.shape[0])
        return lp.mean(axis=0) - ops.kl_diag_std_normal(mu_t, lv_t)

    def mean(self, t):
        """E[x | t]: sigmoid(logits) or mu, shape (N, D), for latents t (N, d)."""
        return self.head.mean(self.decode(t)[0])

    def sample(self, n, seed=0):
        """Means E[x | t] at n draws t ~ N(0, I), shape (n, D)."""
        t = np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype(self.dtype)
        return self.mean(self.params.backend.xp.asarray(t))

    def reconstruct(self, x):
        """E[x | t = mu_t(x)], shape (N, D), for rows x (N, D)."""
        self._check_x(x, "reconstruct")
        return self.mean(self.encode(x)[0])

    def transform(self, x):
        """Posterior means mu_t(x), shape (N, d), for rows x (N, D)."""
        self._check_x(x, "transform")
        return self.encode(x)[0]

    # --- files --------------------------------------------------------------------------------
    def save(self, path, extra=None):
        """Write the model (architecture and parameters, plus ``extra`` arrays) to an .npz file,
        atomically, no pickle. Training checkpoints are such files with the optimiser's state
        and a ``meta`` document added."""
        arrays = {"param/" + k: v for k, v in self.params.state().items()}
        return save_npz_atomic(path, spec=pack_json(self.spec), **arrays, **(extra or {}))

    def load_params(self, arrays):
        """Set the parameters from the arrays of a file written by :meth:`save`."""
        self.params.load_state({k[6:]: v for k, v in arrays.items() if k.startswith("param/")})


def _row_block(block, fn, spec, data, seed, kw, block_info=None):
    k = block_info[0]["chunk-location"][0] if block_info else 0
    if block.shape[0] == 0:
        return np.empty(0, block.dtype)
    model = _build(spec)
    model.params.data[...] = data
    return np.asarray(fn(model, np.ascontiguousarray(block), seed=seed + 7919 * k, **kw))


def map_row_blocks(fn, model, X, seed, fname, **kw):
    """``fn(model, rows, seed=..., **kw) -> (n,)`` over the row-chunks of the dask array X
    (N, D), lazily: a dask array (N,) whose chunk k is computed from X's chunk k with seed
    seed + 7919 k, on the active dask scheduler. The model travels as its spec and host
    parameters (rebuilt in the task), so the tasks run on any dask worker."""
    if model.params.backend.name != "numpy":
        raise TypeError(f"{fname}: dask input needs a model on the CPU (model.to('cpu'))")
    if getattr(X, "dtype", None) != model.dtype:
        raise TypeError(f"{fname}: expected x of dtype {model.dtype} (the model's), got {X.dtype}")
    if X.ndim != 2 or X.shape[1] != model.D:
        raise ValueError(f"{fname}: expected x of shape (N, {model.D}), got {X.shape}")
    X = X.rechunk({1: -1})
    data = model.params.backend.to_host(model.params.data).copy()
    return X.map_blocks(_row_block, fn, model.spec, data, int(seed), kw, drop_axis=1,
                        dtype=X.dtype, meta=np.empty((0,), X.dtype))


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"expected {name} to be a positive int, got {v!r}")
    return int(v)


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
    spec = _spec("mlp", likelihood, latent_dim, dtype, var_floor, seed, D=_positive_int("D", D),
                 hidden=_positive_int("hidden", hidden))
    return _build(spec)


def linear_vae(D, latent_dim, dtype=np.float64, var_floor=1e-300, seed=0, isotropic=False):
    """Linear Gaussian decoder p(x | t) = N(W^T t + b, diag e^c), c constant in t (one value
    with ``isotropic=True``: PPCA; one per feature: factor analysis), with a linear encoder.
    Decoder parameters: ``dec.W`` (d, D), ``dec.b`` (D,), ``dec.logvar`` (1,) or (D,) (before
    the variance floor). Its exact log-likelihood is :meth:`VAE.exact_log_likelihood`."""
    spec = _spec("linear", "gaussian", latent_dim, dtype, var_floor, seed, D=_positive_int("D", D),
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
                 image_shape=[_positive_int("image height", H), _positive_int("image width", W),
                              _positive_int("image channels", C)],
                 channels=[_positive_int("channels", c) for c in channels])
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
    return VAE(spec, enc, dec, P, enc_in, dec_out, D)


def load_model(path):
    """A VAE saved by :meth:`VAE.save` (or a training checkpoint).

    Raises ValueError naming the file and what is wrong with it (not an .npz, truncated or
    corrupted, no or an incomplete architecture, parameters missing, of another shape, or not
    finite); FileNotFoundError when there is no such file."""
    arrays = load_npz(path)
    name = str(path)
    if "spec" not in arrays:
        raise ValueError(f"{name!r} is not an lgm model file (no 'spec')")
    try:
        spec = unpack_json(arrays["spec"])
        model = _build(spec)
        model.load_params(arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{name!r}: not a usable lgm model file ({exc})") from None
    bad = [k for k, v in model.params.views.items() if not bool(np.all(np.isfinite(v)))]
    if bad:
        raise ValueError(f"{name!r}: parameters {bad} are not finite (NaN or inf)")
    return model


# --- training -----------------------------------------------------------------------------------
def train(model, X, *, epochs=10, batch_size=128, lr=1e-3, objective="elbo", n_samples=1,
          seed=0, checkpoint=None, resume=False, callback=None):
    """Minibatch training with Adam, seeded and reproducible (the one minibatch loop,
    :func:`lgm.models.training.minibatch_loop`).

    Parameters
    ----------
    model : VAE.
    X : array (N, D) of the model's dtype, on the parameters' device.
    epochs : int; batch_size : int; lr : float — Adam's step size.
    objective : {"elbo", "iwae"}; n_samples : int — S, draws of t per row.
    seed : int — each epoch shuffles X with a generator seeded by ``seed``; the same generator
        draws the reparameterisation noise.
    checkpoint : path to an .npz, optional — the complete state (parameters, Adam moments and
        step, generator state, epoch and loss history) is written atomically after every epoch.
        Its folder must be writable (checked before training starts).
    resume : bool — continue from ``checkpoint`` (the same losses as an uninterrupted run).
    callback : callable (epoch, step, n_steps, loss), optional — after every step (progress bars
        live in the caller).

    Returns
    -------
    list of the mean training loss per epoch (negative bound, nats per row).

    Raises
    ------
    FloatingPointError — when the loss or the parameters become NaN or inf (a step size too
    large, typically): training stops, and a checkpoint keeps the last finite epoch (a
    diverged epoch is never written).
    """
    model._check_x(X, "train")
    if objective not in ("elbo", "iwae"):
        raise ValueError(f"train: expected objective 'elbo' or 'iwae', got {objective!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"train: expected epochs to be a non-negative int, got {epochs!r}")
    batch_size = _positive_int("batch_size", batch_size)
    n_samples = _positive_int("n_samples", n_samples)
    if not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"train: expected lr to be a finite number > 0, got {lr!r}")
    if checkpoint is not None:
        check_writable(checkpoint, "train: checkpoint")  # before the work, not after an epoch
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
            model.load_params(st)
            opt.load_state({"m": st["adam/m"], "v": st["adam/v"], "t": st["adam/t"]})
            rng.bit_generator.state = meta["rng"]
            history, epoch0 = list(meta["history"]), int(meta["epoch"])

    def diverged(what, where):
        kept = (f"; {str(checkpoint)!r} still holds epoch {len(history)}, the last finite one"
                if checkpoint is not None and history else "")
        return FloatingPointError(f"train: the {what} became NaN or inf at {where} (lr={lr} may be "
                                  f"too large); training stopped{kept}")

    def step(idx):
        model.params.zero_grad()
        loss = model.loss_and_grad(take_rows(X, idx), rng, objective, n_samples)
        if isinstance(loss, float) and not math.isfinite(loss):  # the CPU: checked every step
            raise diverged("loss", f"epoch {epoch_of[0] + 1}")
        opt.step()
        return loss

    epoch_of = [epoch0]

    def on_epoch(st, mean_loss):
        # a non-finite gradient shows in the parameters after Adam's step; on the GPU the loss
        # is checked here (once per epoch, not one synchronisation per step)
        if not math.isfinite(mean_loss) or not bool(model.params.backend.xp.isfinite(model.params.data).all()):
            raise diverged("loss" if not math.isfinite(mean_loss) else "parameters",
                           f"epoch {st.epoch + 1}")
        epoch_of[0] = st.epoch + 1
        history.append(mean_loss)
        if checkpoint is not None:
            meta = dict(spec=_json_spec(model.spec), rng=rng.bit_generator.state,
                        history=history, epoch=st.epoch + 1, time=time.time())
            ad = opt.state()
            model.save(checkpoint, extra={"meta": pack_json(meta), "adam/m": ad["m"],
                                          "adam/v": ad["v"], "adam/t": ad["t"]})

    on_step = None if callback is None else (lambda st: callback(st.epoch, st.step, st.n_steps, st.loss))
    minibatch_loop(step, X.shape[0], rng=rng, batch_size=batch_size, epochs=epochs, epoch0=epoch0,
                   on_step=on_step, on_epoch=on_epoch)
    return history


def _json_spec(spec):
    """The architecture part of a spec, as JSON reads it back (the init seed is not part of it:
    a checkpoint's parameters replace the initial ones)."""
    import json

    return json.loads(json.dumps({k: v for k, v in spec.items() if k != "seed"}))
