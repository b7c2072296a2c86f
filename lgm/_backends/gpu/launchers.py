"""CUDA launchers through CuPy: the twins of ``lgm._backends.cpu.kernels``.

Imported only when a cupy array arrives (the CPU path never imports cupy). Every launcher has the
name and argument order of its CPU twin (outputs first, then inputs, then the index tables), so
``lgm.ops`` calls either the same way.

Loading, once per source file and process:
1. a fatbin built ahead of time by ``CMakeLists.txt`` (nvcc) — looked for in ``$LGM_FATBIN_DIR``,
   then next to the sources (``lgm/kernels/*.fatbin``, where ``cmake --install`` puts them) — if
   it loads on this device (a fatbin without this device's architecture fails to load);
2. otherwise NVRTC compiles the same ``.cu`` source (CuPy ``RawModule``; CuPy caches the binary
   on disk, so later processes skip the compile).
``backend_info()`` says which path each file took. The kernel names come from the sources
(``lgm._backends.gpu.sources``).
"""

from __future__ import annotations

import os

import cupy  # noqa: F401  (ImportError here means: no GPU backend)
import numpy as np

from . import launch as _launch
from . import sources

_modules: dict = {}
_how: dict = {}


def _load(name):
    if name in _modules:
        return _modules[name]
    kdir = sources.kernel_dir()
    candidates = []
    if os.environ.get("LGM_FATBIN_DIR"):
        candidates.append(os.path.join(os.environ["LGM_FATBIN_DIR"], f"{name}.fatbin"))
    candidates.append(str(kdir / f"{name}.fatbin"))
    mod = None
    for path in candidates:
        if os.path.exists(path):
            try:
                m = cupy.RawModule(path=path)
                m.get_function(sources.kernel_names()[name][0])  # forces the load; fails on a foreign arch
                mod, _how[name] = m, f"fatbin {path}"
                break
            except cupy.cuda.driver.CUDADriverError:
                continue
    if mod is None:
        mod = cupy.RawModule(code=sources.text(name), options=("-std=c++17", f"-I{kdir}"))
        mod.compile()
        _how[name] = "NVRTC (from the shipped .cu source)"
    _modules[name] = mod
    return mod


def backend_info():
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    for s in sources.source_names():
        _load(s)
    how = "; ".join(f"{k}: {v}" for k, v in _how.items())
    return f"{name} (sm_{props['major']}{props['minor']}), cupy {cupy.__version__}; {how}"


def vector_width(dtype, D, arrays):
    return _launch.vector_width(np.dtype(dtype).itemsize, D, [a.data.ptr for a in arrays])


_SM = None


def _sms():
    global _SM
    if _SM is None:
        _SM = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["multiProcessorCount"]
    return _SM


_FUNCS: dict = {}


def _fn(src, base, dtype, vw):
    key = (cupy.cuda.Device().id, src, base, np.dtype(dtype).char, vw)
    f = _FUNCS.get(key)
    if f is None:
        f = _FUNCS[key] = _load(src).get_function(base + _launch.kernel_suffix(dtype, vw))
    return f


_TABLES: dict = {}


def _tables(lead, rs):
    """Device copies of the row-index tables, cached: a host-to-device copy of pageable memory
    would otherwise wait for the previous kernel and serialise back-to-back launches."""
    lead = np.ascontiguousarray(lead, np.int64)
    rs = np.ascontiguousarray(rs, np.int64).reshape(-1)
    key = (cupy.cuda.Device().id, lead.tobytes(), rs.tobytes())
    hit = _TABLES.get(key)
    if hit is None:
        if len(_TABLES) > 256:
            _TABLES.clear()
        hit = _TABLES[key] = (cupy.asarray(lead), cupy.asarray(rs), np.int32(len(lead)))
    return hit


def _launch_rows(src, base, R, dtype, vw, args):
    fn = _fn(src, base, dtype, vw)
    fn((_launch.grid_for_rows(R, _sms()),), (_launch.THREADS,), args)


