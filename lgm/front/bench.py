"""Kernel benchmarks: lgm against numpy, scipy and torch (eager, compile) in one run.

Every figure is a ratio against baselines measured in the same process, plus bandwidth: the bytes
a kernel must move (each input read once, the output written once) divided by its time, and
that as a fraction of the machine's read bandwidth measured at the same size, dtype and thread
count by a STREAM-like read of three arrays (``read3`` of the CPU backend's kernels).

Timing: inputs seeded; every implementation warmed up (JIT and torch.compile) before timing; the
best of several repeats is reported (the least disturbed run of a memory-bound loop).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

import lgm
from lgm import reference as ref

LOG_2PI = math.log(2 * math.pi)


def _best_time(fn, min_repeats=5, budget_s=0.6):
    fn()  # warm-up (JIT, caches, torch.compile)
    times = []
    t_end = time.perf_counter() + budget_s
    while len(times) < min_repeats or (time.perf_counter() < t_end and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _best_times_interleaved(fns, rounds=12, min_time=0.3):
    """Best time of each callable, timed in alternation (a, b, a, b, ...): on a shared machine
    the memory bandwidth drifts over seconds, and a ratio of two numbers measured minutes apart
    would carry that drift. Returns a list of seconds, one per callable."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    t_end = time.perf_counter() + min_time
    r = 0
    while r < rounds or time.perf_counter() < t_end:
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
        r += 1
        if r > 200:
            break
    return best


def _torch():
    if os.environ.get("LGM_BENCH_NO_TORCH"):
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


@dataclass
class Row:
    kernel: str
    size: str
    dtype: str
    threads: int
    bytes_moved: int
    bw_read3: float  # GB/s of the three-array read at this size
    times: dict = field(default_factory=dict)  # implementation -> seconds

    def gbps(self, impl="lgm"):
        return self.bytes_moved / self.times[impl] / 1e9


def read3_probe(shape, dtype):
    """A callable that reads three (R, D) arrays once (sum a+b+c per row) and its byte count."""
    kernels = lgm.ops.backend_for("cpu").kernels

    rng = np.random.default_rng(0)
    a, b, c = (rng.random(shape).astype(dtype) for _ in range(3))
    out = np.empty(shape[0], dtype)
    return (lambda: kernels.read3(a, b, c, out)), 3 * a.nbytes


def _torch_impls(torch, fn_eager, args_np, threads, compile_):
    torch.set_num_threads(threads)
    targs = [torch.from_numpy(np.ascontiguousarray(a)) for a in args_np]
    impls = {"torch": lambda: fn_eager(*targs)}
    if compile_:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = 256
        cfn = torch.compile(fn_eager, dynamic=False)
        impls["torch.compile"] = lambda: cfn(*targs)
    return impls


def cases(quick=False):
    """(kernel, shape-description, builder) for every benchmarked kernel."""
    sizes = [(1024, 784), (8192, 784)] if quick else [(1024, 784), (65536, 784)]
    iw = (16, 64, 784, 16) if quick else (64, 256, 784, 16)
    out = []
    for B, D in sizes:
        out.append(("diag_gaussian_logpdf", (B, D)))
        out.append(("diag_gaussian_logpdf_grad", (B, D)))
        out.append(("bernoulli_logpmf", (B, D)))
        out.append(("kl_diag_std_normal", (B, D)))
        out.append(("logsumexp", (B, D)))
    out.append(("importance_log_weights+iwae", iw))
    out.append(("lowrank_gaussian_logpdf", (1000, 784, 16) if quick else (5000, 784, 16)))
    out.append(("PPCA.fit closed form", (1000, 784, 16) if quick else (5000, 784, 16)))
    return out


