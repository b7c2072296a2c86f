// Bernoulli log-mass from logits, summed over the row: sum_j x l - softplus(l). Warp per row.
// Reads 2 R*D arrays, writes R.
#include "common.cuh"

template <typename T, int VW>
__device__ void bernoulli_logpmf(T* __restrict__ out, const T* __restrict__ x,
                                 const T* __restrict__ lg, long long R, int D,
                                 const long long* __restrict__ lead,
                                 const long long* __restrict__ rs, int k) {
  const int DV = D / VW;
  LGM_WARP_ROWS(R) {
    const RowIdx ix = row_index(r, lead, k);
    const T* xr = x + operand_row(ix, lead, rs) * D;
    const T* lr = lg + operand_row(ix, lead, rs + k) * D;
    T acc = T(0);
#pragma unroll 4
    for (int j = lane; j < DV; j += 32) {
      Pack<T, VW> a = ld<T, VW>(xr, j), l = ld<T, VW>(lr, j);
#pragma unroll
      for (int c = 0; c < VW; ++c) acc += a.v[c] * l.v[c] - softplus(l.v[c]);
    }
    acc = warp_sum(acc);
    if (lane == 0) out[r] = acc;
  }
}

#define BERN_PARAMS(T) \
  (T * out, const T* x, const T* lg, long long R, int D, const long long* lead, const long long* rs, int k)
LGM_INSTANTIATE(bernoulli_logpmf, BERN_PARAMS, (out, x, lg, R, D, lead, rs, k))