# --- twins of lgm._backends.cpu.kernels ------------------------------------------------------------------
def diag_gaussian_logpdf(out_r, x_rd, mu_rd, lv_rd, lead, rs):
    R, D = out_r.shape[0], x_rd.shape[1]
    vw = vector_width(out_r.dtype, D, (x_rd, mu_rd, lv_rd))
    L, S, k = _tables(lead, rs)
    _launch_rows("diag_gaussian", "diag_gaussian_logpdf", R, out_r.dtype, vw,
                 (out_r, x_rd, mu_rd, lv_rd, np.int64(R), np.int32(D), L, S, k))


def diag_gaussian_logpdf_grad(out_r, dx_rd, dmu_rd, dlv_rd, x_rd, mu_rd, lv_rd, w_r,
                              want_dx, want_dmu, want_dlv, lead, rs):
    R, D = out_r.shape[0], x_rd.shape[1]
    L, S, k = _tables(lead, rs)
    _launch_rows("diag_gaussian", "diag_gaussian_logpdf_grad", R, out_r.dtype, 1,
                 (out_r, dx_rd, dmu_rd, dlv_rd, x_rd, mu_rd, lv_rd, w_r, np.int32(want_dx),
                  np.int32(want_dmu), np.int32(want_dlv), np.int64(R), np.int32(D), L, S, k))


def bernoulli_logpmf(out_r, x_rd, l_rd, lead, rs):
    R, D = out_r.shape[0], x_rd.shape[1]
    vw = vector_width(out_r.dtype, D, (x_rd, l_rd))
    L, S, k = _tables(lead, rs)
    _launch_rows("bernoulli", "bernoulli_logpmf", R, out_r.dtype, vw,
                 (out_r, x_rd, l_rd, np.int64(R), np.int32(D), L, S, k))


def bernoulli_logpmf_grad(out_r, dl_rd, x_rd, l_rd, w_r, lead, rs):
    R, D = out_r.shape[0], x_rd.shape[1]
    L, S, k = _tables(lead, rs)
    _launch_rows("bernoulli", "bernoulli_logpmf_grad", R, out_r.dtype, 1,
                 (out_r, dl_rd, x_rd, l_rd, w_r, np.int64(R), np.int32(D), L, S, k))


def std_normal_logpdf(out_r, t_rd):
    R, D = t_rd.shape
    _launch_rows("latent", "std_normal_logpdf", R, out_r.dtype, 1, (out_r, t_rd, np.int64(R), np.int32(D)))


def kl_diag_std_normal(out_r, dmu_rd, dlv_rd, mu_rd, lv_rd, want_grad, lead, rs):
    R, D = out_r.shape[0], mu_rd.shape[1]
    L, S, k = _tables(lead, rs)
    _launch_rows("latent", "kl_diag_std_normal", R, out_r.dtype, 1,
                 (out_r, dmu_rd, dlv_rd, mu_rd, lv_rd, np.int32(want_grad), np.int64(R), np.int32(D), L, S, k))


def reparameterize(t_rd, mu_rd, lv_rd, eps_rd, lead, rs):
    R, D = t_rd.shape
    L, S, k = _tables(lead, rs)
    _launch_rows("latent", "reparameterize", R, t_rd.dtype, 1,
                 (t_rd, mu_rd, lv_rd, eps_rd, np.int64(R), np.int32(D), L, S, k))


def logsumexp_rows(out_p, a_pn):
    P, N = a_pn.shape
    vw = vector_width(out_p.dtype, N, (a_pn,))
    _launch_rows("logsumexp", "logsumexp_rows", P, out_p.dtype, vw, (out_p, a_pn, np.int64(P), np.int32(N)))


def logsumexp_cols(out_pq, a_pnq):
    P, N, Q = a_pnq.shape
    fn = _fn("logsumexp", "logsumexp_cols", out_pq.dtype, 1)
    fn((_launch.grid_for_tiles(P, Q, _sms()),), (32, _launch.LSE_TILE_Y), (out_pq, a_pnq, np.int64(P), np.int32(N), np.int64(Q)))


