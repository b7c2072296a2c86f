"""E-step strategies for the continuous mixture p(x | w) = ∫ p(x | t, w) N(t | 0, I) dt, behind one
interface, and a harness that runs them side by side under equal time budgets.

Every strategy does, per iteration on a minibatch: an E-step (whatever stands in for p(t | x, w))
and an M-step (an Adam step on the decoder parameters w along (1/S) sum_s a_s d log p(x, t_s | w),
the weights a_s being what the E-step produced) — except ``exact``, whose E- and M-step are the
closed-form EM of a linear-Gaussian model. All log-densities and their gradients come from the
fused kernels through :meth:`lgm.vae.VAE.decoder_grad`.

================  =================================================================================
``exact``         Linear decoders only: the posterior is Gaussian; full-batch EM (Tipping & Bishop
                  1999, App. B), the same update as :class:`lgm.PPCA` / :class:`lgm.FactorAnalysis`.
``mcmc``          MCMC-EM: MALA (Roberts & Tweedie 1996) or HMC (``transition="hmc"``) on
                  log p(x, t | w) with persistent chains
                  per data point (warm starts across iterations), M chains per point, per-point
                  step sizes adapted towards acceptance 0.574 for MALA (Roberts & Rosenthal
                  1998), 0.65 for HMC, log eps += 0.5 (rate - target) after every move (adaptive MCMC:
                  standard in MCMC-EM, where the target moves with w anyway).
                  Memory: N x M x d chain states + N step sizes.
``meanfield``     Variational EM with a Gaussian q_i(t) = N(m_i, diag s_i²) per data point, kept
                  across iterations, a few reparameterised Adam steps on each point's ELBO per
                  E-step. Memory grows with N: 6 x N x d numbers (m, log s², Adam moments).
``amortized``     An encoder q(t | x) (the VAE): one joint ELBO step updates encoder and decoder.
``iwae``          The importance-weighted bound with S = n_samples samples (encoder as proposal).
================  =================================================================================

The harness that runs them (equal budgets, held-out scores) is ``lgm.estep.harness``. Held-out
evaluation uses each strategy's best proposal: the encoder (amortized, iwae), a q_i
fitted on the test points with the decoder fixed (meanfield), a Gaussian moment-matched to chains
run on the test points (mcmc); for linear decoders the exact log-likelihood.
"""

from __future__ import annotations

import inspect
import math
import os
import shutil
import tempfile
import weakref

import numpy as np

from ..models.linear import CompleteData, em_step
from ..models.nn import Adam
from ..models.training import take_rows
from ..ops import backend_of
from .mcmc import hmc_step, mh_accept

__all__ = ["STRATEGIES", "Strategy", "make_strategy", "Exact", "MCMC", "MeanField", "Amortized",
           "IWAE"]

STRATEGIES = ("exact", "mcmc", "meanfield", "amortized", "iwae")


class Strategy:
    """Interface. ``setup(model, X)`` once, then ``iteration(model, X, idx)`` per minibatch
    (returns the minibatch objective, nats per point, lower is better), ``proposal(model, X)``
    for held-out evaluation, ``state_bytes()`` for the memory the strategy keeps."""

    name = ""
    full_batch = False

    def __init__(self, lr=1e-3, seed=0):
        self.lr, self.seed = lr, seed
        self.rng = np.random.default_rng(seed)

    def setup(self, model, X):
        self.rng = np.random.default_rng(self.seed)
        self.opt = Adam(model.params, lr=self.lr)

    def iteration(self, model, X, idx):
        raise NotImplementedError

    def proposal(self, model, X):
        return None  # the encoder

    def state_bytes(self):
        return 0

    def stats(self):
        return {}

    def _m_step(self, model, x, t):
        """Adam step on the decoder along the mean over samples and points of d log p(x | t)."""
        S, B = t.shape[:2]
        xp = backend_of(x).xp
        model.params.zero_grad()
        lp, _ = model.decoder_grad(x, t, xp.full((S, B), -1.0 / (S * B), x.dtype), params=True)
        self.opt.step()
        return lp


class Exact(Strategy):
    """Closed-form EM for a linear decoder (``lgm.vae.linear_vae``), full batch."""

    name = "exact"
    full_batch = True

    def setup(self, model, X):
        if model.spec["kind"] != "linear":
            raise ValueError("exact E-step: only a linear decoder has a Gaussian posterior")
        super().setup(model, X)
        self.st = CompleteData(backend_of(X).to_host(X).astype(np.float64))

    def iteration(self, model, X, idx):
        W, _, psi = model.linear_decoder()
        W1, psi1, ll = em_step(self.st, W.astype(np.float64), psi.astype(np.float64))
        if model.spec.get("isotropic"):
            psi1 = np.full_like(psi1, psi1.mean())
        model.set_linear_decoder(W1, self.st.mean, np.maximum(psi1, 1e-12))
        return -ll


