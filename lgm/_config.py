"""CPU vector width for the Numba kernels, decided before Numba is imported.

Numba compiles for the host CPU. On AVX-512 hosts LLVM nevertheless prefers 256-bit vectors
("prefer-256-bit") to avoid frequency drops; for these memory-bound kernels 512-bit vectors were
measured faster (0.96 vs 0.72 of read bandwidth, float64). Numba reads the target features once,
from the environment variable ``NUMBA_CPU_FEATURES``, so lgm sets it at import when all hold:

- ``LGM_VECTOR_WIDTH`` is ``auto`` (the default) or ``512``,
- the host has AVX-512F (read from LLVM's host-feature query, never assumed),
- the user has not set ``NUMBA_CPU_FEATURES`` (their setting always wins),
- Numba is not imported yet (else a warning says the setting cannot apply).

``LGM_VECTOR_WIDTH=256`` (or ``native``) leaves Numba's default. On hosts without AVX-512 (this
project's CI machine: AVX2) nothing changes: the width is whatever the host offers.
"""

from __future__ import annotations

import os
import sys
import warnings

_CHOICES = ("auto", "512", "256", "native")


def features_for(host_features: str, width: str) -> str | None:
    """The NUMBA_CPU_FEATURES value for ``width`` given LLVM's host feature string, or None to
    leave Numba's default. Pure function, tested with made-up feature strings."""
    if width not in _CHOICES:
        raise ValueError(f"LGM_VECTOR_WIDTH: expected one of {_CHOICES}, got {width!r}")
    if width in ("256", "native"):
        return None
    feats = set(host_features.split(","))
    if "+avx512f" not in feats:
        return None
    return host_features + ",-prefer-256-bit,+evex512"


def configure() -> str:
    """Apply the policy above; return a one-line description (shown by ``lgm bench``)."""
    width = os.environ.get("LGM_VECTOR_WIDTH", "auto").strip().lower() or "auto"
    if os.environ.get("NUMBA_CPU_FEATURES"):
        return "NUMBA_CPU_FEATURES set by the user"
    try:
        from llvmlite import binding as llvm

        host = llvm.get_host_cpu_features().flatten()
    except Exception:  # pragma: no cover - llvmlite without the query
        return "host features unknown; Numba default"
    feats = features_for(host, width)
    if feats is None:
        return "Numba default for the host (" + ("AVX-512" if "+avx512f" in host else
                                                 "AVX2" if "+avx2" in host else "no AVX2") + ")"
    if "numba" in sys.modules:
        warnings.warn("lgm: numba was imported before lgm, so 512-bit vectors cannot be enabled; "
                      "import lgm first or set NUMBA_CPU_FEATURES yourself", RuntimeWarning,
                      stacklevel=3)
        return "Numba default (numba imported before lgm)"
    os.environ["NUMBA_CPU_FEATURES"] = feats
    return "512-bit vectors (NUMBA_CPU_FEATURES set by lgm)"


VECTOR_WIDTH_INFO = configure()
