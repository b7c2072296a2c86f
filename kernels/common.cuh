// lgm CUDA kernels: shared helpers. No standard headers (NVRTC compiles these sources as they are).
//
// Layout conventions (the same as the Numba kernels in lgm/_cpu/kernels.py):
// - every operand is a C-contiguous (rows_of_that_operand, D) array;
// - output row r (C order over the broadcast leading shape lead[0..k)) reads operand row
//   operand_row(r, lead, rs_j, k), where rs_j[a] is the operand's row stride along leading axis a
//   (0 where it is broadcast); k == 1 is the common case and skips the divisions;
// - one warp per row: lanes stride over D with vector loads of VW elements (float4 / double2 when
//   D and the row starts allow it, else VW = 1), then a shuffle reduction; no shared memory.
#pragma once

#define LGM_LOG2PI 1.8378770664093453

template <typename T> struct Math;
template <> struct Math<float> {
  __device__ static __forceinline__ float exp_(float x) { return expf(x); }
  __device__ static __forceinline__ float log_(float x) { return logf(x); }
  __device__ static __forceinline__ float log1p_(float x) { return log1pf(x); }
  __device__ static __forceinline__ float inf() { return __int_as_float(0x7f800000); }
  __device__ static __forceinline__ float nan() { return __int_as_float(0x7fffffff); }
};
template <> struct Math<double> {
  __device__ static __forceinline__ double exp_(double x) { return exp(x); }
  __device__ static __forceinline__ double log_(double x) { return log(x); }
  __device__ static __forceinline__ double log1p_(double x) { return log1p(x); }
  __device__ static __forceinline__ double inf() { return __longlong_as_double(0x7ff0000000000000LL); }
  __device__ static __forceinline__ double nan() { return __longlong_as_double(0x7fffffffffffffffLL); }
};

// softplus(a) = max(a, 0) + log1p(exp(-|a|)), never overflows; NaN propagates.
template <typename T> __device__ __forceinline__ T softplus(T a) {
  return fmax(a, T(0)) + Math<T>::log1p_(Math<T>::exp_(-fabs(a))) + (a != a ? a : T(0));
}

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, int VW> struct __align__(sizeof(T) * VW) Pack { T v[VW]; };

// The built-in vector type of VW Ts: __ldg/__ldcs have no overloads for user structs, so a Pack
// is loaded as its built-in twin (same size and alignment) and read back as a Pack.
template <typename T, int VW> struct Vec;
template <> struct Vec<float, 4> { using type = float4; };
template <> struct Vec<float, 1> { using type = float; };
template <> struct Vec<double, 2> { using type = double2; };
template <> struct Vec<double, 1> { using type = double; };

// Pack j of the row at p: STREAM = evict-first loads (__ldcs) for data read exactly once,
// else read-only cached loads (__ldg) for data read again (x across samples).
template <typename T, int VW, bool STREAM>
__device__ __forceinline__ Pack<T, VW> load_pack(const T* __restrict__ p, int j) {
  using V = typename Vec<T, VW>::type;
  const V* q = reinterpret_cast<const V*>(p) + j;
  V v = STREAM ? __ldcs(q) : __ldg(q);
  return *reinterpret_cast<const Pack<T, VW>*>(&v);
}

template <typename T, int VW>
__device__ __forceinline__ Pack<T, VW> ld(const T* __restrict__ p, int j) {
  return load_pack<T, VW, false>(p, j);
}

template <typename T, int VW>
__device__ __forceinline__ Pack<T, VW> ldcs(const T* __restrict__ p, int j) {
  return load_pack<T, VW, true>(p, j);
}

// The multi-index of output row r over the leading shape, computed once per row and shared by
// all operands (k <= 2 covers (R,) and (S, B); 32-bit division when the sizes allow, since 64-bit
// division is a long software sequence on the GPU).
struct RowIdx {
  long long i0, i1;  // valid for k <= 2
  long long r;
  int k;
};

