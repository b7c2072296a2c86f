"""Public kernels API: one function per operation, validated once, dispatched by array type.

numpy arrays run on the Numba CPU kernels; cupy arrays go to the CUDA kernels, imported only when
a cupy array arrives. The device line is crossed in one way: :func:`backend_of` (re-exported
here, the public face of ``lgm._backends``), which the models use too. Shapes follow one rule: the last
axis is the event axis (summed over), the leading axes broadcast as in numpy. Outputs have the
input dtype. See ``lgm._validate`` for the dtype policy (float32/float64 only, no mixing, no
silent upcast) and ``lgm.reference`` for the plain-numpy specification of each function.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

from ._backends import (Backend, backend_for, backend_of, gpu_info, module_name, set_thread_policy,
                        thread_policy)
from ._validate import RowOperands, broadcast_lead, check_floats, is_dask

__all__ = [
    "diag_gaussian_logpdf",
    "diag_gaussian_logpdf_grad",
    "LogpdfGrad",
    "bernoulli_logpmf",
    "std_normal_logpdf",
    "kl_diag_std_normal",
    "kl_diag_std_normal_grad",
    "logsumexp",
    "importance_log_weights",
    "elbo",
    "iwae",
    "importance_weights",
    "importance_bounds",
    "reparameterize",
    "im2col",
    "col2im",
    "backend_of",
    "is_dask",
    "set_thread_policy",
    "thread_policy",
    "Backend",
    "backend_for",
    "device_info",
]


class LogpdfGrad(NamedTuple):
    """Value and gradients of the diagonal-Gaussian log-density (None where not requested)."""

    value: np.ndarray
    dx: Optional[np.ndarray]
    dmu: Optional[np.ndarray]
    dlogvar: Optional[np.ndarray]


def diag_gaussian_logpdf(x, mu, logvar):
    """log N(x | mu, diag exp(logvar)), summed over the last axis.

    Parameters
    ----------
    x, mu, logvar : arrays of shape (..., D), float32 or float64, broadcasting over leading axes
        (and along the last axis where it has length 1). ``logvar`` is the log-variance.

    Returns
    -------
    array of shape (...): -1/2 sum_j [(x_j - mu_j)^2 e^{-logvar_j} + logvar_j + log 2 pi].
    """
    fname = "diag_gaussian_logpdf"
    be, dtype, a = check_floats(fname, x=x, mu=mu, logvar=logvar)
    xp, kern = be.xp, be.kernels
    ops = RowOperands(fname, a, xp=xp)
    out = xp.empty(ops.R, dtype)
    if ops.R:
        kern.diag_gaussian_logpdf(out, ops.rows["x"], ops.rows["mu"], ops.rows["logvar"],
                                    ops.lead_arr, ops.rstride)
    return out.reshape(ops.lead)


def diag_gaussian_logpdf_grad(x, mu, logvar, weights=None, wrt=("x", "mu", "logvar")):
    """Value and gradients of :func:`diag_gaussian_logpdf` in one pass.

    Parameters
    ----------
    x, mu, logvar : arrays of shape (..., D), as in :func:`diag_gaussian_logpdf`.
    weights : array broadcastable to the leading shape (...), optional
        Per-row weights w multiplying the gradients (not the value): the gradient returned is
        that of sum(w * logpdf). The IWAE gradient uses the normalised importance weights here.
    wrt : iterable of {"x", "mu", "logvar"}
        Which gradients to compute; the others are None (and cost nothing).

    Returns
    -------
    LogpdfGrad(value, dx, dmu, dlogvar): value of shape (...); each gradient has the shape of its
    argument (summed over the axes along which that argument was broadcast):
    d/dmu = w (x - mu) e^{-logvar}, d/dx = -d/dmu, d/dlogvar = w/2 ((x - mu)^2 e^{-logvar} - 1).
    """
    fname = "diag_gaussian_logpdf_grad"
    wrt = tuple(wrt)
    bad = [w for w in wrt if w not in ("x", "mu", "logvar")]
    if bad:
        raise ValueError(f"{fname}: expected wrt to name 'x', 'mu' or 'logvar', got {bad}")
    be, dtype, a = check_floats(fname, x=x, mu=mu, logvar=logvar, weights=weights)
    xp, kern = be.xp, be.kernels
    w = a.pop("weights")
    ops = RowOperands(fname, a, xp=xp)
    w_r = _row_weights(fname, xp, w, ops, dtype)
    out = xp.empty(ops.R, dtype)
    full = {n: (xp.empty((ops.R, ops.D), dtype) if n in wrt else xp.empty((0, 0), dtype))
            for n in ("x", "mu", "logvar")}
    if ops.R:
        kern.diag_gaussian_logpdf_grad(
            out, full["x"], full["mu"], full["logvar"],
            ops.rows["x"], ops.rows["mu"], ops.rows["logvar"], w_r,
            "x" in wrt, "mu" in wrt, "logvar" in wrt, ops.lead_arr, ops.rstride)
    grads = {n: (ops.unbroadcast(n, full[n]) if n in wrt else None) for n in full}
    return LogpdfGrad(out.reshape(ops.lead), grads["x"], grads["mu"], grads["logvar"])


def bernoulli_logpmf(x, logits):
    """log Bernoulli(x | sigmoid(logits)) summed over the last axis, stable for any |logits|.

    Computes sum_j x_j l_j - softplus(l_j) with softplus(l) = max(l, 0) + log1p(exp(-|l|)), which
    never overflows. ``x`` may be fractional in [0, 1] (a "continuous Bernoulli" target without
    its normaliser); it is not checked.
    """
    fname = "bernoulli_logpmf"
    be, dtype, a = check_floats(fname, x=x, logits=logits)
    xp, kern = be.xp, be.kernels
    ops = RowOperands(fname, a, xp=xp)
    out = xp.empty(ops.R, dtype)
    if ops.R:
        kern.bernoulli_logpmf(out, ops.rows["x"], ops.rows["logits"], ops.lead_arr, ops.rstride)
    return out.reshape(ops.lead)


class LogpmfGrad(NamedTuple):
    """Value and logits gradient of the Bernoulli log-mass."""

    value: np.ndarray
    dlogits: np.ndarray


def bernoulli_logpmf_grad(x, logits, weights=None):
    """Value and gradient of :func:`bernoulli_logpmf` in one pass.

    Parameters
    ----------
    x, logits : arrays of shape (..., D), broadcasting as in :func:`bernoulli_logpmf`.
    weights : array broadcastable to the leading shape (...), optional
        Per-row weights w multiplying the gradient (not the value).

    Returns
    -------
    LogpmfGrad(value, dlogits): value of shape (...); dlogits = w (x - sigmoid(logits)) of the shape
    of ``logits`` (summed over the axes along which it was broadcast). On the CPU it is exact to
    within 2^-100 (float64: 2^-960): a row whose weight is below that has no gradient, and the term
    w sigmoid(logits) is dropped where below it. So no gradient is subnormal: Intel cores take a
    microcode assist for every operation on one, and a trained decoder's background logits reach
    -200 and IWAE's weights can be as small (the backward GEMMs ran 3-5x slower). The value is
    exact; the GPU's kernel computes the gradient in full.
    """
    fname = "bernoulli_logpmf_grad"
    be, dtype, a = check_floats(fname, x=x, logits=logits, weights=weights)
    xp, kern = be.xp, be.kernels
    w = a.pop("weights")
    ops = RowOperands(fname, a, xp=xp)
    w_r = _row_weights(fname, xp, w, ops, dtype)
    out = xp.empty(ops.R, dtype)
    dl = xp.empty((ops.R, ops.D), dtype)
    if ops.R:
        kern.bernoulli_logpmf_grad(out, dl, ops.rows["x"], ops.rows["logits"], w_r, ops.lead_arr,
                                ops.rstride)
    return LogpmfGrad(out.reshape(ops.lead), ops.unbroadcast("logits", dl))


def _row_weights(fname, xp, w, ops, dtype):
    if w is None:
        return xp.ones(ops.R, dtype)
    try:
        return xp.ascontiguousarray(xp.broadcast_to(w, ops.lead)).reshape(-1)
    except ValueError:
        raise ValueError(
            f"{fname}: expected weights broadcastable to the leading shape {ops.lead}, "
            f"got shape {np.shape(w)}"
        ) from None


def std_normal_logpdf(t):
    """log N(t | 0, I), summed over the last axis: shape (..., d) -> (...)."""
    fname = "std_normal_logpdf"
    be, dtype, a = check_floats(fname, t=t)
    xp, kern = be.xp, be.kernels
    ops = RowOperands(fname, a, xp=xp)
    out = xp.empty(ops.R, dtype)
    if ops.R:
        kern.std_normal_logpdf(out, ops.rows["t"])
    return out.reshape(ops.lead)


def _kl(fname, mu, logvar, want_grad):
    be, dtype, a = check_floats(fname, mu=mu, logvar=logvar)
    xp, kern = be.xp, be.kernels
    ops = RowOperands(fname, a, xp=xp)
    out = xp.empty(ops.R, dtype)
    shape = (ops.R, ops.D) if want_grad else (0, 0)
    dmu, dlv = xp.empty(shape, dtype), xp.empty(shape, dtype)
    if ops.R:
        kern.kl_diag_std_normal(out, dmu, dlv, ops.rows["mu"], ops.rows["logvar"], want_grad,
                                  ops.lead_arr, ops.rstride)
    value = out.reshape(ops.lead)
    if not want_grad:
        return value
    return value, ops.unbroadcast("mu", dmu), ops.unbroadcast("logvar", dlv)


def kl_diag_std_normal(mu, logvar):
    """KL(N(mu, diag e^logvar) || N(0, I)) = -1/2 sum(1 + logvar - mu^2 - e^logvar), closed form
    (Kingma & Welling 2014, Appendix B); shapes (..., d) -> (...)."""
    return _kl("kl_diag_std_normal", mu, logvar, False)


def kl_diag_std_normal_grad(mu, logvar):
    """(KL, dKL/dmu = mu, dKL/dlogvar = (e^logvar - 1)/2), in one pass."""
    return _kl("kl_diag_std_normal_grad", mu, logvar, True)


def logsumexp(a, axis=-1, keepdims=False):
    """log sum exp(a) along ``axis`` (an int, a tuple of ints, or None for all axes), stably.

    An all -inf slice gives -inf (no NaN, no warning); a slice containing +inf gives +inf; a NaN
    anywhere in the slice gives NaN. Non-contiguous input is copied once to C order.
    """
    fname = "logsumexp"
    be, dtype, arrs = check_floats(fname, a=a)
    return _logsumexp(fname, be, arrs["a"], axis, keepdims)


def _logsumexp(fname, be, a, axis, keepdims):
    """logsumexp of an already validated array (no second validation from elbo/iwae)."""
    xp, kern = be.xp, be.kernels
    dtype = a.dtype
    if axis is None:
        axes = tuple(range(a.ndim))
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        axes = (axis,)
    norm = set()
    for ax in axes:
        if isinstance(ax, bool) or not isinstance(ax, (int, np.integer)):
            raise TypeError(f"{fname}: expected axis to be an int, a tuple of ints or None, got {axis!r}")
        if not -a.ndim <= ax < max(a.ndim, 1):
            raise np.exceptions.AxisError(
                f"{fname}: axis {ax} is out of bounds for an array of dimension {a.ndim}")
        norm.add(int(ax) % max(a.ndim, 1))
    axes = tuple(sorted(norm))
    if a.ndim == 0:
        return a.copy()
    shape = a.shape
    n_red = math.prod(shape[ax] for ax in axes)
    if n_red == 0:
        raise ValueError(f"{fname}: expected a non-empty reduction, got shape {shape} over axes {axes}")
    keep = [ax for ax in range(a.ndim) if ax not in axes]
    out_shape = tuple(shape[ax] for ax in keep)
    if axes == tuple(range(axes[0], axes[0] + len(axes))):  # one contiguous block of axes
        b = a if a.flags.c_contiguous else xp.ascontiguousarray(a)
        P = math.prod(shape[: axes[0]])
        Q = math.prod(shape[axes[-1] + 1:])
    else:
        b = xp.ascontiguousarray(xp.transpose(a, keep + list(axes)))
        P, Q = math.prod(out_shape), 1
    b = b.reshape(P, n_red, Q)
    if P * Q == 0:
        out = xp.empty((P, Q), dtype)
    elif Q == 1:
        out = xp.empty(P, dtype)
        kern.logsumexp_rows(out, b.reshape(P, n_red))
    else:
        out = xp.empty((P, Q), dtype)
        kern.logsumexp_cols(out, b)
    out = out.reshape(out_shape)
    if keepdims:
        out = xp.expand_dims(out, axes)
    return out


def importance_log_weights(x, t, mu_t, logvar_t, *, mu_x=None, logvar_x=None, logits=None):
    """Fused importance log-weights log w = log p(x | t) + log p(t) - log q(t | x).

    Parameters
    ----------
    x : array (B, D) — data (broadcasts against the leading shape (S, B)).
    t : array (S, B, d) — latent samples from q.
    mu_t, logvar_t : arrays (B, d) — the proposal q(t | x) = N(mu_t, diag e^logvar_t).
    mu_x, logvar_x : arrays (S, B, D) — Gaussian decoder outputs (any shape broadcasting to it,
        e.g. a shared (D,) log-variance), or
    logits : array (S, B, D) — Bernoulli decoder output. Give either (mu_x, logvar_x) or logits.

    Returns
    -------
    log_w : array (S, B). One pass per (s, b) row over D and d; no (S, B, D) temporary.
    ``elbo(log_w)``, ``iwae(log_w)`` and ``importance_weights(log_w)`` reduce it over S.
    """
    fname = "importance_log_weights"
    gaussian = logits is None
    if gaussian and (mu_x is None or logvar_x is None):
        raise ValueError(f"{fname}: give either mu_x and logvar_x (Gaussian decoder) or logits "
                         "(Bernoulli decoder)")
    if not gaussian and (mu_x is not None or logvar_x is not None):
        raise ValueError(f"{fname}: give either mu_x and logvar_x or logits, not both")
    be, dtype, a = check_floats(fname, x=x, mu_x=mu_x, logvar_x=logvar_x, logits=logits, t=t,
                                 mu_t=mu_t, logvar_t=logvar_t)
    xp, kern = be.xp, be.kernels
    dec = {"x": a["x"]}
    if gaussian:
        dec.update(mu_x=a["mu_x"], logvar_x=a["logvar_x"])
    else:
        dec["logits"] = a["logits"]
    lat = {"t": a["t"], "mu_t": a["mu_t"], "logvar_t": a["logvar_t"]}
    for n, v in {**dec, **lat}.items():
        if v.ndim == 0:
            raise ValueError(f"{fname}: expected {n} to have an event axis, got a scalar")
    lead = broadcast_lead(fname, {**dec, **lat})
    dops = RowOperands(fname, dec, lead=lead, xp=xp)
    lops = RowOperands(fname, lat, lead=lead, xp=xp)
    # operand order of the kernels: x, mu_x | logits, logvar_x (a zero row for Bernoulli), t, mu_t, lv_t
    drs = dops.rstride if gaussian else np.concatenate([dops.rstride, np.zeros_like(dops.rstride[:1])])
    rs = np.concatenate([drs, lops.rstride])
    out = xp.empty(dops.R, dtype)
    if dops.R:
        if gaussian:
            kern.importance_log_weights_gaussian(
                out, dops.rows["x"], dops.rows["mu_x"], dops.rows["logvar_x"], lops.rows["t"],
                lops.rows["mu_t"], lops.rows["logvar_t"], dops.lead_arr, rs)
        else:
            kern.importance_log_weights_bernoulli(
                out, dops.rows["x"], dops.rows["logits"], lops.rows["t"], lops.rows["mu_t"],
                lops.rows["logvar_t"], dops.lead_arr, rs)
    return out.reshape(lead)


def _fused_bounds_layout(x, dec1, dec2, t, mt, lt):
    """(S, B, D, d) when the operands have the fused bound kernel's layout — x (B, D); both
    decoder outputs (S, B, D); t (S, B, d); mu_t, logvar_t (B, d); all non-empty and
    C-contiguous — else None."""
    if x.ndim != 2 or t.ndim != 3:
        return None
    (S, B, d), D = t.shape, x.shape[1]
    ok = (min(S, B, D, d) >= 1 and x.shape[0] == B and dec1.shape == dec2.shape == (S, B, D)
          and mt.shape == lt.shape == (B, d)
          and all(v.flags.c_contiguous for v in (x, dec1, dec2, t, mt, lt)))
    return (S, B, D, d) if ok else None


def importance_bounds(x, t, mu_t, logvar_t, *, mu_x=None, logvar_x=None, logits=None):
    """The log-weights and both bounds in one call: ``(log_w, elbo, iwae)``.

    Equal to ``log_w = importance_log_weights(...)``, ``elbo(log_w)``, ``iwae(log_w)`` (same
    arguments, same rules for -inf, inf and NaN). On the GPU, when the operands have the plain
    layout — x (B, D); mu_x and logvar_x, or logits, (S, B, D); t (S, B, d); mu_t and logvar_t
    (B, d); C-contiguous; D up to 1024 (float32) or 512 (float64) — one fused kernel computes all
    three: each block keeps one row of x in registers for all S samples and reduces over s with
    an online logsumexp, so x is read once instead of S times and no second launch is needed.
    Any other layout, and the CPU, take the composition.

    Returns
    -------
    log_w : (S, B), elbo : (B,), iwae : (B,) — arrays of x's dtype on x's device.
    """
    fname = "importance_bounds"
    gaussian = logits is None
    be, dtype, a = check_floats(fname, x=x, mu_x=mu_x, logvar_x=logvar_x, logits=logits, t=t,
                                 mu_t=mu_t, logvar_t=logvar_t)
    one_decoder = (mu_x is not None and logvar_x is not None) if gaussian else (mu_x is None and logvar_x is None)
    if be.name == "cupy" and one_decoder:
        dec = (a["mu_x"], a["logvar_x"]) if gaussian else (a["logits"], a["logits"])
        operands = (a["x"], *dec, a["t"], a["mu_t"], a["logvar_t"])
        shape = _fused_bounds_layout(*operands)
        xp, kern = be.xp, be.kernels
        vw = shape is not None and kern.importance_bounds_fits(shape[2], dtype, operands[:3])
        if vw:
            S, B = shape[:2]
            lw, el, iw = xp.empty((S, B), dtype), xp.empty(B, dtype), xp.empty(B, dtype)
            kern.importance_bounds(lw, el, iw, *operands, gaussian, vw)
            return lw, el, iw
    lw = importance_log_weights(x, t, mu_t, logvar_t, mu_x=mu_x, logvar_x=logvar_x, logits=logits)
    return lw, elbo(lw), iwae(lw)


def _log_w(fname, log_w):
    be, dtype, a = check_floats(fname, log_w=log_w)
    lw = a["log_w"]
    if lw.ndim == 0 or lw.shape[0] == 0:
        raise ValueError(f"{fname}: expected log_w of shape (S, ...) with S >= 1, got {lw.shape}")
    return be, lw


def elbo(log_w, axis=0):
    """Monte Carlo ELBO: the mean of the log-weights over the sample axis (default 0)."""
    _, lw = _log_w("elbo", log_w)
    return lw.mean(axis=axis)


def iwae(log_w, axis=0):
    """Importance-weighted bound (Burda et al. 2016): logsumexp over samples minus log S."""
    be, lw = _log_w("iwae", log_w)
    S = lw.shape[axis]
    out = _logsumexp("iwae", be, lw, axis, False)
    out -= lw.dtype.type(math.log(S))
    return out


def importance_weights(log_w, axis=0):
    """Self-normalised importance weights softmax(log_w) over the sample axis.

    They weight the per-sample gradients in the IWAE gradient. Non-finite log-weights: a slice
    whose log-weights are all -inf has no defined normalisation and gets weights 0; in a slice
    with +inf log-weights those entries share the mass equally (the limit of softmax) and the
    others get 0; a slice with a NaN log-weight gets NaN weights (only such slices).
    """
    be, lw = _log_w("importance_weights", log_w)
    lse = _logsumexp("importance_weights", be, lw, axis, True)
    xp = be.xp
    F = lw.dtype.type
    safe = xp.where(xp.isfinite(lse), lse, F(0))
    with np.errstate(invalid="ignore", over="ignore"):
        w = xp.exp(lw - safe)
        is_inf = lw == np.inf
        n_inf = is_inf.sum(axis=axis, keepdims=True).astype(lw.dtype)
        w = xp.where(lse == np.inf, is_inf / xp.maximum(n_inf, F(1)), w)
    w = xp.where(lse == -np.inf, F(0), w)
    return xp.where(xp.isnan(lse), F(np.nan), w).astype(lw.dtype, copy=False)


def reparameterize(mu, logvar, rng, n_samples=None, eps=None):
    """Reparameterised draw t = mu + exp(logvar / 2) * eps, eps ~ N(0, I).

    Parameters
    ----------
    mu, logvar : arrays of shape (..., d), same dtype.
    rng : numpy.random.Generator (or an int seed); eps is drawn in the arrays' dtype.
    n_samples : int, optional — if given, draws have shape (n_samples, ..., d).
    eps : array, optional — the standard-normal draws to use (the draw's shape and the arrays'
        dtype and device) instead of drawing them; ``rng`` is then not used (None is fine).
        Drawing the noise of a minibatch once and passing each part of the rows its share
        gives the same t as one call on all rows.

    Returns
    -------
    (t, eps): both of the draw's shape; eps is what the reparameterisation gradient needs.
    """
    fname = "reparameterize"
    be, dtype, a = check_floats(fname, mu=mu, logvar=logvar)
    xp, kern = be.xp, be.kernels
    ops = RowOperands(fname, {"mu": a["mu"], "logvar": a["logvar"]}, xp=xp)
    shape = ops.lead + (ops.D,)
    if n_samples is not None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"{fname}: expected n_samples to be a positive int, got {n_samples!r}")
        shape = (int(n_samples),) + shape
    if eps is None:
        eps = standard_normal(rng, shape, dtype, xp, fname)
    else:
        if getattr(eps, "shape", None) != shape or eps.dtype != dtype or backend_of(eps) is not be:
            raise ValueError(f"{fname}: expected eps of shape {shape} and dtype {dtype} on the "
                             f"device of mu, got {getattr(eps, 'shape', None)} {getattr(eps, 'dtype', None)}")
        eps = xp.ascontiguousarray(eps)
    ops2 = RowOperands(fname, {"mu": a["mu"], "logvar": a["logvar"]}, D=ops.D, lead=shape[:-1], xp=xp)
    t = xp.empty_like(eps)
    if t.size:
        kern.reparameterize(t.reshape(-1, ops.D), ops2.rows["mu"], ops2.rows["logvar"],
                         eps.reshape(-1, ops.D), ops2.lead_arr, ops2.rstride)
    return t, eps


def standard_normal(rng, shape, dtype, xp=np, fname="standard_normal"):
    """N(0, 1) draws of ``shape`` in ``dtype`` on xp's device from ``rng`` (a numpy or cupy
    Generator, an int seed, or None). A numpy Generator with xp = cupy draws on the host (the
    CPU path's numbers) and copies."""
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) or rng is None:
        rng = xp.random.default_rng(rng)
    elif not isinstance(rng, (np.random.Generator, xp.random.Generator)):
        raise TypeError(f"{fname}: expected rng to be a numpy (or cupy) random Generator or an int "
                        f"seed, got {type(rng).__name__}")
    return xp.asarray(rng.standard_normal(shape, dtype=dtype))