class Amortized(Strategy):
    """The VAE step: one reparameterised ELBO gradient for encoder and decoder together."""

    name = "amortized"

    def iteration(self, model, X, idx):
        model.params.zero_grad()
        loss = model.loss_and_grad(take_rows(X, idx), self.rng, "elbo", 1)
        self.opt.step()
        return float(loss)


class IWAE(Strategy):
    name = "iwae"

    def __init__(self, lr=1e-3, seed=0, n_samples=5):
        super().__init__(lr, seed)
        self.n_samples = n_samples

    def iteration(self, model, X, idx):
        model.params.zero_grad()
        loss = model.loss_and_grad(take_rows(X, idx), self.rng, "iwae", self.n_samples)
        self.opt.step()
        return float(loss)


class MCMC(Strategy):
    """MCMC-EM with persistent per-point chains and per-point adapted step sizes. The transition
    is MALA (``transition="mala"``, target acceptance 0.574; Roberts & Rosenthal 1998) or HMC
    (``transition="hmc"``, ``n_leapfrog`` leapfrog steps, target acceptance 0.65; Neal 2011, as
    in Hoffman 2017's MCMC-EM for VAE decoders)."""

    name = "mcmc"
    TARGETS = {"mala": 0.574, "hmc": 0.65}

    def __init__(self, lr=1e-3, seed=0, n_chains=2, n_steps=3, adapt=0.5, eval_burn=60,
                 eval_collect=40, transition="mala", n_leapfrog=5):
        super().__init__(lr, seed)
        if transition not in self.TARGETS:
            raise ValueError(f"MCMC: expected transition 'mala' or 'hmc', got {transition!r}")
        if isinstance(n_leapfrog, bool) or int(n_leapfrog) != n_leapfrog or n_leapfrog < 1:
            raise ValueError(f"MCMC: expected n_leapfrog to be a positive int, got {n_leapfrog!r}")
        self.M, self.n_steps, self.adapt = n_chains, n_steps, adapt
        self.eval_burn, self.eval_collect = eval_burn, eval_collect
        self.transition, self.n_leapfrog = transition, int(n_leapfrog)
        self.TARGET = self.TARGETS[transition]

    def setup(self, model, X):
        super().setup(model, X)
        self.chains, self.log_eps = self._init_state(model, X)
        self.acc_sum, self.acc_n = 0.0, 0

    def _init_state(self, model, X):
        """Chains (M, N, d) drawn from the prior and step sizes (N,) for the rows of X (see
        :func:`per_point_array` for where they live)."""
        N, d = X.shape[0], model.latent_dim
        chains = per_point_array(X, model, (self.M, N, d), rng=self.rng)
        log_eps = per_point_array(X, model, (N,), fill=-math.log(d) / 6)  # MALA: eps ~ d^(-1/6)
        return chains, log_eps

    def _log_joint(self, model, x, t):
        """log p(x, t) (S, B) and its gradient in t (S, B, d), decoder parameters untouched."""
        xp = backend_of(x).xp
        S, B, _ = t.shape
        lp, dt = model.decoder_grad(x, t, xp.ones((S, B), x.dtype), params=False)
        return lp - 0.5 * (t * t).sum(-1), dt - t

    def _move(self, model, x, t, log_eps, n_steps, adapt=True):
        """n_steps transitions of the chains t (M, B, d); returns (t, log_eps, acceptance)."""
        move = self._hmc if self.transition == "hmc" else self._mala
        return move(model, x, t, log_eps, n_steps, adapt)

    def _hmc(self, model, x, t, log_eps, n_steps, adapt=True):
        """n_steps HMC transitions (n_leapfrog leapfrog steps each) of the chains t (M, B, d)."""
        xp = backend_of(x).xp

        def log_f(t):
            lj, g = self._log_joint(model, x, t)
            return lj, g, ()

        lj, g, _ = log_f(t)
        acc_tot = 0.0
        for _ in range(n_steps):
            eps = xp.exp(log_eps)[None, :, None]  # 1, B, 1
            t, lj, g, _, accept = hmc_step(self.rng, log_f, t, lj, g, eps, self.n_leapfrog)
            log_eps, acc_tot = self._adapt(x, accept, log_eps, adapt, acc_tot)
        return t, log_eps, acc_tot / max(n_steps, 1)

    def _adapt(self, x, accept, log_eps, adapt, acc_tot):
        """Per-point step sizes towards the target acceptance (log eps += adapt (rate - target))."""
        F = x.dtype.type
        rate = accept.mean(axis=0)  # B
        if adapt:
            log_eps = log_eps + F(self.adapt) * (rate.astype(x.dtype) - F(self.TARGET))
        return log_eps, acc_tot + float(rate.mean())

    def _mala(self, model, x, t, log_eps, n_steps, adapt=True):
        """n_steps MALA moves of the chains t (M, B, d); returns (t, log_eps, acceptance rate)."""
        xp = backend_of(x).xp
        F = x.dtype.type
        lj, g = self._log_joint(model, x, t)
        acc_tot = 0.0
        for _ in range(n_steps):
            eps = xp.exp(log_eps)[None, :, None]  # 1, B, 1
            h = F(0.5) * eps * eps
            noise = xp.asarray(self.rng.standard_normal(t.shape).astype(x.dtype))
            t1 = t + h * g + eps * noise
            lj1, g1 = self._log_joint(model, x, t1)
            fwd = ((t1 - t - h * g) ** 2).sum(-1)
            bwd = ((t - t1 - h * g1) ** 2).sum(-1)
            log_alpha = lj1 - lj + (fwd - bwd) / (F(4) * h[..., 0])
            (t, g, lj), accept = mh_accept(self.rng, log_alpha, (t, g, lj), (t1, g1, lj1))
            log_eps, acc_tot = self._adapt(x, accept, log_eps, adapt, acc_tot)
        return t, log_eps, acc_tot / max(n_steps, 1)

    def iteration(self, model, X, idx):
        x = take_rows(X, idx)
        t, le, acc = self._move(model, x, self.chains[:, idx], self.log_eps[idx], self.n_steps)
        self.chains[:, idx] = t
        self.log_eps[idx] = le
        self.acc_sum += acc
        self.acc_n += 1
        lp = self._m_step(model, x, t)
        return -float(lp.mean())  # minus the mean log p(x | t) at the chains' states

    def proposal(self, model, X, batch=500, inflate=2.0):
        """Chains run on X with the decoder fixed (``eval_burn`` adapting moves, then
        ``eval_collect`` collected); a diagonal Gaussian moment-matched to their samples
        (variance inflated by ``inflate`` so the proposal covers the posterior's tails)."""
        xp = backend_of(X).xp
        n_burn, n_collect = self.eval_burn, self.eval_collect
        mus, lvs = [], []
        for i in range(0, X.shape[0], batch):
            x = X[i:i + batch]
            t, le = self._init_state(model, x)
            t, le, _ = self._move(model, x, t, le, n_burn)
            s1 = xp.zeros_like(t[0])
            s2 = xp.zeros_like(t[0])
            for _ in range(n_collect):
                t, le, _ = self._move(model, x, t, le, 1)
                s1 += t.sum(0)
                s2 += (t * t).sum(0)
            n = n_collect * self.M
            mu = s1 / n
            var = xp.maximum(s2 / n - mu * mu, 1e-6)
            mus.append(mu)
            lvs.append(xp.log(inflate * var).astype(X.dtype))
        return xp.concatenate(mus), xp.concatenate(lvs)

    def state_bytes(self):
        return int(self.chains.nbytes + self.log_eps.nbytes)

    def stats(self):
        return {"acceptance": self.acc_sum / max(self.acc_n, 1)}


