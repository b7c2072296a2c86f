"""GPU launch arithmetic and kernel inventory, testable without a GPU (no cupy, no NVRTC)."""

import re
from pathlib import Path

import numpy as np
import pytest

from lgm import _launch

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


def test_every_listed_kernel_is_defined_in_the_sources():
    """The names the GPU backend launches exist as extern "C" instantiations in kernels/*.cu."""
    expected = {
        "diag_gaussian": ["diag_gaussian_logpdf", "diag_gaussian_logpdf_grad"],
        "bernoulli": ["bernoulli_logpmf"],
        "latent": ["std_normal_logpdf", "kl_diag_std_normal", "reparameterize"],
        "logsumexp": ["logsumexp_rows", "logsumexp_cols"],
        "importance": ["importance_log_weights_gaussian", "importance_log_weights_bernoulli"],
        "conv": ["im2col", "col2im"],
        "lowrank": ["lowrank_row_stats"],
    }
    for src, names in expected.items():
        text = (KERNELS / f"{src}.cu").read_text()
        for n in names:
            assert re.search(rf"LGM_INSTANTIATE\(\s*{n}\s*,", text), (src, n)


def test_cpu_and_gpu_twins_share_signatures():
    """thinc habit: every GPU launcher has its CPU twin's name and argument names."""
    import ast
    import inspect

    from lgm._cpu import kernels as cpu

    gpu_src = (Path(__file__).resolve().parent.parent / "lgm" / "_gpu.py").read_text()
    tree = ast.parse(gpu_src)
    gpu_funcs = {f.name: [a.arg for a in f.args.args] for f in tree.body if isinstance(f, ast.FunctionDef)}
    for name in ("diag_gaussian_logpdf", "diag_gaussian_logpdf_grad", "bernoulli_logpmf",
                 "std_normal_logpdf", "kl_diag_std_normal", "reparameterize", "logsumexp_rows",
                 "logsumexp_cols", "importance_log_weights_gaussian", "importance_log_weights_bernoulli"):
        cpu_args = list(inspect.signature(getattr(cpu, name).py_func).parameters)
        assert gpu_funcs[name] == cpu_args, name
    from lgm import _lowrank_batched as bat
    from lgm._cpu import lowrank

    for name in ("row_stats", "missing_rows_logpdf", "missing_estep"):
        cpu_args = list(inspect.signature(getattr(lowrank, name).py_func).parameters)
        assert gpu_funcs[name] == cpu_args, name
        if name != "row_stats":  # the batched formulation: the same arguments after xp
            assert list(inspect.signature(getattr(bat, name)).parameters) == ["xp"] + cpu_args, name


def test_gpu_backend_lists_every_source_and_kernel():
    """lgm._gpu's inventory (what backend_info loads and the NVRTC test compiles) names every
    kernels/*.cu file and every extern "C" kernel in it, without importing cupy."""
    import ast

    tree = ast.parse((Path(__file__).resolve().parent.parent / "lgm" / "_gpu.py").read_text())
    sources = next(ast.literal_eval(n.value) for n in tree.body
                   if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_SOURCES")
    assert set(sources) == {p.stem for p in KERNELS.glob("*.cu")}
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "kernel_names")
    per = ast.literal_eval(fn.body[1].value)
    for src in sources:
        defined = set(re.findall(r"LGM_INSTANTIATE\(\s*(\w+)\s*,", (KERNELS / f"{src}.cu").read_text()))
        assert set(per[src]) == defined, src
