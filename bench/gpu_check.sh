#!/usr/bin/env bash
# The GPU check, one prepared script (about 5 minutes on an H200, 2026-12-04: nvcc ~50 s, the 113
# GPU tests ~150 s on a fresh machine where Numba compiles the CPU twins first, benchmarks ~90 s):
#   1. build the fatbins with CMake/nvcc (sm_90 for the lent Hopper GPUs, plus sm_80),
#   2. run the GPU tests (fatbin path, and every kernel name through NVRTC),
#   3. run the GPU kernel benchmark, the VAE training benchmark (lgm on cupy vs torch eager) and
#      the linear-Gaussian benchmark (PPCA / FA on cupy vs numpy vs scikit-learn).
# Usage (on the GPU machine, from the repository root): bash bench/gpu_check.sh [OUTDIR]
set -uo pipefail
OUT="${1:-${OUT:-gpu-check}}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
rc=0
cmake -S . -B build-gpu -DLGM_CUDA_ARCHITECTURES="80;90" >/dev/null && cmake --build build-gpu 2>&1 | tail -3 || rc=1
export LGM_FATBIN_DIR="$PWD/build-gpu/lgm_kernels"
python3 -c "import lgm.ops as o; print(o.gpu_info())" 2>&1 | tee "$OUT/backend.txt"
timeout 300 python3 -m pytest -q -p no:cacheprovider --durations=8 tests/test_gpu.py tests/test_launch.py \
  tests/test_gpu_dispatch.py tests/test_lowrank_batched.py 2>&1 | tee "$OUT/gpu_tests.txt" | tail -25
t=${PIPESTATUS[0]}
[ "$t" -eq 124 ] && echo "GPU tests: killed at the 300 s limit (the test after the last dot did not finish: run pytest -v to name it)" | tee -a "$OUT/gpu_tests.txt"
[ "$t" -eq 0 ] || rc=1
timeout 200 python3 bench/gpu_bench.py --out "$OUT/gpu_bench.md" 2>&1 | tail -30 || rc=1
timeout 120 python3 bench/vae_bench.py --gpu --out "$OUT/gpu_vae.md" 2>&1 | tail -8 || rc=1
timeout 120 python3 bench/gpu_linear_bench.py --out "$OUT/gpu_linear.md" 2>&1 | tail -9 || rc=1
exit $rc
