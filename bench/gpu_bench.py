"""GPU kernel benchmark: lgm's CUDA kernels against naive CuPy, torch eager and torch.compile.

    python bench/gpu_bench.py [--quick] [--out FILE]

Every figure is measured in the same process on the same GPU: a device-to-device copy gives the
bandwidth ceiling ("copy bw": bytes read + written per second); each kernel's GB/s counts the bytes
it must move (inputs read once, output written once). Timing: CUDA events around N back-to-back
calls after warm-up (so launch overhead counts where it matters, at small sizes).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import cupy  # noqa: E402

import lgm  # noqa: E402

LOG_2PI = math.log(2 * math.pi)


def gpu_time(fn, n=20, warmup=3):
    for _ in range(warmup):
        fn()
    cupy.cuda.Device().synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    best = float("inf")
    for _ in range(3):
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, end) / 1e3 / n)
    return best


def host_time(fn, n=50):
    """Host seconds per call (enqueue cost: validation, dispatch, launch), without waiting for
    the GPU except once at the end; when it exceeds the GPU time the call is host-bound."""
    import time

    fn()
    cupy.cuda.Device().synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    cupy.cuda.Device().synchronize()
    return (t1 - t0) / n


def copy_bandwidth(nbytes=2 * 1024**3):
    src = cupy.ones(nbytes // 4, cupy.float32)
    dst = cupy.empty_like(src)
    t = gpu_time(lambda: cupy.copyto(dst, src), n=10)
    return 2 * src.nbytes / t / 1e9


def get_torch():
    try:
        import torch

        if torch.cuda.is_available():
            import torch._dynamo

            torch._dynamo.config.cache_size_limit = 64
            return torch
    except ImportError:
        pass
    return None


def case_logpdf(B, D, dtype, torch, compile_):
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((B, D), dtype=dtype)
    mu = rng.standard_normal((B, D), dtype=dtype)
    lv = rng.uniform(-2, 2, (B, D)).astype(dtype)
    it = np.dtype(dtype).itemsize
    impls = {
        "lgm": lambda: lgm.diag_gaussian_logpdf(x, mu, lv),
        "cupy": lambda: -0.5 * ((x - mu) ** 2 * cupy.exp(-lv) + lv + LOG_2PI).sum(-1),
    }
    if torch is not None:
        tx, tm, tl = (torch.as_tensor(a, device="cuda") for a in (x, mu, lv))

        def f(x, mu, lv):
            return -0.5 * ((x - mu) ** 2 * torch.exp(-lv) + lv + LOG_2PI).sum(-1)
        impls["torch"] = lambda: f(tx, tm, tl)
        if compile_:
            cf = torch.compile(f, dynamic=False)
            impls["torch.compile"] = lambda: cf(tx, tm, tl)
    # correctness against the CPU kernel on a slice, in the same run
    got = cupy.asnumpy(impls["lgm"]()[:64])
    want = lgm.diag_gaussian_logpdf(*(cupy.asnumpy(a[:64]) for a in (x, mu, lv)))
    err = float(np.max(np.abs(got - want) / (np.abs(want) + 1)))
    return impls, 3 * B * D * it + B * it, err


def case_importance(S, B, D, d, dtype, torch, compile_):
    rng = cupy.random.default_rng(1)
    x = rng.random((B, D), dtype=dtype)
    mux = rng.random((S, B, D), dtype=dtype)
    lvx = rng.uniform(-3, 0, (S, B, D)).astype(dtype)
    t = rng.standard_normal((S, B, d), dtype=dtype)
    mt = rng.standard_normal((B, d), dtype=dtype)
    lt = rng.uniform(-1, 1, (B, d)).astype(dtype)
    it = np.dtype(dtype).itemsize
    nbytes = (2 * S * B * D + B * D + S * B * d + 2 * B * d + B) * it

    def ours():  # the fused kernel: log w, ELBO and IWAE in one pass (x read once per b)
        return lgm.importance_bounds(x, t, mt, lt, mu_x=mux, logvar_x=lvx)[2]

    def rowwise():  # the previous path: row-wise log-weights kernel, then the IWAE reduction
        return lgm.iwae(lgm.importance_log_weights(x, t, mt, lt, mu_x=mux, logvar_x=lvx))

    def naive():
        lpx = -0.5 * ((x - mux) ** 2 * cupy.exp(-lvx) + lvx + LOG_2PI).sum(-1)
        lpt = -0.5 * (t * t + LOG_2PI).sum(-1)
        lq = -0.5 * ((t - mt) ** 2 * cupy.exp(-lt) + lt + LOG_2PI).sum(-1)
        lw = lpx + lpt - lq
        m = lw.max(0)
        return cupy.log(cupy.exp(lw - m).sum(0)) + m - math.log(S)
    impls = {"lgm": ours, "cupy": naive}
    if torch is not None:
        targs = [torch.as_tensor(a, device="cuda") for a in (x, t, mt, lt, mux, lvx)]

        def f(x, t, mt, lt, mux, lvx):
            lpx = -0.5 * ((x - mux) ** 2 * torch.exp(-lvx) + lvx + LOG_2PI).sum(-1)
            lpt = -0.5 * (t * t + LOG_2PI).sum(-1)
            lq = -0.5 * ((t - mt) ** 2 * torch.exp(-lt) + lt + LOG_2PI).sum(-1)
            return torch.logsumexp(lpx + lpt - lq, dim=0) - math.log(S)
        impls["torch"] = lambda: f(*targs)
        if compile_:
            cf = torch.compile(f, dynamic=False)
            impls["torch.compile"] = lambda: cf(*targs)
    # breakdown (printed, not in the table): the fused kernel alone with prepared operands, and
    # the IWAE reduction alone, to separate kernel time from host-side dispatch
    from lgm._backends.gpu import launchers as _gpu
    from lgm._validate import RowOperands

    lead = (S, B)
    dops = RowOperands("bench", {"x": x, "mu_x": mux, "logvar_x": lvx}, lead=lead, xp=cupy)
    lops = RowOperands("bench", {"t": t, "mu_t": mt, "logvar_t": lt}, lead=lead, xp=cupy)
    rs = np.concatenate([dops.rstride, lops.rstride])
    out = cupy.empty(S * B, dtype)

    def kernel_only():
        _gpu.importance_log_weights_gaussian(out, dops.rows["x"], dops.rows["mu_x"], dops.rows["logvar_x"],
                                             lops.rows["t"], lops.rows["mu_t"], lops.rows["logvar_t"],
                                             dops.lead_arr, rs)
    lw = lgm.importance_log_weights(x, t, mt, lt, mu_x=mux, logvar_x=lvx)
    tk, ti, tr = gpu_time(kernel_only), gpu_time(lambda: lgm.iwae(lw)), gpu_time(rowwise)
    print(f"  importance breakdown: row-wise log-weight kernel alone {tk * 1e6:.1f} µs "
          f"({nbytes / tk / 1e9:.0f} GB/s), iwae reduction alone {ti * 1e6:.1f} µs, both through "
          f"the API {tr * 1e6:.1f} µs (host {host_time(rowwise) * 1e6:.0f} µs/call); fused "
          f"importance_bounds host {host_time(ours) * 1e6:.0f} µs/call", flush=True)
    got = cupy.asnumpy(ours())
    want = cupy.asnumpy(naive())
    err = float(np.max(np.abs(got - want) / (np.abs(want) + 1)))
    err = max(err, float(np.max(np.abs(got - cupy.asnumpy(rowwise())) / (np.abs(want) + 1))))
    return impls, nbytes, err


def case_simple(kind, B, D, dtype, torch):
    rng = cupy.random.default_rng(2)
    it = np.dtype(dtype).itemsize
    if kind == "bernoulli_logpmf":
        x = (rng.random((B, D)) < 0.5).astype(dtype)
        lg = (rng.standard_normal((B, D)) * 3).astype(dtype)
        impls = {"lgm": lambda: lgm.bernoulli_logpmf(x, lg),
                 "cupy": lambda: (x * lg - (cupy.maximum(lg, 0) + cupy.log1p(cupy.exp(-cupy.abs(lg))))).sum(-1)}
        if torch is not None:
            tx, tl = torch.as_tensor(x, device="cuda"), torch.as_tensor(lg, device="cuda")
            impls["torch"] = lambda: (tx * tl - torch.nn.functional.softplus(tl)).sum(-1)
        return impls, 2 * B * D * it + B * it, 0.0
    if kind == "logsumexp":
        a = rng.standard_normal((B, D), dtype=dtype) * 5
        impls = {"lgm": lambda: lgm.logsumexp(a, axis=-1),
                 "cupy": lambda: cupy.log(cupy.exp(a - a.max(-1, keepdims=True)).sum(-1)) + a.max(-1)}
        if torch is not None:
            ta = torch.as_tensor(a, device="cuda")
            impls["torch"] = lambda: torch.logsumexp(ta, dim=-1)
        return impls, B * D * it + B * it, 0.0
    if kind == "kl_diag_std_normal":
        mu = rng.standard_normal((B, D), dtype=dtype)
        lv = rng.uniform(-2, 2, (B, D)).astype(dtype)
        impls = {"lgm": lambda: lgm.kl_diag_std_normal(mu, lv),
                 "cupy": lambda: -0.5 * (1 + lv - mu * mu - cupy.exp(lv)).sum(-1)}
        if torch is not None:
            tm, tl = torch.as_tensor(mu, device="cuda"), torch.as_tensor(lv, device="cuda")
            impls["torch"] = lambda: -0.5 * (1 + tl - tm * tm - torch.exp(tl)).sum(-1)
        return impls, 2 * B * D * it + B * it, 0.0
    raise ValueError(kind)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch = get_torch()
    compile_ = torch is not None and not args.no_compile
    from lgm._backends.gpu import launchers as _gpu

    info = _gpu.backend_info()
    bw = copy_bandwidth(2 * 1024**3 if not args.quick else 256 * 1024**2)
    print(f"device: {info}\ntorch: {torch.__version__ if torch else 'absent'}\n"
          f"copy bandwidth (read + write): {bw:.0f} GB/s", flush=True)
    big = 262144 if not args.quick else 16384
    mid = 65536 if not args.quick else 4096
    cases = [
        ("diag_gaussian_logpdf", f"{big}x784", "float32", lambda: case_logpdf(big, 784, np.float32, torch, compile_)),
        ("diag_gaussian_logpdf", f"{mid}x784", "float32", lambda: case_logpdf(mid, 784, np.float32, torch, compile_)),
        ("diag_gaussian_logpdf", f"{mid}x784", "float64", lambda: case_logpdf(mid, 784, np.float64, torch, False)),
        ("diag_gaussian_logpdf", "1024x784", "float32", lambda: case_logpdf(1024, 784, np.float32, torch, False)),
        ("importance_bounds (log w + ELBO + IWAE, fused)", "64x1024x784x16", "float32",
         lambda: case_importance(64, 1024 if not args.quick else 128, 784, 16, np.float32, torch, compile_)),
        ("bernoulli_logpmf", f"{mid}x784", "float32", lambda: case_simple("bernoulli_logpmf", mid, 784, np.float32, torch)),
        ("kl_diag_std_normal", f"{mid}x784", "float32", lambda: case_simple("kl_diag_std_normal", mid, 784, np.float32, torch)),
        ("logsumexp", f"{mid}x784", "float32", lambda: case_simple("logsumexp", mid, 784, np.float32, torch)),
    ]
    names = ["lgm", "cupy", "torch", "torch.compile"]
    lines = [f"Device: {info}; torch {torch.__version__ if torch else 'absent'}; "
             f"copy bandwidth {bw:.0f} GB/s (read + write, same run)", "",
             "| kernel | size | dtype | " + " | ".join(f"{n} µs" for n in names)
             + " | cupy/lgm | torch/lgm | torch.compile/lgm | lgm GB/s | fraction of copy bw | lgm host µs/call | max rel err vs CPU/naive |",
             "|" + "---|" * (3 + len(names) + 7)]
    for kernel, size, dt, make in cases:
        impls, nbytes, err = make()
        times = {n: gpu_time(f) for n, f in impls.items()}
        t0 = times["lgm"]
        gbps = nbytes / t0 / 1e9
        cells = [kernel, size, dt] + [f"{times[n] * 1e6:.1f}" if n in times else "—" for n in names]
        cells += [f"{times[n] / t0:.2f}×" if n in times else "—" for n in names[1:]]
        cells += [f"{gbps:.0f}", f"{gbps / bw:.2f}", f"{host_time(impls['lgm']) * 1e6:.0f}", f"{err:.1e}"]
        line = "| " + " | ".join(cells) + " |"
        print(line, flush=True)
        lines.append(line)
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.out:
        from lgm.io import write_atomic

        write_atomic(args.out, text)


if __name__ == "__main__":
    main()
