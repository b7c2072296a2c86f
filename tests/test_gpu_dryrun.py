"""The GPU test module's Python, run on the CPU stand-in for cupy (bench/gpu_dryrun.py): every
test of tests/test_gpu.py except the NVRTC compile runs with strict fake cupy arrays and the CPU
twins of the CUDA launchers. This keeps the GPU tests' own expectations and the cupy dispatch
of every model checked in CI, where there is no GPU; the CUDA code itself is checked only on a
GPU (tests/test_gpu.py proper). One subprocess, so that the stand-in never meets this process's
modules."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_tests_pass_on_the_cpu_stand_in():
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_dryrun.py"), "-q", "-x",
           str(ROOT / "tests" / "test_gpu.py"),
           "--deselect", "tests/test_gpu.py::test_every_kernel_name_compiles_with_nvrtc"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], r.stdout[-500:]
