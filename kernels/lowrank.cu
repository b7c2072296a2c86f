// Low-rank-plus-diagonal Gaussian N(mean, W W^T + diag(psi)) (PPCA, factor analysis): the one
// pass over the data of the exact log-likelihood (lgm/lowrank.py). Warp per row (common.cuh).
//
//   quad[n]  = sum_j (x[n, j] - mean[j])^2 / psi[j]     accumulated in double for float and double x
//   flags[n] = 1 if row n has a NaN (a missing value), 2 if it has an inf (3: both)
//
// The matrix products (X Psi^-1 W) run in cuBLAS; rows with missing values go to the batched
// formulation in lgm/_lowrank_batched.py. CPU twin: row_stats in lgm/_cpu/lowrank.py (same
// argument order). Scalar loads (VW = 1 only is launched): inv_psi is double whatever x is.
#include "common.cuh"

__device__ __forceinline__ int warp_or(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v |= __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, int VW>
__device__ void lowrank_row_stats(double* __restrict__ quad, unsigned char* __restrict__ flags,
                                  const T* __restrict__ x, const T* __restrict__ mean,
                                  const double* __restrict__ inv_psi, long long N, int D) {
  LGM_WARP_ROWS(N) {
    const T* xr = x + r * D;
    double acc = 0.0;
    int f = 0;
    for (int j = lane; j < D; j += 32) {
      const T v = __ldcs(xr + j);  // read once: streaming load
      const double d = double(v) - double(__ldg(mean + j));
      acc += d * d * __ldg(inv_psi + j);
      if (v != v) f |= 1;
      else if (fabs(v) == Math<T>::inf()) f |= 2;
    }
    acc = warp_sum(acc);
    f = warp_or(f);
    if (lane == 0) {
      quad[r] = acc;
      flags[r] = (unsigned char)f;
    }
  }
}

#define ROW_STATS_PARAMS(T)                                                                \
  (double* quad, unsigned char* flags, const T* x, const T* mean, const double* inv_psi, \
   long long N, int D)
LGM_INSTANTIATE(lowrank_row_stats, ROW_STATS_PARAMS, (quad, flags, x, mean, inv_psi, N, D))
