// Fused importance log-weights, one warp per (s, b) row (any broadcasting of the operands):
//   log w = log p(x | t) + log p(t) - log q(t | x),
//   log p(t) - log q(t) = 1/2 sum_k ((t - mu_t)^2 e^{-lv_t} + lv_t - t^2)   (the log 2 pi cancel)
// Operand order in rs (k entries each): x, mu_x or logits, logvar_x (unused for Bernoulli), t, mu_t, lv_t.
// Bandwidth: reads mu_x, logvar_x (S B D each) once, x (B D, re-read from L2 across s), t, mu_t, lv_t.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ T latent_term(const T* __restrict__ t, const T* __restrict__ mt,
                                         const T* __restrict__ lt, int d, int lane) {
  T lat = T(0);
  for (int j = lane; j < d; j += 32) {
    const T tk = __ldg(t + j);
    lat += gaussian_term(tk, __ldg(mt + j), __ldg(lt + j)) - tk * tk;
  }
  return lat;
}

template <typename T, int VW>
__device__ void importance_log_weights_gaussian(T* __restrict__ out, const T* __restrict__ x,
                                                const T* __restrict__ mux, const T* __restrict__ lvx,
                                                const T* __restrict__ t, const T* __restrict__ mt,
                                                const T* __restrict__ lt, long long R, int D, int d,
                                                const long long* __restrict__ lead,
                                                const long long* __restrict__ rs, int k) {
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* xr = x + operand_row(ix, lead, rs) * D;
    const T* mr = mux + operand_row(ix, lead, rs + k) * D;
    const T* lr = lvx + operand_row(ix, lead, rs + 2 * k) * D;
    // x is re-read for every s (cached loads); mu_x and logvar_x stream through once
    T acc = gaussian_row_partial<T, VW, false>(xr, mr, lr, D, lane);
    T lat = latent_term(t + operand_row(ix, lead, rs + 3 * k) * d,
                        mt + operand_row(ix, lead, rs + 4 * k) * d,
                        lt + operand_row(ix, lead, rs + 5 * k) * d, d, lane);
    acc = warp_sum(T(-0.5) * acc + T(0.5) * lat);
    if (lane == 0) out[r] = acc - T(0.5) * T(D) * T(LGM_LOG2PI);
  }
}
#define IWG_PARAMS(T)                                                                      \
  (T * out, const T* x, const T* mux, const T* lvx, const T* t, const T* mt, const T* lt,  \
   long long R, int D, int d, const long long* lead, const long long* rs, int k)
LGM_INSTANTIATE(importance_log_weights_gaussian, IWG_PARAMS, (out, x, mux, lvx, t, mt, lt, R, D, d, lead, rs, k))

template <typename T, int VW>
__device__ void importance_log_weights_bernoulli(T* __restrict__ out, const T* __restrict__ x,
                                                 const T* __restrict__ lg, const T* __restrict__ t,
                                                 const T* __restrict__ mt, const T* __restrict__ lt,
                                                 long long R, int D, int d,
                                                 const long long* __restrict__ lead,
                                                 const long long* __restrict__ rs, int k) {
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* xr = x + operand_row(ix, lead, rs) * D;
    const T* gr = lg + operand_row(ix, lead, rs + k) * D;
    T acc = bernoulli_row_partial<T, VW, false>(xr, gr, D, lane);
    T lat = latent_term(t + operand_row(ix, lead, rs + 3 * k) * d,
                        mt + operand_row(ix, lead, rs + 4 * k) * d,
                        lt + operand_row(ix, lead, rs + 5 * k) * d, d, lane);
    acc = warp_sum(acc + T(0.5) * lat);
    if (lane == 0) out[r] = acc;
  }
}
#define IWB_PARAMS(T)                                                                       \
  (T * out, const T* x, const T* lg, const T* t, const T* mt, const T* lt, long long R, int D, \
   int d, const long long* lead, const long long* rs, int k)
LGM_INSTANTIATE(importance_log_weights_bernoulli, IWB_PARAMS, (out, x, lg, t, mt, lt, R, D, d, lead, rs, k))

// ---------------------------------------------------------------------------------------------
// x-stationary fused bounds: the log-weights of every (s, b) AND their reductions over s,
//   elbo[b] = mean_s log w[s, b],   iwae[b] = logsumexp_s log w[s, b] - log S,
// in one pass. One block per b (grid-stride over B): its x row is loaded once into registers
// (IW_MAXP packs of VW per lane, so D <= IW_MAXP * 32 * VW) and reused for all S samples; warp w
// takes s = w, w + IW_WARPS, ... and keeps an online (max, sum) logsumexp; the warps merge in
// shared memory. The row-wise kernels above re-read x from L2 for every s, so they move 3 rows
// per (s, b) through the SMs for 2 rows of HBM traffic; here it is 2 + IW_WARPS / S.
// Layout (the caller checks it): x (B, D); mu_x, logvar_x or logits (S, B, D); t (S, B, d), d the
// latent dimension;
// mu_t, logvar_t (B, d); all C-contiguous, no broadcasting. Bernoulli: dec2 is unused.
#define IW_WARPS 8
#define IW_MAXP 8

