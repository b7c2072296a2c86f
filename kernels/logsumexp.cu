// Stable logsumexp over the middle axis of a C-contiguous (P, N, Q) array -> (P, Q).
// Rules: an all -inf slice gives -inf (no NaN); +inf anywhere gives +inf; NaN anywhere gives NaN.
// Q == 1: warp per row, online max/sum per lane merged by shuffles (the llm.c softmax merge).
// Q > 1:  32-column tiles, 8 thread rows splitting n, merged in shared memory.
#include "common.cuh"

template <typename T, int VW>
__device__ void logsumexp_rows(T* __restrict__ out, const T* __restrict__ a, long long P, int N) {
  // Per lane: a running (max, rest, count of the max) over packs of VW values, rescaled once per
  // pack (not per value); +inf and NaN are tracked as flags, so the arithmetic only ever sees
  // finite maxima.
  const int NV = N / VW;
  const T NEG = -Math<T>::inf(), POS = Math<T>::inf();
  LGM_WARP_ROWS(P) {
    const T* ar = a + r * (long long)N;
    T m = NEG, s = T(0), n = T(0);
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
        s = (m == NEG) ? T(0) : (s + n) * Math<T>::exp_(m - pm);
        n = T(0);
        m = pm;
      }
      if (m != NEG) {
#pragma unroll
        for (int c = 0; c < VW; ++c) {
          T v = p.v[c];
          const bool skip = v == POS || v != v;
          n += (!skip && v == m) ? T(1) : T(0);
          s += (skip || v == m) ? T(0) : Math<T>::exp_(v - m);
        }
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      T m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
      T n2 = __shfl_xor_sync(0xffffffffu, n, o);
      nan |= __shfl_xor_sync(0xffffffffu, nan, o);
      pinf |= __shfl_xor_sync(0xffffffffu, pinf, o);
      lse_merge(m, s, n, m2, s2, n2);
    }
    if (lane == 0) out[r] = nan ? Math<T>::nan() : pinf ? POS : lse_finish(m, s, n, 0);
  }
}
#define LSE_ROWS_PARAMS(T) (T * out, const T* a, long long P, int N)
LGM_INSTANTIATE(logsumexp_rows, LSE_ROWS_PARAMS, (out, a, P, N))

// Q > 1: a block of 32 x 8 threads takes a tile of 32 columns; the 8 thread rows split n
// (independent loads in flight), then merge their (max, sum) pairs through shared memory.
// The IWAE reduction (S, B) over S has few columns and short columns: one thread per column
// would run a long dependent chain on a handful of SMs.
#define LSE_TILE_Y 8
template <typename T, int VW>
__device__ void logsumexp_cols(T* __restrict__ out, const T* __restrict__ a, long long P, int N,
                               long long Q) {
  __shared__ T sh_m[LSE_TILE_Y][33];
  __shared__ T sh_s[LSE_TILE_Y][33];
  __shared__ T sh_n[LSE_TILE_Y][33];
  __shared__ int sh_f[LSE_TILE_Y][33];
  const T NEG = -Math<T>::inf(), POS = Math<T>::inf();
  const long long tiles_q = (Q + 31) / 32;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (long long tile = blockIdx.x; tile < P * tiles_q; tile += gridDim.x) {
    const long long p = tile / tiles_q;
    const long long q = (tile - p * tiles_q) * 32 + tx;
    T m = NEG, s = T(0), n_eq = T(0);
    int flags = 0;  // bit 0: NaN seen, bit 1: +inf seen
    if (q < Q) {
      const T* col = a + p * (long long)N * Q + q;
      for (int n = ty; n < N; n += LSE_TILE_Y) {
        T v = __ldg(col + (long long)n * Q);
        if (v != v) flags |= 1;
        else if (v == POS) flags |= 2;
        else {
          int unused = 0;
          lse_push(m, s, n_eq, unused, v);  // finite or -inf here
        }
      }
    }
    sh_m[ty][tx] = m;
    sh_s[ty][tx] = s;
    sh_n[ty][tx] = n_eq;
    sh_f[ty][tx] = flags;
    __syncthreads();
    if (ty == 0 && q < Q) {
      for (int y = 1; y < LSE_TILE_Y; ++y) {
        lse_merge(m, s, n_eq, sh_m[y][tx], sh_s[y][tx], sh_n[y][tx]);
        flags |= sh_f[y][tx];
      }
      out[p * Q + q] = (flags & 1) ? Math<T>::nan() : (flags & 2) ? POS : lse_finish(m, s, n_eq, 0);
    }
    __syncthreads();
  }
}
#define LSE_COLS_PARAMS(T) (T * out, const T* a, long long P, int N, long long Q)
LGM_INSTANTIATE(logsumexp_cols, LSE_COLS_PARAMS, (out, a, P, N, Q))
