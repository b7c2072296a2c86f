"""Accuracy of the vectorisable exp/log1p/softplus over their whole input ranges; no subnormal
intermediates (their cost on Intel cores); the kernel cache dropped when a source changes."""

import os
import re

import numba as nb
import numpy as np
import pytest

from lgm._backends.cpu.fastmath import fexp, flog1p, fsoftplus


def _vec(fn):
    @nb.njit(fastmath={"reassoc", "contract"}, error_model="numpy")
    def apply(out, x):
        for i in range(x.size):
            out[i] = fn(x[i])
    return apply


_EXP, _LOG1P, _SOFTPLUS = _vec(fexp), _vec(flog1p), _vec(fsoftplus)


def _ulp_err(got, ref, dtype):
    """Error in units of the dtype's eps relative to the float64/longdouble reference."""
    return np.abs(got.astype(np.float64) - ref) / np.abs(ref) / np.finfo(dtype).eps


def test_exp_whole_range(dtype):
    info = np.finfo(dtype)
    lo, hi = (-745.2, 709.8) if dtype == np.float64 else (-103.9, 88.8)
    x = np.linspace(lo, hi, 2_000_001).astype(dtype)
    out = np.empty_like(x)
    _EXP(out, x)
    with np.errstate(over="ignore"):
        ref = np.exp(x.astype(np.longdouble)).astype(np.float64)
    # stated accuracy: <= 2.5 ulp (float64), <= 2 ulp (float32) for results in
    # [2^-(emax-1), 2^(emax-1)]; below it results flush to 0, above it they may be +inf
    emin, emax = (1022, 1023) if dtype == np.float64 else (126, 127)
    inside = (ref >= 2.0**-emin) & (ref <= 2.0**emax)
    assert _ulp_err(out[inside], ref[inside], dtype).max() <= (2.5 if dtype == np.float64 else 2.0)
    below = ref < 2.0**-emin
    assert np.all((out[below] == 0) | (np.abs(out[below] - ref[below]) <= 2.0**-emin))
    above = ref > 2.0**emax
    with np.errstate(invalid="ignore"):  # inf - inf where both overflowed
        close = np.abs(out[above] - ref[above]) <= 3 * info.eps * ref[above]
    assert np.all((out[above] == np.inf) | close)
    # monotone non-decreasing over the whole range (no glitches at the clamp points)
    assert np.all(out[1:] >= out[:-1])


def test_exp_special_values(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 1e4, -1e4, -0.0], dtype)
    out = np.empty_like(x)
    _EXP(out, x)
    assert np.isnan(out[0])
    np.testing.assert_array_equal(out[1:], np.array([np.inf, 0, 1, np.inf, 0, 1], dtype))


def test_log1p_on_unit_interval(dtype):
    u = np.concatenate([np.linspace(0, 1, 1_000_001), np.geomspace(1e-300, 1, 200_001)])
    u = u.astype(dtype)
    out = np.empty_like(u)
    _LOG1P(out, u)
    ref = np.log1p(u.astype(np.longdouble)).astype(np.float64)
    pos = ref > 0
    assert _ulp_err(out[pos], ref[pos], dtype).max() <= 3.0
    assert np.all(out[~pos] == 0)


def test_softplus_stable(dtype):
    big = 80.0 if dtype == np.float32 else 700.0
    a = np.concatenate([np.linspace(-big, big, 400_001), [1e30, -1e30]]).astype(dtype)
    out = np.empty_like(a)
    _SOFTPLUS(out, a)
    ref = np.logaddexp(0, a.astype(np.longdouble)).astype(np.float64)
    ok = ref > np.finfo(dtype).tiny
    assert _ulp_err(out[ok], ref[ok], dtype).max() <= 4.0
    assert np.all(np.isfinite(out))
    special = np.array([np.nan, np.inf, -np.inf], dtype)
    o2 = np.empty_like(special)
    _SOFTPLUS(o2, special)
    assert np.isnan(o2[0]) and o2[1] == np.inf and o2[2] == 0


def _raises_underflow(fn, *args):
    """Whether fn(*args), run in this thread, raised the CPU's sticky underflow flag (a result
    in or below the subnormal range), read through the C library's fenv; None where that
    library or the flag's value for this processor is unknown."""
    import ctypes
    import ctypes.util
    import platform

    flags = {"x86_64": (0x10, 0x3D), "AMD64": (0x10, 0x3D), "aarch64": (0x08, 0x1F), "arm64": (0x08, 0x1F)}
    lib = ctypes.util.find_library("m")
    if platform.machine() not in flags or lib is None:
        return None
    libm = ctypes.CDLL(lib)
    under, every = flags[platform.machine()]
    libm.feclearexcept(every)
    fn(*args)
    return bool(libm.fetestexcept(under))


