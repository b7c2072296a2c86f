// Stable logsumexp over the middle axis of a C-contiguous (P, N, Q) array -> (P, Q).
// Rules: an all -inf slice gives -inf (no NaN); +inf anywhere gives +inf; NaN anywhere gives NaN.
// Q == 1: warp per row, online max/sum per lane merged by shuffles (the llm.c softmax merge).
// Q > 1:  thread per (p, q) column, loop over n (reads coalesced along q).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void lse_merge(T& m, T& s, T m2, T s2) {
  T mn = fmax(m, m2);
  if (mn == -Math<T>::inf()) return;  // both empty: stays (-inf, 0)
  // a -inf side contributes 0; if mn is +inf the sum is inf (handled at the end)
  T a = (m == -Math<T>::inf()) ? T(0) : s * Math<T>::exp_(m - mn);
  T b = (m2 == -Math<T>::inf()) ? T(0) : s2 * Math<T>::exp_(m2 - mn);
  m = mn;
  s = a + b;
}

template <typename T>
__device__ __forceinline__ void lse_push(T& m, T& s, int& nan, T v) {
  if (v != v) { nan = 1; return; }
  if (v == -Math<T>::inf()) return;
  if (v > m) {
    s = (m == -Math<T>::inf()) ? T(1) : s * Math<T>::exp_(m - v) + T(1);
    m = v;
  } else {
    s += Math<T>::exp_(v - m);
  }
}

template <typename T>
__device__ __forceinline__ T lse_finish(T m, T s, int nan) {
  if (nan) return Math<T>::nan();
  if (m == Math<T>::inf() || m == -Math<T>::inf()) return m;
  return m + Math<T>::log_(s);
}

template <typename T, int VW>
__device__ void logsumexp_rows(T* __restrict__ out, const T* __restrict__ a, long long P, int N) {
  // Per lane: a running (max, sum) over packs of VW values, rescaled once per pack (not per
  // value); +inf and NaN are tracked as flags, so the arithmetic only ever sees finite maxima.
  const int NV = N / VW;
  const T NEG = -Math<T>::inf(), POS = Math<T>::inf();
  LGM_WARP_ROWS(P) {
    const T* ar = a + r * (long long)N;
    T m = NEG, s = T(0);
    int nan = 0, pinf = 0;
#pragma unroll 2
    for (int j = lane; j < NV; j += 32) {
      Pack<T, VW> p = ldcs<T, VW>(ar, j);
      T pm = NEG;
#pragma unroll
      for (int c = 0; c < VW; ++c) {
        T v = p.v[c];
        nan |= (v != v);
        pinf |= (v == POS);
        pm = fmax(pm, v == POS ? NEG : v);  // fmax ignores NaN
      }
      if (pm > m) {
        s = (m == NEG) ? T(0) : s * Math<T>::exp_(m - pm);
        m = pm;
      }
      if (m != NEG) {
#pragma unroll
        for (int c = 0; c < VW; ++c) {
          T v = p.v[c];
          s += (v == POS || v != v) ? T(0) : Math<T>::exp_(v - m);
        }
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      T m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
      nan |= __shfl_xor_sync(0xffffffffu, nan, o);
      pinf |= __shfl_xor_sync(0xffffffffu, pinf, o);
      lse_merge(m, s, m2, s2);
    }
    if (lane == 0) out[r] = nan ? Math<T>::nan() : pinf ? POS : lse_finish(m, s, 0);
  }
}
#define LSE_ROWS_PARAMS(T) (T * out, const T* a, long long P, int N)
LGM_INSTANTIATE(logsumexp_rows, LSE_ROWS_PARAMS, (out, a, P, N))

template <typename T, int VW>
__device__ void logsumexp_cols(T* __restrict__ out, const T* __restrict__ a, long long P, int N,
                               long long Q) {
  const long long total = P * Q;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    const long long p = i / Q, q = i - p * Q;
    const T* col = a + p * N * Q + q;
    T m = -Math<T>::inf(), s = T(0);
    int nan = 0;
    for (int n = 0; n < N; ++n) {
      T v = __ldg(col + (long long)n * Q);
      if (v == Math<T>::inf()) { m = v; s = T(1); }
      else if (m != Math<T>::inf()) lse_push(m, s, nan, v);
      else if (v != v) nan = 1;
    }
    out[i] = lse_finish(m, s, nan);
  }
}
#define LSE_COLS_PARAMS(T) (T * out, const T* a, long long P, int N, long long Q)
LGM_INSTANTIATE(logsumexp_cols, LSE_COLS_PARAMS, (out, a, P, N, Q))