class MeanField(Strategy):
    """Per-point Gaussian q_i, updated by a few reparameterised Adam steps per E-step."""

    name = "meanfield"

    def __init__(self, lr=1e-3, seed=0, n_inner=3, n_samples=1, q_lr=0.05, eval_steps=100):
        super().__init__(lr, seed)
        self.n_inner, self.S, self.q_lr, self.eval_steps = n_inner, n_samples, q_lr, eval_steps

    def setup(self, model, X):
        super().setup(model, X)
        self.q = self._init_q(model, X)

    @staticmethod
    def _init_q(model, X):
        """q_i = N(0, I) and zero Adam moments for the rows of X (see :func:`per_point_array`)."""
        N, d = X.shape[0], model.latent_dim
        q = {k: per_point_array(X, model, (N, d), fill=0.0) for k in ("m", "lv", "m1", "m2", "v1", "v2")}
        q["t"] = per_point_array(X, model, (N,), fill=0.0)
        return q

    def _update(self, model, x, q, idx, n_steps):
        """n_steps Adam steps on each point's negative ELBO in (m_i, logvar_i)."""
        xp = backend_of(x).xp
        F = x.dtype.type
        b1, b2, eps = F(0.9), F(0.999), F(1e-8)
        m, lv = q["m"][idx], q["lv"][idx]
        m1, m2, v1, v2, tt = q["m1"][idx], q["m2"][idx], q["v1"][idx], q["v2"][idx], q["t"][idx]
        S, B = self.S, x.shape[0]
        for _ in range(n_steps):
            noise = xp.asarray(self.rng.standard_normal((S, B, model.latent_dim)).astype(x.dtype))
            sd = xp.exp(F(0.5) * lv)
            t = m + sd * noise
            _, dt = model.decoder_grad(x, t, xp.full((S, B), F(-1.0 / S), x.dtype), params=False)
            gm = dt.sum(0) + m  # + d KL / dm (Kingma & Welling 2014, App. B)
            gl = (dt * noise).sum(0) * (F(0.5) * sd) + F(0.5) * (xp.exp(lv) - F(1))
            tt = tt + F(1)
            c1, c2 = F(1) - b1 ** tt[:, None], F(1) - b2 ** tt[:, None]
            m1 = b1 * m1 + (F(1) - b1) * gm
            v1 = b2 * v1 + (F(1) - b2) * gm * gm
            m2 = b1 * m2 + (F(1) - b1) * gl
            v2 = b2 * v2 + (F(1) - b2) * gl * gl
            m = m - F(self.q_lr) * (m1 / c1) / (xp.sqrt(v1 / c2) + eps)
            lv = lv - F(self.q_lr) * (m2 / c1) / (xp.sqrt(v2 / c2) + eps)
        for k, v in (("m", m), ("lv", lv), ("m1", m1), ("m2", m2), ("v1", v1), ("v2", v2), ("t", tt)):
            q[k][idx] = v
        return m, lv

    def iteration(self, model, X, idx):
        x = take_rows(X, idx)
        xp = backend_of(x).xp
        m, lv = self._update(model, x, self.q, idx, self.n_inner)
        noise = xp.asarray(self.rng.standard_normal((self.S,) + m.shape).astype(x.dtype))
        t = m + xp.exp(x.dtype.type(0.5) * lv) * noise
        lp = self._m_step(model, x, t)
        kl = 0.5 * (xp.exp(lv) + m * m - 1 - lv).sum(-1)
        return float((kl - lp.mean(0)).mean())  # minus the per-point ELBO

    def proposal(self, model, X, batch=500):
        """Per-point Gaussians fitted to X with the decoder fixed (``eval_steps`` Adam steps)."""
        xp = backend_of(X).xp
        n_steps = self.eval_steps
        q = self._init_q(model, X)
        for i in range(0, X.shape[0], batch):
            idx = xp.arange(i, min(i + batch, X.shape[0]))
            self._update(model, X[idx], q, idx, n_steps)
        return q["m"], q["lv"]

    def state_bytes(self):
        return int(sum(v.nbytes for v in self.q.values()))