def test_no_subnormal_intermediates(dtype):
    """Where the result is a normal float, no operation inside exp / log1p / softplus makes a
    subnormal: on Intel cores each one takes a microcode assist of ~100 cycles. The float32
    log1p's Estrin polynomial did (its s^8 for 6e-8 < u < 4e-5, the softplus of |l| from 10 to
    17 where a trained Bernoulli decoder's background logits sit): the MLP VAE's
    bernoulli_logpmf_grad ran 0.59 ms per minibatch instead of 0.14 on a Xeon. The sticky
    underflow flag catches it on any x86 or Arm processor, fast or slow at subnormals."""
    big = 80.0 if dtype == np.float32 else 700.0
    cases = ((_LOG1P, np.geomspace(1e-30, 1, 200_001)), (_SOFTPLUS, np.linspace(-big, big, 400_001)),
             (_EXP, np.linspace(-big, big, 400_001)))
    for fn, x in cases:
        x = x.astype(dtype)
        out = np.empty_like(x)
        fn(out, x)  # compiled outside the check
        raised = _raises_underflow(fn, out, x)
        if raised is None:
            pytest.skip("no C fenv interface known on this platform")
        assert not raised, fn
    # the check sees an underflow where there is one: e^x just below the normal range is a
    # subnormal (further down fexp gives an exact 0, no underflow), and the flag is raised
    # where such a result is also inexact (IEEE 754 with underflow masked)
    x = (np.linspace(-87.9, -87.4, 101) if dtype == np.float32 else np.linspace(-709, -708.5, 101)).astype(dtype)
    assert _raises_underflow(_EXP, np.empty_like(x), x)


def test_bernoulli_gradient_never_subnormal(dtype):
    """The Bernoulli gradient w (x - sigmoid(l)) drops the term w sigmoid(l) where it is below
    2^-100 (float32; 2^-960 float64), and a row of weight below that has none: exact to within
    that, and never subnormal. A trained decoder's background logits reach -200 and
    IWAE's normalised weights can be as small, and the subnormal gradients there made the
    backward GEMMs 3-5x slower on Intel cores. The sigmoid (sigmoid_term, cut at the row's
    logit) is within 3 ulp above its cut, with no subnormal intermediate on the way."""
    import lgm
    from lgm._backends.cpu.kernels import gradient_floor, sigmoid_term

    @nb.njit(fastmath={"reassoc", "contract"}, error_model="numpy")
    def sig(out, x, w1):
        _, cut = gradient_floor(w1[0])  # the cut of a row of weight w1[0]
        for i in range(x.size):
            out[i] = sigmoid_term(x[i], cut)

    e = 100 if dtype == np.float32 else 960
    floor, eps = 2.0 ** -e, np.finfo(dtype).eps
    lo = -e * np.log(2.0)
    big = 300.0 if dtype == np.float32 else 1000.0
    l = np.concatenate([np.linspace(-big, big, 400_001), [np.nan, np.inf, -np.inf]]).astype(dtype)
    out = np.empty_like(l)
    one = np.ones(1, dtype)
    sig(out, l, one)
    raised = _raises_underflow(sig, out, l, one)
    assert raised is None or not raised
    ref = (1 / (1 + np.exp(-l[:-3].astype(np.longdouble)))).astype(np.float64)
    keep = l[:-3] >= lo + 1e-3
    assert _ulp_err(out[:-3][keep], ref[keep], dtype).max() <= 3.0  # fexp's 2.5 ulp, a division
    assert np.all(out[:-3][l[:-3] < lo - 1e-3] == 0)
    assert np.isnan(out[-3]) and out[-2] == 1 and out[-1] == 0

    # through the public kernel, with weights down to far below the floor
    rng = np.random.default_rng(0)
    S, B, D = 5, 64, 300
    x = (rng.random((B, D)) < 0.3).astype(dtype)
    lg = (rng.standard_normal((S, B, D)) * (0.6 * abs(lo))).astype(dtype)
    w = np.exp(rng.uniform(1.3 * lo, 0, (S, B))).astype(dtype)
    v, dl = lgm.bernoulli_logpmf_grad(x, lg, w)
    assert not np.any((dl != 0) & (np.abs(dl) < np.finfo(dtype).tiny))
    L = lg.astype(np.longdouble)
    want = (w[..., None].astype(np.longdouble) * (x - 1 / (1 + np.exp(-L)))).astype(np.float64)
    w3 = np.broadcast_to(w[..., None], dl.shape).astype(np.float64)
    big_enough = np.abs(want) >= 2 * floor
    dropped = (np.abs(want) < floor / 2) & (np.broadcast_to(x, dl.shape) == 0)  # w sigmoid alone
    assert big_enough.mean() > 0.5 and dropped.mean() > 0.05
    err = np.abs(dl - want)[big_enough]
    assert np.all(err <= 4 * eps * (w3[big_enough] + np.abs(want[big_enough])) + floor)
    assert np.all(dl[dropped] == 0)
    want_v = (x * L - np.logaddexp(0, L)).sum(-1).astype(np.float64)  # the value is untouched
    np.testing.assert_allclose(v, want_v, rtol=20 * eps)