def build(kernel, shape, dtype, torch, threads, compile_):
    """Inputs, implementations (name -> zero-arg callable) and bytes moved for one case."""
    rng = np.random.default_rng(0)
    it = np.dtype(dtype).itemsize
    impls = {}
    if kernel in ("diag_gaussian_logpdf", "diag_gaussian_logpdf_grad"):
        B, D = shape
        x, mu = rng.standard_normal((2, B, D)).astype(dtype)
        lv = rng.uniform(-2, 2, (B, D)).astype(dtype)
        if kernel == "diag_gaussian_logpdf":
            nbytes = 3 * B * D * it + B * it
            impls["lgm"] = lambda: lgm.diag_gaussian_logpdf(x, mu, lv)
            impls["numpy"] = lambda: ref.diag_gaussian_logpdf(x, mu, lv)
            import scipy.stats as st

            impls["scipy"] = lambda: st.norm.logpdf(x, mu, np.exp(0.5 * lv)).sum(-1)

            def tfn(x, mu, lv):
                return -0.5 * ((x - mu) ** 2 * torch.exp(-lv) + lv + LOG_2PI).sum(-1)
        else:
            nbytes = 3 * B * D * it + B * it + 2 * B * D * it  # writes dmu and dlogvar
            impls["lgm"] = lambda: lgm.diag_gaussian_logpdf_grad(x, mu, lv, wrt=("mu", "logvar"))

            def np_grad():
                e = np.exp(-lv)
                d = x - mu
                q = d * d * e
                return -0.5 * ((q + lv).sum(-1) + D * LOG_2PI), d * e, 0.5 * (q - 1)
            impls["numpy"] = np_grad

            def tfn(x, mu, lv):
                e = torch.exp(-lv)
                d = x - mu
                q = d * d * e
                return -0.5 * ((q + lv).sum(-1) + D * LOG_2PI), d * e, 0.5 * (q - 1)
        args = (x, mu, lv)
    elif kernel == "bernoulli_logpmf":
        B, D = shape
        x = (rng.random((B, D)) < 0.5).astype(dtype)
        lg = rng.normal(0, 3, (B, D)).astype(dtype)
        nbytes = 2 * B * D * it + B * it
        impls["lgm"] = lambda: lgm.bernoulli_logpmf(x, lg)
        impls["numpy"] = lambda: ref.bernoulli_logpmf(x, lg)
        import scipy.special as sp

        impls["scipy"] = lambda: (x * sp.log_expit(lg) + (1 - x) * sp.log_expit(-lg)).sum(-1)

        def tfn(x, lg):
            return (x * lg - torch.nn.functional.softplus(lg)).sum(-1)
        args = (x, lg)
    elif kernel == "kl_diag_std_normal":
        B, D = shape
        mu = rng.standard_normal((B, D)).astype(dtype)
        lv = rng.uniform(-2, 2, (B, D)).astype(dtype)
        nbytes = 2 * B * D * it + B * it
        impls["lgm"] = lambda: lgm.kl_diag_std_normal(mu, lv)
        impls["numpy"] = lambda: ref.kl_diag_std_normal(mu, lv)

        def tfn(mu, lv):
            return -0.5 * (1 + lv - mu * mu - torch.exp(lv)).sum(-1)
        args = (mu, lv)
    elif kernel == "logsumexp":
        B, D = shape
        a = rng.standard_normal((B, D)).astype(dtype) * 5
        nbytes = B * D * it + B * it
        impls["lgm"] = lambda: lgm.logsumexp(a, axis=-1)
        impls["numpy"] = lambda: ref.logsumexp(a, axis=-1)
        import scipy.special as sp

        impls["scipy"] = lambda: sp.logsumexp(a, axis=-1)

        def tfn(a):
            return torch.logsumexp(a, dim=-1)
        args = (a,)
    elif kernel == "importance_log_weights+iwae":
        S, B, D, d = shape
        x = rng.random((B, D)).astype(dtype)
        mux = rng.random((S, B, D)).astype(dtype)
        lvx = rng.uniform(-3, 0, (S, B, D)).astype(dtype)
        t = rng.standard_normal((S, B, d)).astype(dtype)
        mt = rng.standard_normal((B, d)).astype(dtype)
        lt = rng.uniform(-1, 1, (B, d)).astype(dtype)
        nbytes = (2 * S * B * D + B * D + S * B * d + 2 * B * d + S * B) * it

        def ours():
            return lgm.iwae(lgm.importance_log_weights(x, t, mt, lt, mu_x=mux, logvar_x=lvx))
        impls["lgm"] = ours
        impls["numpy"] = lambda: ref.iwae(ref.importance_log_weights(x, t, mt, lt, mu_x=mux, logvar_x=lvx))

        def tfn(x, t, mt, lt, mux, lvx):
            lpx = -0.5 * ((x - mux) ** 2 * torch.exp(-lvx) + lvx + LOG_2PI).sum(-1)
            lpt = -0.5 * (t * t + LOG_2PI).sum(-1)
            lq = -0.5 * ((t - mt) ** 2 * torch.exp(-lt) + lt + LOG_2PI).sum(-1)
            lw = lpx + lpt - lq
            return torch.logsumexp(lw, dim=0) - math.log(S)
        args = (x, t, mt, lt, mux, lvx)
    elif kernel == "lowrank_gaussian_logpdf":
        # PPCA marginal log-likelihood of MNIST-sized data: Woodbury O(N D q) against
        # scikit-learn's PCA.score_samples, which builds the D x D precision matrix
        N, D, q = shape
        X = rng.random((N, D)).astype(dtype)
        from sklearn.decomposition import PCA

        pca = PCA(n_components=q, svd_solver="randomized", random_state=0).fit(X)
        s2 = pca.noise_variance_
        W = (pca.components_.T * np.sqrt(np.maximum(pca.explained_variance_ - s2, 0))).astype(dtype)
        mean = pca.mean_.astype(dtype)
        nbytes = N * D * it + N * it
        psi = np.asarray(s2, dtype)
        impls["lgm"] = lambda: lgm.lowrank_gaussian_logpdf(X, mean, W, psi)
        impls["scikit-learn"] = lambda: pca.score_samples(X)
        return impls, nbytes
    elif kernel == "PPCA.fit closed form":
        # the ML fit against scikit-learn's PCA with its fastest solver here (covariance_eigh:
        # X^T X and an eigendecomposition, like ours)
        N, D, q = shape
        X = rng.random((N, D)).astype(dtype)
        from sklearn.decomposition import PCA

        nbytes = N * D * it
        impls["lgm"] = lambda: lgm.PPCA(q).fit(X)
        impls["scikit-learn"] = lambda: PCA(q, svd_solver="covariance_eigh").fit(X)
        return impls, nbytes
    else:  # pragma: no cover
        raise ValueError(kernel)
    if torch is not None:
        impls.update(_torch_impls(torch, tfn, args, threads, compile_))
    return impls, nbytes