def per_point_array(X, model, shape, fill=None, rng=None, chunk=65536):
    """Per-point state of the model's dtype, whose axis 1 if ``len(shape) == 3`` else axis 0
    runs over the N rows of X: on the model's device, or, when X is a memory-mapped file
    (np.memmap) and the model on the CPU, memory-mapped in a temporary folder beside X's file
    (the system's temporary folder if X's is read-only; removed when the array is freed), so
    that state that grows with N lives where X lives. Filled with ``fill``, or
    with standard normal draws from ``rng``, ``chunk`` rows at a time (the same draws on
    either path)."""
    dt = np.dtype(model.dtype)
    xp = backend_of(model.params.data).xp
    path = getattr(X, "filename", None) if isinstance(X, np.memmap) and xp is np else None
    if path:
        try:
            folder = tempfile.mkdtemp(prefix=".lgm-state-", dir=os.path.dirname(os.path.abspath(path)))
        except OSError:  # X's folder is read-only: the system's temporary folder instead
            folder = tempfile.mkdtemp(prefix="lgm-state-")
        out = np.lib.format.open_memmap(os.path.join(folder, "state.npy"), "w+", dt, tuple(shape))
        weakref.finalize(out, shutil.rmtree, folder, True)
    else:
        out = xp.empty(tuple(shape), dt)
    if rng is None:
        out[...] = 0 if fill is None else fill
        return out
    axis = 1 if len(shape) == 3 else 0
    N = shape[axis]
    for i in range(0, N, chunk):
        n = min(chunk, N - i)
        block = rng.standard_normal(tuple(shape[:axis]) + (n,) + tuple(shape[axis + 1:])).astype(dt)
        out[(slice(None),) * axis + (slice(i, i + n),)] = xp.asarray(block)
    return out


_CLASSES = {"exact": Exact, "mcmc": MCMC, "meanfield": MeanField, "amortized": Amortized,
            "iwae": IWAE}


def make_strategy(name, **kw):
    """A strategy by name; keyword arguments a strategy does not take are ignored (so one set of
    options can be passed to all)."""
    if name not in _CLASSES:
        raise ValueError(f"expected a strategy in {STRATEGIES}, got {name!r}")
    cls = _CLASSES[name]
    params = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kw.items() if k in params})
