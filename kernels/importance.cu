// Fused importance log-weights, one warp per (s, b) row:
//   log w = log p(x | t) + log p(t) - log q(t | x),
//   log p(t) - log q(t) = 1/2 sum_k ((t - mu_t)^2 e^{-lv_t} + lv_t - t^2)   (the log 2 pi cancel)
// Operand order in rs (k entries each): x, mu_x or logits, logvar_x (unused for Bernoulli), t, mu_t, lv_t.
// Bandwidth: reads mu_x, logvar_x (S B D each) once, x (B D, re-read from L2 across s), t, mu_t, lv_t.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ T latent_term(const T* __restrict__ t, const T* __restrict__ mt,
                                         const T* __restrict__ lt, int K, int lane) {
  T lat = T(0);
  for (int j = lane; j < K; j += 32) {
    T tk = __ldg(t + j), d = tk - __ldg(mt + j), l = __ldg(lt + j);
    lat += d * d * Math<T>::exp_(-l) + l - tk * tk;
  }
  return lat;
}

template <typename T, int VW>
__device__ void importance_log_weights_gaussian(T* __restrict__ out, const T* __restrict__ x,
                                                const T* __restrict__ mux, const T* __restrict__ lvx,
                                                const T* __restrict__ t, const T* __restrict__ mt,
                                                const T* __restrict__ lt, long long R, int D, int K,
                                                const long long* __restrict__ lead,
                                                const long long* __restrict__ rs, int k) {
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* xr = x + operand_row(ix, lead, rs) * D;
    const T* mr = mux + operand_row(ix, lead, rs + k) * D;
    const T* lr = lvx + operand_row(ix, lead, rs + 2 * k) * D;
    // x is re-read for every s (cached loads); mu_x and logvar_x stream through once
    T acc = gaussian_row_partial<T, VW, false>(xr, mr, lr, D, lane);
    T lat = latent_term(t + operand_row(ix, lead, rs + 3 * k) * K,
                        mt + operand_row(ix, lead, rs + 4 * k) * K,
                        lt + operand_row(ix, lead, rs + 5 * k) * K, K, lane);
    acc = warp_sum(T(-0.5) * acc + T(0.5) * lat);
    if (lane == 0) out[r] = acc - T(0.5) * T(D) * T(LGM_LOG2PI);
  }
}
#define IWG_PARAMS(T)                                                                      \
  (T * out, const T* x, const T* mux, const T* lvx, const T* t, const T* mt, const T* lt,  \
   long long R, int D, int K, const long long* lead, const long long* rs, int k)
LGM_INSTANTIATE(importance_log_weights_gaussian, IWG_PARAMS, (out, x, mux, lvx, t, mt, lt, R, D, K, lead, rs, k))

template <typename T, int VW>
__device__ void importance_log_weights_bernoulli(T* __restrict__ out, const T* __restrict__ x,
                                                 const T* __restrict__ lg, const T* __restrict__ t,
                                                 const T* __restrict__ mt, const T* __restrict__ lt,
                                                 long long R, int D, int K,
                                                 const long long* __restrict__ lead,
                                                 const long long* __restrict__ rs, int k) {
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* xr = x + operand_row(ix, lead, rs) * D;
    const T* gr = lg + operand_row(ix, lead, rs + k) * D;
    T acc = bernoulli_row_partial<T, VW, false>(xr, gr, D, lane);
    T lat = latent_term(t + operand_row(ix, lead, rs + 3 * k) * K,
                        mt + operand_row(ix, lead, rs + 4 * k) * K,
                        lt + operand_row(ix, lead, rs + 5 * k) * K, K, lane);
    acc = warp_sum(acc + T(0.5) * lat);
    if (lane == 0) out[r] = acc;
  }
}
#define IWB_PARAMS(T)                                                                       \
  (T * out, const T* x, const T* lg, const T* t, const T* mt, const T* lt, long long R, int D, \
   int K, const long long* lead, const long long* rs, int k)
LGM_INSTANTIATE(importance_log_weights_bernoulli, IWB_PARAMS, (out, x, lg, t, mt, lt, R, D, K, lead, rs, k))
