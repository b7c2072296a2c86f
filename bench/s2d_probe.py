"""Probe (issue 15, a negative result kept as its record): the conv VAE's big Conv2d (32 -> 64
channels, k = 4, s = 2, p = 1, 14x14 -> 7x7, batch 128, float32) as space-to-depth + 4 shifted
GEMMs accumulated in place with BLAS beta (scipy.linalg.blas.sgemm), against lgm's im2col + one
GEMM. Prints the largest errors against lgm's layer maths, then forward, dW and dX times (median
of 30 calls, 3 rounds). ConvTranspose2d's products are the same three with roles exchanged.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/s2d_probe.py [--check]

2026-12-03, nothing else running: im2col + GEMM 5.4-6.4 ms for the three, space-to-depth
6.3-6.8 ms (its dW, four K = 8192 GEMMs, is 0.5-0.7 ms slower than one; the im2col it saves
takes only 0.33-0.55 ms). Not adopted.
"""
import os
import sys
import time
import numpy as np
from scipy.linalg import blas
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lgm.ops import im2col, col2im

B, H, C, Co, k, s, p = 128, 14, 32, 64, 4, 2, 1
Ho = 7
rng = np.random.default_rng(0)
x = rng.standard_normal((B, H, H, C)).astype(np.float32)
W = rng.standard_normal((k, k, C, Co)).astype(np.float32) * 0.05
dO = rng.standard_normal((B, Ho, Ho, Co)).astype(np.float32)
M = B * 64
SH = [0, 1, 8, 9]

# --- current path
def cur_fwd():
    cols = im2col(x, k, s, p).reshape(B * 49, -1)
    return cols, cols @ W.reshape(-1, Co)
def cur_dw(cols):
    return cols.T @ dO.reshape(-1, Co)
def cur_dx():
    dcols = dO.reshape(-1, Co) @ W.reshape(-1, Co).T
    return col2im(dcols.reshape(B, Ho, Ho, k, k, C), H, H, s, p)

# --- s2d path, buffers preallocated as a layer would keep them
xpad = np.zeros((B, 16, 16, C), np.float32)
Y = np.zeros((M + 16, 4 * C), np.float32)
oext = np.empty((M, Co), np.float32)
dOext = np.zeros((B, 8, 8, Co), np.float32)
dY = np.empty((M + 16, 4 * C), np.float32)
W4 = np.ascontiguousarray(W.reshape(2, 2, 2, 2, C, Co).transpose(0, 2, 1, 3, 4, 5).reshape(4, 4 * C, Co))

def s2d_copy():
    xpad[:, 1:15, 1:15] = x
    Y[:M].reshape(B, 8, 8, 2, 2, C)[...] = xpad.reshape(B, 8, 2, 8, 2, C).transpose(0, 1, 3, 2, 4, 5)
def dO_ext():
    dOext[:, :7, :7] = dO
    return dOext.reshape(M, Co)
def s2d_fwd():
    s2d_copy()
    for i, sh in enumerate(SH):
        # row-major oext (M,Co) += Y[sh:sh+M] (M,4C) @ W4[i] (4C,Co) ; Fortran view: oext.T = W4[i].T @ Y.T
        blas.sgemm(1.0, W4[i].T, Y[sh:sh + M].T, beta=0.0 if i == 0 else 1.0, c=oext.T, overwrite_c=1)
    return oext.reshape(B, 8, 8, Co)[:, :7, :7]
def s2d_dw():
    d = dO_ext()
    return np.stack([Y[sh:sh + M].T @ d for sh in SH])
def s2d_dx():
    d = dO_ext()
    dY[...] = 0
    for i, sh in enumerate(SH):
        # dY[sh:sh+M] (M,4C) += d (M,Co) @ W4[i].T (Co,4C) ; Fortran: dY.T = W4[i] @ d.T
        blas.sgemm(1.0, W4[i], d.T, beta=1.0, c=dY[sh:sh + M].T, overwrite_c=1)
    g = dY[:M].reshape(B, 8, 8, 2, 2, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, 16, 16, C)
    return np.ascontiguousarray(g[:, 1:15, 1:15])

cols, y0 = cur_fwd()
dw0 = cur_dw(cols).reshape(2, 2, 2, 2, C, Co).transpose(0, 2, 1, 3, 4, 5).reshape(4, 4 * C, Co)
# float32 sums of 512 (forward, dX) and 6272 (dW) products in a different order: relative 1e-5
for name, a, b in [("forward", y0.reshape(B, 7, 7, Co), s2d_fwd()), ("dW", dw0, s2d_dw()),
                   ("dX", cur_dx(), s2d_dx())]:
    err = np.abs(a - b).max() / np.abs(a).max()
    print(f"{name}: largest error {err:.1e} relative to the largest value")
    assert err < 1e-5, name

if "--check" in sys.argv:
    sys.exit(0)

def t(f, n=30):
    for _ in range(3): f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return 1e3 * np.median(ts)

im = lambda: im2col(x, k, s, p)
gm = lambda: cols @ W.reshape(-1, Co)
for rnd in range(3):
    print(f"round {rnd}: cur fwd {t(cur_fwd):.2f} (im2col {t(im):.2f} gemm {t(gm):.2f}) | s2d fwd {t(s2d_fwd):.2f} (s2d copy {t(s2d_copy):.2f})"
          f" | cur dw {t(lambda: cur_dw(cols)):.2f} s2d dw {t(s2d_dw):.2f} | cur dx {t(cur_dx):.2f} s2d dx {t(s2d_dx):.2f} ms")