__device__ __forceinline__ RowIdx row_index(long long r, const long long* __restrict__ lead, int k) {
  RowIdx ix;
  ix.r = r;
  ix.k = k;
  if (k == 1) {
    ix.i0 = r;
    ix.i1 = 0;
  } else if (k == 2) {
    const long long n1 = lead[1];
    if (r < 2147483647LL && n1 < 2147483647LL) {
      const unsigned q = (unsigned)r / (unsigned)n1;
      ix.i0 = q;
      ix.i1 = r - (long long)q * n1;
    } else {
      ix.i0 = r / n1;
      ix.i1 = r - ix.i0 * n1;
    }
  } else {
    ix.i0 = ix.i1 = 0;
  }
  return ix;
}

// Row of operand j (its strides rs[0..k)) for the output row described by ix.
__device__ __forceinline__ long long operand_row(const RowIdx& ix, const long long* __restrict__ lead,
                                                 const long long* __restrict__ rs) {
  if (ix.k == 1) return ix.i0 * rs[0];
  if (ix.k == 2) return ix.i0 * rs[0] + ix.i1 * rs[1];
  long long idx = 0, rem = ix.r;
  for (int a = ix.k - 1; a >= 0; --a) {
    long long n = lead[a];
    idx += (rem % n) * rs[a];
    rem /= n;
  }
  return idx;
}

// Warp-per-row loop header: warp w of the grid takes rows w, w + nwarps, ...
#define LGM_WARP_ROWS(R)                                                            \
  const int lane = threadIdx.x & 31;                                                \
  const long long nwarps = ((long long)gridDim.x * blockDim.x) >> 5;                \
  for (long long r = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < (R); r += nwarps)

// Instantiate an extern "C" kernel NAME_<t><vw> for the four (type, vector width) pairs.
#define LGM_INSTANTIATE(NAME, PARAMS, ARGS)                                          \
  extern "C" __global__ void NAME##_f32_v4 PARAMS(float) { NAME<float, 4> ARGS; }     \
  extern "C" __global__ void NAME##_f32_v1 PARAMS(float) { NAME<float, 1> ARGS; }     \
  extern "C" __global__ void NAME##_f64_v2 PARAMS(double) { NAME<double, 2> ARGS; }   \
  extern "C" __global__ void NAME##_f64_v1 PARAMS(double) { NAME<double, 1> ARGS; }

// The per-element terms of the row sums, the twins of gaussian_term / bernoulli_term / kl_term in
// lgm/_backends/cpu/kernels.py (see there for why each is written so):
// Gaussian (x - mu)^2 e^{-lv} + lv as (d e^{-lv/2})^2, 0 where d == 0 (no 0 * inf);
// Bernoulli x l - softplus(l) as c l - log1p(e^{-|l|}), c = x - [l > 0] (exact in the tails, 0
// at l = +-inf with the matching label); KL 2 KL = mu^2 + (e^lv - 1 - lv), the bracket from a
// series for |lv| < 1 (no cancellation when KL ~ 0).
template <typename T> __device__ __forceinline__ T gaussian_term(T x, T m, T l) {
  const T d = x - m;
  const T s = d * Math<T>::exp_(T(-0.5) * l);
  return (d != T(0) ? s * s : T(0)) + l;
}
template <typename T> __device__ __forceinline__ T bernoulli_term(T x, T l) {
  const T c = l > T(0) ? x - T(1) : x;
  const T lin = c != T(0) ? c * l : T(0);
  const T r = lin - Math<T>::log1p_(Math<T>::exp_(-fabs(l)));
  return l != l ? l : r;
}
// e^x - 1 (START = 1) or e^x - 1 - x (START = 2): x^START sum_k x^k / (k + START)! by Horner
// for |x| < 1 (20 terms), the exp elsewhere.
template <typename T, int START> __device__ __forceinline__ T expm1_series(T x) {
  T p = T(0);
#pragma unroll
  for (int k = 19; k >= 0; --k) {
    T f = T(1);
    for (int i = 2; i <= k + START; ++i) f *= T(i);  // (k + START)!, folded by the compiler
    p = p * x + T(1) / f;
  }
  const T series = START == 1 ? p * x : p * x * x;
  const T big = START == 1 ? Math<T>::exp_(x) - T(1) : Math<T>::exp_(x) - T(1) - x;
  const T r = fabs(x) < T(1) ? series : big;
  return x != x ? x : r;
}
template <typename T> __device__ __forceinline__ T kl_term(T m, T l) {
  return m * m + expm1_series<T, 2>(l);
}

