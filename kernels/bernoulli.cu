// Bernoulli log-mass from logits, summed over the row: sum_j x l - softplus(l). Warp per row.
// Reads 2 R*D arrays, writes R.
#include "common.cuh"

template <typename T, int VW>
__device__ void bernoulli_logpmf(T* __restrict__ out, const T* __restrict__ x,
                                 const T* __restrict__ lg, long long R, int D,
                                 const long long* __restrict__ lead,
                                 const long long* __restrict__ rs, int k) {
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* xr = x + operand_row(ix, lead, rs) * D;
    const T* lr = lg + operand_row(ix, lead, rs + k) * D;
    T acc = warp_sum(bernoulli_row_partial<T, VW, true>(xr, lr, D, lane));
    if (lane == 0) out[r] = acc;
  }
}

#define BERN_PARAMS(T) \
  (T * out, const T* x, const T* lg, long long R, int D, const long long* lead, const long long* rs, int k)
LGM_INSTANTIATE(bernoulli_logpmf, BERN_PARAMS, (out, x, lg, R, D, lead, rs, k))

// Value and gradient d/dl = w (x - sigmoid(l)), written to a full R*D array. Scalar loads: the
// R*D output dominates the traffic, as in diag_gaussian_logpdf_grad.
template <typename T, int VW>
__device__ void bernoulli_logpmf_grad(T* __restrict__ out, T* __restrict__ dl,
                                      const T* __restrict__ x, const T* __restrict__ lg,
                                      const T* __restrict__ w, long long R, int D,
                                      const long long* __restrict__ lead,
                                      const long long* __restrict__ rs, int k) {
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* xr = x + operand_row(ix, lead, rs) * D;
    const T* lr = lg + operand_row(ix, lead, rs + k) * D;
    const T wr = w[r];
    T acc = T(0);
    for (int j = lane; j < D; j += 32) {
      T xv = __ldg(xr + j), l = __ldg(lr + j);
      acc += bernoulli_term(xv, l);
      dl[r * D + j] = wr * (xv - T(1) / (T(1) + Math<T>::exp_(-l)));
    }
    acc = warp_sum(acc);
    if (lane == 0) out[r] = acc;
  }
}

#define BERN_GRAD_PARAMS(T)                                                              \
  (T * out, T * dl, const T* x, const T* lg, const T* w, long long R, int D, const long long* lead, \
   const long long* rs, int k)
LGM_INSTANTIATE(bernoulli_logpmf_grad, BERN_GRAD_PARAMS, (out, dl, x, lg, w, R, D, lead, rs, k))