# --- convolution data movement (used by lgm.nn's Conv2d and ConvTranspose2d) ---------------------
def _conv_ints(fname, **v):
    for n, a in v.items():
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < (1 if n != "padding" else 0):
            raise ValueError(f"{fname}: expected {n} to be a {'non-negative' if n == 'padding' else 'positive'} "
                             f"int, got {a!r}")


def im2col(x, k, stride=1, padding=0, out=None):
    """Patches of NHWC images for a convolution as one GEMM.

    Parameters
    ----------
    x : array (B, H, W, C), float32 or float64.
    k, stride, padding : kernel size, stride, zero padding.
    out : array (B, Ho, Wo, k, k, C) of x's dtype and device, optional — written in place.

    Returns
    -------
    cols : array (B, Ho, Wo, k, k, C), Ho = (H + 2 padding - k) // stride + 1: cols[b, i, j, u, v]
    = x[b, i stride + u - padding, j stride + v - padding] (0 outside the image).
    """
    fname = "im2col"
    be, dtype, a = check_floats(fname, x=x)
    x = a["x"]
    _conv_ints(fname, k=k, stride=stride, padding=padding)
    if x.ndim != 4:
        raise ValueError(f"{fname}: expected x of shape (B, H, W, C), got {x.shape}")
    xp, kern = be.xp, be.kernels
    B, H, W, C = x.shape
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{fname}: kernel {k} with padding {padding} does not fit images {H}x{W}")
    shape = (B, Ho, Wo, k, k, C)
    if out is None:
        cols = xp.empty(shape, dtype)
    else:
        if (out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous
                or module_name(out) != be.name):
            raise ValueError(f"{fname}: expected out to be a C-contiguous {be.name} array of shape "
                             f"{shape} and dtype {dtype}, got {out.shape} {out.dtype}")
        cols = out
    if cols.size:
        kern.im2col(cols, xp.ascontiguousarray(x), stride, padding)
    return cols