// Per-lane partial sums of a row (the caller reduces over the warp), shared by the log-density
// and the importance-weight kernels. STREAM_X: x is read once (streaming loads) or re-read
// across samples (cached loads).
template <typename T, int VW, bool STREAM_X>
__device__ __forceinline__ T gaussian_row_partial(const T* __restrict__ xr, const T* __restrict__ mr,
                                                  const T* __restrict__ lr, int D, int lane) {
  const int DV = D / VW;
  T acc = T(0);
#pragma unroll 4
  for (int j = lane; j < DV; j += 32) {
    Pack<T, VW> a = STREAM_X ? ldcs<T, VW>(xr, j) : ld<T, VW>(xr, j);
    Pack<T, VW> m = ldcs<T, VW>(mr, j), l = ldcs<T, VW>(lr, j);
#pragma unroll
    for (int c = 0; c < VW; ++c) acc += gaussian_term(a.v[c], m.v[c], l.v[c]);
  }
  return acc;  // sum over this lane's entries of (x - mu)^2 e^{-lv} + lv
}

template <typename T, int VW, bool STREAM_X>
__device__ __forceinline__ T bernoulli_row_partial(const T* __restrict__ xr, const T* __restrict__ lr,
                                                   int D, int lane) {
  const int DV = D / VW;
  T acc = T(0);
#pragma unroll 4
  for (int j = lane; j < DV; j += 32) {
    Pack<T, VW> a = STREAM_X ? ldcs<T, VW>(xr, j) : ld<T, VW>(xr, j);
    Pack<T, VW> l = ldcs<T, VW>(lr, j);
#pragma unroll
    for (int c = 0; c < VW; ++c) acc += bernoulli_term(a.v[c], l.v[c]);
  }
  return acc;  // sum over this lane's entries of x l - softplus(l)
}

// Online logsumexp state: the max m, r = the sum of exp(v - m) over the values below m, and n =
// how many values equal m, so that the result m + log1p(r + n - 1) never rounds 1 + tiny
// (logsumexp([0, -30]) had a relative error of 1e-3 as m + log(sum)). Shared by the logsumexp
// and the fused importance-bound kernels. Rules: an all -inf set gives -inf (no NaN); +inf
// anywhere gives +inf; NaN anywhere gives NaN.
template <typename T>
__device__ __forceinline__ void lse_merge(T& m, T& r, T& n, T m2, T r2, T n2) {
  if (m2 == -Math<T>::inf()) return;  // the other side is empty
  if (m == -Math<T>::inf()) { m = m2; r = r2; n = n2; return; }
  if (m2 > m) {
    r = r2 + (r + n) * Math<T>::exp_(m - m2);
    n = n2;
    m = m2;
  } else if (m2 < m) {
    r += (r2 + n2) * Math<T>::exp_(m2 - m);
  } else {
    r += r2;
    n += n2;
  }
}

// One value into the state (v may be -inf: skipped; +inf: becomes the max, finished as +inf).
template <typename T>
__device__ __forceinline__ void lse_push(T& m, T& r, T& n, int& nan, T v) {
  if (v != v) { nan = 1; return; }
  if (v == -Math<T>::inf()) return;
  if (v > m) {
    r = (m == -Math<T>::inf()) ? T(0) : (r + n) * Math<T>::exp_(m - v);
    n = T(1);
    m = v;
  } else if (v == m) {
    n += T(1);
  } else {
    r += Math<T>::exp_(v - m);
  }
}

template <typename T>
__device__ __forceinline__ T lse_finish(T m, T r, T n, int nan) {
  if (nan) return Math<T>::nan();
  if (m == Math<T>::inf() || m == -Math<T>::inf()) return m;
  return m + Math<T>::log1p_(r + (n - T(1)));
}
