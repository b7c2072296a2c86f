"""pytest-benchmark view of the kernel cases of `lgm bench` (same inputs, same baselines).

    python -m pytest bench/test_kernels_bench.py --benchmark-only --benchmark-group-by=param:case

Each case is timed for lgm, the numpy expression, scipy where it has the function, and torch
(eager and torch.compile) when torch is installed; threads: Numba's and torch's set to
LGM_BENCH_THREADS (default 2), BLAS pinned to the same by threadpoolctl.
"""

import os

import pytest

from lgm.front import bench  # before numba: lgm sets Numba's CPU features at import

import numba  # noqa: E402

THREADS = int(os.environ.get("LGM_BENCH_THREADS", "2"))
TORCH = bench._torch()
QUICK = bool(os.environ.get("LGM_BENCH_QUICK"))

CASES = [(k, s, dt) for k, s in bench.cases(quick=QUICK) for dt in ("float32", "float64")]
IMPLS = ["lgm", "numpy", "scipy", "torch", "torch.compile"]


@pytest.fixture(autouse=True)
def _threads():
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(limits=THREADS):
        yield


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1]))}-{c[2]}")
def test_kernel(benchmark, case, impl):
    kernel, shape, dtype = case
    impls, nbytes = bench.build(kernel, shape, dtype, TORCH, THREADS, compile_=True)
    if impl not in impls:
        pytest.skip(f"{impl} has no implementation of {kernel} here")
    fn = impls[impl]
    fn()  # warm-up: JIT / torch.compile
    benchmark.extra_info["GB/s basis (bytes)"] = nbytes
    benchmark(fn)