template <typename T, int VW, bool GAUSS>
__device__ void importance_bounds(T* __restrict__ lw, T* __restrict__ elbo, T* __restrict__ iwae,
                                  const T* __restrict__ x, const T* __restrict__ dec1,
                                  const T* __restrict__ dec2, const T* __restrict__ t,
                                  const T* __restrict__ mt, const T* __restrict__ lt, int S, int B,
                                  int D, int d) {
  __shared__ T sh_m[IW_WARPS], sh_s[IW_WARPS], sh_n[IW_WARPS], sh_sum[IW_WARPS];
  __shared__ int sh_nan[IW_WARPS];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int DV = D / VW;
  for (int b = blockIdx.x; b < B; b += gridDim.x) {
    const T* xb = x + (long long)b * D;
    Pack<T, VW> xr[IW_MAXP];
#pragma unroll
    for (int p = 0; p < IW_MAXP; ++p) {
      const int j = lane + 32 * p;
      if (j < DV) xr[p] = ld<T, VW>(xb, j);
    }
    T m = -Math<T>::inf(), s = T(0), n_eq = T(0), sum = T(0);
    int nan = 0;
    for (int si = w; si < S; si += IW_WARPS) {
      const long long r = (long long)si * B + b;
      const T* ar = dec1 + r * D;
      const T* br = dec2 + r * D;
      T acc = T(0);
#pragma unroll
      for (int p = 0; p < IW_MAXP; ++p) {
        const int j = lane + 32 * p;
        if (j < DV) {
          const Pack<T, VW> pa = ldcs<T, VW>(ar, j);
          if (GAUSS) {
            const Pack<T, VW> pl = ldcs<T, VW>(br, j);
#pragma unroll
            for (int c = 0; c < VW; ++c) acc += gaussian_term(xr[p].v[c], pa.v[c], pl.v[c]);
          } else {
#pragma unroll
            for (int c = 0; c < VW; ++c) acc += bernoulli_term(xr[p].v[c], pa.v[c]);
          }
        }
      }
      const T lat = latent_term(t + r * d, mt + (long long)b * d, lt + (long long)b * d, d, lane);
      T v;
      if (GAUSS)
        v = warp_sum(T(-0.5) * acc + T(0.5) * lat) - T(0.5) * T(D) * T(LGM_LOG2PI);
      else
        v = warp_sum(acc + T(0.5) * lat);
      if (lane == 0) lw[r] = v;
      sum += v;
      lse_push(m, s, n_eq, nan, v);  // every lane holds the same v: identical state in all lanes
    }
    if (lane == 0) {
      sh_m[w] = m;
      sh_s[w] = s;
      sh_n[w] = n_eq;
      sh_sum[w] = sum;
      sh_nan[w] = nan;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      T M = sh_m[0], Ssum = sh_s[0], Neq = sh_n[0], tot = sh_sum[0];
      int nn = sh_nan[0];
      for (int i = 1; i < IW_WARPS; ++i) {
        lse_merge(M, Ssum, Neq, sh_m[i], sh_s[i], sh_n[i]);
        tot += sh_sum[i];
        nn |= sh_nan[i];
      }
      iwae[b] = lse_finish(M, Ssum, Neq, nn) - Math<T>::log_(T(S));
      elbo[b] = tot / T(S);
    }
    __syncthreads();  // the shared slots are reused for the next b
  }
}

#define IWB_BOUNDS_PARAMS(T)                                                                   \
  (T * lw, T * elbo, T * iwae, const T* x, const T* dec1, const T* dec2, const T* t,          \
   const T* mt, const T* lt, int S, int B, int D, int d)
#define IWB_BOUNDS_ARGS (lw, elbo, iwae, x, dec1, dec2, t, mt, lt, S, B, D, d)
template <typename T, int VW>
__device__ void importance_bounds_gaussian IWB_BOUNDS_PARAMS(T) {
  importance_bounds<T, VW, true> IWB_BOUNDS_ARGS;
}
template <typename T, int VW>
__device__ void importance_bounds_bernoulli IWB_BOUNDS_PARAMS(T) {
  importance_bounds<T, VW, false> IWB_BOUNDS_ARGS;
}
LGM_INSTANTIATE(importance_bounds_gaussian, IWB_BOUNDS_PARAMS, IWB_BOUNDS_ARGS)
LGM_INSTANTIATE(importance_bounds_bernoulli, IWB_BOUNDS_PARAMS, IWB_BOUNDS_ARGS)