def run(quick=False, threads=(1, 2), dtypes=("float32", "float64"), compile_=True, progress=print):
    """Run every case; return (rows, environment description)."""
    import numba

    torch = _torch()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    rows = []
    for kernel, shape in cases(quick):
        for dt in dtypes:
            for th in threads:
                if th > numba.config.NUMBA_NUM_THREADS:
                    continue
                numba.set_num_threads(th)
                ctx = threadpool_limits(limits=th) if threadpool_limits else contextlib.nullcontext()
                with ctx:
                    # the read-bandwidth probe runs at the size of the kernel's big operands,
                    # timed in alternation with lgm (see _best_times_interleaved)
                    if kernel.startswith("importance"):
                        bw_shape = (shape[0] * shape[1], shape[2])
                    elif kernel.startswith("lowrank") or kernel.startswith("PPCA"):
                        bw_shape = tuple(shape[:2])
                    else:
                        bw_shape = tuple(shape)
                    probe, probe_bytes = read3_probe(bw_shape, dt)
                    impls, nbytes = build(kernel, shape, dt, torch, th, compile_)
                    t_probe, t_lgm = _best_times_interleaved([probe, impls["lgm"]])
                    row = Row(kernel, "x".join(map(str, shape)), dt, th, nbytes,
                              probe_bytes / t_probe / 1e9)
                    row.times["lgm"] = t_lgm
                    for name, fn in impls.items():
                        if name != "lgm":
                            row.times[name] = _best_time(fn)
                    rows.append(row)
                    progress(_line(row))
    env = describe(torch)
    return rows, env