def col2im(cols, H, W, stride=1, padding=0):
    """The adjoint of :func:`im2col`: scatter-add patches (B, Ho, Wo, k, k, C) back into images
    (B, H, W, C) (what padding covers is dropped)."""
    fname = "col2im"
    be, dtype, a = check_floats(fname, cols=cols)
    cols = a["cols"]
    _conv_ints(fname, H=H, W=W, stride=stride, padding=padding)
    if cols.ndim != 6 or cols.shape[3] != cols.shape[4]:
        raise ValueError(f"{fname}: expected cols of shape (B, Ho, Wo, k, k, C), got {cols.shape}")
    xp, kern = be.xp, be.kernels
    out = xp.empty((cols.shape[0], H, W, cols.shape[5]), dtype)
    if out.size:
        kern.col2im(out, xp.ascontiguousarray(cols), stride, padding)
    return out


def device_info():
    """Lines describing the devices: numpy and Numba, the CPU vector width (``LGM_VECTOR_WIDTH``),
    and the GPU backend or why it is unavailable."""
    import numba

    from ._config import VECTOR_WIDTH_INFO

    lines = [f"numpy {np.__version__}, numba {numba.__version__} "
             f"({numba.config.NUMBA_NUM_THREADS} threads)", f"CPU vectors: {VECTOR_WIDTH_INFO}"]
    try:
        lines.append("GPU: " + gpu_info())
    except Exception as exc:  # noqa: BLE001 - report whatever stops the GPU backend
        lines.append(f"GPU: unavailable ({exc})")
    return lines


# Row functions for users' own @numba.njit code (1-D rows, float32 or float64): the CPU kernels'
# building blocks, reached here so that user code needs no private module.
NJIT_ROWS = ("diag_gaussian_logpdf_row", "bernoulli_logpmf_row", "std_normal_logpdf_row",
             "kl_diag_std_normal_row")


def __getattr__(name):
    if name in NJIT_ROWS:
        return getattr(backend_for("cpu").kernels, name)
    raise AttributeError(f"module 'lgm.ops' has no attribute {name!r}")
