"""The CUDA sources as text: where they are, which kernels they define, which launch constants
they fix. cupy-free, so that the inventory is tested on any machine.

Every kernel is instantiated by ``LGM_INSTANTIATE(name, ...)`` (kernels/common.cuh) as four
extern "C" symbols ``name_f32_v4``, ``name_f32_v1``, ``name_f64_v2``, ``name_f64_v1``; the names
are read from those lines. Launch constants that the host must agree on (a block's warp count,
registers per lane) are ``#define NAME value`` lines in the .cu file and read from there, so the
prebuilt fatbin, the NVRTC build and the launcher use one value.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

SUFFIXES = ("_f32_v4", "_f32_v1", "_f64_v2", "_f64_v1")


def kernel_dir():
    """The CUDA sources: inside the installed package (lgm/kernels/), or, when lgm runs from a
    source tree that is not installed, the tree's top-level kernels/ folder."""
    try:
        d = resources.files("lgm.kernels")
        if (d / "diag_gaussian.cu").is_file():
            return d
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[3] / "kernels"


@lru_cache(maxsize=None)
def text(src):
    """The text of kernels/<src>.cu."""
    return (kernel_dir() / f"{src}.cu").read_text()


def source_names():
    """Every kernels/*.cu file, by stem, sorted."""
    return tuple(sorted(p.name[:-3] for p in kernel_dir().iterdir() if p.name.endswith(".cu")))


def kernel_bases(src):
    """The kernels that kernels/<src>.cu instantiates, in order of appearance."""
    return re.findall(r"^\s*LGM_INSTANTIATE\(\s*(\w+)\s*,", text(src), flags=re.M)


def kernel_names():
    """Every extern "C" kernel name, per source file (what the loader checks and tests compile)."""
    return {src: [b + s for b in kernel_bases(src) for s in SUFFIXES] for src in source_names()}


def define(src, name):
    """The integer value of ``#define NAME value`` in kernels/<src>.cu."""
    m = re.search(rf"^\s*#define\s+{name}\s+(\d+)\s*$", text(src), flags=re.M)
    if m is None:
        raise LookupError(f"kernels/{src}.cu: no '#define {name} <integer>'")
    return int(m.group(1))
