"""Numba CPU kernels: fused, row-wise, float32 and float64.

Conventions (llm.c style): outputs first, then inputs, then sizes/index tables. Every operand is
a C-contiguous 2-D array ``(rows_of_that_operand, D)``; the output has ``R`` rows, the product of
the broadcast leading shape ``lead``. Operand ``j`` finds its row for output row ``r`` through
``_rows(r, lead, rstride)`` (the multi-index of ``r`` dotted with ``rstride[j]``, the operand's
row strides along the leading axes, 0 where it is broadcast). This keeps broadcasting free (no copies) while the inner
loop over D stays unit-stride, which is what LLVM needs to vectorise it.

Every kernel is compiled by the one helper of ``jit.py`` (its options are explained there).
Latent operands carry the suffix ``_rl`` (rows, d latent dimensions); see lgm._backends for the
names.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from numba import types
from numba.core.extending import overload

from .fastmath import fexp, fexp_nonan, fexpm1, fexpm1mx, flog1p
from .jit import helper, jit


LOG_2PI = 1.8378770664093453


@helper()
def _rows(r, lead, rs):
    """Rows of up to six operands for output row ``r`` (C order over the leading shape ``lead``):
    the multi-index of ``r`` dotted with each operand's row strides ``rs[j]`` (0 where it is
    broadcast). The multi-index is computed once and shared by all operands: integer division
    costs tens of cycles, and per operand it was a third of the importance-weights kernel's
    time. Entries past ``rs.shape[0]`` are 0."""
    r = np.int64(r)  # prange indices can be unsigned; uint64 mixed with int64 types as float64
    n_ops = rs.shape[0]
    i0 = i1 = i2 = i3 = i4 = i5 = np.int64(0)
    rem = r
    for a in range(lead.shape[0] - 1, -1, -1):
        n = lead[a]
        q = rem // n
        i = rem - q * n
        rem = q
        i0 += i * rs[0, a]
        if n_ops > 1:
            i1 += i * rs[1, a]
        if n_ops > 2:
            i2 += i * rs[2, a]
        if n_ops > 3:
            i3 += i * rs[3, a]
            i4 += i * rs[4, a]
            i5 += i * rs[5, a]
    return i0, i1, i2, i3, i4, i5


# ---------------------------------------------------------------------------------------------
# The per-element terms of the row sums, one definition each (the CUDA side's gaussian_term,
# bernoulli_term and kl_term in kernels/common.cuh), inlined into every kernel that sums them
# (Numba-IR inlining: left to LLVM's inliner, the float64 Bernoulli term stayed a call and its
# kernel ran 6x slower).
#
# Gaussian, (x - mu)^2 e^-lv + lv (before the -1/2 and the log 2 pi): computed as s^2 with
# s = (x - mu) e^(-lv/2), so that a tiny variance overflows only where the true term does
# (e^-lv alone overflows at lv < -709, where (x - mu)^2 e^-lv can still be finite), and as 0
# when x == mu whatever the variance (0 * inf would be NaN: log N(0.5 | 0.5, e^-709.5) is 353.83).
# NaN in lv reaches the sum through "+ lv", so the NaN-free exp is enough.
# Bernoulli, x l - softplus(l), as c l - log1p(e^-|l|) with c = x - [l > 0]: exact far in the
# tails (x = 1, l = 40 gives -4.2e-18, not 40 - 40 = 0), and 0 at l = +-inf with the matching
# label (c = 0; 0 * inf would be NaN).
# KL(N(mu, e^lv) || N(0, 1)) per element, 1/2 (mu^2 + e^lv - 1 - lv), with e^lv - 1 - lv from a
# series near 0 (fexpm1mx): as a difference of nearly equal terms it lost all relative accuracy
# when KL ~ 0.
# The Bernoulli gradient w (x - sigmoid(l)) is exact to within 2^-100 (float32; 2^-960 float64) and
# never subnormal: a row whose weight is below that has none (gradient_floor), and the term w
# sigmoid(l) is dropped below it, i.e. below the row's cut l < log(2^-100 / |w|) (sigmoid_term; the
# logit is clamped into [cut, 80] (float64 [cut, 700]) first, so that no lane of the vectorised
# loop computes a subnormal). A trained MLP decoder's background logits reach -210, and IWAE's
# normalised importance weights can be as small: the gradients there were subnormal or near it, on
# Intel cores every operation on them takes a microcode assist, and the backward GEMMs that take
# them ran 3-5x slower (the MLP VAE's step 8.2 ms against 3.0, Xeon). Values that small move no
# parameter: an Adam step from them is ~lr * 1e-30 / eps.
# ---------------------------------------------------------------------------------------------
def gaussian_term(x, mu, lv):
    """(x - mu)^2 e^-lv + lv (Numba-compiled code only)."""
    raise NotImplementedError("gaussian_term is callable only from Numba-compiled code")


def bernoulli_term(x, lg):
    """x l - softplus(l) (Numba-compiled code only)."""
    raise NotImplementedError("bernoulli_term is callable only from Numba-compiled code")


def sigmoid_term(lg, lo):
    """sigmoid(l), 0 for l < lo (Numba-compiled code only)."""
    raise NotImplementedError("sigmoid_term is callable only from Numba-compiled code")


def gradient_floor(w):
    """(w, lo) for a row of weight w: w, or 0 below 2^-100 (float32; 2^-960 float64), and the
    logit below which w sigmoid(l) is below that (Numba-compiled code only)."""
    raise NotImplementedError("gradient_floor is callable only from Numba-compiled code")


def kl_term(mu, lv):
    """2 KL(N(mu, e^lv) || N(0, 1)) = mu^2 + e^lv - 1 - lv (Numba-compiled code only)."""
    raise NotImplementedError("kl_term is callable only from Numba-compiled code")


def _consts(x):
    F = np.float64 if x == types.float64 else np.float32 if x == types.float32 else None
    return None if F is None else (F(0), F(1), F(-0.5))


@overload(gaussian_term, inline="always")
def _ol_gaussian_term(x, mu, lv):
    k = _consts(x)
    if k is None:
        return None
    zero, _, mhalf = k

    def impl(x, mu, lv):
        d = x - mu
        s = d * fexp_nonan(mhalf * lv)
        return (s * s if d != zero else zero) + lv
    return impl


@overload(bernoulli_term, inline="always")
def _ol_bernoulli_term(x, lg):
    k = _consts(x)
    if k is None:
        return None
    zero, one, _ = k

    def impl(x, lg):
        c = x - one if lg > zero else x
        lin = c * lg if c != zero else zero
        r = lin - flog1p(fexp_nonan(-abs(lg)))
        return r if lg == lg else lg
    return impl


@overload(sigmoid_term, inline="always")
def _ol_sigmoid_term(lg, lo):
    k = _consts(lg)
    if k is None:
        return None
    zero, one, _ = k
    # above hi, 1 / (1 + e^-l) rounds to 1, and e^-l itself would near the subnormals
    hi = np.float64(700.0) if lg == types.float64 else np.float32(80.0)

    def impl(lg, lo):
        z = lo if lg < lo else (hi if lg > hi else lg)  # NaN stays NaN
        s = one / (one + fexp(-z))
        return zero if lg < lo else s
    return impl


@overload(gradient_floor, inline="always")
def _ol_gradient_floor(w):
    k = _consts(w)
    if k is None:
        return None
    zero = k[0]
    F = np.float64 if w == types.float64 else np.float32
    # 2^-e times the smallest nonzero 1 - sigmoid (an ulp of 1: 2^-24, 2^-53) stays normal
    e = 960 if w == types.float64 else 100
    floor, log_floor, never = F(2.0 ** -e), F(-e * np.log(2.0)), F(np.inf)

    def impl(w):
        aw = abs(w)
        if aw < floor:  # the whole row's gradient would be below the floor
            return zero, never
        cut = log_floor - F(np.log(aw))
        # where sigmoid(l) < 2^-e / |w|, i.e. l below log(2^-e / |w|); for |w| > 1 no lower
        # than the floor's own log (sigmoid itself below the floor)
        return w, cut if cut > log_floor else log_floor
    return impl


@overload(kl_term, inline="always")
def _ol_kl_term(mu, lv):
    if _consts(mu) is None:
        return None
    return lambda mu, lv: mu * mu + fexpm1mx(lv)


# ---------------------------------------------------------------------------------------------
# Row functions: public building blocks a user can call from their own @njit code (1-D rows).
# ---------------------------------------------------------------------------------------------
@jit(parallel=False)
def diag_gaussian_logpdf_row(x, mu, logvar):
    """log N(x | mu, diag exp(logvar)) for one row (1-D arrays of equal length)."""
    F = x.dtype.type
    acc = F(0)
    for j in range(x.shape[0]):
        acc += gaussian_term(x[j], mu[j], logvar[j])
    return F(-0.5) * (acc + F(x.shape[0] * LOG_2PI))


@jit(parallel=False)
def bernoulli_logpmf_row(x, logits):
    """sum_j x_j l_j - softplus(l_j): log Bernoulli(x | sigmoid(l)) for one row, stable."""
    F = x.dtype.type
    acc = F(0)
    for j in range(x.shape[0]):
        acc += bernoulli_term(x[j], logits[j])
    return acc


@jit(parallel=False)
def std_normal_logpdf_row(t):
    F = t.dtype.type
    acc = F(0)
    for j in range(t.shape[0]):
        acc += t[j] * t[j]
    return F(-0.5) * (acc + F(t.shape[0] * LOG_2PI))


@jit(parallel=False)
def kl_diag_std_normal_row(mu, logvar):
    """KL(N(mu, diag e^logvar) || N(0, I)) = -1/2 sum(1 + logvar - mu^2 - e^logvar).

    Kingma & Welling (2014), Auto-Encoding Variational Bayes, Appendix B.
    """
    F = mu.dtype.type
    acc = F(0)
    for j in range(mu.shape[0]):
        acc += kl_term(mu[j], logvar[j])
    return F(0.5) * acc


# ---------------------------------------------------------------------------------------------
# Batched kernels
# ---------------------------------------------------------------------------------------------
@jit()
def diag_gaussian_logpdf(out_r, x_rd, mu_rd, lv_rd, lead, rs):
    R = out_r.shape[0]
    D = x_rd.shape[1]
    F = x_rd.dtype.type
    c = F(D * LOG_2PI)
    for r in prange(R):
        ix, im, il = _rows(r, lead, rs)[:3]
        acc = F(0)
        for j in range(D):
            acc += gaussian_term(x_rd[ix, j], mu_rd[im, j], lv_rd[il, j])
        out_r[r] = F(-0.5) * (acc + c)


@jit()
def diag_gaussian_logpdf_grad(out_r, dx_rd, dmu_rd, dlv_rd, x_rd, mu_rd, lv_rd, w_r,
                              want_dx, want_dmu, want_dlv, lead, rs):
    """Value and gradients in one pass. Gradients are weighted by w_r (ones when unweighted) and
    written (not accumulated) to full (R, D) arrays; the caller sums broadcast axes.

    d/dmu = w (x - mu) e^-lv;  d/dx = -d/dmu;  d/dlv = w/2 ((x - mu)^2 e^-lv - 1). The Gaussian
    term is expanded here (it needs its intermediates), the way gaussian_term computes it.
    """
    R = out_r.shape[0]
    D = x_rd.shape[1]
    F = x_rd.dtype.type
    c = F(D * LOG_2PI)
    for r in prange(R):
        ix, im, il = _rows(r, lead, rs)[:3]
        w = w_r[r]
        hw = F(0.5) * w
        acc = F(0)
        for j in range(D):
            d = x_rd[ix, j] - mu_rd[im, j]
            lv = lv_rd[il, j]
            h = fexp(F(-0.5) * lv)  # as gaussian_term: (d h)^2, and 0 where d == 0
            s = d * h
            nz = d != F(0)
            q = s * s if nz else F(0)
            de = s * h if nz else F(0)  # d e^-lv
            acc += q + lv
            if want_dmu:
                dmu_rd[r, j] = w * de
            if want_dx:
                dx_rd[r, j] = -w * de
            if want_dlv:
                dlv_rd[r, j] = hw * (q - F(1))
        out_r[r] = F(-0.5) * (acc + c)


@jit()
def bernoulli_logpmf(out_r, x_rd, l_rd, lead, rs):
    R = out_r.shape[0]
    D = x_rd.shape[1]
    F = x_rd.dtype.type
    for r in prange(R):
        ix, il = _rows(r, lead, rs)[:2]
        acc = F(0)
        for j in range(D):
            acc += bernoulli_term(x_rd[ix, j], l_rd[il, j])
        out_r[r] = acc


@jit()
def bernoulli_logpmf_grad(out_r, dl_rd, x_rd, l_rd, w_r, lead, rs):
    """Value and d/dlogits = w (x - sigmoid(l)), written to a full (R, D) array."""
    R = out_r.shape[0]
    D = x_rd.shape[1]
    F = x_rd.dtype.type
    for r in prange(R):
        ix, il = _rows(r, lead, rs)[:2]
        w, cut = gradient_floor(w_r[r])
        acc = F(0)
        for j in range(D):
            lg = l_rd[il, j]
            xv = x_rd[ix, j]
            acc += bernoulli_term(xv, lg)
            dl_rd[r, j] = w * (xv - sigmoid_term(lg, cut))
        out_r[r] = acc


@jit()
def std_normal_logpdf(out_r, t_rd):
    R, D = t_rd.shape
    F = t_rd.dtype.type
    c = F(D * LOG_2PI)
    for r in prange(R):
        acc = F(0)
        for j in range(D):
            acc += t_rd[r, j] * t_rd[r, j]
        out_r[r] = F(-0.5) * (acc + c)


@jit()
def kl_diag_std_normal(out_r, dmu_rd, dlv_rd, mu_rd, lv_rd, want_grad, lead, rs):
    """KL(N(mu, e^lv) || N(0, I)) per row (Kingma & Welling 2014, Appendix B) and, when asked,
    d/dmu = mu, d/dlv = (e^lv - 1)/2, written to full (R, D) arrays."""
    R = out_r.shape[0]
    D = mu_rd.shape[1]
    F = mu_rd.dtype.type
    for r in prange(R):
        im, il = _rows(r, lead, rs)[:2]
        acc = F(0)
        for j in range(D):
            m = mu_rd[im, j]
            lv = lv_rd[il, j]
            acc += kl_term(m, lv)
            if want_grad:
                dmu_rd[r, j] = m
                dlv_rd[r, j] = F(0.5) * fexpm1(lv)
        out_r[r] = F(0.5) * acc


@jit()
def reparameterize(t_rd, mu_rd, lv_rd, eps_rd, lead, rs):
    """t = mu + exp(lv / 2) * eps, broadcasting mu and lv over the rows of eps."""
    R, D = t_rd.shape
    F = t_rd.dtype.type
    for r in prange(R):
        im, il = _rows(r, lead, rs)[:2]
        for j in range(D):
            t_rd[r, j] = mu_rd[im, j] + fexp(F(0.5) * lv_rd[il, j]) * eps_rd[r, j]


# ---------------------------------------------------------------------------------------------
# Importance log-weights: log w = log p(x | t) + log p(t) - log q(t | x), fused per (s, b) row.
# Operand order in rs: x, dec1 (mu_x or logits), dec2 (logvar_x; unused for Bernoulli), t, mu_t,
# lv_t. log p(t) - log q(t) = 1/2 sum((t - mu_t)^2 e^-lv_t + lv_t - t^2): the log 2 pi cancel.
# ---------------------------------------------------------------------------------------------
@jit(parallel=False)
def latent_term(t, mu_t, lv_t):
    """sum_k (t - mu_t)^2 e^-lv_t + lv_t - t^2 over one latent row: 2 (log p(t) - log q(t))."""
    F = t.dtype.type
    lat = F(0)
    for k in range(t.shape[0]):
        lat += gaussian_term(t[k], mu_t[k], lv_t[k]) - t[k] * t[k]
    return lat


@jit()
def importance_log_weights_gaussian(out_r, x_rd, mux_rd, lvx_rd, t_rl, mut_rl, lvt_rl, lead, rs):
    R = out_r.shape[0]
    D = x_rd.shape[1]
    F = x_rd.dtype.type
    c = F(D * LOG_2PI)
    for r in prange(R):
        ix, im, il, it, imt, ilt = _rows(r, lead, rs)
        acc = F(0)
        for j in range(D):
            acc += gaussian_term(x_rd[ix, j], mux_rd[im, j], lvx_rd[il, j])
        lat = latent_term(t_rl[it], mut_rl[imt], lvt_rl[ilt])
        out_r[r] = F(-0.5) * (acc + c) + F(0.5) * lat


@jit()
def importance_log_weights_bernoulli(out_r, x_rd, l_rd, t_rl, mut_rl, lvt_rl, lead, rs):
    R = out_r.shape[0]
    D = x_rd.shape[1]
    F = x_rd.dtype.type
    for r in prange(R):
        ix, il, _unused, it, imt, ilt = _rows(r, lead, rs)
        acc = F(0)
        for j in range(D):
            acc += bernoulli_term(x_rd[ix, j], l_rd[il, j])
        lat = latent_term(t_rl[it], mut_rl[imt], lvt_rl[ilt])
        out_r[r] = acc + F(0.5) * lat


# ---------------------------------------------------------------------------------------------
# logsumexp over the middle axis of a C-contiguous (P, N, Q) array -> (P, Q).
# Two passes per slice (max, then the sum); the slice is in cache for the second. The result is
# m + log1p(s) with s the sum of exp(a - m) over every term but one occurrence of the max m
# (terms below m, plus one for each further term equal to m): when the max dominates, log(1 + s)
# would round 1 + s first (logsumexp([0, -30]) had a relative error of 1e-3; float32 [0, -12]
# 9e-3). Rules (as JAX/scipy): an all -inf slice gives -inf without NaN; +inf anywhere gives
# +inf; NaN anywhere gives NaN.
# ---------------------------------------------------------------------------------------------
@helper()
def _lse_finish(m, s, has_nan, F):
    if has_nan:
        return F(np.nan)
    if m == F(np.inf) or m == -F(np.inf):
        return m
    return m + np.log1p(s)


@jit()
def logsumexp_rows(out_p, a_pn):
    """Q == 1: each row is contiguous; reduce along it."""
    P, N = a_pn.shape
    F = a_pn.dtype.type
    for p in prange(P):
        m = -F(np.inf)
        nan = False
        for i in range(N):
            v = a_pn[p, i]
            m = v if v > m else m
            nan |= v != v
        s = F(0)
        n_eq = 0
        for i in range(N):
            v = a_pn[p, i]
            s += fexp_nonan(v - m) if v < m else F(0)
            n_eq += 1 if v == m else 0
        out_p[p] = _lse_finish(m, s + F(n_eq - 1), nan, F)


@jit()
def logsumexp_cols(out_pq, a_pnq):
    """Q > 1: reduce over n with the inner loop running along contiguous q (vectorised)."""
    P, N, Q = a_pnq.shape
    F = a_pnq.dtype.type
    m_pq = np.empty((P, Q), a_pnq.dtype)  # running max
    s_pq = np.empty((P, Q), a_pnq.dtype)  # sum of exp(a - max) over the terms below the max
    neq_pq = np.empty((P, Q), np.int64)  # terms equal to the max
    nan_pq = np.empty((P, Q), np.bool_)
    for p in prange(P):
        for q in range(Q):
            m_pq[p, q] = -F(np.inf)
            nan_pq[p, q] = False
            s_pq[p, q] = F(0)
            neq_pq[p, q] = 0
        for n in range(N):
            for q in range(Q):
                v = a_pnq[p, n, q]
                mq = m_pq[p, q]
                m_pq[p, q] = v if v > mq else mq
                nan_pq[p, q] |= v != v
        for n in range(N):
            for q in range(Q):
                v = a_pnq[p, n, q]
                mq = m_pq[p, q]
                s_pq[p, q] += fexp_nonan(v - mq) if v < mq else F(0)
                neq_pq[p, q] += 1 if v == mq else 0
        for q in range(Q):
            out_pq[p, q] = _lse_finish(m_pq[p, q], s_pq[p, q] + F(neq_pq[p, q] - 1), nan_pq[p, q], F)


# ---------------------------------------------------------------------------------------------
# Memory-bandwidth probe (STREAM-like read of three arrays), used by the benchmarks.
# ---------------------------------------------------------------------------------------------
@jit()
def read3(a_rd, b_rd, c_rd, out_r):
    R, D = a_rd.shape
    F = a_rd.dtype.type
    for r in prange(R):
        s = F(0)
        for j in range(D):
            s += a_rd[r, j] + b_rd[r, j] + c_rd[r, j]
        out_r[r] = s


# --- convolution data movement (NHWC). Serial on purpose: they run between BLAS calls, whose
# worker threads are still spinning on the other cores; a parallel Numba region there contends
# with them (measured on 2 cores: MLP VAE steps 7x slower, conv 2.4x). With OMP_WAIT_POLICY=passive
# the parallel versions win (conv VAE +20 %), but that policy slows the memory-bound kernels by
# 15-20 % and cannot be scoped to one call, so lgm leaves it alone.
# Two loop orders, chosen by the channel count C:
# - many channels: inner loops copy contiguous runs of C values through per-patch views; measured
#   faster than flat-offset copies of whole k*C patch rows (im2col 1.07 vs 1.82 ms, col2im 1.06
#   vs 2.79 ms on the conv VAE's largest layer, C = 32, same process);
# - C <= THIN_C (an image's own channels): a run of C values is one or two numbers, and the
#   per-patch bounds checks cost more than the copies. Each image is padded once into a buffer,
#   and whole k*C rows are copied without checks (the conv VAE's two 28 x 28 x 1 layers, batch
#   128, forward + backward, together with the column-wise bias passes of cpu/nn.py: 4.6 -> 3.4
#   ms per step, python bench/conv_profile.py; at C = 32 the same order was 3x slower than the
#   per-patch one, hence the two).
THIN_C = 4


@helper()
def _padded_extent(n, p, n_out, k, s):
    """Rows (or columns) of the padded buffer: the input's plus padding, or what the patches
    reach when a stride remainder makes them reach further."""
    return max(n + 2 * p, (n_out - 1) * s + k)


@jit(parallel=False, fastmath=())
def _im2col_thin(cols, x, s, p):
    B, Ho, Wo, k, _, C = cols.shape
    H, W = x.shape[1], x.shape[2]
    Hp, Wp = _padded_extent(H, p, Ho, k, s), _padded_extent(W, p, Wo, k, s)
    buf = np.zeros((Hp, Wp * C), cols.dtype)  # one padded image; the border stays zero
    rows = cols.reshape(B, Ho, Wo, k, k * C)
    kC = k * C
    for b in range(B):
        for r in range(H):
            src = x[b, r].reshape(W * C)
            dst = buf[r + p]
            for t in range(W * C):
                dst[p * C + t] = src[t]
        for i in range(Ho):
            for u in range(k):
                src = buf[i * s + u]
                for j in range(Wo):
                    dst = rows[b, i, j, u]
                    o = j * s * C
                    for t in range(kC):
                        dst[t] = src[o + t]


@jit(parallel=False, fastmath=())
def im2col(cols, x, s, p):
    """cols (B, Ho, Wo, k, k, C) <- patches of x (B, H, W, C) with implicit zero padding p."""
    B, Ho, Wo, k, _, C = cols.shape
    H, W = x.shape[1], x.shape[2]
    F = cols.dtype.type
    if C <= THIN_C:
        _im2col_thin(cols, x, s, p)
        return
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                for u in range(k):
                    r = i * s + u - p
                    for v in range(k):
                        q = j * s + v - p
                        dst = cols[b, i, j, u, v]
                        if 0 <= r < H and 0 <= q < W:
                            src = x[b, r, q]
                            for c in range(C):
                                dst[c] = src[c]
                        else:
                            for c in range(C):
                                dst[c] = F(0)


@jit(parallel=False, fastmath=())
def _col2im_thin(out, cols, s, p):
    B, Ho, Wo, k, _, C = cols.shape
    H, W = out.shape[1], out.shape[2]
    Hp, Wp = _padded_extent(H, p, Ho, k, s), _padded_extent(W, p, Wo, k, s)
    buf = np.empty((Hp, Wp * C), cols.dtype)  # one padded image, summed into, then cropped
    rows = cols.reshape(B, Ho, Wo, k, k * C)
    kC = k * C
    for b in range(B):
        buf[...] = 0
        for i in range(Ho):
            for u in range(k):
                dst = buf[i * s + u]
                for j in range(Wo):
                    src = rows[b, i, j, u]
                    o = j * s * C
                    for t in range(kC):
                        dst[o + t] += src[t]
        for r in range(H):
            src = buf[r + p]
            dst = out[b, r].reshape(W * C)
            for t in range(W * C):
                dst[t] = src[p * C + t]


@jit(parallel=False, fastmath=())
def col2im(out, cols, s, p):
    """out (B, H, W, C) = scatter-add of cols (B, Ho, Wo, k, k, C); padding p is cropped."""
    B, Ho, Wo, k, _, C = cols.shape
    H, W = out.shape[1], out.shape[2]
    if C <= THIN_C:
        _col2im_thin(out, cols, s, p)
        return
    out[...] = 0
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                for u in range(k):
                    r = i * s + u - p
                    if r < 0 or r >= H:
                        continue
                    for v in range(k):
                        q = j * s + v - p
                        if q < 0 or q >= W:
                            continue
                        src = cols[b, i, j, u, v]
                        dst = out[b, r, q]
                        for c in range(C):
                            dst[c] += src[c]
