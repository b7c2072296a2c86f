"""Branch-free, vectorisable ``exp`` and ``log1p`` for Numba kernels.

Why not ``math.exp``: the PyPI build of llvmlite has no SVML, so ``math.exp`` inside a Numba
loop is a scalar libm call that blocks LLVM's loop vectoriser; the fused kernels then run at a
quarter of memory bandwidth. The functions here use only arithmetic, selects and integer bit
operations, which LLVM vectorises at whatever width the host offers (SSE, AVX2, AVX-512).

Accuracy (measured by ``tests/test_fastmath.py`` over the whole finite input range):

- ``fexp`` float64: ≤ 2.5 ulp relative error for results in [2^-1022, 2^1023]; results below
  2^-1022 are flushed to 0 (no subnormals), results above 2^1023 become +inf (true overflow
  starts at 1.8e308, a factor < 2 higher); ``-inf`` gives 0, NaN propagates.
- ``fexp`` float32: ≤ 2 ulp for results in [2^-126, 2^127], flushed to 0 below and +inf above.
- ``flog1p`` on [0, 1] (all the softplus needs): ≤ 2 ulp in float64, ≤ 2 ulp in float32.

Method: Cody–Waite range reduction x = k ln2 + r, |r| ≤ ln2/2; a polynomial in r (Taylor to
degree 12 for float64, evaluated by Estrin's scheme for a short dependency chain; Cephes'
``expf`` minimax polynomial for float32); 2^k is assembled from exponent bits. The rounding of x·log2(e) to an integer uses the 1.5·2^52 (1.5·2^23)
"magic number" trick, whose low mantissa bits then hold the biased k, so that one shift of its
bits gives 2^k. Flushing subnormal results to zero and overflowing a factor < 2 early is the
price of that single scale; it removes a third of the instructions of an exact two-step scale.

Dtypes: every function has a float32 and a float64 implementation selected at compile time by
``numba.extending.overload``; float32 arithmetic stays in float32 (no silent upcast).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic, overload

__all__ = ["fexp", "fexp_nonan", "flog1p", "fsoftplus", "fexpm1", "fexpm1mx"]


# --- bit casts (LLVM ``bitcast``; vectorises to nothing) -------------------------------------
@intrinsic
def _f64_as_i64(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _i64_as_f64(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _f32_as_i32(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _i32_as_f32(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


# --- float64 constants -------------------------------------------------------------------------
_LOG2E_64 = 1.4426950408889634
# 1.5 * 2**52 + 1023: adding it rounds x log2(e) to an integer k held in the low mantissa bits,
# already biased by the exponent bias; since the magic number's own low 12 bits are zero,
# bits(t) << 52 is exactly the IEEE encoding of 2^k (one shift, no integer add).
_MAGIC_64 = 6755399441055744.0 + 1023.0
_LN2_HI_64 = 6.93145751953125e-1  # Cody-Waite split of ln 2 (Cephes): hi has few mantissa bits
_LN2_LO_64 = 1.42860682030941723212e-6
# Clamp so that k + 1023 stays in [0, 2047]: k = -1023 encodes 0.0 (results below 2^-1022 are
# flushed to zero) and k = 1024 encodes +inf (results above ~2^1023 overflow to inf).
_LO_64 = -709.09
_HI_64 = 710.0
_SHIFT_64 = np.int64(52)

# --- float32 constants -------------------------------------------------------------------------
_LOG2E_32 = np.float32(1.44269504088896341)
_MAGIC_32 = np.float32(12582912.0 + 127.0)  # 1.5 * 2**23 + 127, same trick as above
_LN2_HI_32 = np.float32(0.693359375)  # Cephes expf split
_LN2_LO_32 = np.float32(-2.12194440e-4)
_LO_32 = np.float32(-88.0)  # k = -127 encodes 0.0: results below 2^-126 flush to zero
_HI_32 = np.float32(89.0)  # k = 128 encodes +inf
_SHIFT_32 = np.int32(23)
# Cephes expf minimax coefficients for exp(r) = 1 + r + r^2 P(r), |r| <= ln2/2
_E32 = tuple(np.float32(c) for c in (
    5.0000001201e-1, 1.6666665459e-1, 4.1665795894e-2, 8.3334519073e-3, 1.3981999507e-3,
    1.9875691500e-4,
))
_F32_ONE = np.float32(1.0)


@njit(error_model="numpy")
def _exp64_nonan(x):
    xc = min(max(x, _LO_64), _HI_64)
    t = xc * _LOG2E_64 + _MAGIC_64
    k = t - _MAGIC_64  # round(x log2 e) as a float
    r = xc - k * _LN2_HI_64
    r = r - k * _LN2_LO_64
    # Taylor polynomial of degree 12 by Estrin's scheme (error < 1e-17 on |r| <= ln2/2)
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    p01 = 1.0 + r
    p23 = 0.5 + 0.16666666666666666 * r
    p45 = 0.041666666666666664 + 0.008333333333333333 * r
    p67 = 0.001388888888888889 + 0.0001984126984126984 * r
    p89 = 2.48015873015873e-05 + 2.7557319223985893e-06 * r
    p1011 = 2.755731922398589e-07 + 2.505210838544172e-08 * r
    q0 = p01 + p23 * r2
    q1 = p45 + p67 * r2
    q2 = p89 + p1011 * r2
    s0 = q0 + q1 * r4
    s1 = q2 + 2.08767569878681e-09 * r4
    y = s0 + s1 * r8
    return y * _i64_as_f64(_f64_as_i64(t) << _SHIFT_64)


@njit(error_model="numpy")
def _exp32_nonan(x):
    xc = min(max(x, _LO_32), _HI_32)
    t = xc * _LOG2E_32 + _MAGIC_32
    k = t - _MAGIC_32
    r = xc - k * _LN2_HI_32
    r = r - k * _LN2_LO_32
    r2 = r * r
    p = ((_E32[5] * r + _E32[4]) * r2 + (_E32[3] * r + _E32[2])) * r2 + (_E32[1] * r + _E32[0])
    y = p * r2 + r + _F32_ONE
    return y * _i32_as_f32(_f32_as_i32(t) << _SHIFT_32)


def fexp_nonan(x):
    """exp(x) for finite or infinite x; NaN input gives an unspecified finite value.

    Use only where NaN propagates by another route (e.g. ``+ logvar`` in the log-density): it
    saves the compare-and-blend of :func:`fexp`.
    """
    raise NotImplementedError("fexp_nonan is callable only from Numba-compiled code")


def fexp(x):
    """exp(x), vectorisable; NaN propagates, overflow gives inf, -inf gives 0."""
    raise NotImplementedError("fexp is callable only from Numba-compiled code")


def flog1p(u):
    """log1p(u) for u in [0, 1] (what softplus needs), vectorisable."""
    raise NotImplementedError("flog1p is callable only from Numba-compiled code")


def fsoftplus(a):
    """softplus(a) = log(1 + exp(a)) = max(a, 0) + log1p(exp(-|a|)), stable for any a."""
    raise NotImplementedError("fsoftplus is callable only from Numba-compiled code")


@overload(fexp_nonan)
def _ol_fexp_nonan(x):
    if x == types.float64:
        return lambda x: _exp64_nonan(x)
    if x == types.float32:
        return lambda x: _exp32_nonan(x)
    return None


@overload(fexp)
def _ol_fexp(x):
    if x == types.float64:
        def impl(x):
            y = _exp64_nonan(x)
            return x if x != x else y
        return impl
    if x == types.float32:
        def impl(x):
            y = _exp32_nonan(x)
            return x if x != x else y
        return impl
    return None


_SQRT2_64 = 1.4142135623730951
_LN2_64 = 0.6931471805599453
_SQRT2_32 = np.float32(_SQRT2_64)
_LN2_32 = np.float32(_LN2_64)
_HALF_32 = np.float32(0.5)
_TWO_32 = np.float32(2.0)
_ZERO_32 = np.float32(0.0)
# 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), |s| <= 3 - 2 sqrt 2 = 0.1716
_A64 = tuple(1.0 / (2 * i + 1) for i in range(11))
_A32 = tuple(np.float32(1.0 / (2 * i + 1)) for i in range(6))


@njit(error_model="numpy")
def _log1p64(u):
    y = 1.0 + u
    big = y > _SQRT2_64
    m = y * 0.5 if big else y
    e = _LN2_64 if big else 0.0
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    z2 = z * z
    z4 = z2 * z2
    z8 = z4 * z4
    a = (_A64[0] + _A64[1] * z) + (_A64[2] + _A64[3] * z) * z2
    b = (_A64[4] + _A64[5] * z) + (_A64[6] + _A64[7] * z) * z2
    c = (_A64[8] + _A64[9] * z) + _A64[10] * z2
    poly = a + b * z4 + c * z8
    logy = e + 2.0 * s * poly
    # y = 1 + u is rounded: log1p(u) = log(y) + (u - (y - 1)) / y corrects it to first order
    return logy + (u - (y - 1.0)) / y


@njit(error_model="numpy")
def _log1p32(u):
    y = _F32_ONE + u
    big = y > _SQRT2_32
    m = y * _HALF_32 if big else y
    e = _LN2_32 if big else _ZERO_32
    f = m - _F32_ONE
    s = f / (_TWO_32 + f)
    z = s * s
    # Horner, not Estrin: Estrin's z^4 = s^8 underflows through the subnormal range for
    # 6e-8 < u < 4e-5 (softplus of |l| from 10 to 17, where a trained Bernoulli decoder's
    # background logits sit), and on Intel cores every subnormal result takes a microcode
    # assist: bernoulli_logpmf_grad ran 4x slower there (Xeon, SkylakeX). Horner's partial
    # products stay near z times a coefficient. (The float64 twin is safe: there f >= 2^-52, so
    # its s^16 >= 1e-256.)
    poly = _A32[0] + z * (_A32[1] + z * (_A32[2] + z * (_A32[3] + z * (_A32[4] + z * _A32[5]))))
    logy = e + _TWO_32 * s * poly
    return logy + (u - (y - _F32_ONE)) / y


@overload(flog1p)
def _ol_flog1p(u):
    if u == types.float64:
        return lambda u: _log1p64(u)
    if u == types.float32:
        return lambda u: _log1p32(u)
    return None


@overload(fsoftplus, inline="always")
def _ol_fsoftplus(a):
    # Inlined at the Numba-IR level (only this max/select glue; it is safe under the caller's
    # fast-math flags), so that exp and log1p stay two separate small calls, each of which LLVM
    # inlines into the caller's loop. Nested in one function, LLVM's inliner gives up on them in
    # float64 and the loop runs scalar (measured 10x slower).
    if a == types.float64:
        def impl(a):
            r = (a if a > 0.0 else 0.0) + _log1p64(_exp64_nonan(-abs(a)))
            return r if a == a else a
        return impl
    if a == types.float32:
        def impl(a):
            r = (a if a > _ZERO_32 else _ZERO_32) + _log1p32(_exp32_nonan(-abs(a)))
            return r if a == a else a
        return impl
    return None


# --- e^x - 1 and e^x - 1 - x without cancellation near 0 (the KL term and its gradient) -------
# For |x| < 1 a Taylor series (Horner; 20 terms in float64, 11 in float32: the first omitted
# term is below 2^-60, resp. 2^-28, of the result), else the exp: e^x - 1 - x has no cancellation there (it is > 0.36 |x|), and the exp's
# <= 2.5 ulp carry over. Both branches are computed and one is selected, so loops vectorise.
_EXPM1_N = 20
_INV_FACT = tuple(1.0 / math.factorial(k) for k in range(_EXPM1_N + 3))


def fexpm1(x):
    """e^x - 1, accurate near 0 (vectorisable)."""
    raise NotImplementedError("fexpm1 is callable only from Numba-compiled code")


def fexpm1mx(x):
    """e^x - 1 - x, accurate near 0 (vectorisable)."""
    raise NotImplementedError("fexpm1mx is callable only from Numba-compiled code")


def _series_impl(F, exp_nonan, start):
    """x^start * sum_k x^k / (k + start)! by Horner (start = 1: e^x - 1; start = 2: minus x),
    written out as straight-line code (a loop over a tuple of coefficients compiled to a
    tuple lookup per term and ran 80x slower), then the exp branch and the select."""
    n = _EXPM1_N if F is np.float64 else 11
    names = {f"c{k}": F(_INV_FACT[k + start]) for k in range(n)}
    names.update(one=F(1.0), exp_nonan=exp_nonan)
    body = [f"    p = c{n - 1}"] + [f"    p = p * x + c{k}" for k in range(n - 2, -1, -1)]
    tail = ("    series = p * x\n    big = exp_nonan(x) - one\n" if start == 1 else
            "    series = p * x * x\n    big = exp_nonan(x) - one - x\n")
    src = ("def impl(x):\n" + "\n".join(body) + "\n" + tail +
           "    r = series if abs(x) < one else big\n    return r if x == x else x\n")
    exec(compile(src, f"<fexpm1 series, start {start}>", "exec"), names)
    return names["impl"]


@overload(fexpm1, inline="always")
def _ol_fexpm1(x):
    if x == types.float64:
        return _series_impl(np.float64, _exp64_nonan, 1)
    if x == types.float32:
        return _series_impl(np.float32, _exp32_nonan, 1)
    return None


@overload(fexpm1mx, inline="always")
def _ol_fexpm1mx(x):
    if x == types.float64:
        return _series_impl(np.float64, _exp64_nonan, 2)
    if x == types.float32:
        return _series_impl(np.float32, _exp32_nonan, 2)
    return None
