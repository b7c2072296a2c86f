"""Dry-run GPU tests or the GPU linear benchmark on a machine without a GPU, before spending device time.

    python bench/gpu_dryrun.py tests/test_gpu.py -k "ppca or fused_importance"   # pytest arguments
    python bench/gpu_dryrun.py --bench-linear                                    # gpu_linear_bench.py --quick

cupy is replaced by the strict stand-in of tests/fakecupy.py, and the CUDA launchers
(lgm._backends.gpu.launchers) by their CPU twins:
- the lowrank launchers;
- the fused importance-bound kernel (computed by the CPU composition);
- every other launcher (its Numba twin).

That checks the Python around the kernels: dispatch, host/device split, and the tests' own
expectations and tolerances. It does not check the CUDA code, cupy's numerics, or tests that
use cupy internals (RawModule, cupy.random, CUDA events): those fail here and mean nothing.
"""

from __future__ import annotations

import os
import runpy
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

import fakecupy  # noqa: E402

import lgm  # noqa: E402
import lgm._backends.gpu  # noqa: E402


def install():
    fc = fakecupy.cupy
    fc.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                    Device=lambda *a: types.SimpleNamespace(synchronize=lambda: None))
    backend = fakecupy.fake_backend()
    sys.modules["cupy"] = fc
    sys.modules["lgm._backends.gpu.launchers"] = backend.kernels
    lgm._backends.gpu.launchers = backend.kernels
    lgm._backends._BACKENDS["cupy"] = backend


def main(argv):
    install()
    if argv[:1] == ["--bench-linear"]:
        sys.argv = [os.path.join(HERE, "gpu_linear_bench.py"), "--quick", *argv[1:]]
        runpy.run_path(sys.argv[0], run_name="__main__")
        return 0
    import pytest

    return pytest.main(["-p", "no:cacheprovider", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
