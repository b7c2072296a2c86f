// Diagonal-Gaussian log-density, one block per row (grid-stride over rows).
//
//   out[r] = -1/2 * sum_j [ (x[r,j] - mu[r,j])^2 * exp(-logvar[r,j]) + logvar[r,j] + log 2 pi ]
//
// Sections: reference (in lgm/reference.py), kernels, launcher (lgm/_gpu.py through CuPy).
// Bandwidth arithmetic: reads 3 arrays of R*D elements, writes R; one pass.
// Operands are C-contiguous (rows, D); row_x etc. map an output row to an operand row so that
// broadcast operands are not copied (rs_* = row strides over the leading shape, 0 if broadcast).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ long long operand_row(long long r, const long long* lead,
                                                 const long long* rs, int k) {
  long long idx = 0, rem = r;
  for (int a = k - 1; a >= 0; --a) {
    long long n = lead[a];
    idx += (rem % n) * rs[a];
    rem /= n;
  }
  return idx;
}

template <typename T>
__device__ void diag_gaussian_logpdf_impl(T* __restrict__ out, const T* __restrict__ x,
                                          const T* __restrict__ mu, const T* __restrict__ lv,
                                          long long R, int D, const long long* __restrict__ lead,
                                          const long long* __restrict__ rs, int k) {
  for (long long r = blockIdx.x; r < R; r += gridDim.x) {
    const T* xr = x + operand_row<T>(r, lead, rs, k) * D;
    const T* mr = mu + operand_row<T>(r, lead, rs + k, k) * D;
    const T* lr = lv + operand_row<T>(r, lead, rs + 2 * k, k) * D;
    T acc = T(0);
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
      T d = xr[j] - mr[j];
      T l = lr[j];
      acc += d * d * Traits<T>::exp_(-l) + l;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[r] = T(-0.5) * (acc + T(D) * Traits<T>::log2pi());
  }
}

extern "C" __global__ void diag_gaussian_logpdf_f32(float* out, const float* x, const float* mu,
                                                    const float* lv, long long R, int D,
                                                    const long long* lead, const long long* rs,
                                                    int k) {
  diag_gaussian_logpdf_impl<float>(out, x, mu, lv, R, D, lead, rs, k);
}

extern "C" __global__ void diag_gaussian_logpdf_f64(double* out, const double* x, const double* mu,
                                                    const double* lv, long long R, int D,
                                                    const long long* lead, const long long* rs,
                                                    int k) {
  diag_gaussian_logpdf_impl<double>(out, x, mu, lv, R, D, lead, rs, k);
}
