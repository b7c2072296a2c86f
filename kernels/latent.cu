// Latent-space kernels: standard-normal log-density, closed-form KL to N(0, I) with its gradient,
// and the reparameterised draw t = mu + exp(lv / 2) eps.
// KL(N(mu, e^lv) || N(0, I)) = -1/2 sum(1 + lv - mu^2 - e^lv)   (Kingma & Welling 2014, App. B)
#include "common.cuh"

template <typename T, int VW>
__device__ void std_normal_logpdf(T* __restrict__ out, const T* __restrict__ t, long long R, int D) {
  LGM_WARP_ROWS(R) {
    const T* tr = t + r * D;
    T acc = T(0);
    for (int j = lane; j < D; j += 32) { T v = __ldg(tr + j); acc += v * v; }
    acc = warp_sum(acc);
    if (lane == 0) out[r] = T(-0.5) * (acc + T(D) * T(LGM_LOG2PI));
  }
}
#define STDN_PARAMS(T) (T * out, const T* t, long long R, int D)
LGM_INSTANTIATE(std_normal_logpdf, STDN_PARAMS, (out, t, R, D))

template <typename T, int VW>
__device__ void kl_diag_std_normal(T* __restrict__ out, T* __restrict__ dmu, T* __restrict__ dlv,
                                   const T* __restrict__ mu, const T* __restrict__ lv, int want_grad,
                                   long long R, int D, const long long* __restrict__ lead,
                                   const long long* __restrict__ rs, int k) {
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* mr = mu + operand_row(ix, lead, rs) * D;
    const T* lr = lv + operand_row(ix, lead, rs + k) * D;
    T acc = T(0);
    for (int j = lane; j < D; j += 32) {
      T m = __ldg(mr + j), l = __ldg(lr + j);
      acc += kl_term(m, l);
      if (want_grad) {
        dmu[r * D + j] = m;
        dlv[r * D + j] = T(0.5) * expm1_series<T, 1>(l);
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) out[r] = T(0.5) * acc;
  }
}
#define KL_PARAMS(T)                                                                       \
  (T * out, T * dmu, T * dlv, const T* mu, const T* lv, int want_grad, long long R, int D, \
   const long long* lead, const long long* rs, int k)
LGM_INSTANTIATE(kl_diag_std_normal, KL_PARAMS, (out, dmu, dlv, mu, lv, want_grad, R, D, lead, rs, k))

template <typename T, int VW>
__device__ void reparameterize(T* __restrict__ t, const T* __restrict__ mu, const T* __restrict__ lv,
                               const T* __restrict__ eps, long long R, int D,
                               const long long* __restrict__ lead, const long long* __restrict__ rs,
                               int k) {
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* mr = mu + operand_row(ix, lead, rs) * D;
    const T* lr = lv + operand_row(ix, lead, rs + k) * D;
    for (int j = lane; j < D; j += 32)
      t[r * D + j] = __ldg(mr + j) + Math<T>::exp_(T(0.5) * __ldg(lr + j)) * __ldg(eps + r * D + j);
  }
}
#define REPARAM_PARAMS(T)                                                                    \
  (T * t, const T* mu, const T* lv, const T* eps, long long R, int D, const long long* lead, \
   const long long* rs, int k)
LGM_INSTANTIATE(reparameterize, REPARAM_PARAMS, (t, mu, lv, eps, R, D, lead, rs, k))
