// lgm CUDA kernels: shared helpers (warp/block reductions, float/double traits).
#pragma once

template <typename T> struct Traits;
template <> struct Traits<float> {
  __device__ static float exp_(float x) { return __expf(x); }  // fast path: SFU ex2, rel err ~2 ulp
  __device__ static float log2pi() { return 1.8378770664093453f; }
};
template <> struct Traits<double> {
  __device__ static double exp_(double x) { return exp(x); }
  __device__ static double log2pi() { return 1.8378770664093453; }
};

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024). Every thread gets it.
template <typename T> __device__ __forceinline__ T block_sum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial[] may still be read from a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = (lane < nwarps) ? partial[lane] : T(0);
  return warp_sum(v);
}
