// Diagonal-Gaussian log-density and its fused gradient. Warp per row (see common.cuh).
//
//   out[r] = -1/2 sum_j [ (x - mu)^2 e^{-lv} + lv + log 2 pi ]
//   d/dmu = w (x - mu) e^{-lv},  d/dx = -d/dmu,  d/dlv = w/2 ((x - mu)^2 e^{-lv} - 1)
//
// Reference: lgm/reference.py. CPU twin: lgm/_cpu/kernels.py (same names, same argument order).
// Bandwidth: logpdf reads 3 R*D arrays once and writes R; the gradient also writes up to 3 R*D.
#include "common.cuh"

template <typename T, int VW>
__device__ void diag_gaussian_logpdf(T* __restrict__ out, const T* __restrict__ x,
                                     const T* __restrict__ mu, const T* __restrict__ lv,
                                     long long R, int D, const long long* __restrict__ lead,
                                     const long long* __restrict__ rs, int k) {
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* xr = x + operand_row(ix, lead, rs) * D;
    const T* mr = mu + operand_row(ix, lead, rs + k) * D;
    const T* lr = lv + operand_row(ix, lead, rs + 2 * k) * D;
    // every element is read exactly once: streaming loads for all three
    T acc = warp_sum(gaussian_row_partial<T, VW, true>(xr, mr, lr, D, lane));
    if (lane == 0) out[r] = T(-0.5) * (acc + T(D) * T(LGM_LOG2PI));
  }
}

#define LOGPDF_PARAMS(T)                                                                  \
  (T * out, const T* x, const T* mu, const T* lv, long long R, int D, const long long* lead, \
   const long long* rs, int k)
LGM_INSTANTIATE(diag_gaussian_logpdf, LOGPDF_PARAMS, (out, x, mu, lv, R, D, lead, rs, k))

// Gradient: scalar loads (VW = 1) are enough here, the three outputs dominate the traffic.
template <typename T, int VW>
__device__ void diag_gaussian_logpdf_grad(T* __restrict__ out, T* __restrict__ dx,
                                          T* __restrict__ dmu, T* __restrict__ dlv,
                                          const T* __restrict__ x, const T* __restrict__ mu,
                                          const T* __restrict__ lv, const T* __restrict__ w,
                                          int want_dx, int want_dmu, int want_dlv, long long R,
                                          int D, const long long* __restrict__ lead,
                                          const long long* __restrict__ rs, int k) {
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* xr = x + operand_row(ix, lead, rs) * D;
    const T* mr = mu + operand_row(ix, lead, rs + k) * D;
    const T* lr = lv + operand_row(ix, lead, rs + 2 * k) * D;
    const T wr = w[r];
    T acc = T(0);
    for (int j = lane; j < D; j += 32) {
      T d = __ldg(xr + j) - __ldg(mr + j);
      T l = __ldg(lr + j);
      T h = Math<T>::exp_(T(-0.5) * l);  // as gaussian_term: (d h)^2, and 0 where d == 0
      T sd = d * h;
      T q = d != T(0) ? sd * sd : T(0);
      T de = d != T(0) ? sd * h : T(0);  // d e^{-l}
      acc += q + l;
      long long o = r * D + j;
      if (want_dmu) dmu[o] = wr * de;
      if (want_dx) dx[o] = -wr * de;
      if (want_dlv) dlv[o] = T(0.5) * wr * (q - T(1));
    }
    acc = warp_sum(acc);
    if (lane == 0) out[r] = T(-0.5) * (acc + T(D) * T(LGM_LOG2PI));
  }
}

#define GRAD_PARAMS(T)                                                                      \
  (T * out, T * dx, T * dmu, T * dlv, const T* x, const T* mu, const T* lv, const T* w,      \
   int want_dx, int want_dmu, int want_dlv, long long R, int D, const long long* lead,       \
   const long long* rs, int k)
LGM_INSTANTIATE(diag_gaussian_logpdf_grad, GRAD_PARAMS,
                (out, dx, dmu, dlv, x, mu, lv, w, want_dx, want_dmu, want_dlv, R, D, lead, rs, k))