def importance_log_weights_gaussian(out_r, x_rd, mux_rd, lvx_rd, t_rl, mut_rl, lvt_rl, lead, rs):
    R, D, d = out_r.shape[0], x_rd.shape[1], t_rl.shape[1]
    vw = vector_width(out_r.dtype, D, (x_rd, mux_rd, lvx_rd))
    L, S, k = _tables(lead, rs)
    _launch_rows("importance", "importance_log_weights_gaussian", R, out_r.dtype, vw,
                 (out_r, x_rd, mux_rd, lvx_rd, t_rl, mut_rl, lvt_rl, np.int64(R), np.int32(D),
                  np.int32(d), L, S, k))


def importance_log_weights_bernoulli(out_r, x_rd, l_rd, t_rl, mut_rl, lvt_rl, lead, rs):
    R, D, d = out_r.shape[0], x_rd.shape[1], t_rl.shape[1]
    vw = vector_width(out_r.dtype, D, (x_rd, l_rd))
    L, S, k = _tables(lead, rs)
    _launch_rows("importance", "importance_log_weights_bernoulli", R, out_r.dtype, vw,
                 (out_r, x_rd, l_rd, t_rl, mut_rl, lvt_rl, np.int64(R), np.int32(D), np.int32(d), L, S, k))


def importance_bounds_fits(D, dtype, arrays):
    """The vector width for the fused bound kernel on these operands, or 0 if D does not fit."""
    vw = vector_width(dtype, D, arrays)
    return vw if _launch.bounds_fits(D, vw) else 0


def importance_bounds(lw_sb, elbo_b, iwae_b, x_bd, dec1_sbd, dec2_sbd, t_sbl, mt_bl, lt_bl, gaussian, vw):
    """The fused kernel (plain layouts only; ops.importance_bounds checks them). Bernoulli:
    dec1 = logits, dec2 unused."""
    S, B = lw_sb.shape
    D, d = x_bd.shape[1], t_sbl.shape[2]
    base = "importance_bounds_gaussian" if gaussian else "importance_bounds_bernoulli"
    fn = _fn("importance", base, lw_sb.dtype, vw)
    fn((_launch.grid_for_blocks(B, _sms()),), (32 * _launch.IW_WARPS,),
       (lw_sb, elbo_b, iwae_b, x_bd, dec1_sbd, dec2_sbd, t_sbl, mt_bl, lt_bl, np.int32(S),
        np.int32(B), np.int32(D), np.int32(d)))


def _launch_flat(src, base, n, dtype, args):
    fn = _fn(src, base, dtype, 1)
    grid = int(min(max(1, -(-n // _launch.THREADS)), 32 * _sms()))
    fn((grid,), (_launch.THREADS,), args)


def im2col(cols, x, s, p):
    B, Ho, Wo, k, _, C = cols.shape
    H, W = x.shape[1], x.shape[2]
    _launch_flat("conv", "im2col", cols.size, cols.dtype,
                 (cols, x, *(np.int32(v) for v in (B, H, W, C, Ho, Wo, k, s, p))))


def col2im(out, cols, s, p):
    B, Ho, Wo, k, _, C = cols.shape
    H, W = out.shape[1], out.shape[2]
    _launch_flat("conv", "col2im", out.size, out.dtype,
                 (out, cols, *(np.int32(v) for v in (B, H, W, C, Ho, Wo, k, s, p))))


# --- twin of lgm._backends.cpu.lowrank.row_stats (PPCA, factor analysis) ------------------------------------------
def row_stats(quad_n, flags_n, x_nd, mean_d, inv_psi_d):
    N, D = x_nd.shape
    _launch_rows("lowrank", "lowrank_row_stats", N, x_nd.dtype, 1,
                 (quad_n, flags_n, x_nd, mean_d, inv_psi_d, np.int64(N), np.int32(D)))