def openblas_kernels():
    """'OpenBLAS kernels <families loaded> (OPENBLAS_CORETYPE=<value> in the environment | unset)':
    numpy's GEMMs run on them, and a machine that sets OPENBLAS_CORETYPE=Haswell on an AVX-512
    CPU runs them at about half speed; benchmarks and the E-step study print this line."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        return "OpenBLAS kernels unknown (no threadpoolctl)"
    kernels = sorted({i["architecture"] for i in threadpool_info() if i.get("architecture")})
    core = os.environ.get("OPENBLAS_CORETYPE")
    return (f"OpenBLAS kernels {'/'.join(kernels) or 'unknown'} (OPENBLAS_CORETYPE"
            f"{'=' + core + ' in the environment' if core else ' unset'})")


@dataclass(frozen=True)
class CpuReading:
    """The machine's CPU accounting at one moment (:func:`cpu_reading`): wall seconds, this
    process's CPU seconds (all its threads), and, from Linux's /proc/stat (None elsewhere), the
    seconds all CPUs spent busy and those the hypervisor gave to other guests (steal)."""

    wall: float
    ours: float
    busy: float | None
    steal: float | None


def cpu_reading(stat="/proc/stat"):
    """A :class:`CpuReading` now; :func:`cpu_load` turns two of them into the load in between."""
    t = os.times()
    busy = steal = None
    try:
        with open(stat) as f:
            v = [int(x) for x in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        # user nice system idle iowait irq softirq steal ...: busy leaves out idle, iowait, steal
        busy, steal = (v[0] + v[1] + v[2] + v[5] + v[6]) / hz, (v[7] if len(v) > 7 else 0) / hz
    except (OSError, ValueError, IndexError):
        pass
    return CpuReading(time.perf_counter(), t.user + t.system, busy, steal)


def cpu_load(a, b, n_cpus=None):
    """What else ran between the readings ``a`` and ``b``: {"others": the share of the machine's
    CPUs busy with other processes, "steal": the share the hypervisor took, "seconds"}; the shares
    are None without /proc/stat. A timing is only as good as "others" and "steal" are small (the
    study records them with every run). /proc/stat counts in ticks (10 ms), so a span of a few
    seconds carries about 0.01 s / span of rounding."""
    n = n_cpus or os.cpu_count() or 1
    span = b.wall - a.wall
    out = {"seconds": round(span, 1), "others": None, "steal": None}
    if a.busy is not None and b.busy is not None and span > 0:
        others = (b.busy - a.busy) - (b.ours - a.ours)
        out["others"] = round(max(others, 0.0) / (span * n), 4)
        out["steal"] = round(max(b.steal - a.steal, 0.0) / (span * n), 4)
    return out


def cpu_name():
    """'<CPU model>, <n> logical CPUs' (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"


def describe(torch=None):
    import numba

    VECTOR_WIDTH_INFO = lgm.VECTOR_WIDTH_INFO

    try:
        from threadpoolctl import threadpool_info

        blas = "; ".join(f"{i['internal_api']}{' ' + i['version'] if i.get('version') else ''}"
                         f"{' ' + i['architecture'] if i.get('architecture') else ''} "
                         f"({i['num_threads']} thr)" for i in threadpool_info())
    except ImportError:  # pragma: no cover
        blas = "threadpoolctl not installed"
    return {
        "cpu": cpu_name(),
        "numba": f"numba {numba.__version__}, vectors: {VECTOR_WIDTH_INFO}",
        "numpy": f"numpy {np.__version__}",
        "torch": f"torch {torch.__version__}" if torch is not None else "torch not installed",
        "blas": blas,
    }


def fraction(row):
    """lgm's bandwidth as a fraction of the read bandwidth measured beside it, as text. Above
    1.05 the data were served from cache for lgm and not for the probe (or the probe was
    disturbed): such a number is not a fraction of memory bandwidth, so it is not printed as one."""
    f = row.gbps() / row.bw_read3
    return f"{f:.2f}" if f <= 1.05 else "in cache"


def _line(row):
    parts = [f"{row.kernel} {row.size} {row.dtype} {row.threads}thr:"]
    for k, v in row.times.items():
        parts.append(f"{k} {v * 1e3:.3f} ms")
    parts.append(f"lgm {row.gbps():.1f} GB/s ({fraction(row)} of the read bandwidth)")
    return " ".join(parts)


def table(rows, env):
    """Markdown: one table per kernel."""
    lines = ["Environment: " + "; ".join(f"{v}" for v in env.values()), ""]
    kernels = []
    for r in rows:
        if r.kernel not in kernels:
            kernels.append(r.kernel)
    for k in kernels:
        rs = [r for r in rows if r.kernel == k]
        impls = [i for i in ("numpy", "scipy", "scikit-learn", "torch", "torch.compile")
                 if any(i in r.times for r in rs)]
        lines.append(f"#### {k}")
        lines.append("")
        head = ["size", "dtype", "thr", "lgm ms"] + [f"{i} ms" for i in impls] + \
               [f"{i}/lgm" for i in impls] + ["lgm GB/s", "read bw GB/s", "fraction"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in rs:
            t0 = r.times["lgm"]
            cells = [r.size, r.dtype, str(r.threads), f"{t0 * 1e3:.3f}"]
            cells += [f"{r.times[i] * 1e3:.3f}" if i in r.times else "—" for i in impls]
            cells += [f"{r.times[i] / t0:.2f}×" if i in r.times else "—" for i in impls]
            cells += [f"{r.gbps():.1f}", f"{r.bw_read3:.1f}", fraction(r)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