def test_float32_kernels_compute_in_float32():
    """No silent upcast inside: the float32 instantiation contains no double arithmetic."""
    from lgm._backends.cpu import kernels

    import lgm

    x = np.ones((2, 3), np.float32)
    lgm.diag_gaussian_logpdf(x, x, x)
    lgm.bernoulli_logpmf(x, x)
    for disp in (kernels.diag_gaussian_logpdf, kernels.bernoulli_logpmf):
        sigs = [s for s in disp.signatures if str(s[0].dtype) == "float32"]
        assert sigs, "float32 instantiation missing"
        # cached code cannot be inspected: recompile the same Python function with the same
        # options but no cache, and read its LLVM IR
        opts = {k: v for k, v in disp.targetoptions.items() if k not in ("cache", "nopython")}
        fresh = nb.njit(**opts)(disp.py_func)
        fresh.compile(sigs[0])
        ir = fresh.inspect_llvm(sigs[0])
        # no float -> double conversion of data anywhere (the one double multiply allowed is the
        # per-call constant D * log(2 pi), rounded once to float32)
        assert "fpext" not in ir
        assert len(re.findall(r"= (fadd|fsub|fmul|fdiv)( [a-z ]+)? double", ir)) <= 1
        # and the row loop is vectorised over float lanes (width chosen by the host)
        assert re.search(r"<\d+ x float>", ir), "expected vectorised float32 arithmetic"


def test_kernel_cache_dropped_when_any_source_changes(tmp_path):
    """Numba keys a cached kernel on its own file, and lgm's kernels inline fastmath.py's
    functions: a change to fastmath.py alone must drop the cache, or the kernels keep their old
    machine code (as a Horner log1p did, measured on 2026-12-04). lgm checks at import."""
    import hashlib
    from pathlib import Path

    from numba import njit

    from lgm._backends.cpu import jit as J

    src, cache = tmp_path / "src", tmp_path / "cache"
    src.mkdir()
    cache.mkdir()
    kernels, fastmath = src / "kernels.py", src / "fastmath.py"
    kernels.write_text("kernels")
    fastmath.write_text("fastmath")

    def fill():
        for name in ("kernels.f-30.py311.nbi", "kernels.f-30.py311.1.nbc"):
            (cache / name).write_bytes(b"machine code")
        (cache / "kernels.cpython-311.pyc").write_bytes(b"bytecode")

    fill()
    assert J.drop_stale_cache([kernels, fastmath], cache)  # no digest kept yet
    assert sorted(p.name for p in cache.iterdir()) == ["kernels.cpython-311.pyc", "lgm-sources.sha256"]
    fill()
    assert not J.drop_stale_cache([kernels, fastmath], cache)  # the same sources: kept
    assert len(list(cache.glob("*.nb[ic]"))) == 2
    fastmath.write_text("fastmath, Horner")  # the inlined file alone changes
    assert J.drop_stale_cache([kernels, fastmath], cache)
    assert not list(cache.glob("*.nb[ic]")) and (cache / "kernels.cpython-311.pyc").exists()
    # a cache folder that cannot be made is left alone, without an error
    assert not J.drop_stale_cache([kernels], kernels / "cache")

    # and at import, for this folder's own cache, wherever Numba keeps it
    where = Path(njit(cache=True)(J._where_numba_caches).stats.cache_path)
    if not os.access(where if where.exists() else where.parent, os.W_OK):
        pytest.skip(f"Numba's cache folder {where} is not writable here")
    here = Path(J.__file__).resolve().parent
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(here.glob("*.py")))).hexdigest()
    assert (where / "lgm-sources.sha256").read_text() == digest
