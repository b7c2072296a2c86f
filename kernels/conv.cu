// im2col / col2im for NHWC convolutions (stride s, zero padding p, square kernel k): the data
// movement around the GEMMs of Conv2d and ConvTranspose2d. One thread per output element,
// grid-stride. col2im gathers (each output pixel sums the patch entries that cover it), so no
// atomics and no zero-initialised buffer are needed.
//
// CPU twins: lgm/_cpu/kernels.py (im2col, col2im). Reference: lgm.nn.im2col_slices, col2im_slices.
// The VW template argument is unused (kept for the common instantiation macro).
#include "common.cuh"

template <typename T, int VW>
__device__ void im2col(T* __restrict__ cols, const T* __restrict__ x, int B, int H, int W, int C,
                       int Ho, int Wo, int k, int s, int p) {
  const long long n = (long long)B * Ho * Wo * k * k * C;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n;
       e += (long long)gridDim.x * blockDim.x) {
    long long r = e / C;
    const int c = (int)(e - r * C);
    const int v = (int)(r % k); r /= k;
    const int u = (int)(r % k); r /= k;
    const int j = (int)(r % Wo); r /= Wo;
    const int i = (int)(r % Ho);
    const long long b = r / Ho;
    const int hh = i * s + u - p, ww = j * s + v - p;
    cols[e] = (hh >= 0 && hh < H && ww >= 0 && ww < W) ? x[((b * H + hh) * W + ww) * C + c] : T(0);
  }
}

template <typename T, int VW>
__device__ void col2im(T* __restrict__ out, const T* __restrict__ cols, int B, int H, int W, int C,
                       int Ho, int Wo, int k, int s, int p) {
  const long long n = (long long)B * H * W * C;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n;
       e += (long long)gridDim.x * blockDim.x) {
    long long r = e / C;
    const int c = (int)(e - r * C);
    const int ww = (int)(r % W); r /= W;
    const int hh = (int)(r % H);
    const long long b = r / H;
    T acc = T(0);
    for (int u = 0; u < k; ++u) {
      const int a = hh + p - u;  // = i * s for the patch row i that covers hh at offset u
      if (a < 0 || a % s) continue;
      const int i = a / s;
      if (i >= Ho) continue;
      for (int v = 0; v < k; ++v) {
        const int q = ww + p - v;
        if (q < 0 || q % s) continue;
        const int j = q / s;
        if (j >= Wo) continue;
        acc += cols[((((b * Ho + i) * Wo + j) * k + u) * k + v) * C + c];
      }
    }
    out[e] = acc;
  }
}

#define CONV_PARAMS(T) \
  (T * dst, const T* src, int B, int H, int W, int C, int Ho, int Wo, int k, int s, int p)
LGM_INSTANTIATE(im2col, CONV_PARAMS, (dst, src, B, H, W, C, Ho, Wo, k, s, p))
LGM_INSTANTIATE(col2im, CONV_PARAMS, (dst, src, B, H, W, C, Ho, Wo, k, s, p))
