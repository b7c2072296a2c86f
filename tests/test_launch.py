"""GPU launch arithmetic and kernel inventory, testable without a GPU (no cupy, no NVRTC)."""

import re
from pathlib import Path

import numpy as np
import pytest

from lgm._backends.gpu import launch as _launch

KERNELS = Path(__file__).resolve().parent.parent / "kernels"


def test_vector_width():
    assert _launch.vector_width(4, 784, [0, 256, 4096]) == 4  # float4
    assert _launch.vector_width(8, 784, [0, 256]) == 2  # double2
    assert _launch.vector_width(4, 785, [0]) == 1  # odd D: scalar loads
    assert _launch.vector_width(4, 784, [0, 4]) == 1  # one base not 16-byte aligned
    assert _launch.vector_width(8, 3, [0]) == 1


def test_grid_for_rows():
    assert _launch.grid_for_rows(1, 132) == 1
    assert _launch.grid_for_rows(8, 132) == 1
    assert _launch.grid_for_rows(9, 132) == 2
    # beyond 8 blocks per SM the warps loop (grid-stride): the grid stops growing
    assert _launch.grid_for_rows(10**7, 132) == 132 * 8
    assert _launch.grid_for_elements(10**9, 132) == 132 * 8
    assert _launch.grid_for_elements(1, 132) == 1
    assert _launch.grid_for_tiles(1, 1024, 132) == 32  # the IWAE reduction over S of (S, 1024)
    assert _launch.grid_for_tiles(3, 33, 132) == 6
    text = (KERNELS / "logsumexp.cu").read_text()
    assert f"#define LSE_TILE_Y {_launch.LSE_TILE_Y}" in text


def test_fused_bound_kernel_arithmetic():
    text = (KERNELS / "importance.cu").read_text()
    assert f"#define IW_WARPS {_launch.IW_WARPS}" in text and f"#define IW_MAXP {_launch.IW_MAXP}" in text
    assert _launch.bounds_fits(784, 4) and _launch.bounds_fits(1024, 4) and not _launch.bounds_fits(1028, 4)
    assert _launch.bounds_fits(512, 2) and not _launch.bounds_fits(784, 2)  # float64: 512 at most
    assert _launch.bounds_fits(250, 1) and not _launch.bounds_fits(257, 1)
    assert not _launch.bounds_fits(786, 4)  # not a multiple of the vector width
    assert _launch.grid_for_blocks(1024, 132) == 1024 and _launch.grid_for_blocks(10**6, 132) == 132 * 8
    assert _launch.grid_for_blocks(0, 132) == 1


def test_kernel_suffix():
    assert _launch.kernel_suffix(np.float32, 4) == "_f32_v4"
    assert _launch.kernel_suffix(np.float64, 2) == "_f64_v2"
    with pytest.raises(ValueError):
        _launch.kernel_suffix(np.float64, 4)


LAUNCHERS = Path(__file__).resolve().parent.parent / "lgm" / "_backends" / "gpu" / "launchers.py"


def test_every_launched_kernel_is_defined_in_the_sources():
    """Every (source, kernel) pair the launchers name exists in the inventory read from the .cu
    text (and the inventory is not empty for any source)."""
    from lgm._backends.gpu import sources

    text = LAUNCHERS.read_text()
    launched = set(re.findall(r'\(\s*"(\w+)",\s*"(\w+)"', text))
    launched |= {("importance", b) for b in re.findall(r'"(importance_bounds_\w+)"', text)}
    assert len(launched) >= 15
    for src, base in launched:
        assert base in sources.kernel_bases(src), (src, base)
    for src in sources.source_names():
        assert sources.kernel_bases(src), src


def test_cpu_and_gpu_twins_share_signatures():
    """thinc habit: every GPU launcher has its CPU twin's name and argument names; the batched
    missing-value twins take the CPU kernels' arguments after xp."""
    import ast
    import inspect

    from lgm._backends import batched as bat
    from lgm._backends.cpu import kernels as cpu
    from lgm._backends.cpu import lowrank

    tree = ast.parse(LAUNCHERS.read_text())
    gpu_funcs = {f.name: [a.arg for a in f.args.args] for f in tree.body if isinstance(f, ast.FunctionDef)}
    for name in ("diag_gaussian_logpdf", "diag_gaussian_logpdf_grad", "bernoulli_logpmf",
                 "bernoulli_logpmf_grad", "std_normal_logpdf", "kl_diag_std_normal",
                 "reparameterize", "logsumexp_rows", "logsumexp_cols",
                 "importance_log_weights_gaussian", "importance_log_weights_bernoulli",
                 "im2col", "col2im"):
        cpu_args = list(inspect.signature(getattr(cpu, name).py_func).parameters)
        assert gpu_funcs[name] == cpu_args, name
    assert gpu_funcs["row_stats"] == list(inspect.signature(lowrank.row_stats.py_func).parameters)
    for name in ("missing_rows_logpdf", "missing_estep"):
        cpu_args = list(inspect.signature(getattr(lowrank, name).py_func).parameters)
        assert list(inspect.signature(getattr(bat, name)).parameters) == ["xp"] + cpu_args, name


def test_inventory_is_read_from_the_sources():
    """The inventory (what backend_info loads and the NVRTC test compiles) covers every
    kernels/*.cu file and every LGM_INSTANTIATE line in it, with the four suffixes that the
    macro in common.cuh defines; the launch constants are the sources' #define values."""
    from lgm._backends.gpu import sources

    assert set(sources.source_names()) == {p.stem for p in KERNELS.glob("*.cu")}
    macro = (KERNELS / "common.cuh").read_text()
    assert set(re.findall(r"NAME##(_f\d\d_v\d)", macro)) == set(sources.SUFFIXES)
    names = sources.kernel_names()
    for src in sources.source_names():
        n_lines = (KERNELS / f"{src}.cu").read_text().count("LGM_INSTANTIATE(")
        assert len(names[src]) == 4 * n_lines, src
    assert _launch.IW_WARPS == sources.define("importance", "IW_WARPS") == 8
    assert _launch.LSE_TILE_Y == sources.define("logsumexp", "LSE_TILE_Y")
    with pytest.raises(LookupError, match="NO_SUCH"):
        sources.define("importance", "NO_SUCH")
