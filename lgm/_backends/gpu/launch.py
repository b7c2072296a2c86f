"""Launch arithmetic for the GPU kernels, kept free of cupy so that it is unit-tested anywhere."""

from __future__ import annotations

import numpy as np

from . import sources

WARPS_PER_BLOCK = 8
THREADS = 32 * WARPS_PER_BLOCK


def vector_width(itemsize, D, ptrs):
    """Widest vector load usable for rows of length D: 16 bytes (float4 / double2) when D is a
    multiple of the lanes and every operand's base address is 16-byte aligned (then every row
    start is), else 1 (scalar loads)."""
    lanes = 16 // int(itemsize)
    if D % lanes == 0 and all(int(p) % 16 == 0 for p in ptrs):
        return lanes
    return 1


def grid_for_rows(R, sm_count, waves=8):
    """Blocks for a warp-per-row kernel: one warp per row, at most ``waves`` blocks per SM;
    beyond that the warps loop over rows (grid-stride), so any R fits one launch."""
    need = (int(R) + WARPS_PER_BLOCK - 1) // WARPS_PER_BLOCK
    return max(1, min(need, int(sm_count) * waves))


def grid_for_elements(n, sm_count, waves=8):
    """Blocks for a thread-per-element kernel with a grid-stride loop."""
    need = (int(n) + THREADS - 1) // THREADS
    return max(1, min(need, int(sm_count) * waves))


LSE_TILE_Y = sources.define("logsumexp", "LSE_TILE_Y")  # rows of a column-logsumexp block


def grid_for_tiles(P, Q, sm_count, waves=8):
    """Blocks for the column logsumexp: one 32 x LSE_TILE_Y block per 32-column tile."""
    tiles = int(P) * ((int(Q) + 31) // 32)
    return max(1, min(tiles, int(sm_count) * waves))


IW_WARPS = sources.define("importance", "IW_WARPS")  # warps (sample groups) per fused-bound block
IW_MAXP = sources.define("importance", "IW_MAXP")  # vector packs of one x row held per lane


def bounds_fits(D, vw):
    """Whether the fused importance-bound kernel can hold an x row of length D in registers
    (IW_MAXP packs of vw elements per lane; D must be a multiple of vw)."""
    return D % vw == 0 and D <= IW_MAXP * 32 * vw


def grid_for_blocks(n, sm_count, waves=8):
    """Blocks for a block-per-item kernel with a grid-stride loop over n items."""
    return max(1, min(int(n), int(sm_count) * waves))


def kernel_suffix(dtype, vw):
    t = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}[np.dtype(dtype)]
    allowed = {"f32": (1, 4), "f64": (1, 2)}[t]
    if vw not in allowed:
        raise ValueError(f"vector width {vw} not instantiated for {t} (have {allowed})")
    return f"_{t}_v{vw}"
