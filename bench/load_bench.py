"""lgm's parallel CPU kernels beside a co-running CPU-bound process (#15): time at 2 Numba threads
over time at 1 thread, with the threading policy "adaptive" (lgm's default) and "fixed" (Numba's
thread count, the behaviour before the policy), quiet and under load, in one run.

    python bench/load_bench.py [--quick] [--out FILE]

The load is `python -c "while True: pass"` started by this script (one process per core minus
one), running through the loaded rounds and killed after them. Each figure is the median of
repeated calls (under load the distribution has a long tail; the median is what a user sees),
1 and 2 threads timed in alternation so that drift hits both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import lgm  # noqa: E402  (before numba: lgm sets Numba's CPU features at import)
import numba  # noqa: E402


def cases(quick):
    rng = np.random.default_rng(0)
    sizes = [(1024, 784)] if quick else [(1024, 784), (65536, 784)]
    out = []
    for B, D in sizes:
        for dt in ("float32", "float64"):
            x, mu = rng.standard_normal((2, B, D)).astype(dt)
            lv = rng.uniform(-2, 2, (B, D)).astype(dt)
            xb = (rng.random((B, D)) < 0.5).astype(dt)
            tag = f"{B}x{D} {dt}"
            out += [
                (f"diag_gaussian_logpdf {tag}", lambda x=x, mu=mu, lv=lv: lgm.diag_gaussian_logpdf(x, mu, lv)),
                (f"diag_gaussian_logpdf_grad {tag}",
                 lambda x=x, mu=mu, lv=lv: lgm.diag_gaussian_logpdf_grad(x, mu, lv, wrt=("mu", "logvar"))),
                (f"bernoulli_logpmf {tag}", lambda xb=xb, mu=mu: lgm.bernoulli_logpmf(xb, mu)),
                (f"kl_diag_std_normal {tag}", lambda mu=mu, lv=lv: lgm.kl_diag_std_normal(mu, lv)),
                (f"logsumexp {tag}", lambda x=x: lgm.logsumexp(x, axis=-1)),
            ]
    return out


def medians(fn, seconds):
    """Median call time at 1 and at 2 Numba threads, calls alternated for ``seconds``."""
    for n in (1, 2):
        numba.set_num_threads(n)
        fn()
    t = {1: [], 2: []}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(t[2]) < 5:
        for n in (1, 2):
            numba.set_num_threads(n)
            t0 = time.perf_counter()
            fn()
            t[n].append(time.perf_counter() - t0)
    numba.set_num_threads(2)
    return statistics.median(t[1]), statistics.median(t[2])


def run(quick=False, say=print):
    if numba.config.NUMBA_NUM_THREADS < 2:
        raise SystemExit("load_bench: needs at least 2 Numba threads")
    seconds = 0.5 if quick else 1.5
    rows = {}
    cs = cases(quick)
    for phase in ("quiet", "load"):
        procs = []
        if phase == "load":
            procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                     for _ in range(max(1, (os.cpu_count() or 2) - 1))]
            time.sleep(1.0)
        try:
            for policy in ("fixed", "adaptive"):
                lgm.set_thread_policy(policy)
                for name, fn in cs:
                    t1, t2 = medians(fn, seconds)
                    rows[(name, phase, policy)] = (t1, t2)
                    say(f"{phase:5s} {policy:8s} {name}: 1 thr {t1 * 1e3:.3f} ms, 2 thr "
                        f"{t2 * 1e3:.3f} ms, 2/1 = {t2 / t1:.2f}")
        finally:
            for p in procs:
                p.kill()
                p.wait()
            lgm.set_thread_policy("adaptive")
    return cs, rows


def table(cs, rows):
    lines = ["| kernel | quiet: 2 thr / 1 thr (adaptive) | load, fixed: 1 thr ms | load, fixed: 2 thr ms "
             "| load, fixed: 2/1 | load, adaptive: 1 thr ms | load, adaptive: 2 thr ms | load, adaptive: 2/1 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, _ in cs:
        q1, q2 = rows[(name, "quiet", "adaptive")]
        f1, f2 = rows[(name, "load", "fixed")]
        a1, a2 = rows[(name, "load", "adaptive")]
        lines.append(f"| {name} | {q2 / q1:.2f} | {f1 * 1e3:.3f} | {f2 * 1e3:.3f} | {f2 / f1:.2f} | "
                     f"{a1 * 1e3:.3f} | {a2 * 1e3:.3f} | {a2 / a1:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1024 x 784 only, shorter rounds")
    ap.add_argument("--out", help="write the table (Markdown) to this file")
    args = ap.parse_args(argv)
    cs, rows = run(args.quick)
    text = (f"Command: `python bench/load_bench.py{' --quick' if args.quick else ''}`; "
            f"{os.cpu_count()} CPUs, numba {numba.__version__} ({numba.threading_layer()} layer); "
            f"median call times.\n\n" + table(cs, rows) + "\n")
    print(text)
    if args.out:
        from lgm.io import write_atomic

        write_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
